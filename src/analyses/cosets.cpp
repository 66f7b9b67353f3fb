// `grokking cosets`: a group model's hidden units read by the cosets of its subgroups (Stander et
// al. 2024), beside the irreps' account of the same units (Chughtai et al. 2023).
#include <algorithm>
#include <cmath>
#include <cstdio>

#include "common.hpp"
#include "grokking/cosets.hpp"
#include "grokking/irreps.hpp"
#include "grokking/rundir.hpp"
#include "grokking/text.hpp"

namespace grokking {
using namespace analyses;

const AnalysisKind& cosets_analysis();

namespace {

const std::string& side(const CosetMeasure& m) { return m.side; }

// The same class and side measured on another report (the untrained model's).
const CosetMeasure* same(const CosetReport& r, const CosetMeasure& m) {
  for (auto& o : r.measures)
    if (o.subgroup == m.subgroup && o.order == m.order && o.conjugates == m.conjugates && o.side == m.side) return &o;
  return nullptr;
}

// How far a class and side rises above the untrained model's figure (mean of a and b).
double gain(const CosetReport& init, const CosetMeasure& m) {
  const CosetMeasure* i = same(init, m);
  return (m.fve_a + m.fve_b) / 2 - (i ? (i->fve_a + i->fve_b) / 2 : 0);
}

// Which account explains more, in one line: by the units (each beside the untrained model's
// figure, since a larger space of functions explains more of anything) and by what the model
// keeps of its loss with only that structure (Stander et al.'s coset ablation beside Chughtai et
// al.'s restricted loss). The coset class is the best explained, the coarsest of equals.
std::string verdict_of(const CosetReport& r, const CosetReport& init) {
  if (r.measures.empty()) return "no proper subgroups: nothing to read by cosets";
  // The class and side that rises most above the untrained model's figure and whose structure,
  // kept alone, leaves something out.
  const CosetMeasure* best = nullptr;
  for (auto& m : r.measures)
    if (std::isfinite(m.kept_loss) && m.kept_dims < r.order && (!best || gain(init, m) > gain(init, *best))) best = &m;
  if (!best) return "no subgroup's cosets leave anything out";
  const CosetMeasure* i = same(init, *best);
  const double gain_c = gain(init, *best);
  const double gain_i = (r.irrep_fve_a + r.irrep_fve_b) / 2 - (init.irrep_fve_a + init.irrep_fve_b) / 2;
  const bool loss_c = best->kept_loss < r.irrep_kept_loss, units_c = gain_c > gain_i;
  const bool vacuous = r.irrep_dims >= r.order - 1;  // every non-trivial irrep key: every function kept
  const char* who = vacuous ? "no comparison (the 0.005 rule calls every non-trivial irrep key, so the irreps keep "
                              "everything)"
                    : loss_c && units_c ? "cosets explain more"
                    : !loss_c && !units_c ? "irreps explain more"
                                          : "split";
  char buf[600];
  std::snprintf(buf, sizeof buf,
                "%s: the cosets of %s (%s) raise the units' share from %.1f%% untrained to %.1f%%, the key irreps from "
                "%.1f%% to %.1f%%; with only that structure in the embeddings the loss is %.3g (cosets) against %.3g "
                "(irreps), the model's %.3g",
                who, best->subgroup.c_str(), side(*best).c_str(), i ? 50 * (i->fve_a + i->fve_b) : NAN,
                50 * (best->fve_a + best->fve_b), 50 * (init.irrep_fve_a + init.irrep_fve_b),
                50 * (r.irrep_fve_a + r.irrep_fve_b), best->kept_loss, r.irrep_kept_loss, r.model_loss);
  return buf;
}

// The share of the logits a class's conjugates' indicators hold, on its better side.
double logit_share(const CosetMeasure& m) { return std::max(m.logit_fve_left, m.logit_fve_right); }

// The subgroup classes (each once: its pairings of sides share the logits' shares), the one
// whose conjugates' indicators hold most of the logits first.
std::vector<const CosetMeasure*> classes_by_logits(const CosetReport& r) {
  std::vector<const CosetMeasure*> out;
  for (auto& m : r.measures)
    if (std::none_of(out.begin(), out.end(), [&](auto* o) { return o->subgroup == m.subgroup && o->order == m.order && o->conjugates == m.conjugates; }))
      out.push_back(&m);
  std::stable_sort(out.begin(), out.end(), [](auto* x, auto* y) { return logit_share(*x) > logit_share(*y); });
  return out;
}

// Which account explains more of the logits, in one line ("" without key irreps or subgroups).
std::string logits_verdict(const CosetReport& r) {
  const auto classes = classes_by_logits(r);
  if (classes.empty() || r.key.empty()) return "";
  const CosetMeasure* best = classes.front();
  const double coset = logit_share(*best), irreps = r.irrep_logit_fve;
  char buf[400];
  std::snprintf(buf, sizeof buf,
                "on the logits, %s: the key irreps' characters hold %.1f%%, the cosets of %s %.1f%%, of %.1f%% that any "
                "function of where the class sits from the answer holds",
                irreps > coset ? "irreps explain more" : coset > irreps ? "cosets explain more" : "as much", 100 * irreps,
                best->subgroup.c_str(), 100 * coset, 100 * std::max(r.logit_ceiling_left, r.logit_ceiling_right));
  return buf;
}

void write_file(const std::string& run_dir, const CosetReport& r, const CosetReport& init) {
  CsvWriter csv({"subgroup", "order", "index", "conjugates", "normal", "side", "fve_a", "fve_b", "units_a", "units_b",
                 "chance", "init_fve_a", "init_fve_b", "theirs_ratio_a", "theirs_ratio_b", "kept_dims", "kept_loss",
                 "kept_acc", "logit_fve_left", "logit_fve_right", "init_logit_fve_left", "init_logit_fve_right"});
  for (auto& m : r.measures) {
    const CosetMeasure* i = same(init, m);
    csv.field(m.subgroup).field(m.order).field(m.index).field(m.conjugates).field(int64_t(m.normal)).field(side(m));
    csv.field(m.fve_a).field(m.fve_b).field(m.units_a).field(m.units_b).field(m.chance);
    csv.field(i ? i->fve_a : NAN).field(i ? i->fve_b : NAN).field(m.theirs_ratio_a).field(m.theirs_ratio_b);
    csv.field(m.kept_dims).field(m.kept_loss).field(m.kept_acc).field(m.logit_fve_left).field(m.logit_fve_right);
    csv.field(i ? i->logit_fve_left : NAN).field(i ? i->logit_fve_right : NAN).end_row();
  }
  atomic_write(run_dir + "/cosets.csv", csv.text());
}

int run_cosets(const AnalysisOptions& opts) {
  auto [ck, run_dir] = load_for_analysis(cosets_analysis(), opts.path);
  const Model model = model_from_checkpoint(ck);
  const GroupStructure gs = group_structure(ck.config.task);
  const CosetReport r = analyse_cosets(model, gs);
  // The control: the same config's model as initialised (its train.seed), untrained.
  const CosetReport init = analyse_cosets(Model(ck.config), gs, &r.key);
  if (!run_dir.empty()) write_file(run_dir, r, init);
  if (opts.quiet) return 0;
  const std::string verdict = verdict_of(r, init);
  if (opts.json) {
    nlohmann::json j = {{"checkpoint", ck.path}, {"epoch", ck.epoch}, {"group", r.group}, {"order", r.order},
                        {"units", r.units}, {"live_units", r.live_units}, {"verdict", verdict},
                        {"model", {{"loss", r.model_loss}, {"acc", r.model_acc}}}, {"uniform_loss", r.uniform_loss},
                        {"irreps", {{"key", r.key_irreps}, {"dims", r.irrep_dims}, {"fve_a", r.irrep_fve_a},
                                    {"fve_b", r.irrep_fve_b}, {"init_fve_a", init.irrep_fve_a}, {"init_fve_b", init.irrep_fve_b},
                                    {"kept_loss", r.irrep_kept_loss},
                                    {"kept_acc", r.irrep_kept_acc}, {"logit_fve", r.irrep_logit_fve},
                                    {"init_logit_fve", init.irrep_logit_fve}}},
                        {"logits", {{"verdict", logits_verdict(r)},
                                    {"ceiling_left", r.logit_ceiling_left}, {"ceiling_right", r.logit_ceiling_right},
                                    {"init_ceiling_left", init.logit_ceiling_left},
                                    {"init_ceiling_right", init.logit_ceiling_right}}},
                        {"subgroups", nlohmann::json::array()}};
    for (auto& m : r.measures) {
      const CosetMeasure* i = same(init, m);
      j["subgroups"].push_back({{"subgroup", m.subgroup}, {"order", m.order}, {"index", m.index},
                                {"conjugates", m.conjugates}, {"normal", m.normal}, {"side", side(m)},
                                {"fve_a", m.fve_a}, {"fve_b", m.fve_b}, {"units_a", m.units_a}, {"units_b", m.units_b},
                                {"chance", m.chance}, {"init_fve_a", i ? i->fve_a : NAN},
                                {"init_fve_b", i ? i->fve_b : NAN},
                                {"theirs", {{"source", "Stander et al., sn-grok calculate_cosets.py"},
                                            {"ratio_a", m.theirs_ratio_a}, {"ratio_b", m.theirs_ratio_b}}},
                                {"kept", {{"dims", m.kept_dims}, {"loss", m.kept_loss}, {"acc", m.kept_acc}}},
                                {"logits", {{"fve_left", m.logit_fve_left}, {"fve_right", m.logit_fve_right},
                                            {"init_fve_left", i ? i->logit_fve_left : NAN},
                                            {"init_fve_right", i ? i->logit_fve_right : NAN}}}});
    }
    std::printf("%s\n", j.dump(2).c_str());
    return 0;
  }
  std::printf("checkpoint %s (epoch %lld); group %s (order %lld); %lld hidden units (%lld live), their input from a and "
              "from b (the total embeddings)\n",
              ck.path.c_str(), (long long)ck.epoch, r.group.c_str(), (long long)r.order, (long long)r.units,
              (long long)r.live_units);
  std::printf("\n%-28s %5s %5s %5s %-11s %13s %11s %9s %13s %9s  %4s %10s %7s\n", "subgroup (up to conjugacy)",
              "order", "index", "conj", "cosets", "FVE a / b", "units a/b", "chance", "untrained", "theirs", "dims",
              "kept loss", "acc");
  // Shown by how far each rises above the untrained model (a larger space of functions explains
  // more of anything).
  std::vector<const CosetMeasure*> order;
  for (auto& m : r.measures) order.push_back(&m);
  std::stable_sort(order.begin(), order.end(),
                   [&](const CosetMeasure* x, const CosetMeasure* y) { return gain(init, *x) > gain(init, *y); });
  const size_t shown = std::min<size_t>(order.size(), 16);
  for (size_t k = 0; k < shown; ++k) {
    const CosetMeasure& m = *order[k];
    const CosetMeasure* i = same(init, m);
    std::printf("%-28s %5lld %5lld %5lld %-11s %5.1f%% %5.1f%% %5lld/%-5lld %8.1f%% %5.1f%% %5.1f%% %4.2f/%-4.2f  %4lld %10.3e %7.4f\n",
                m.subgroup.c_str(), (long long)m.order, (long long)m.index, (long long)m.conjugates, side(m).c_str(),
                100 * m.fve_a, 100 * m.fve_b, (long long)m.units_a, (long long)m.units_b, 100 * m.chance,
                i ? 100 * i->fve_a : NAN, i ? 100 * i->fve_b : NAN, m.theirs_ratio_a, m.theirs_ratio_b, (long long)m.kept_dims, m.kept_loss,
                m.kept_acc);
  }
  if (shown < r.measures.size())
    std::printf("(%zu more, rising less above the untrained model, in cosets.csv and --json)\n", r.measures.size() - shown);
  std::printf("(FVE: the share of the units' variance over the group constant on the cosets, each unit at its best "
              "conjugate; units: those at least 90%% so; chance: what a function with no structure gets on one conjugate, (index-1)/(|G|-1); "
              "untrained: the same on the config's model as initialised; theirs: Stander et al.'s within-coset variance "
              "over the variance, median over the units, a / b; kept: the model with each operand's embedding projected "
              "on the functions constant on every conjugate's cosets (dims of them: as many as |G| keep everything; "
              "left and right cosets of all conjugates span the same))\n\n");
  std::string key;
  for (auto& k : r.key_irreps) key += (key.empty() ? "" : ", ") + k;
  std::printf("the irreps' account: key irreps %s (the 0.005 rule on the logits; %lld dimensions): %.1f%% / %.1f%% of "
              "the units' variance (untrained: %.1f%% / %.1f%%); kept alone: loss %.3e, accuracy %.4f\n",
              key.empty() ? "none" : key.c_str(), (long long)r.irrep_dims, 100 * r.irrep_fve_a, 100 * r.irrep_fve_b,
              100 * init.irrep_fve_a, 100 * init.irrep_fve_b, r.irrep_kept_loss, r.irrep_kept_acc);
  // The logits: the classes whose conjugates' indicators hold most of them, beside the irreps.
  const auto by_logits = classes_by_logits(r);
  std::printf("the logits (centred per pair), by where the class c sits from the answer y: the share of their variance in "
              "the conjugates' indicators [c in yH'] (left) / [c in H'y] (right), one weight a conjugate; untrained beside\n");
  for (size_t k = 0; k < by_logits.size() && k < 5; ++k) {
    const CosetMeasure* m = by_logits[k];
    const CosetMeasure* i = same(init, *m);
    std::printf("  %-40s %5.1f%% / %5.1f%%  (untrained %4.1f%% / %4.1f%%)\n", m->subgroup.c_str(), 100 * m->logit_fve_left,
                100 * m->logit_fve_right, i ? 100 * i->logit_fve_left : NAN, i ? 100 * i->logit_fve_right : NAN);
  }
  std::printf("  %-40s %5.1f%%          (untrained %4.1f%%)\n", "the key irreps' characters of c^-1 y",
              100 * r.irrep_logit_fve, 100 * init.irrep_logit_fve);
  std::printf("  %-40s %5.1f%% / %5.1f%%  (untrained %4.1f%% / %4.1f%%)\n", "any function of c^-1 y / y c^-1 (ceiling)",
              100 * r.logit_ceiling_left, 100 * r.logit_ceiling_right, 100 * init.logit_ceiling_left,
              100 * init.logit_ceiling_right);
  if (const std::string v = logits_verdict(r); !v.empty()) std::printf("%s\n", v.c_str());
  std::printf("model as is: loss %.3e, accuracy %.4f (uniform guess: loss %.3f)\n", r.model_loss, r.model_acc,
              r.uniform_loss);
  std::printf("%s\n", verdict.c_str());
  return 0;
}

}  // namespace

const AnalysisKind& cosets_analysis() {
  static const AnalysisKind k = [] {
    AnalysisKind a;
    a.name = "cosets";
    a.doc = "A group run by the cosets of its subgroups: how much of each hidden unit's input from a and from b is "
            "constant on them, the coset structure kept alone, beside the key irreps' account";
    a.scope = AnalysisKind::Scope::checkpoint;
    a.needs = {Capability::pairs, Capability::group, Capability::pair_readout};
    a.files = {{"cosets.csv"}};
    a.source = "Stander, Yu, Fan & Biderman 2024, \"Grokking group multiplication with cosets\" (sn-grok: "
               "calculate_cosets.py, sngrok/cosets.py)";
    a.report = {{"Cosets (the share of the hidden units constant on them)", "cosets.csv"}};
    a.run = run_cosets;
    return a;
  }();
  return k;
}

}  // namespace grokking
