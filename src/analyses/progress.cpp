// `grokking progress`: the progress measures over a run's checkpoints, and its phases (Nanda et al. 2023).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <optional>

#include "common.hpp"
#include "grokking/irreps.hpp"
#include "grokking/error.hpp"
#include "grokking/progress.hpp"
#include "grokking/rundir.hpp"
#include "grokking/text.hpp"
#include "grokking/train.hpp"

namespace grokking {
using namespace analyses;

const AnalysisKind& progress_analysis();

namespace {

// What the key set is: frequencies, or a group run's irreps by name (their numbers are the
// irreps table's, not frequencies).
std::string key_text(const RunProgress& p) {
  if (p.irrep_names.empty()) return "key frequencies " + join_numbers(p.key_freqs);
  std::string names;
  for (auto k : p.key_freqs)
    names += (names.empty() ? "" : ", ") +
             (k >= 1 && size_t(k) <= p.irrep_names.size() ? p.irrep_names[size_t(k - 1)] : "#" + std::to_string(k));
  return "key irreps " + (names.empty() ? std::string("none") : names) + " (numbers " + join_numbers(p.key_freqs) +
         " of grokking irreps' table)";
}

int run_progress(const AnalysisOptions& opts) {
  const auto t0 = std::chrono::steady_clock::now();
  const std::string dir = opts.path;
  if (!is_dir(dir)) throw UsageError(dir + ": progress takes a run directory");
  require_applies(progress_analysis(), load_run_config(dir), dir);
  RunProgress progress;
  if (opts.from_csv) {
    if (!opts.freqs.empty()) throw UsageError("--from-csv: the key frequencies are progress.csv's; no --freqs");
    if (!is_dir(dir)) throw UsageError(dir + ": progress takes a run directory");
    progress = read_progress(dir + "/progress.csv");
    // A group run's irreps by name, from the table progress wrote beside it.
    if (exists(dir + "/irreps_progress.csv")) {
      const RunProgress irreps = read_irreps_progress(dir + "/irreps_progress.csv");
      if (irreps.rows.size() == progress.rows.size())
        progress.irrep_names = irreps.irrep_names, progress.irrep_similarity = irreps.irrep_similarity;
    }
  } else {
    progress = measure_progress(dir, opts.freqs);
  }
  write_progress(dir, progress);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const auto& rows = progress.rows;
  const auto& ph = progress.phases;
  if (opts.quiet) return 0;
  if (opts.json) {
    nlohmann::json j = {{"run_dir", dir},
                        {"checkpoints", rows.size()},
                        {"seconds", secs},
                        {"phases", phases_json(ph, progress.key_freqs)}};
    const auto crossings = irrep_crossings(progress);
    if (!progress.irrep_names.empty()) {
      j["irrep_order"] = nlohmann::json::array();
      for (auto& c : crossings)
        j["irrep_order"].push_back({{"irrep", c.name}, {"first_above", optional_json(c.first_above)},
                                    {"key_from", optional_json(c.key_from)}, {"dropped_at", optional_json(c.dropped_at)}});
    }
    std::printf("%s\n", j.dump(2).c_str());
    return 0;
  }
  auto e = [](const std::optional<int64_t>& v) { return v ? std::to_string(*v) : std::string("?"); };
  std::printf("%s: %zu checkpoints in %.1fs; %s -> %s/progress.csv\n", dir.c_str(), rows.size(), secs,
              key_text(progress).c_str(), dir.c_str());
  std::printf("%8s %11s %11s %9s %11s %11s %7s %10s\n", "epoch", "train loss", "test loss", "test acc", "restricted",
              "excluded", "gini", "sum w^2");
  const size_t stride = std::max<size_t>(1, rows.size() / 25);
  for (size_t i = 0; i < rows.size(); ++i)
    if (i % stride == 0 || i + 1 == rows.size()) {
      auto& r = rows[i];
      std::printf("%8lld %11.3e %11.3e %9.4f %11.3e %11.3e %7.3f %10.1f\n", (long long)r.epoch, r.train_loss,
                  r.test_loss, r.test_acc, r.restricted_loss, r.excluded_loss, r.gini, r.sum_sq_weights);
    }
  if (const auto crossings = irrep_crossings(progress); !crossings.empty()) {
    std::printf("irreps over the key rule (logit similarity > %.3f), in the order they became key for good (first "
                "crossing in brackets):", kKeyIrrepSimilarity);
    for (auto& c : crossings)
      if (c.key_from) std::printf(" %s %lld (%s);", c.name.c_str(), (long long)*c.key_from, e(c.first_above).c_str());
    std::printf("\n  and dropped below it for good:");
    auto dropped = crossings;
    std::stable_sort(dropped.begin(), dropped.end(), [](auto& a, auto& b) {
      return a.dropped_at.value_or(std::numeric_limits<int64_t>::max()) < b.dropped_at.value_or(std::numeric_limits<int64_t>::max());
    });
    for (auto& c : dropped)
      if (c.dropped_at) std::printf(" %s %lld (first above %s);", c.name.c_str(), (long long)*c.dropped_at, e(c.first_above).c_str());
    std::printf("\n  (a memorising network passes the rule with every irrep: read the drop-outs, not the first crossings)\n");
  }
  if (ph.grokked && ph.changes.size() == 3) {
    std::printf("phases%s: memorisation 0-%s | circuit formation %s-%s | cleanup %s-%s\n",
                ph.failed.empty() ? "" : " (best fit, see below)", e(ph.memorisation_end).c_str(),
                e(ph.memorisation_end).c_str(), e(ph.circuit_formation_end).c_str(),
                e(ph.circuit_formation_end).c_str(), e(ph.cleanup_end).c_str());
    // What each phase did to the measures that define it.
    auto dec = [](const double* v) { return std::log10(std::max(v[1], 1e-12)) - std::log10(std::max(v[0], 1e-12)); };
    const auto& m = ph.changes[0];
    const auto& c = ph.changes[1];
    const auto& k = ph.changes[2];
    std::printf("  memorisation:      train loss %+.1f decades, excluded loss %+.1f decades\n", dec(m.train_loss),
                dec(m.excluded_loss));
    std::printf("  circuit formation: excluded loss %+.1f decades, weight norm %+.0f%%, test loss %+.2f decades\n",
                dec(c.excluded_loss), 100 * (c.sum_sq_weights[1] / c.sum_sq_weights[0] - 1), dec(c.test_loss));
    std::printf("  cleanup:           test loss %+.1f decades, restricted loss %+.1f decades, weight norm %+.0f%%, "
                "Gini %.2f -> %.2f\n",
                dec(k.test_loss), dec(k.restricted_loss), 100 * (k.sum_sq_weights[1] / k.sum_sq_weights[0] - 1),
                k.gini[0], k.gini[1]);
    std::printf("  %s\n", ph.failed.empty() ? "each phase meets the paper's definition of it" : ph.note.c_str());
    for (auto& [what, holds] : ph.not_in_rule)
      std::printf("  not part of the rule: %s: %s\n", what.c_str(), holds ? "yes" : "no");
  } else
    std::printf("phases: %s%s\n", ph.note.c_str(),
                ph.memorisation_end ? (" (memorisation ended at " + e(ph.memorisation_end) + ")").c_str() : "");
  return 0;
}

}  // namespace

const AnalysisKind& progress_analysis() {
  static const AnalysisKind k = [] {
    AnalysisKind a;
    a.name = "progress";
    a.doc = "Progress measures over every checkpoint of a run, and its phases";
    a.scope = AnalysisKind::Scope::run;
    a.needs = {Capability::pairs, Capability::pair_readout};
    a.needs_any = {Capability::cycle, Capability::group};
    a.files = {{"progress.csv"}, {"trig_fit.csv", uint32_t(Capability::cycle), uint32_t(Capability::group)}, {"irreps_progress.csv", uint32_t(Capability::group)}, {"irreps_losses.csv", uint32_t(Capability::group)}};
    a.figures = {"progress", "excluded", "trig_fit", "irreps"};
    a.options = {AnalysisOption::freqs, AnalysisOption::from_csv};
    a.source = "Nanda et al. 2023, sections 5.1-5.2 (restricted and excluded loss, the three phases); Chughtai et al. 2023 for groups";
    a.run = run_progress;
    return a;
  }();
  return k;
}

}  // namespace grokking
