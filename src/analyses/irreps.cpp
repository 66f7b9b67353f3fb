// `grokking irreps`: a group model by irreducible representations (Chughtai et al. 2023).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>

#include "common.hpp"
#include "grokking/error.hpp"
#include "grokking/groups.hpp"
#include "grokking/irreps.hpp"
#include "grokking/rundir.hpp"
#include "grokking/text.hpp"

namespace grokking {
using namespace analyses;

namespace {

// irreps.csv: every irrep's measures at a checkpoint, and which are key.
void write_files(const std::string& run_dir, const IrrepReport& r) {
  CsvWriter csv({"irrep", "name", "dim", "component_dim", "similarity", "fve", "embed_frac", "unembed_frac", "wl_frac",
                 "hidden_frac", "excluded_train_loss", "excluded_train_acc", "key"});
  for (size_t i = 0; i < r.irreps.size(); ++i) {
    const auto& m = r.irreps[i];
    csv.field(int64_t(i + 1)).field(m.name).field(m.dim).field(m.component_dim).field(m.similarity).field(m.fve);
    csv.field(m.embed_frac).field(m.unembed_frac).field(m.wl_frac).field(m.hidden_frac).field(m.excluded.loss);
    csv.field(m.excluded.acc).field(int64_t(std::count(r.key.begin(), r.key.end(), i))).end_row();
  }
  atomic_write(run_dir + "/irreps.csv", csv.text());
}

const AnalysisKind& kind();

int run(const AnalysisOptions& opts) {
  auto [ck, run_dir] = load_for_analysis(kind(), opts.path);
  Model model = model_from_checkpoint(ck);
  const GroupStructure gs = group_structure(ck.config.task);
  std::vector<size_t> key;
  for (auto k : opts.freqs) {
    if (k < 1 || k > int64_t(gs.irreps.size()))
      throw UsageError("--irreps: irrep " + std::to_string(k) + " is out of range 1.." + std::to_string(gs.irreps.size()));
    key.push_back(size_t(k - 1));
  }
  const auto r = analyse_irreps(model, gs, key, opts.draws, opts.seed);
  if (!run_dir.empty()) write_files(run_dir, r);
  if (opts.quiet) return 0;
  auto split = [](const Splits& s) {
    return nlohmann::json{{"train", split_json(s.train)}, {"test", split_json(s.test)}, {"all", split_json(s.all)}};
  };
  std::vector<std::string> key_names;
  for (auto k : r.key) key_names.push_back(r.irreps[k].name);
  if (opts.json) {
    nlohmann::json j = {{"checkpoint", ck.path}, {"epoch", ck.epoch},     {"group", r.group},
                        {"operation", r.operation}, {"order", r.order},    {"key_irreps", key_names},
                        {"key_rule", "non-trivial irreps with logit similarity > 0.005 (Chughtai et al.)"},
                        {"fve_total", r.fve_total}, {"model", split(r.model)}, {"restricted", split(r.restricted)},
                        {"excluded", split(r.excluded)}, {"gini_embed", r.gini_embed}, {"gini_wl", r.gini_wl},
                        {"irreps", nlohmann::json::array()}};
    std::vector<std::string> matched;
    for (auto m : r.matched) matched.push_back(r.irreps[m].name);
    j["controls"] = {{"matched_irreps", matched}, {"matched_excluded", split(r.matched_excluded)},
                     {"random_draws", r.random_draws}, {"random_excluded", split(r.random_excluded)}};
    for (size_t i = 0; i < r.irreps.size(); ++i) {
      const auto& m = r.irreps[i];
      j["irreps"].push_back({{"index", i + 1},          {"name", m.name},           {"dim", m.dim},
                             {"component_dim", m.component_dim}, {"similarity", m.similarity}, {"fve", m.fve},
                             {"embed_frac", m.embed_frac}, {"unembed_frac", m.unembed_frac}, {"wl_frac", m.wl_frac},
                             {"hidden_frac", m.hidden_frac}, {"excluded_train", split_json(m.excluded)},
                             {"key", std::count(r.key.begin(), r.key.end(), i) > 0}});
    }
    std::printf("%s\n", j.dump(2).c_str());
    return 0;
  }
  std::string keys;
  for (auto& k : key_names) keys += (keys.empty() ? "" : ", ") + k;
  std::printf("checkpoint %s (epoch %lld); group %s (order %lld), operation %s\n", ck.path.c_str(), (long long)ck.epoch,
              r.group.c_str(), (long long)r.order, r.operation.c_str());
  std::printf("key irreps%s: %s  (logit similarity > %.3f; the non-trivial irreps explain %.1f%% of the centred logits)\n",
              opts.freqs.empty() ? "" : " (--irreps)", keys.empty() ? "none" : keys.c_str(), kKeyIrrepSimilarity,
              100 * r.fve_total);
  std::printf("\n%3s  %-26s %4s %6s  %10s %7s  %8s %8s %8s %8s  %12s %9s\n", "#", "irrep", "dim", "space", "similarity",
              "FVE", "embed", "unembed", "W_L", "hidden", "excluded", "acc");
  for (size_t i = 0; i < r.irreps.size(); ++i) {
    const auto& m = r.irreps[i];
    const bool k = std::count(r.key.begin(), r.key.end(), i) > 0;
    std::printf("%3zu  %-26s %4lld %6lld  %10.4f %6.1f%%  %7.1f%% %7.1f%% %7.1f%% %7.1f%%  %12.3e %9.4f%s\n", i + 1,
                m.name.c_str(), (long long)m.dim, (long long)m.component_dim, m.similarity, 100 * m.fve,
                100 * m.embed_frac, 100 * m.unembed_frac, 100 * m.wl_frac, 100 * m.hidden_frac, m.excluded.loss,
                m.excluded.acc, k ? "  *" : "");
  }
  std::printf("(embed, unembed, W_L, hidden: the share of their squared norm in the irrep's isotypic component; "
              "excluded: train loss and accuracy with that irrep removed from the logits)\n\n");
  const double classes = double(r.order);
  auto row = [](const char* what, const Splits& s) {
    std::printf("%-46s train %10.3e / %6.4f   test %10.3e / %6.4f\n", what, s.train.loss, s.train.acc, s.test.loss,
                s.test.acc);
  };
  row("model as is", r.model);
  row("keep only the key irreps (restricted)", r.restricted);
  row("remove the key irreps (excluded)", r.excluded);
  if (!r.matched.empty()) {
    std::string m;
    for (auto i : r.matched) m += (m.empty() ? "" : ", ") + r.irreps[i].name;
    row(("remove matched non-key irreps (" + m + ")").c_str(), r.matched_excluded);
  }
  if (r.random_draws > 0)
    row(("remove random directions of the same dimension (" + std::to_string(r.random_draws) + " draws)").c_str(),
        r.random_excluded);
  std::printf("uniform guess: loss ln|G| = %.3f, accuracy 1/|G| = %.4f\n", std::log(classes), 1.0 / classes);
  return 0;
}

}  // namespace

const AnalysisKind& irreps_analysis() { return kind(); }

namespace {
const AnalysisKind& kind() {
  static const AnalysisKind k = [] {
    AnalysisKind a;
    a.name = "irreps";
    a.doc = "A group run by irreducible representations: logit similarity, key irreps, embeddings, hidden neurons, "
            "excluded and restricted loss with controls";
    a.scope = AnalysisKind::Scope::checkpoint;
    a.needs = {Capability::pairs, Capability::group, Capability::pair_readout};
    a.files = {{"irreps.csv"}};
    a.options = {AnalysisOption::irreps, AnalysisOption::draws, AnalysisOption::seed};
    a.source = "Chughtai et al. 2023, section 5 and rep_theory/utils/metrics.py (logit similarity, the 0.005 key rule)";
    a.report = {{"Irreps (key: logit similarity above 0.005)", "irreps.csv"}};
    a.run = run;
    return a;
  }();
  return k;
}
}  // namespace

}  // namespace grokking
