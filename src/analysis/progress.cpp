#include "grokking/progress.hpp"
#include "grokking/progress_note.hpp"

#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <exception>
#include <functional>
#include <limits>
#include <map>
#include <optional>
#include <thread>

#include "grokking/analysis.hpp"
#include "grokking/checkpoint.hpp"
#include "grokking/error.hpp"
#include "grokking/irreps.hpp"
#include "grokking/rundir.hpp"
#include "grokking/text.hpp"
#include "grokking/threads.hpp"

namespace grokking {

namespace {

double log10_of(double v) { return std::log10(std::max(v, 1e-12)); }

PhaseChange change(const ProgressRow& a, const ProgressRow& b) {
  return {{a.train_loss, b.train_loss},         {a.test_loss, b.test_loss},
          {a.excluded_loss, b.excluded_loss},   {a.restricted_loss, b.restricted_loss},
          {a.sum_sq_weights, b.sum_sq_weights}, {a.gini, b.gini}};
}

// The progress measures the regimes are fit to: train, excluded and restricted loss (log10), the
// sum of squared weights and the Gini coefficient, each divided by its range over the run so that
// each weighs the same. Never the test loss: it is what the progress measures anticipate.
// sse(i, j): the squared residual of a straight line fit to each over checkpoints i..j, summed.
class RegimeFit {
 public:
  explicit RegimeFit(const std::vector<ProgressRow>& rows) : n_(rows.size()) {
    double (*const measures[])(const ProgressRow&) = {
        [](const ProgressRow& r) { return log10_of(r.train_loss); },
        [](const ProgressRow& r) { return log10_of(r.excluded_loss); },
        [](const ProgressRow& r) { return log10_of(r.restricted_loss); },
        [](const ProgressRow& r) { return r.sum_sq_weights; },
        [](const ProgressRow& r) { return r.gini; }};
    std::vector<double> x(n_), y(n_);
    const double x0 = double(rows.front().epoch), xs = std::max(double(rows.back().epoch) - x0, 1.0);
    for (size_t i = 0; i < n_; ++i) x[i] = (double(rows[i].epoch) - x0) / xs;
    cost_.assign(n_ * n_, 0.0);
    for (const auto& f : measures) {
      for (size_t i = 0; i < n_; ++i) y[i] = f(rows[i]);
      const auto [lo, hi] = std::minmax_element(y.begin(), y.end());
      const double range = std::isfinite(*hi - *lo) && *hi > *lo ? *hi - *lo : 1.0;
      for (size_t i = 0; i < n_; ++i) {
        double sx = 0, sxx = 0, sy = 0, sxy = 0, syy = 0;
        for (size_t j = i; j < n_; ++j) {
          const double v = y[j] / range;
          sx += x[j], sxx += x[j] * x[j], sy += v, sxy += x[j] * v, syy += v * v;
          const double k = double(j - i + 1), vx = sxx - sx * sx / k, cxy = sxy - sx * sy / k;
          const double r = syy - sy * sy / k - (vx > 0 ? cxy * cxy / vx : 0.0);
          cost_[i * n_ + j] += std::isfinite(r) ? std::max(r, 0.0) : std::numeric_limits<double>::infinity();
        }
      }
    }
  }
  double sse(size_t i, size_t j) const { return cost_[i * n_ + j]; }

 private:
  size_t n_;
  std::vector<double> cost_;
};

// Conditions checked one by one: `ok` while all hold; each that fails is named in `failed` (when
// given; a null name for one whose parts named themselves).
struct Checks {
  std::vector<std::string>* failed;
  bool ok = true;
  void operator()(bool holds, const char* what) {
    if (holds) return;
    ok = false;
    if (failed && what) failed->push_back(what);
  }
};

// Memorisation ending at checkpoint m: the training set is fit by then (first at `fit`); train
// and excluded loss fall. Each failed condition is named in `failed` (when given).
bool memorisation_holds(const std::vector<ProgressRow>& rows, size_t m, size_t fit, std::vector<std::string>* failed) {
  Checks need{failed};
  need(m >= fit, "memorisation: the training set is fit by its end");
  need(rows[m].train_loss < rows[0].train_loss, "memorisation: train loss falls");
  need(rows[m].excluded_loss < rows[0].excluded_loss, "memorisation: excluded loss falls");
  return need.ok;
}

// The paper's definitions (section 5.2) as conditions on the measures at the boundaries m < c < e
// (checkpoint indices), grok being the first checkpoint with test accuracy >= 99 %. Each failed one
// is named in `failed` (when given); true when all hold.
bool definitions_hold(const std::vector<ProgressRow>& rows, size_t m, size_t c, size_t e, size_t fit, size_t grok,
                      std::vector<std::string>* failed) {
  Checks need{failed};
  const auto &rm = rows[m], &rc = rows[c], &re = rows[e];
  const double cf_epochs = std::max(double(rc.epoch - rm.epoch), 1.0);
  const double cl_epochs = std::max(double(re.epoch - rc.epoch), 1.0);
  need(memorisation_holds(rows, m, fit, failed), nullptr);
  // Circuit formation: excluded loss rises, weight norm falls, test loss flat.
  need(rc.excluded_loss > rm.excluded_loss, "circuit formation: excluded loss rises");
  need(rc.sum_sq_weights < rm.sum_sq_weights, "circuit formation: weight norm falls");
  const double test_cf = log10_of(rc.test_loss) - log10_of(rm.test_loss);
  const double test_cl = log10_of(rc.test_loss) - log10_of(re.test_loss);  // its fall
  // Flat against cleanup's fall: it moves less than a quarter as many decades, in all and per epoch.
  need(std::abs(test_cf) < 0.25 * std::abs(test_cl) && std::abs(test_cf) / cf_epochs < 0.25 * test_cl / cl_epochs,
       "circuit formation: test loss flat");
  // Cleanup: the test loss falls (sharply: see above), and the model generalises in it; weight norm
  // and restricted loss fall; the Gini jumps (rises faster per epoch than in circuit formation); the
  // excluded loss levels off (rises fewer decades than in circuit formation).
  need(test_cl > 0, "cleanup: test loss falls");
  need(c < grok && grok <= e, "cleanup: test accuracy reaches 99 % in it");
  need(re.sum_sq_weights < rc.sum_sq_weights, "cleanup: weight norm falls");
  need(re.restricted_loss < rc.restricted_loss, "cleanup: restricted loss falls");
  need(re.gini > rc.gini && (re.gini - rc.gini) / cl_epochs > (rc.gini - rm.gini) / cf_epochs,
       "cleanup: Gini jumps");
  need(log10_of(re.excluded_loss) - log10_of(rc.excluded_loss) <
           log10_of(rc.excluded_loss) - log10_of(rm.excluded_loss),
       "cleanup: excluded loss levels off");
  return need.ok;
}

// The first checkpoint with train accuracy 100 % and the first with test accuracy >= 99 %
// (rows.size() where none).
std::pair<size_t, size_t> first_fit_and_grok(const std::vector<ProgressRow>& rows) {
  size_t fit = rows.size(), grok = rows.size();
  for (size_t i = rows.size(); i-- > 0;) {
    if (rows[i].train_acc >= 1.0) fit = i;
    if (rows[i].test_acc >= 0.99) grok = i;
  }
  return {fit, grok};
}

}  // namespace

Phases detect_phases(const std::vector<ProgressRow>& all_rows) {
  Phases ph;
  const size_t n_all = all_rows.size();
  const auto [fit_all, grok_all] = first_fit_and_grok(all_rows);
  if (fit_all == n_all) {
    ph.note = "the training set was never fit: still memorising";
    return ph;
  }
  ph.grokked = grok_all < n_all;
  // Three phases of at least kMin checkpoints each (a line through fewer fits exactly), sharing
  // their boundaries; what follows cleanup may be its last checkpoint alone (a run may stop there).
  constexpr size_t kMin = 3, kRowsThree = 3 * (kMin - 1) + 1, kRowsTwo = 2 * (kMin - 1) + 1;
  if (n_all < (ph.grokked ? kRowsThree : kRowsTwo)) {
    ph.note = "too few checkpoints to find phases (" + std::to_string(ph.grokked ? kRowsThree : kRowsTwo) +
              " needed)";
    return ph;
  }
  // The search is cubic in the checkpoints: past kMaxRows, it runs on kMaxRows of them spread
  // evenly over the run, the first and last included and also the first that fit the training set
  // and the first at 99 % test accuracy; the boundaries fall on those.
  constexpr size_t kMaxRows = 500;
  std::vector<ProgressRow> spread;
  if (n_all > kMaxRows) {
    std::vector<size_t> pick;
    for (size_t k = 0; k < kMaxRows; ++k) pick.push_back(k * (n_all - 1) / (kMaxRows - 1));
    pick.push_back(fit_all);
    if (ph.grokked) pick.push_back(grok_all);
    std::sort(pick.begin(), pick.end());
    pick.erase(std::unique(pick.begin(), pick.end()), pick.end());
    for (auto i : pick) spread.push_back(all_rows[i]);
  }
  const std::vector<ProgressRow>& rows = spread.empty() ? all_rows : spread;
  const size_t n = rows.size(), last = n - 1;
  const auto [fit, grok] = first_fit_and_grok(rows);  // the same rows as above, in the spread
  const RegimeFit fitter(rows);
  const double inf = std::numeric_limits<double>::infinity();
  if (!ph.grokked) {
    // Two regimes: memorisation, then circuit formation (still under way).
    size_t best_m = n;
    double best = inf;
    for (size_t m = kMin - 1; m + kMin <= n; ++m) {
      const double cost = fitter.sse(0, m) + fitter.sse(m, last);
      if (cost < best && memorisation_holds(rows, m, fit, nullptr)) best = cost, best_m = m;
    }
    if (best_m == n) {
      ph.note = "never grokked (test accuracy stayed below 99%), and no end of memorisation meets its definition"
                " (or the progress measures are not finite)";
      return ph;
    }
    ph.memorisation_end = rows[best_m].epoch;
    ph.changes.push_back(change(rows[0], rows[best_m]));
    ph.note = "never grokked (test accuracy stayed below 99%): circuit formation is still under way";
    return ph;
  }
  // Four regimes (memorisation, circuit formation, cleanup, after it) fit by least squares, the
  // boundaries chosen among those where every phase meets the paper's definition; the best fit
  // overall when none does.
  size_t bm = 0, bc = 0, be = 0, vm = 0, vc = 0, ve = 0;
  double best_any = inf, best_valid = inf;
  for (size_t m = kMin - 1; m + 2 * (kMin - 1) <= last; ++m)
    for (size_t c = m + kMin - 1; c + kMin - 1 <= last; ++c) {
      const double head = fitter.sse(0, m) + fitter.sse(m, c);
      for (size_t e = c + kMin - 1; e <= last; ++e) {
        const double cost = head + fitter.sse(c, e) + fitter.sse(e, last);
        if (cost < best_any) best_any = cost, bm = m, bc = c, be = e;
        if (cost < best_valid && definitions_hold(rows, m, c, e, fit, grok, nullptr))
          best_valid = cost, vm = m, vc = c, ve = e;
      }
    }
  if (best_any == inf) {
    ph.note = "the progress measures are not finite: no phases";
    return ph;
  }
  if (best_valid < inf) bm = vm, bc = vc, be = ve;
  ph.memorisation_end = rows[bm].epoch;
  ph.circuit_formation_end = rows[bc].epoch;
  ph.cleanup_end = rows[be].epoch;
  ph.changes = {change(rows[0], rows[bm]), change(rows[bm], rows[bc]), change(rows[bc], rows[be])};
  std::vector<std::string> failed;
  definitions_hold(rows, bm, bc, be, fit, grok, &failed);
  for (auto& f : failed) ph.failed += (ph.failed.empty() ? "" : "; ") + f;
  {
    const auto &rm = rows[bm], &rc = rows[bc], &re = rows[be];
    const double cf = std::max(double(rc.epoch - rm.epoch), 1.0), cl = std::max(double(re.epoch - rc.epoch), 1.0);
    ph.not_in_rule = {{"circuit formation: restricted loss falls", rc.restricted_loss < rm.restricted_loss},
                      {"cleanup: Gini of W_L jumps", re.gini_wl > rc.gini_wl &&
                                                         (re.gini_wl - rc.gini_wl) / cl > (rc.gini_wl - rm.gini_wl) / cf}};
  }
  if (!ph.failed.empty())
    ph.note = "no boundaries meet the paper's definitions of the three phases (the run does not show them); at the "
              "best fit: " + ph.failed;
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
          {"not_in_rule", [&] {
             nlohmann::json j = nlohmann::json::object();
             for (auto& [what, holds] : ph.not_in_rule) j[what] = holds;
             return j;
           }()},
          {"note", ph.note}};
}

namespace {
// Checkpoints are independent: each worker (one a core, one thread each) takes the next one until
// none is left; the first error stops the handing out and is rethrown.
void for_each_checkpoint(size_t n, const std::function<void(size_t)>& measure) {
  std::vector<std::exception_ptr> errors(n);
  std::atomic<size_t> next{0};
  auto work = [&] {
    at::set_num_threads(1);  // OpenMP's thread count is per thread: new threads start at all cores
    for (size_t i; (i = next++) < n;) {
      try {
        measure(i);
      } catch (...) {
        errors[i] = std::current_exception();
        next = n;  // stop handing out work
      }
    }
  };
  const size_t workers = std::min<size_t>(n, size_t(usable_cpus()));
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
}
}  // namespace

RunProgress measure_progress(const std::string& dir, const std::vector<int64_t>& freqs) {
  if (!is_dir(dir)) throw UsageError(dir + ": progress takes a run directory");
  auto list = list_checkpoints(dir);
  if (list.empty()) throw RunError(dir + ": no checkpoints in " + dir + "/checkpoints");
  configure_threads(1);

  // Key frequencies (a group run: key irreps) of the final model, applied to every checkpoint (as
  // the paper does).
  auto final_ck = load_checkpoint(list.back().second);
  RunProgress out;
  out.key_freqs = freqs;
  const bool group = capabilities_of(final_ck.config).has(Capability::group);
  std::optional<GroupStructure> gs;
  std::vector<size_t> key_irreps;
  std::optional<Cycle> cycle;
  if (group) {
    gs = group_structure(final_ck.config.task);
    for (auto k : freqs) {
      if (k < 1 || k > int64_t(gs->irreps.size()))
        throw UsageError("--freqs: irrep " + std::to_string(k) + " is out of range 1.." +
                         std::to_string(gs->irreps.size()) + " (a group run's progress takes irrep numbers)");
      key_irreps.push_back(size_t(k - 1));
    }
    if (key_irreps.empty())  // Chughtai et al.'s rule on the final logits (one pass over the pairs)
      key_irreps = read_restricted(model_logit_sums(model_from_checkpoint(final_ck), *gs, make_dataset(final_ck.config.task)),
                                   *gs, {})
                       .rule;
    std::sort(key_irreps.begin(), key_irreps.end());
    key_irreps.erase(std::unique(key_irreps.begin(), key_irreps.end()), key_irreps.end());
    out.key_freqs.clear();
    for (auto k : key_irreps) out.key_freqs.push_back(int64_t(k + 1));
    for (auto& r : gs->irreps) out.irrep_names.push_back(r.name);
    out.irrep_similarity.resize(list.size());
    out.irrep_excluded.resize(list.size()), out.irrep_restricted.resize(list.size());
    out.irrep_heldout.resize(list.size());
  } else {
    if (out.key_freqs.empty()) out.key_freqs = key_frequencies(model_from_checkpoint(final_ck));
    cycle = cycle_of(final_ck.config.task);
    for (auto k : out.key_freqs)
      if (k < 1 || k > n_frequencies(cycle->n))
        throw UsageError("--freqs: frequency " + std::to_string(k) + " is out of range 1.." +
                         std::to_string(n_frequencies(cycle->n)));
    std::sort(out.key_freqs.begin(), out.key_freqs.end());
    out.key_freqs.erase(std::unique(out.key_freqs.begin(), out.key_freqs.end()), out.key_freqs.end());
  }
  Dataset data = make_dataset(final_ck.config.task);

  const auto shape_of = [](const Config& c) {
    auto j = config_to_json(c);
    return nlohmann::json{{"task", j["task"]}, {"model", j["model"]}};
  };
  auto measure = [&](size_t i) {
    const std::string& path = list[i].second;
    auto ck = load_checkpoint(path);
    if (shape_of(ck.config) != shape_of(final_ck.config))
      throw RunError(path + ": task/model config differs from the run's final checkpoint " + list.back().second +
                     " (a checkpoint from another run?)");
    Model m = model_from_checkpoint(ck);
    ProgressRow row;
    row.epoch = ck.epoch, row.sum_sq_weights = m.sum_squared_weights();
    if (group) {
      auto p = irrep_progress(m, *gs, data, key_irreps);
      row.train_loss = p.train_loss, row.test_loss = p.test_loss, row.train_acc = p.train_acc, row.test_acc = p.test_acc;
      row.restricted_loss = p.restricted.all.loss, row.excluded_loss = p.excluded_loss;
      row.restricted_train_loss = p.restricted.train.loss, row.restricted_test_loss = p.restricted.test.loss;
      row.restricted_acc = p.restricted.all.acc;
      row.heldout_restricted_loss = p.restricted_heldout.loss, row.heldout_restricted_acc = p.restricted_heldout.acc;
      row.gini = p.gini_embed, row.gini_wl = p.gini_wl;
      row.excluded_by_key = p.excluded_by_key;
      out.irrep_similarity[i] = p.similarity;
      out.irrep_excluded[i] = p.excluded_each, out.irrep_restricted[i] = p.restricted_each;
      out.irrep_heldout[i] = p.heldout_each;
      return row;
    }
    auto lm = loss_measures(m, data, out.key_freqs);
    row.train_loss = lm.train_loss, row.test_loss = lm.test_loss, row.train_acc = lm.train_acc;
    row.test_acc = lm.test_acc, row.restricted_loss = lm.restricted_loss, row.excluded_loss = lm.excluded_loss;
    row.gini = gini_embed_frequencies(m, *cycle);
    row.restricted_train_loss = lm.restricted.train.loss, row.restricted_test_loss = lm.restricted.test.loss;
    row.restricted_acc = lm.restricted.all.acc;
    row.heldout_restricted_loss = lm.restricted_heldout.loss, row.heldout_restricted_acc = lm.restricted_heldout.acc;
    row.gini_wl = gini_wl_frequencies(m, *cycle);
    row.excluded_by_key = lm.excluded_by_key;
    row.trig_fve = lm.fit.frac_variance, row.alpha = lm.fit.alpha;
    return row;
  };
  out.rows.resize(list.size());
  ProgressNote note(dir + ": progress, checkpoints", list.size());
  for_each_checkpoint(list.size(), [&](size_t i) {
    out.rows[i] = measure(i);
    note.tick();
  });
  out.phases = detect_phases(out.rows);
  return out;
}

namespace {
// progress.csv's columns before the excluded_loss_k<K> ones, for write_progress and read_progress.
// progress.csv's columns, in file order: one table that writing and reading both follow. The
// ratio test_over_restricted is derived (written, never read); the excluded loss of each key
// frequency follows as excluded_loss_k<K>.
struct ProgressColumn {
  const char* name;
  double ProgressRow::*field;  // null: epoch, or the derived ratio
};
const std::vector<ProgressColumn>& progress_table() {
  static const std::vector<ProgressColumn> columns = {
      {"epoch", nullptr},
      {"train_loss", &ProgressRow::train_loss},
      {"test_loss", &ProgressRow::test_loss},
      {"train_acc", &ProgressRow::train_acc},
      {"test_acc", &ProgressRow::test_acc},
      {"restricted_loss", &ProgressRow::restricted_loss},
      {"excluded_loss", &ProgressRow::excluded_loss},
      {"gini", &ProgressRow::gini},
      {"sum_sq_weights", &ProgressRow::sum_sq_weights},
      {"restricted_train_loss", &ProgressRow::restricted_train_loss},
      {"restricted_test_loss", &ProgressRow::restricted_test_loss},
      {"restricted_acc", &ProgressRow::restricted_acc},
      {"test_over_restricted", nullptr},
      {"gini_wl", &ProgressRow::gini_wl},
      {"heldout_restricted_loss", &ProgressRow::heldout_restricted_loss},
      {"heldout_restricted_acc", &ProgressRow::heldout_restricted_acc}};
  return columns;
}
const std::vector<std::string>& progress_columns() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> n;
    for (auto& c : progress_table()) n.push_back(c.name);
    return n;
  }();
  return names;
}
}  // namespace

void write_progress(const std::string& dir, const RunProgress& progress) {
  std::vector<std::string> header = progress_columns();
  for (auto k : progress.key_freqs) header.push_back("excluded_loss_k" + std::to_string(k));
  CsvWriter csv(header);
  for (auto& r : progress.rows) {
    for (auto& c : progress_table()) {
      if (c.field) csv.field(r.*c.field);
      else if (std::string(c.name) == "epoch") csv.field(r.epoch);
      else csv.field(r.restricted_loss > 0 ? r.test_loss / r.restricted_loss : 0.0);
    }
    for (auto e : r.excluded_by_key) csv.field(e);
    csv.end_row();
  }
  atomic_write(dir + "/progress.csv", csv.text());
  // Not a group run: the logits' trig fit at every checkpoint.
  const bool fitted = !progress.rows.empty() && std::all_of(progress.rows.begin(), progress.rows.end(), [&](auto& r) {
    return r.alpha.size() == progress.key_freqs.size();
  });
  if (progress.irrep_names.empty() && fitted) {
    std::vector<std::string> cols = {"epoch", "frac_variance"};
    for (auto k : progress.key_freqs) cols.push_back("alpha_k" + std::to_string(k));
    CsvWriter fit(cols);
    for (auto& r : progress.rows) {
      fit.field(r.epoch).field(r.trig_fve);
      for (auto a : r.alpha) fit.field(a);
      fit.end_row();
    }
    atomic_write(dir + "/trig_fit.csv", fit.text());
  }
  // A group run: every irrep's logit similarity at every checkpoint.
  if (!progress.irrep_names.empty() && progress.irrep_similarity.size() == progress.rows.size()) {
    std::vector<std::string> cols = {"epoch"};
    for (auto& n : progress.irrep_names) cols.push_back(n);
    CsvWriter sim(cols);
    for (size_t i = 0; i < progress.rows.size(); ++i) {
      sim.field(progress.rows[i].epoch);
      for (auto v : progress.irrep_similarity[i]) sim.field(v);
      sim.end_row();
    }
    atomic_write(dir + "/irreps_progress.csv", sim.text());
  }
  // And every irrep's own losses at every checkpoint, one row per checkpoint and irrep.
  if (!progress.irrep_names.empty() && progress.irrep_excluded.size() == progress.rows.size()) {
    CsvWriter losses({"epoch", "irrep", "name", "similarity", "excluded_train_loss", "restricted_loss",
                      "heldout_restricted_loss"});
    for (size_t i = 0; i < progress.rows.size(); ++i)
      for (size_t k = 0; k < progress.irrep_names.size() && k < progress.irrep_excluded[i].size(); ++k)
        losses.field(progress.rows[i].epoch).field(int64_t(k + 1)).field(progress.irrep_names[k])
            .field(progress.irrep_similarity[i][k]).field(progress.irrep_excluded[i][k])
            .field(progress.irrep_restricted[i][k]).field(progress.irrep_heldout[i][k]).end_row();
    atomic_write(dir + "/irreps_losses.csv", losses.text());
  }
  if (exists(summary_path(dir))) {
    Summary s = read_summary(dir);
    s.phases = phases_json(progress.phases, progress.key_freqs);
    // A group run's key set is irreps (key_freqs holds their numbers): their names too.
    if (!progress.irrep_names.empty()) {
      nlohmann::json names = nlohmann::json::array();
      for (auto k : progress.key_freqs)
        if (k >= 1 && size_t(k) <= progress.irrep_names.size()) names.push_back(progress.irrep_names[size_t(k - 1)]);
      s.phases["key_irreps"] = names;
    }
    write_summary(dir, s);
  }
}

RunProgress read_progress(const std::string& path) {
  const CsvTable t = read_csv(path);
  const auto& fixed = progress_columns();
  const auto& header = t.header;
  RunProgress out;
  // Each named column's place in the file; every one must be there (the excluded losses per key
  // frequency follow as excluded_loss_k<K>).
  std::vector<size_t> at(fixed.size());
  for (size_t i = 0; i < fixed.size(); ++i) {
    auto it = std::find(header.begin(), header.end(), fixed[i]);
    if (it == header.end())
      throw RunError(path + ": line 1: not a progress.csv header (no " + fixed[i] + " column; grokking progress writes it)");
    at[i] = size_t(it - header.begin());
  }
  std::vector<size_t> key_cols;
  for (size_t c = 0; c < header.size(); ++c) {
    if (std::find(fixed.begin(), fixed.end(), header[c]) != fixed.end()) {
      if (std::count(header.begin(), header.end(), header[c]) > 1)
        throw RunError(path + ": line 1: column " + std::to_string(c + 1) + ": " + header[c] + " appears twice");
      continue;
    }
    const std::string prefix = "excluded_loss_k", where = path + ": line 1: column " + std::to_string(c + 1);
    char* endp = nullptr;
    const char* digits = header[c].c_str() + std::min(prefix.size(), header[c].size());
    const long k = std::strtol(digits, &endp, 10);
    if (header[c].rfind(prefix, 0) != 0 || endp == digits || *endp != '\0' || k < 1 || k > 100000)
      throw RunError(where + ": expected excluded_loss_k<K> (got '" + short_text(header[c]) + "')");
    if (std::find(out.key_freqs.begin(), out.key_freqs.end(), k) != out.key_freqs.end())
      throw RunError(where + ": " + header[c] + " appears twice");
    out.key_freqs.push_back(k);
    key_cols.push_back(c);
  }
  const auto& table = progress_table();
  for (size_t i = 0; i < t.rows.size(); ++i) {
    const auto& cells = t.rows[i];
    const std::string where = path + ": line " + std::to_string(t.lines[i]);
    if (cells.size() != header.size())
      throw RunError(where + ": " + std::to_string(cells.size()) + " columns, the header has " +
                     std::to_string(header.size()));
    auto number = [&](size_t c, bool finite) {
      char* endp = nullptr;
      const double v = std::strtod(cells[c].c_str(), &endp);
      if (cells[c].empty() || *endp != '\0' || (finite && !std::isfinite(v)))
        throw RunError(where + ": column " + header[c] + ": not a finite number ('" + short_text(cells[c]) + "')");
      return v;
    };
    ProgressRow r;
    for (size_t k = 0; k < table.size(); ++k) {
      // test_over_restricted is a ratio that write_progress may write as inf or nan; it is not read.
      if (!table[k].field && std::string(table[k].name) != "epoch") {
        (void)number(at[k], false);
        continue;
      }
      const double v = number(at[k], true);
      if (table[k].field) {
        r.*table[k].field = v;
        continue;
      }
      if (v < 0 || v > 1e15 || v != std::floor(v))
        throw RunError(where + ": column epoch: not an epoch ('" + short_text(cells[at[k]]) + "')");
      r.epoch = int64_t(v);
    }
    if (!out.rows.empty() && r.epoch <= out.rows.back().epoch)
      throw RunError(where + ": epochs must increase (" + cells[at[0]] + " after " + std::to_string(out.rows.back().epoch) +
                     ")");
    for (auto c : key_cols) r.excluded_by_key.push_back(number(c, true));
    out.rows.push_back(r);
  }
  if (out.rows.empty()) throw RunError(path + ": no rows");
  out.phases = detect_phases(out.rows);
  return out;
}

}  // namespace grokking

namespace grokking {

std::vector<IrrepCrossing> irrep_crossings(const RunProgress& p) {
  std::vector<IrrepCrossing> out;
  if (p.irrep_names.empty() || p.irrep_similarity.size() != p.rows.size()) return out;
  for (size_t i = 0; i < p.irrep_names.size(); ++i) {
    IrrepCrossing c{p.irrep_names[i], std::nullopt, std::nullopt, std::nullopt};
    for (size_t r = 0; r < p.rows.size(); ++r) {
      const bool above = i < p.irrep_similarity[r].size() && p.irrep_similarity[r][i] > kKeyIrrepSimilarity;
      if (above && !c.first_above) c.first_above = p.rows[r].epoch;
      if (above && !c.key_from) c.key_from = p.rows[r].epoch;
      if (!above) c.key_from.reset();
      if (!above && c.first_above && !c.dropped_at) c.dropped_at = p.rows[r].epoch;
      if (above) c.dropped_at.reset();
    }
    if (c.first_above) out.push_back(c);
  }
  std::stable_sort(out.begin(), out.end(), [](auto& a, auto& b) {
    const int64_t big = std::numeric_limits<int64_t>::max();
    return a.key_from.value_or(big) < b.key_from.value_or(big);
  });
  return out;
}

RunProgress read_irreps_progress(const std::string& path) {
  const CsvTable t = read_csv(path);
  if (t.header.size() < 2 || t.header[0] != "epoch")
    throw RunError(path + ": line 1: not an irreps_progress.csv header (epoch, then one column an irrep; grokking "
                   "progress writes it)");
  RunProgress out;
  out.irrep_names.assign(t.header.begin() + 1, t.header.end());
  for (size_t i = 0; i < t.rows.size(); ++i) {
    const auto& cells = t.rows[i];
    const std::string where = path + ": line " + std::to_string(t.lines[i]);
    if (cells.size() != t.header.size())
      throw RunError(where + ": " + std::to_string(cells.size()) + " columns, the header has " +
                     std::to_string(t.header.size()));
    std::vector<double> v;
    for (size_t c = 0; c < cells.size(); ++c) {
      char* endp = nullptr;
      const double x = std::strtod(cells[c].c_str(), &endp);
      if (cells[c].empty() || *endp != '\0' || !std::isfinite(x))
        throw RunError(where + ": column " + t.header[c] + ": not a finite number ('" + short_text(cells[c]) + "')");
      v.push_back(x);
    }
    ProgressRow r;
    if (v[0] < 0 || v[0] > 1e15 || v[0] != std::floor(v[0]))
      throw RunError(where + ": column epoch: not an epoch ('" + short_text(cells[0]) + "')");
    r.epoch = int64_t(v[0]);
    if (!out.rows.empty() && r.epoch <= out.rows.back().epoch)
      throw RunError(where + ": epochs must increase (" + cells[0] + " after " + std::to_string(out.rows.back().epoch) + ")");
    out.rows.push_back(r);
    out.irrep_similarity.emplace_back(v.begin() + 1, v.end());
  }
  if (out.rows.empty()) throw RunError(path + ": no rows");
  return out;
}

namespace {
// Pairwise orders over runs of the epochs `when` gives (nullopt: the irrep is left out of that run).
std::vector<IrrepOrderSummary::Pair> pairwise(
    const std::vector<std::vector<IrrepCrossing>>& runs,
    const std::function<std::optional<int64_t>(const IrrepCrossing&)>& when) {
  std::map<std::pair<std::string, std::string>, IrrepOrderSummary::Pair> pairs;
  std::vector<std::pair<std::string, std::string>> order;
  for (auto& run : runs) {
    std::vector<const IrrepCrossing*> in;
    for (auto& c : run)
      if (when(c)) in.push_back(&c);
    for (auto* x : in)
      for (auto* y : in) {
        if (x->name >= y->name) continue;  // each unordered pair once, by name
        const auto id = std::make_pair(x->name, y->name);
        if (!pairs.count(id)) order.push_back(id), pairs[id] = {id.first, id.second, 0, 0, 0};
        auto& p = pairs[id];
        const int64_t a = *when(*x), b = *when(*y);
        (a < b ? p.before : a > b ? p.after : p.tied) += 1;
      }
  }
  std::vector<IrrepOrderSummary::Pair> out;
  for (auto& id : order) {
    auto p = pairs[id];
    if (p.after > p.before) std::swap(p.first, p.second), std::swap(p.before, p.after);
    out.push_back(p);
  }
  std::stable_sort(out.begin(), out.end(), [](auto& x, auto& y) {
    return x.before + x.after + x.tied > y.before + y.after + y.tied;
  });
  return out;
}
}  // namespace

IrrepOrderSummary summarise_irrep_orders(const std::vector<std::vector<IrrepCrossing>>& runs) {
  IrrepOrderSummary s;
  s.runs = int64_t(runs.size());
  std::map<std::vector<std::string>, int64_t> sets;
  std::vector<std::vector<std::string>> first_seen;  // the sets in the order first met
  for (auto& run : runs) {
    std::vector<std::string> names;
    for (auto& c : run)
      if (c.key_from) names.push_back(c.name);
    std::sort(names.begin(), names.end());
    if (!sets.count(names)) first_seen.push_back(names);
    ++sets[names];
  }
  for (auto& names : first_seen) s.key_sets.push_back({names, sets[names]});
  std::stable_sort(s.key_sets.begin(), s.key_sets.end(), [](auto& a, auto& b) { return a.runs > b.runs; });
  s.pairs = pairwise(runs, [](const IrrepCrossing& c) { return c.key_from; });
  s.drop_pairs = pairwise(runs, [](const IrrepCrossing& c) { return c.dropped_at; });
  return s;
}

}  // namespace grokking
