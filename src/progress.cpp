#include "grokking/progress.hpp"

#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <exception>
#include <limits>
#include <thread>

#include "grokking/analysis.hpp"
#include "grokking/checkpoint.hpp"
#include "grokking/error.hpp"
#include "grokking/plot.hpp"
#include "grokking/rundir.hpp"
#include "grokking/text.hpp"
#include "grokking/threads.hpp"

namespace grokking {

namespace {

// The checkpoint in [lo, hi] farthest above (above = true) or below the chord of f from lo to hi.
template <class F>
size_t knee(const std::vector<ProgressRow>& rows, size_t lo, size_t hi, F f, bool above) {
  const double x0 = double(rows[lo].epoch), y0 = f(rows[lo]), x1 = double(rows[hi].epoch), y1 = f(rows[hi]);
  size_t arg = lo;
  double best = -std::numeric_limits<double>::infinity();
  for (size_t i = lo; i <= hi; ++i) {
    const double line = y0 + (y1 - y0) * (double(rows[i].epoch) - x0) / std::max(x1 - x0, 1.0);
    const double d = (f(rows[i]) - line) * (above ? 1.0 : -1.0);
    if (d > best) best = d, arg = i;
  }
  return arg;
}

double log10_of(double v) { return std::log10(std::max(v, 1e-12)); }

PhaseChange change(const ProgressRow& a, const ProgressRow& b) {
  return {{a.train_loss, b.train_loss},         {a.test_loss, b.test_loss},
          {a.excluded_loss, b.excluded_loss},   {a.restricted_loss, b.restricted_loss},
          {a.sum_sq_weights, b.sum_sq_weights}, {a.gini, b.gini}};
}

}  // namespace

Phases detect_phases(const std::vector<ProgressRow>& rows) {
  Phases ph;
  if (rows.size() < 3) {
    ph.note = "too few checkpoints to find phases";
    return ph;
  }
  const size_t last = rows.size() - 1;
  size_t grok = rows.size(), fit = rows.size();
  for (size_t i = rows.size(); i-- > 0;) {
    if (rows[i].test_acc >= 0.99) grok = i;
    if (rows[i].train_acc >= 1.0) fit = i;
  }
  if (fit == rows.size()) {
    ph.note = "the training set was never fit: still memorising";
    return ph;
  }
  ph.grokked = grok < rows.size();
  // Rule 1.
  const size_t upto = ph.grokked ? grok : last;
  size_t ex_min = 0;
  for (size_t i = 0; i <= upto; ++i)
    if (rows[i].excluded_loss < rows[ex_min].excluded_loss) ex_min = i;
  size_t mem_end = std::min(std::max(ex_min, fit), upto);
  for (size_t i = mem_end; i <= upto; ++i)
    if (rows[i].sum_sq_weights > rows[mem_end].sum_sq_weights) mem_end = i;
  ph.memorisation_end = rows[mem_end].epoch;
  ph.changes.push_back(change(rows[0], rows[mem_end]));
  if (!ph.grokked) {
    ph.note = "never grokked (test accuracy stayed below 99%): circuit formation is still under way";
    return ph;
  }
  // Rules 2 and 3.
  const size_t end =
      std::max(knee(rows, mem_end, last, [](const ProgressRow& r) { return r.sum_sq_weights; }, false), grok);
  const size_t start = knee(rows, mem_end, end, [](const ProgressRow& r) { return r.sum_sq_weights; }, true);
  ph.circuit_formation_end = rows[start].epoch;
  ph.cleanup_end = rows[end].epoch;
  ph.changes.push_back(change(rows[mem_end], rows[start]));
  ph.changes.push_back(change(rows[start], rows[end]));

  // The paper's definitions, checked on what was found.
  const auto& m = ph.changes[0];
  const auto& c = ph.changes[1];
  const auto& k = ph.changes[2];
  std::vector<std::string> failed;
  auto need = [&](bool ok, const std::string& what) {
    if (!ok) failed.push_back(what);
  };
  need(m.train_loss[1] < m.train_loss[0], "memorisation: train loss falls");
  need(m.excluded_loss[1] < m.excluded_loss[0], "memorisation: excluded loss falls");
  need(c.excluded_loss[1] > c.excluded_loss[0], "circuit formation: excluded loss rises");
  need(c.sum_sq_weights[1] < c.sum_sq_weights[0], "circuit formation: weight norm falls");
  const double test_circuit = std::abs(log10_of(c.test_loss[1]) - log10_of(c.test_loss[0]));
  const double test_cleanup = log10_of(k.test_loss[0]) - log10_of(k.test_loss[1]);
  need(test_circuit < 0.25 * std::abs(test_cleanup), "circuit formation: test loss flat");
  need(test_cleanup > 0, "cleanup: test loss falls");
  need(k.sum_sq_weights[1] < k.sum_sq_weights[0], "cleanup: weight norm falls");
  need(k.restricted_loss[1] < k.restricted_loss[0], "cleanup: restricted loss falls");
  need(k.gini[1] > k.gini[0], "cleanup: Gini rises");
  for (auto& f : failed) ph.failed += (ph.failed.empty() ? "" : "; ") + f;
  if (!ph.failed.empty()) ph.note = "the phases found do not meet the paper's definitions: " + ph.failed;
  return ph;
}

namespace {
// Per phase found: each measure's value at its first and last checkpoint.
nlohmann::json changes_json(const Phases& ph) {
  static const char* names[] = {"memorisation", "circuit_formation", "cleanup"};
  nlohmann::json out = nlohmann::json::object();
  for (size_t i = 0; i < ph.changes.size() && i < 3; ++i) {
    const auto& c = ph.changes[i];
    auto pair = [](const double* v) { return nlohmann::json::array({v[0], v[1]}); };
    out[names[i]] = {{"train_loss", pair(c.train_loss)},         {"test_loss", pair(c.test_loss)},
                     {"excluded_loss", pair(c.excluded_loss)},   {"restricted_loss", pair(c.restricted_loss)},
                     {"sum_sq_weights", pair(c.sum_sq_weights)}, {"gini", pair(c.gini)}};
  }
  return out;
}
}  // namespace

nlohmann::json phases_json(const Phases& ph, const std::vector<int64_t>& key_freqs) {
  return {{"grokked", ph.grokked},
          {"key_freqs", key_freqs},
          {"memorisation", {{"start", 0}, {"end", optional_json(ph.memorisation_end)}}},
          {"circuit_formation",
           {{"start", optional_json(ph.memorisation_end)}, {"end", optional_json(ph.circuit_formation_end)}}},
          {"cleanup", {{"start", optional_json(ph.circuit_formation_end)}, {"end", optional_json(ph.cleanup_end)}}},
          {"definitions_hold", ph.changes.size() == 3 ? nlohmann::json(ph.failed.empty()) : nlohmann::json()},
          {"changes", changes_json(ph)},
          {"note", ph.note}};
}

RunProgress measure_progress(const std::string& dir, const std::vector<int64_t>& freqs) {
  if (!is_dir(dir)) throw UsageError(dir + ": progress takes a run directory");
  auto list = list_checkpoints(dir);
  if (list.empty()) throw RunError(dir + ": no checkpoints in " + dir + "/checkpoints");
  configure_threads(1);

  // Key frequencies of the final model, applied to every checkpoint (as the paper does).
  auto final_ck = load_checkpoint(list.back().second);
  RunProgress out;
  out.key_freqs = freqs;
  if (out.key_freqs.empty()) out.key_freqs = analyse_fourier(model_from_checkpoint(final_ck)).key_neurons;
  const Cycle cycle = cycle_of(final_ck.config.task);
  for (auto k : out.key_freqs)
    if (k < 1 || k > n_frequencies(cycle.n))
      throw UsageError("--freqs: frequency " + std::to_string(k) + " is out of range 1.." +
                       std::to_string(n_frequencies(cycle.n)));
  std::sort(out.key_freqs.begin(), out.key_freqs.end());
  out.key_freqs.erase(std::unique(out.key_freqs.begin(), out.key_freqs.end()), out.key_freqs.end());
  Dataset data = make_dataset(final_ck.config.task);

  const auto shape_of = [](const Config& c) {
    auto j = config_to_json(c);
    return nlohmann::json{{"task", j["task"]}, {"model", j["model"]}};
  };
  auto measure = [&](const std::string& path) {
    auto ck = load_checkpoint(path);
    if (shape_of(ck.config) != shape_of(final_ck.config))
      throw RunError(path + ": task/model config differs from the run's final checkpoint " + list.back().second +
                     " (a checkpoint from another run?)");
    Model m = model_from_checkpoint(ck);
    auto lm = loss_measures(m, data, out.key_freqs);
    ProgressRow row;
    row.epoch = ck.epoch, row.train_loss = lm.train_loss, row.test_loss = lm.test_loss, row.train_acc = lm.train_acc;
    row.test_acc = lm.test_acc, row.restricted_loss = lm.restricted_loss, row.excluded_loss = lm.excluded_loss;
    row.gini = gini_embed_frequencies(m, cycle), row.sum_sq_weights = m.sum_squared_weights();
    row.restricted_train_loss = lm.restricted.train.loss, row.restricted_test_loss = lm.restricted.test.loss;
    row.restricted_acc = lm.restricted.all.acc;
    row.gini_wl = gini_wl_frequencies(m, cycle);
    row.excluded_by_key = lm.excluded_by_key;
    return row;
  };
  // Checkpoints are independent: each worker takes the next one until none is left.
  out.rows.resize(list.size());
  std::vector<std::exception_ptr> errors(list.size());
  std::atomic<size_t> next{0};
  auto work = [&] {
    at::set_num_threads(1);  // OpenMP's thread count is per thread: new threads start at all cores
    for (size_t i; (i = next++) < list.size();) {
      try {
        out.rows[i] = measure(list[i].second);
      } catch (...) {
        errors[i] = std::current_exception();
        next = list.size();  // stop handing out work
      }
    }
  };
  const size_t workers = std::min<size_t>(list.size(), size_t(usable_cpus()));
  std::vector<std::thread> pool;
  try {
    for (size_t w = 1; w < workers; ++w) pool.emplace_back(work);
  } catch (const std::system_error&) {
    // No more threads to be had: the ones started and this one share the work.
  }
  work();
  for (auto& t : pool) t.join();
  for (auto& e : errors)
    if (e) std::rethrow_exception(e);
  out.phases = detect_phases(out.rows);
  return out;
}

namespace {
// progress.csv's columns before the excluded_loss_k<K> ones, for write_progress and read_progress.
const std::vector<std::string>& progress_columns() {
  static const std::vector<std::string> columns = {
      "epoch",         "train_loss", "test_loss",      "train_acc",             "test_acc",
      "restricted_loss", "excluded_loss", "gini",       "sum_sq_weights",        "restricted_train_loss",
      "restricted_test_loss", "restricted_acc", "test_over_restricted", "gini_wl"};
  return columns;
}
}  // namespace

void write_progress(const std::string& dir, const RunProgress& progress) {
  std::vector<std::string> header = progress_columns();
  for (auto k : progress.key_freqs) header.push_back("excluded_loss_k" + std::to_string(k));
  CsvWriter csv(header);
  for (auto& r : progress.rows) {
    csv.field(r.epoch).field(r.train_loss).field(r.test_loss).field(r.train_acc).field(r.test_acc);
    csv.field(r.restricted_loss).field(r.excluded_loss).field(r.gini).field(r.sum_sq_weights);
    csv.field(r.restricted_train_loss).field(r.restricted_test_loss).field(r.restricted_acc);
    csv.field(r.restricted_loss > 0 ? r.test_loss / r.restricted_loss : 0.0).field(r.gini_wl);
    for (auto e : r.excluded_by_key) csv.field(e);
    csv.end_row();
  }
  atomic_write(dir + "/progress.csv", csv.text());
  if (exists(dir + "/summary.json")) {
    auto s = read_json_file(dir + "/summary.json");
    s["phases"] = phases_json(progress.phases, progress.key_freqs);
    atomic_write(dir + "/summary.json", s.dump(2) + "\n");
  }
}

RunProgress read_progress(const std::string& path) {
  const CsvTable t = read_csv(path);
  const auto& fixed = progress_columns();
  const auto& header = t.header;
  RunProgress out;
  if (header.size() < fixed.size() || !std::equal(fixed.begin(), fixed.end(), header.begin()))
    throw RunError(path + ": line 1: not a progress.csv header (grokking progress writes it)");
  for (size_t c = fixed.size(); c < header.size(); ++c) {
    const std::string prefix = "excluded_loss_k", where = path + ": line 1: column " + std::to_string(c + 1);
    char* endp = nullptr;
    const char* digits = header[c].c_str() + std::min(prefix.size(), header[c].size());
    const long k = std::strtol(digits, &endp, 10);
    if (header[c].rfind(prefix, 0) != 0 || endp == digits || *endp != '\0' || k < 1 || k > 100000)
      throw RunError(where + ": expected excluded_loss_k<K> (got '" + header[c] + "')");
    if (std::find(out.key_freqs.begin(), out.key_freqs.end(), k) != out.key_freqs.end())
      throw RunError(where + ": " + header[c] + " appears twice");
    out.key_freqs.push_back(k);
  }
  for (size_t i = 0; i < t.rows.size(); ++i) {
    const auto& cells = t.rows[i];
    const std::string where = path + ": line " + std::to_string(t.lines[i]);
    if (cells.size() != header.size())
      throw RunError(where + ": " + std::to_string(cells.size()) + " columns, the header has " +
                     std::to_string(header.size()));
    std::vector<double> v(cells.size());
    for (size_t c = 0; c < cells.size(); ++c) {
      char* endp = nullptr;
      v[c] = std::strtod(cells[c].c_str(), &endp);
      // test_over_restricted is a ratio that write_progress may write as inf or nan; it is not read.
      const bool ratio = c == 12;
      if (cells[c].empty() || *endp != '\0' || (!ratio && !std::isfinite(v[c])))
        throw RunError(where + ": column " + header[c] + ": not a finite number ('" + cells[c] + "')");
    }
    ProgressRow r;
    if (v[0] < 0 || v[0] > 1e15 || v[0] != std::floor(v[0]))
      throw RunError(where + ": column epoch: not an epoch ('" + cells[0] + "')");
    r.epoch = int64_t(v[0]);
    if (!out.rows.empty() && r.epoch <= out.rows.back().epoch)
      throw RunError(where + ": epochs must increase (" + cells[0] + " after " + std::to_string(out.rows.back().epoch) + ")");
    r.train_loss = v[1], r.test_loss = v[2], r.train_acc = v[3], r.test_acc = v[4], r.restricted_loss = v[5];
    r.excluded_loss = v[6], r.gini = v[7], r.sum_sq_weights = v[8], r.restricted_train_loss = v[9];
    r.restricted_test_loss = v[10], r.restricted_acc = v[11], r.gini_wl = v[13];
    r.excluded_by_key.assign(v.begin() + long(fixed.size()), v.end());
    out.rows.push_back(r);
  }
  if (out.rows.empty()) throw RunError(path + ": no rows");
  out.phases = detect_phases(out.rows);
  return out;
}

}  // namespace grokking
