// `grokking irreps`: a group model by irreducible representations (Chughtai et al. 2023).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <optional>

#include "common.hpp"
#include "grokking/error.hpp"
#include "grokking/groups.hpp"
#include "grokking/irreps.hpp"
#include "grokking/rundir.hpp"
#include "grokking/text.hpp"

namespace grokking {
using namespace analyses;

const AnalysisKind& irreps_analysis();

namespace {

// irreps.csv: every irrep's measures at a checkpoint, and which are key.
void write_files(const std::string& run_dir, const IrrepReport& r) {
  CsvWriter csv({"irrep", "name", "dim", "component_dim", "similarity", "fve", "embed_frac", "unembed_frac", "wl_frac",
                 "hidden_frac", "excluded_train_loss", "excluded_train_acc", "key", "theirs_embed_x", "theirs_embed_y",
                 "theirs_hidden", "theirs_excluded_loss", "theirs_hidden_x", "theirs_hidden_y"});
  for (size_t i = 0; i < r.irreps.size(); ++i) {
    const auto& m = r.irreps[i];
    csv.field(int64_t(i + 1)).field(m.name).field(m.dim).field(m.component_dim).field(m.similarity).field(m.fve);
    csv.field(m.embed_frac).field(m.unembed_frac).field(m.wl_frac).field(m.hidden_frac).field(m.excluded.loss);
    csv.field(m.excluded.acc).field(int64_t(std::count(r.key.begin(), r.key.end(), i)));
    csv.field(m.theirs_embed_x).field(m.theirs_embed_y).field(m.theirs_hidden).field(m.theirs_excluded_loss);
    csv.field(m.theirs_hidden_x).field(m.theirs_hidden_y).end_row();
  }
  atomic_write(run_dir + "/irreps.csv", csv.text());
}

// The same reading at the run's first checkpoint after memorisation (train accuracy 100 %), with
// the key irreps of the checkpoint read: what a restricted figure is worth beside a model that
// has only memorised. Empty where the run has no such earlier checkpoint.
struct MemorisedReading {
  int64_t epoch = -1;
  double test_acc = 0, all_loss = 0, theirs_restricted = 0;
  RestrictedReading reading;
};
MemorisedReading at_memorisation(const std::string& run_dir, const Checkpoint& ck, const GroupStructure& gs,
                                 const std::vector<size_t>& key) {
  MemorisedReading out;
  if (run_dir.empty()) return out;
  std::optional<int64_t> memorised;
  try {
    memorised = read_summary(run_dir).memorised_epoch;
  } catch (const RunError&) {
    return out;  // no summary yet (a run in progress): no baseline
  }
  if (!memorised) return out;
  for (auto& [epoch, path] : list_checkpoints(run_dir)) {
    if (epoch < *memorised) continue;
    if (epoch >= ck.epoch) break;
    const Model m = model_from_checkpoint(load_checkpoint(path));
    torch::NoGradGuard no_grad;
    const Dataset data = make_dataset(ck.config.task);
    out.epoch = epoch;
    Splits ev;
    const LogitSums sums = model_logit_sums(m, gs, data, &ev);
    out.test_acc = ev.test.acc, out.all_loss = ev.all.loss;
    out.reading = read_restricted(sums, gs, key);
    out.theirs_restricted = theirs_restricted_loss(m, gs, key);
    break;
  }
  return out;
}

nlohmann::json their_table_json(const TheirTable& t) {
  nlohmann::json j = {{"source", "Chughtai et al., rep_theory/paper/tables.py columns"},
                      {"embed_x_fve", t.embed_x}, {"embed_y_fve", t.embed_y}, {"unembed_fve", t.unembed}};
  if (t.has_hidden) {
    j["mlp_fve"] = t.mlp, j["mlp_xy_fve"] = t.mlp_xy;
    j["hidden_excluded_loss_train"] = t.hidden_excluded_loss, j["hidden_restricted_loss_all"] = t.hidden_restricted_loss;
  }
  return j;
}

nlohmann::json reading_json(const RestrictedReading& r, const GroupStructure& gs) {
  std::vector<std::string> rule;
  for (auto i : r.rule) rule.push_back(gs.irreps[i].name);
  return {{"restricted", {{"train", split_json(r.restricted.train)}, {"test", split_json(r.restricted.test)}}},
          {"heldout_test", split_json(r.heldout)}, {"rule_irreps", rule}, {"rule_count", rule.size()}};
}

int run_irreps(const AnalysisOptions& opts) {
  auto [ck, run_dir] = load_for_analysis(irreps_analysis(), opts.path);
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
  const MemorisedReading mem = opts.quiet ? MemorisedReading{} : at_memorisation(run_dir, ck, gs, r.key);
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
                        {"restricted_heldout_test", split_json(r.restricted_heldout)},
                        {"memoriser_baseline", reading_json(r.memoriser, gs)},
                        {"excluded", split(r.excluded)}, {"gini_embed", r.gini_embed}, {"gini_wl", r.gini_wl},
                        {"theirs", {{"source", "Chughtai et al., rep_theory/utils/metrics.py (SymmetricMetrics), "
                                               "the paper's version (b971ad1); restricted_loss_all and "
                                               "total_excluded_loss_all through the embeddings (df7d699)"},
                                    {"table", their_table_json(r.theirs_table)},
                                    {"restricted_loss_all", r.theirs_restricted_loss},
                                    {"total_excluded_loss_all", r.theirs_total_excluded_loss}}},
                        {"irreps", nlohmann::json::array()}};
    std::vector<std::string> matched;
    for (auto m : r.matched) matched.push_back(r.irreps[m].name);
    if (mem.epoch >= 0)
      j["at_memorisation"] = {{"epoch", mem.epoch},
                              {"test_acc", mem.test_acc},
                              {"all_loss", mem.all_loss},
                              {"theirs_restricted_loss_all", mem.theirs_restricted},
                              {"reading", reading_json(mem.reading, gs)}};
    j["controls"] = {{"matched_irreps", matched}, {"matched_excluded", split(r.matched_excluded)},
                     {"random_draws", r.random_draws}, {"random_excluded", split(r.random_excluded)}};
    for (size_t i = 0; i < r.irreps.size(); ++i) {
      const auto& m = r.irreps[i];
      j["irreps"].push_back({{"index", i + 1},          {"name", m.name},           {"dim", m.dim},
                             {"component_dim", m.component_dim}, {"similarity", m.similarity}, {"fve", m.fve},
                             {"embed_frac", m.embed_frac}, {"unembed_frac", m.unembed_frac}, {"wl_frac", m.wl_frac},
                             {"hidden_frac", m.hidden_frac}, {"excluded_train", split_json(m.excluded)},
                             {"theirs", {{"embed_x", m.theirs_embed_x}, {"embed_y", m.theirs_embed_y},
                                         {"hidden_x", m.theirs_hidden_x}, {"hidden_y", m.theirs_hidden_y},
                                         {"hidden", m.theirs_hidden}, {"excluded_loss_all", m.theirs_excluded_loss}}},
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
  std::printf("Chughtai et al.'s own measures (rep_theory/utils/metrics.py, the paper's version): the share of the "
              "total embedding of x and of y (embedding times first layer; a transformer's W_E), and of the centred "
              "hidden activations that is a function of a, of b, of the label (x, y, xy); the loss over all pairs "
              "with the irrep removed from the total embeddings (their earlier code):\n");
  std::printf("%3s  %-26s %8s %8s  %8s %8s %8s  %12s\n", "#", "irrep", "x embed", "y embed", "hidden x", "y", "xy",
              "excluded");
  for (size_t i = 0; i < r.irreps.size(); ++i) {
    const auto& m = r.irreps[i];
    std::printf("%3zu  %-26s %7.1f%% %7.1f%%  %7.1f%% %7.1f%% %7.1f%%  %12.3e%s\n", i + 1, m.name.c_str(),
                100 * m.theirs_embed_x, 100 * m.theirs_embed_y, 100 * m.theirs_hidden_x, 100 * m.theirs_hidden_y,
                100 * m.theirs_hidden, m.theirs_excluded_loss, std::count(r.key.begin(), r.key.end(), i) ? "  *" : "");
  }
  const TheirTable& tt = r.theirs_table;
  std::printf("their table's columns (key irreps): W_a FVE %.1f%%, W_b FVE %.1f%%, W_U FVE %.1f%%", 100 * tt.embed_x,
              100 * tt.embed_y, 100 * tt.unembed);
  if (tt.has_hidden)
    std::printf(", MLP FVE %.1f%%, MLP rho(ab) FVE %.1f%%, Exc. loss %.3e (hidden layer, train pairs), Res. loss %.3e "
                "(hidden layer, all pairs)",
                100 * tt.mlp, 100 * tt.mlp_xy, tt.hidden_excluded_loss, tt.hidden_restricted_loss);
  std::printf("\nthrough the embeddings (their earlier code): restricted loss %.3e (key irreps kept, all pairs), total "
              "excluded loss %.3e (key irreps removed)\n\n",
              r.theirs_restricted_loss, r.theirs_total_excluded_loss);
  const double classes = double(r.order);
  // A row of losses and accuracies; `which`, the irreps it names, after them (they vary with the
  // seed and the machine where the numbers do not).
  auto row = [](const char* what, const Splits& s, const std::string& which = "") {
    std::printf("%-46s train %10.3e / %6.4f   test %10.3e / %6.4f%s\n", what, s.train.loss, s.train.acc, s.test.loss,
                s.test.acc, which.empty() ? "" : ("   (" + which + ")").c_str());
  };
  row("model as is", r.model);
  row("keep only the key irreps (restricted, all pairs)", r.restricted);
  auto heldout = [](const char* what, const Split& s) {
    std::printf("%-46s %34s test %10.3e / %6.4f\n", what, "", s.loss, s.acc);
  };
  heldout("  held out: test pairs from test pairs alone", r.restricted_heldout);
  row("remove the key irreps (excluded)", r.excluded);
  if (!r.matched.empty()) {
    std::string m;
    for (auto i : r.matched) m += (m.empty() ? "" : ", ") + r.irreps[i].name;
    row("remove as many non-key irreps (matched)", r.matched_excluded, m);
  }
  if (r.random_draws > 0)
    row(("remove random directions of the same dimension (" + std::to_string(r.random_draws) + " draws)").c_str(),
        r.random_excluded);
  std::printf("uniform guess: loss ln|G| = %.3f, accuracy 1/|G| = %.4f\n", std::log(classes), 1.0 / classes);
  // The controls every restricted figure needs: what a model that has only memorised scores.
  std::printf("\nrestricted loss beside memorisers (the same key irreps; \"rule\": how many irreps the 0.005 rule "
              "would call key on those logits):\n");
  auto baseline = [&](const std::string& what, const RestrictedReading& b) {
    std::printf("  %-52s restricted test %6.4f, held out %6.4f; rule %zu of %zu\n", what.c_str(), b.restricted.test.acc,
                b.heldout.acc, b.rule.size(), r.irreps.size() - 1);
  };
  RestrictedReading here{r.restricted, r.restricted_heldout, {}};
  for (size_t i = 0; i < r.irreps.size(); ++i)
    if (!gs.irreps[i].trivial() && r.irreps[i].similarity > kKeyIrrepSimilarity) here.rule.push_back(i);
  baseline("this checkpoint (test accuracy " + format_number(r.model.test.acc, "%.3f") + ")", here);
  if (mem.epoch >= 0)
    baseline("epoch " + std::to_string(mem.epoch) + ", just after memorisation (test acc " +
                 format_number(mem.test_acc, "%.3f") + ")",
             mem.reading);
  baseline("a lookup table of this split (test accuracy chance)", r.memoriser);
  std::printf("(restricted accuracy a memoriser reaches says nothing of a circuit; the held-out one does)\n");
  if (mem.epoch >= 0)
    std::printf("their restricted loss (through the embeddings, all pairs) at epoch %lld: %.3e (its loss as is %.3e); "
                "here %.3e (as is %.3e)\n",
                (long long)mem.epoch, mem.theirs_restricted, mem.all_loss, r.theirs_restricted_loss, r.model.all.loss);
  return 0;
}

}  // namespace

const AnalysisKind& irreps_analysis() {
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
    a.run = run_irreps;
    return a;
  }();
  return k;
}

}  // namespace grokking
