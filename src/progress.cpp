#include "grokking/progress.hpp"

#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <exception>
#include <thread>

#include "grokking/analysis.hpp"
#include "grokking/checkpoint.hpp"
#include "grokking/error.hpp"
#include "grokking/rundir.hpp"
#include "grokking/text.hpp"
#include "grokking/threads.hpp"

namespace grokking {

Phases detect_phases(const std::vector<ProgressRow>& rows) {
  Phases ph;
  if (rows.size() < 3) {
    ph.note = "too few checkpoints to find phases";
    return ph;
  }
  // Cleanup ends when the model generalises: the first checkpoint with test accuracy >= 99 %.
  size_t end = rows.size();
  for (size_t i = 0; i < rows.size(); ++i)
    if (rows[i].test_acc >= 0.99) {
      end = i;
      break;
    }
  ph.grokked = end < rows.size();
  // Memorisation ends at the peak of the test loss before generalisation, and no earlier than
  // the first checkpoint that fits the training set.
  const size_t stop = ph.grokked ? end : rows.size() - 1;
  size_t peak = 0;
  for (size_t i = 0; i <= stop; ++i)
    if (rows[i].test_loss > rows[peak].test_loss) peak = i;
  size_t fit = rows.size();
  for (size_t i = 0; i < rows.size(); ++i)
    if (rows[i].train_acc >= 1.0) {
      fit = i;
      break;
    }
  if (fit == rows.size()) {
    ph.note = "the training set was never fit: still memorising";
    return ph;
  }
  const size_t mem_end = std::max(peak, fit);
  ph.memorisation_end = rows[mem_end].epoch;
  if (!ph.grokked) {
    ph.note = "never grokked (test accuracy stayed below 99%): circuit formation is still under way";
    return ph;
  }
  ph.cleanup_end = rows[end].epoch;
  // Cleanup starts when the test loss begins its sharp fall: the first checkpoint after
  // memorisation from which log10(test loss), over a window of about 1/12 of the span,
  // falls at least twice as fast as its median rate between memorisation and generalisation.
  size_t start = end;
  if (end > mem_end + 1) {
    const size_t span = end - mem_end, window = std::max<size_t>(1, span / 12);
    auto slope = [&](size_t i) {
      size_t j = std::min(i + window, end);
      return (std::log10(std::max(rows[j].test_loss, 1e-12)) - std::log10(std::max(rows[i].test_loss, 1e-12))) /
             double(std::max<int64_t>(rows[j].epoch - rows[i].epoch, 1));
    };
    std::vector<double> slopes;
    for (size_t i = mem_end; i < end; ++i) slopes.push_back(slope(i));
    std::vector<double> sorted = slopes;
    std::sort(sorted.begin(), sorted.end());
    const double median = sorted[sorted.size() / 2];
    for (size_t k = 0; k < slopes.size(); ++k)
      if (median < 0 && slopes[k] < 2 * median) {
        start = mem_end + k;
        break;
      }
  }
  ph.circuit_formation_end = rows[std::max(start, mem_end)].epoch;
  return ph;
}


nlohmann::json phases_json(const Phases& ph, const std::vector<int64_t>& key_freqs) {
  return {{"grokked", ph.grokked},
          {"key_freqs", key_freqs},
          {"memorisation", {{"start", 0}, {"end", optional_json(ph.memorisation_end)}}},
          {"circuit_formation",
           {{"start", optional_json(ph.memorisation_end)}, {"end", optional_json(ph.circuit_formation_end)}}},
          {"cleanup", {{"start", optional_json(ph.circuit_formation_end)}, {"end", optional_json(ph.cleanup_end)}}},
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

void write_progress(const std::string& dir, const RunProgress& progress) {
  std::vector<std::string> header = {"epoch", "train_loss", "test_loss", "train_acc", "test_acc", "restricted_loss",
                                     "excluded_loss", "gini", "sum_sq_weights", "restricted_train_loss",
                                     "restricted_test_loss", "restricted_acc", "test_over_restricted", "gini_wl"};
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

}  // namespace grokking
