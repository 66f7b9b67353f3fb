// `grokking ablate`: frequency ablations of a pair model on a cycle (Nanda et al. 2023).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>

#include "common.hpp"
#include "grokking/error.hpp"
#include "grokking/rundir.hpp"
#include "grokking/text.hpp"

namespace grokking {
using namespace analyses;

const AnalysisKind& ablate_analysis();

namespace {

// ablate.csv and excluded_by_freq.csv.
void write_files(const std::string& run_dir, const std::vector<AblationResult>& rows,
                          const std::vector<int64_t>& freqs, const std::vector<double>& by_freq) {
  CsvWriter csv({"ablation", "space", "freqs", "train_loss", "train_acc", "test_loss", "test_acc", "all_loss",
                 "all_acc", "draws"});
  for (auto& r : rows) {
    csv.field(r.name).field(r.space).field(join_numbers(r.freqs, " ")).field(r.train.loss).field(r.train.acc);
    csv.field(r.test.loss).field(r.test.acc).field(r.all.loss).field(r.all.acc).field(r.draws).end_row();
  }
  atomic_write(run_dir + "/ablate.csv", csv.text());
  CsvWriter per({"k", "excluded_loss", "key"});
  for (size_t i = 0; i < by_freq.size(); ++i)
    per.field(int64_t(i + 1)).field(by_freq[i]).field(int64_t(std::count(freqs.begin(), freqs.end(), int64_t(i + 1)))).end_row();
  atomic_write(run_dir + "/excluded_by_freq.csv", per.text());
}

int run_ablate(const AnalysisOptions& opts) {
  auto [ck, run_dir] = load_for_analysis(ablate_analysis(), opts.path);
  Model model = model_from_checkpoint(ck);
  Dataset data = make_dataset(ck.config.task);
  AblateOptions ao{opts.freqs, opts.draws, opts.seed};
  std::vector<int64_t> freqs;
  NeuronLogitReading wl;
  auto rows = ablate(model, data, ao, &freqs, &wl);
  const auto by_freq = excluded_loss_by_frequency(model, data);
  const auto fit = fit_logit_trig(model, data, freqs);

  if (!run_dir.empty()) write_files(run_dir, rows, freqs, by_freq);
  if (opts.quiet) return 0;
  if (opts.json) {
    nlohmann::json j = {{"checkpoint", ck.path},
                        {"epoch", ck.epoch},
                        {"cycle", cycle_json(cycle_of(ck.config.task))},
                        {"freqs", freqs},
                        {"ablations", nlohmann::json::array()},
                        {"excluded_loss_by_freq", by_freq},
                        {"logit_fit", {{"freqs", fit.freqs}, {"alpha", fit.alpha}, {"frac_variance", fit.frac_variance},
                                       {"loss", fit.loss}, {"acc", fit.acc}}}};
    for (auto& r : rows)
      j["ablations"].push_back({{"name", r.name}, {"space", r.space}, {"freqs", r.freqs}, {"draws", r.draws},
                                {"train", split_json(r.train)}, {"test", split_json(r.test)}, {"all", split_json(r.all)}});
    if (wl.present)
      j["neuron_logit_map"] = {{"freqs", wl.freqs},         {"singular_values", wl.singular},
                               {"top_share", wl.top_share}, {"residual", wl.residual},
                               {"fve_cos", wl.fve_cos},     {"fve_sin", wl.fve_sin}};
    std::printf("%s\n", j.dump(2).c_str());
    return 0;
  }
  std::printf("checkpoint %s (epoch %lld); frequencies %s%s\n", ck.path.c_str(), (long long)ck.epoch,
              join_numbers(freqs).c_str(), opts.freqs.empty() ? " (key, neuron method)" : " (--freqs)");
  std::printf("%s\n", cycle_text(cycle_of(ck.config.task)).c_str());
  std::printf("%-50s %-8s %11s %9s %11s %9s %11s %9s\n", "ablation", "space", "train loss", "train acc", "test loss",
              "test acc", "all loss", "all acc");
  for (auto& r : rows)
    std::printf("%-50s %-8s %11.3e %9.4f %11.3e %9.4f %11.3e %9.4f\n", r.name.c_str(), r.space.c_str(), r.train.loss,
                r.train.acc, r.test.loss, r.test.acc, r.all.loss, r.all.acc);
  const double classes = double(model.shape().classes);
  std::printf("uniform guess: loss ln(P) = %.3f, accuracy 1/P = %.4f\n", std::log(classes), 1.0 / classes);
  std::string alphas;
  for (size_t i = 0; i < fit.alpha.size(); ++i)
    alphas += (i ? ", " : "") + std::to_string(fit.freqs[i]) + ": " + format_number(fit.alpha[i], "%.3g");
  std::printf("\nlogits fitted by sum_k alpha_k cos(w_k(%s - c)) over the key frequencies: %.1f%% of their variance "
              "(the paper: about 95%%); alpha {%s}; fitted logits: loss %.3e, accuracy %.4f\n",
              cycle_of(ck.config.task).relation.c_str(), 100 * fit.frac_variance, alphas.c_str(), fit.loss, fit.acc);
  if (wl.present) {
    // The paper's figures are of its P = 113 main run (sections 4.2 and 4.4, Table 1).
    std::string sv, fve;
    for (size_t i = 0; i < wl.singular.size() && i < 12; ++i) sv += (i ? " " : "") + format_number(wl.singular[i], "%.3g");
    for (size_t i = 0; i < wl.freqs.size(); ++i)
      fve += (i ? ", " : "") + std::to_string(wl.freqs[i]) + ": " + format_number(100 * wl.fve_cos[i], "%.1f") +
             (std::isnan(wl.fve_sin[i]) ? "" : " / " + format_number(100 * wl.fve_sin[i], "%.1f"));
    std::printf("\nthe neuron-logit map W_L at these frequencies (centred over the classes):\n");
    std::printf("  singular values %s ...; the %lld largest hold %.2f%% of its squared norm (the paper: approximately "
                "rank 10)\n",
                sv.c_str(), (long long)wl.directions, 100 * wl.top_share);
    std::printf("  W_L - sum_k cos(w_k c) u_k^T + sin(w_k c) v_k^T: %.2f%% of its norm, %.3f%% of its squared norm (the "
                "paper: under 0.55%% of its norm)\n",
                100 * wl.residual, 100 * wl.residual * wl.residual);
    std::printf("  %% of the variance of u_k.MLP explained by cos(w_k(%s)) / of v_k.MLP by sin (the paper's Table 1: "
                "93.2-98.2%%): %s\n",
                cycle_of(ck.config.task).relation.c_str(), fve.c_str());
    std::printf("  hidden activations projected onto the u_k, v_k / onto their complement: the \"neurons\" rows "
                "(the paper: loss 2.41e-7 -> 1.19e-7 / 5.27)\n");
  }
  std::printf("excluded loss (train) with one frequency removed, k = 1..%zu: ", by_freq.size());
  for (size_t i = 0; i < by_freq.size(); ++i)
    std::printf("%s%zu:%.3g%s", i ? " " : "", i + 1, by_freq[i],
                std::count(freqs.begin(), freqs.end(), int64_t(i + 1)) ? "*" : "");
  std::printf("\n");
  return 0;
}

}  // namespace

const AnalysisKind& ablate_analysis() {
  static const AnalysisKind k = [] {
    AnalysisKind a;
    a.name = "ablate";
    a.doc = "Loss and accuracy with frequencies ablated, in logit and in weight space";
    a.scope = AnalysisKind::Scope::checkpoint;
    a.needs = {Capability::pairs, Capability::cycle, Capability::pair_readout};
    a.files = {{"ablate.csv"}, {"excluded_by_freq.csv"}};
    a.options = {AnalysisOption::freqs, AnalysisOption::draws, AnalysisOption::seed};
    a.source = "Nanda et al. 2023, sections 4.2-4.4, 5.1 and Tables 1-2 (ablations, restricted and excluded loss)";
    a.report = {{"Ablations", "ablate.csv"}};
    a.run = run_ablate;
    return a;
  }();
  return k;
}

}  // namespace grokking
