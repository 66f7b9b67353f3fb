#include "grokking/commands.hpp"

#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <exception>
#include <new>

#include "grokking/analysis.hpp"
#include "grokking/checkpoint.hpp"
#include "grokking/heads.hpp"
#include "grokking/irreps.hpp"
#include "grokking/superposition.hpp"
#include "grokking/train.hpp"
#include "grokking/compat.hpp"
#include "grokking/config.hpp"
#include "grokking/error.hpp"
#include "grokking/progress.hpp"
#include "grokking/rundir.hpp"
#include "grokking/text.hpp"
#include "grokking/threads.hpp"
#include "grokking/train.hpp"

namespace grokking {

void init_cli_logging() {
  auto logger = spdlog::stderr_logger_mt("grokking");
  logger->set_pattern("%v");
  spdlog::set_default_logger(logger);
}

std::string describe_exception(const std::exception& e) {
  // No library's raw message reaches the user: what escaped our own translations is named.
  if (dynamic_cast<const std::bad_alloc*>(&e)) return "out of memory";
  std::string s = compat::what(e);
  // LibTorch messages can span lines; the user gets the first one.
  if (auto nl = s.find('\n'); nl != std::string::npos) s.resize(nl);
  // nlohmann: "[json.exception.out_of_range.403] key 'keys' not found" -> the part after "] ".
  if (dynamic_cast<const nlohmann::json::exception*>(&e)) {
    if (auto pos = s.find("] "); pos != std::string::npos) s = s.substr(pos + 2);
    s = "unexpected JSON content: " + s;
  }
  return s;
}

int run_config_command(const ConfigOptions& opts) {
  if (opts.doc) {
    std::printf("%-24s %-10s %s\n", "key", "default", "meaning");
    // Grouped as the config is: the keys every config has, then each kind's own under its name.
    std::string group;
    for (auto& k : config_docs()) {
      const std::string section = k.key.substr(0, k.key.find('.'));
      const std::string g = !k.kind.empty() ? "with " + k.kind
                            : section == "task" || section == "model" ? section + " (every kind)"
                                                                      : section;
      if (g != group) {
        group = g;
        std::printf("%s%s\n", group == "task (every kind)" ? "" : "\n", group.c_str());
      }
      std::printf("  %-24s %-10s %s\n", k.key.c_str(), k.default_value.c_str(), k.doc.c_str());
    }
    return 0;
  }
  Config c = opts.config_path.empty() ? parse_config("{}", "(defaults)", opts.sets)
                                      : load_config(opts.config_path, opts.sets);
  std::printf("%s\n", config_to_json(c).dump(2).c_str());
  return 0;
}

// ---------------------------------------------------------------------------------------------
// Analysis subcommands

namespace {

// The run directory a checkpoint belongs to ("" when it is not inside one).
std::string run_dir_of(const std::string& path, const std::string& ckpt) {
  if (is_dir(path)) return path;
  auto slash = ckpt.find_last_of('/');
  std::string parent = slash == std::string::npos ? "." : ckpt.substr(0, slash);
  if (parent.size() >= 12 && parent.substr(parent.size() - 12) == "/checkpoints") {
    std::string run = parent.substr(0, parent.size() - 12);
    if (exists(run + "/config.json")) return run;
  }
  if (parent == "checkpoints" && exists("config.json")) return ".";
  return "";
}

nlohmann::json split_json(const Split& s) { return {{"loss", s.loss}, {"acc", s.acc}}; }

struct Loaded {
  Checkpoint ck;
  std::string run_dir;
};
nlohmann::json cycle_json(const Cycle& c) {
  return {{"n", c.n}, {"relation", c.relation}, {"generator", c.generator}};
}

// One line saying what the frequencies are frequencies of.
std::string cycle_text(const Cycle& c) {
  if (c.generator == 0) return "frequencies of the residues mod " + std::to_string(c.p) + " (directions " + c.relation + ")";
  return "frequencies of the discrete logarithms base " + std::to_string(c.generator) + " mod " + std::to_string(c.p) +
         " (a = " + std::to_string(c.generator) + "^i, indices mod " + std::to_string(c.n) + "; directions " + c.relation +
         "; 0 is off the cycle)";
}

Loaded load_for_analysis(const std::string& path) {
  configure_threads(0);
  auto file = resolve_checkpoint(path);
  Loaded l{load_checkpoint(file), ""};
  l.run_dir = run_dir_of(path, file);
  return l;
}

}  // namespace

// fourier.csv, attention.csv (models with attention), neuron_spectrum.dat and logit_spectrum.dat.
void write_fourier_files(const std::string& run_dir, const FourierReport& r) {
  const int64_t nf = n_frequencies(r.cycle.n);
  CsvWriter csv({"k", "embed_norm", "unembed_norm", "neurons", "key_neurons", "key_embed", "embed_cos", "embed_sin",
                 "unembed_cos", "unembed_sin", "wl_norm", "neurons_85"});
  auto has = [](const std::vector<int64_t>& v, int64_t k) { return int64_t(std::count(v.begin(), v.end(), k) > 0); };
  for (int64_t k = 1; k <= nf; ++k) {
    const auto i = size_t(k - 1);
    csv.field(k).field(r.embed_norm[i]).field(r.unembed_norm[i]);
    csv.field(i < r.neurons_per_freq.size() ? r.neurons_per_freq[i] : int64_t(0));
    csv.field(has(r.key_neurons, k)).field(has(r.key_embed, k)).field(r.embed_cos[i]).field(r.embed_sin[i]);
    // A model without hidden neurons (attention only) has no W_L and no neuron clusters.
    const double nan = std::numeric_limits<double>::quiet_NaN();
    csv.field(r.unembed_cos[i]).field(r.unembed_sin[i]).field(i < r.wl_norm.size() ? r.wl_norm[i] : nan);
    csv.field(i < r.neurons_per_freq_85.size() ? r.neurons_per_freq_85[i] : int64_t(0)).end_row();
  }
  atomic_write(run_dir + "/fourier.csv", csv.text());
  // For plot: attention of "=" to a by a, one column per head; each live neuron's variance
  // fraction per frequency, neurons grouped by best frequency (then by fraction), as a matrix.
  if (r.attn_by_a.defined()) {
    std::vector<std::string> cols = {"i", "a"};
    for (int64_t h = 0; h < r.attn_by_a.size(1); ++h) cols.push_back("head" + std::to_string(h));
    CsvWriter att(cols);
    auto by_a = r.attn_by_a.contiguous();
    for (int64_t i = 0; i < by_a.size(0); ++i) {
      att.field(i).field(r.cycle.value_of[size_t(i)]);
      for (int64_t h = 0; h < by_a.size(1); ++h) att.field(by_a[i][h].item<double>());
      att.end_row();
    }
    atomic_write(run_dir + "/attention.csv", att.text());
  }
  std::vector<size_t> order;
  for (size_t i = 0; i < r.neuron_freq.size(); ++i)
    if (r.neuron_freq[i] > 0) order.push_back(i);
  std::stable_sort(order.begin(), order.end(), [&](size_t x, size_t y) {
    return r.neuron_freq[x] != r.neuron_freq[y] ? r.neuron_freq[x] < r.neuron_freq[y] : r.neuron_frac[x] > r.neuron_frac[y];
  });
  auto fr = r.neuron_frac_matrix.contiguous();
  std::string mat = "# rows: live MLP neurons grouped by best frequency; columns: frequency 1.." + std::to_string(nf) +
                    "; value: fraction of the neuron's variance\n";
  for (auto i : order) {
    for (int64_t k = 0; k < nf; ++k)
      mat += (k ? " " : "") + format_number(fr[k][int64_t(i)].item<double>(), "%.4g");
    mat += "\n";
  }
  atomic_write(run_dir + "/neuron_spectrum.dat", mat);
  auto l2 = r.logit_2d_norm.contiguous();
  std::string lmat = "# 2-D Fourier components of the logits over (a, b): rows a's basis index, columns b's (0 constant, "
                     "2k-1 cos k, 2k sin k); value: norm over the classes\n";
  for (int64_t i = 0; i < l2.size(0); ++i) {
    for (int64_t j = 0; j < l2.size(1); ++j) lmat += (j ? " " : "") + format_number(l2[i][j].item<double>(), "%.4g");
    lmat += "\n";
  }
  atomic_write(run_dir + "/logit_spectrum.dat", lmat);
}

int run_fourier_command(const AnalysisOptions& opts) {
  auto [ck, run_dir] = load_for_analysis(opts.path);
  Model model = model_from_checkpoint(ck);
  auto r = analyse_fourier(model);
  const int64_t nf = n_frequencies(r.cycle.n);
  if (!run_dir.empty()) write_fourier_files(run_dir, r);
  if (opts.quiet) return 0;
  if (opts.json) {
    nlohmann::json j = {{"checkpoint", ck.path},
                        {"epoch", ck.epoch},
                        {"p", r.p},
                        {"cycle", cycle_json(r.cycle)},
                        {"key_freqs_neurons", r.key_neurons},
                        {"key_freqs_embed", r.key_embed},
                        {"agree", r.agree()},
                        {"frac_neurons_clustered", r.frac_neurons_clustered},
                        {"gini_embed", r.gini_embed},
                        {"gini_embed_components", r.gini_embed_components},
                        {"gini_unembed", r.gini_unembed},
                        {"embed_const_norm", r.embed_const_norm},
                        {"embed_norm", r.embed_norm},
                        {"unembed_norm", r.unembed_norm},
                        {"embed_cos", r.embed_cos},
                        {"embed_sin", r.embed_sin},
                        {"unembed_cos", r.unembed_cos},
                        {"unembed_sin", r.unembed_sin},
                        {"neurons_per_freq", r.neurons_per_freq},
                        {"neuron_freq", r.neuron_freq},
                        {"neuron_frac", r.neuron_frac},
                        {"frac_neurons_85", r.frac_neurons_85},
                        {"neurons_per_freq_85", r.neurons_per_freq_85},
                        {"neuron_frac_hist", r.neuron_frac_hist},
                        {"wl_norm", r.wl_norm},
                        {"key_freqs_wl", r.key_wl},
                        {"gini_wl", r.gini_wl},
                        {"attention_to_a", nlohmann::json::array()}};
    for (size_t h = 0; h < r.attn_key.size(); ++h)
      j["attention_to_a"].push_back({{"head", h}, {"mean", r.attn_a_const[h]}, {"key_freq", r.attn_key[h]},
                                     {"norm", r.attn_a_norm[h]}, {"pair_freq", r.attn_2d_key[h]},
                                     {"pair_fve", r.attn_2d_frac[h]}});
    std::printf("%s\n", j.dump(2).c_str());
    return 0;
  }
  std::printf("checkpoint %s (epoch %lld, P=%lld)\n", ck.path.c_str(), (long long)ck.epoch, (long long)r.p);
  std::printf("%s\n", cycle_text(r.cycle).c_str());
  std::printf("key frequencies, neuron method:   %s  (%.1f%% of neurons explained >= %.0f%% by one frequency)\n",
              join_numbers(r.key_neurons).c_str(), 100 * r.frac_neurons_clustered, 100 * kNeuronClusterFrac);
  std::printf("key frequencies, %s norm method: %s  (%s)\n", r.embedding_label.c_str(), join_numbers(r.key_embed).c_str(),
              r.agree() ? "the methods agree" : "the methods differ");
  std::printf("key frequencies of the neuron-logit map W_L: %s\n", join_numbers(r.key_wl).c_str());
  std::printf("Gini of the per-frequency norms (cos and sin together): %s %.3f, W_U %.3f, W_L %.3f  (near 0: spread "
              "out; near 1: sparse)\n",
              r.embedding_label.c_str(), r.gini_embed, r.gini_unembed, r.gini_wl);
  std::printf("Gini of %s's Fourier component norms (cos and sin apart, the paper's): %.3f\n", r.embedding_label.c_str(),
              r.gini_embed_components);
  std::printf("neurons explained >= 85%% by one frequency (the paper's clusters): %.1f%%; best-frequency fraction "
              "histogram (0-0.1 ... 0.9-1): %s\n",
              100 * r.frac_neurons_85, join_numbers(r.neuron_frac_hist, " ").c_str());
  for (size_t h = 0; h < r.attn_key.size(); ++h)
    std::printf("head %zu: attention of \"=\" to a, mean %.3f, strongest frequency over a: %s; over (a, b): %s\n", h,
                r.attn_a_const[h], r.attn_key[h] ? std::to_string(r.attn_key[h]).c_str() : "none (flat)",
                r.attn_2d_key[h] ? ("frequency " + std::to_string(r.attn_2d_key[h]) + "'s degree-2 terms explain " +
                                    format_number(100 * r.attn_2d_frac[h], "%.2f") + "% of its variance")
                                       .c_str()
                                 : "flat");
  std::printf("\n%4s  %10s  %8s  %8s  %10s  %10s  %8s  %8s\n", "k", "|W_E|_k", "cos", "sin", "|W_U|_k", "|W_L|_k",
              "neurons", ">=85%");
  for (int64_t k = 1; k <= nf; ++k) {
    bool key = std::find(r.key_neurons.begin(), r.key_neurons.end(), k) != r.key_neurons.end() ||
               std::find(r.key_embed.begin(), r.key_embed.end(), k) != r.key_embed.end();
    const auto i = size_t(k - 1);
    std::printf("%4lld  %10.4f  %8.4f  %8.4f  %10.4f  %10.4f  %8lld  %8lld%s\n", (long long)k, r.embed_norm[i],
                r.embed_cos[i], r.embed_sin[i], r.unembed_norm[i], r.wl_norm[i], (long long)r.neurons_per_freq[i],
                (long long)r.neurons_per_freq_85[i], key ? "  *" : "");
  }
  return 0;
}

// ablate.csv and excluded_by_freq.csv.
void write_ablation_files(const std::string& run_dir, const std::vector<AblationResult>& rows,
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

int run_ablate_command(const AnalysisOptions& opts) {
  auto [ck, run_dir] = load_for_analysis(opts.path);
  Model model = model_from_checkpoint(ck);
  Dataset data = make_dataset(ck.config.task);
  AblateOptions ao{opts.freqs, opts.draws, opts.seed};
  std::vector<int64_t> freqs;
  NeuronLogitReading wl;
  auto rows = ablate(model, data, ao, &freqs, &wl);
  const auto by_freq = excluded_loss_by_frequency(model, data);
  const auto fit = fit_logit_trig(model, data, freqs);

  if (!run_dir.empty()) write_ablation_files(run_dir, rows, freqs, by_freq);
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

// irreps.csv: every irrep's measures at a checkpoint, and which are key.
void write_irrep_files(const std::string& run_dir, const IrrepReport& r) {
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

int run_irreps_command(const AnalysisOptions& opts) {
  auto [ck, run_dir] = load_for_analysis(opts.path);
  Model model = model_from_checkpoint(ck);
  const GroupStructure gs = group_structure(ck.config.task);
  std::vector<size_t> key;
  for (auto k : opts.freqs) {
    if (k < 1 || k > int64_t(gs.irreps.size()))
      throw UsageError("--irreps: irrep " + std::to_string(k) + " is out of range 1.." + std::to_string(gs.irreps.size()));
    key.push_back(size_t(k - 1));
  }
  const auto r = analyse_irreps(model, gs, key, opts.draws, opts.seed);
  if (!run_dir.empty()) write_irrep_files(run_dir, r);
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

int run_heads_command(const AnalysisOptions& opts) {
  const std::string dir = opts.path;
  if (!is_dir(dir)) throw UsageError(dir + ": heads takes a run directory");
  configure_threads(0);
  const auto list = list_checkpoints(dir);
  if (list.empty()) throw RunError(dir + ": no checkpoints in " + dir + "/checkpoints");
  const Checkpoint final_ck = load_checkpoint(list.back().second);
  require_sequence_task(final_ck.config);
  const Batch eval = make_task(final_ck.config.task)->eval_batch();
  const Model model = model_from_checkpoint(final_ck);
  const auto& arch = model.arch();
  const int64_t L = arch.attention_layers(), H = arch.attention_heads();
  auto label = [](int64_t l, int64_t h) { return "L" + std::to_string(l) + "H" + std::to_string(h); };

  // ---- the heads over training: every checkpoint's scores ----
  std::vector<std::string> cols = {"epoch"};
  for (int64_t l = 0; l < L; ++l)
    for (int64_t h = 0; h < H; ++h)
      for (auto* what : {"prev", "dup", "ind"}) cols.push_back(label(l, h) + "_" + what);
  CsvWriter over(cols);
  for (auto& [epoch, path] : list) {
    const auto ck = load_checkpoint(path);
    const auto sc = head_scores(model_from_checkpoint(ck), eval);
    over.field(epoch);
    for (int64_t l = 0; l < L; ++l)
      for (int64_t h = 0; h < H; ++h)
        over.field(sc.previous[size_t(l)][size_t(h)]).field(sc.duplicate[size_t(l)][size_t(h)]).field(sc.induction[size_t(l)][size_t(h)]);
    over.end_row();
  }
  atomic_write(dir + "/heads_progress.csv", over.text());

  // ---- the final model: scores, ablations, composition; the transition in metrics.csv ----
  const auto sc = head_scores(model, eval);
  const auto ablations = ablate_heads(model, eval);
  const double base = repeated_half_loss(model.forward(eval.x), eval);
  std::optional<Composition> comp;
  if (L >= 2) comp = k_composition(model);
  const auto rows = read_metrics(dir + "/metrics.csv");
  const Transition tr = find_transition(rows);
  double first_half = std::numeric_limits<double>::quiet_NaN();
  if (!rows.empty())
    for (auto& [name, v] : rows.back().extra)
      if (name == "first_half_loss") first_half = v;
  // The induction heads (last layer's heads above the threshold) and their previous-token partners.
  std::vector<std::pair<int64_t, int64_t>> induction_heads, previous_heads;
  for (int64_t l = 0; l < L; ++l)
    for (int64_t h = 0; h < H; ++h) {
      if (l >= 1 && sc.induction[size_t(l)][size_t(h)] >= kHeadScoreThreshold) induction_heads.push_back({l, h});
      if (l + 1 < L && sc.previous[size_t(l)][size_t(h)] >= kHeadScoreThreshold) previous_heads.push_back({l, h});
    }
  CsvWriter csv({"layer", "head", "previous", "duplicate", "induction", "induction_tl", "zero_ablated_loss",
                 "mean_ablated_loss"});
  for (auto& a : ablations) {
    const auto l = size_t(a.layer), h = size_t(a.head);
    csv.field(a.layer).field(a.head).field(sc.previous[l][h]).field(sc.duplicate[l][h]).field(sc.induction[l][h]);
    csv.field(sc.induction_tl[l][h]).field(a.zero_loss).field(a.mean_loss).end_row();
  }
  atomic_write(dir + "/heads.csv", csv.text());
  // The attention pattern of the strongest induction head (or of the last layer's first head) on
  // the evaluation sequence with the longest repeat (the first of them), for plot.
  {
    int64_t bl = L - 1, bh = 0;
    double best = -1;
    for (int64_t h = 0; h < H; ++h)
      if (sc.induction[size_t(L - 1)][size_t(h)] > best) best = sc.induction[size_t(L - 1)][size_t(h)], bh = h;
    // A sequence's repeat length: half its tokens before the padding (the pad token is the last of
    // the vocabulary).
    const auto lengths = eval.x.ne(model.shape().vocab - 1).sum(1);
    const int64_t row = lengths.eq(lengths.max()).nonzero()[0][0].item<int64_t>();
    const int64_t repeat = lengths[row].item<int64_t>() / 2;
    Cache cache;
    model.forward(eval.x.narrow(0, row, 1), &cache);
    const auto pat = cache.patterns[size_t(bl)][0][bh].to(torch::kFloat64).contiguous();  // [T, T]
    std::string mat = "# attention of head " + label(bl, bh) + " on evaluation sequence " + std::to_string(row) +
                      " (repeat length L = " + std::to_string(repeat) + ": positions 0..L-1 repeated at L..2L-1, "
                      "padding after); rows: query position, columns: key\n";
    for (int64_t i = 0; i < pat.size(0); ++i) {
      for (int64_t j = 0; j < pat.size(1); ++j) mat += (j ? " " : "") + format_number(pat[i][j].item<double>(), "%.4g");
      mat += "\n";
    }
    atomic_write(dir + "/heads_pattern.dat", mat);
  }
  if (opts.quiet) return 0;
  auto heads_json = [&](const std::vector<std::pair<int64_t, int64_t>>& hs) {
    nlohmann::json a = nlohmann::json::array();
    for (auto& [l, h] : hs) a.push_back(label(l, h));
    return a;
  };
  if (opts.json) {
    nlohmann::json j = {{"run_dir", dir},
                        {"checkpoint", final_ck.path},
                        {"epoch", final_ck.epoch},
                        {"threshold", kHeadScoreThreshold},
                        {"induction_heads", heads_json(induction_heads)},
                        {"previous_token_heads", heads_json(previous_heads)},
                        {"repeated_half_loss", base},
                        {"first_half_loss", first_half},
                        {"transition", {{"at10", optional_json(tr.at10)}, {"at50", optional_json(tr.at50)},
                                        {"at90", optional_json(tr.at90)}, {"start", tr.start}, {"lowest", tr.lowest},
                                        {"bump", tr.bump}, {"bump_at", tr.bump_at}}},
                        {"heads", nlohmann::json::array()}};
    for (auto& a : ablations) {
      const auto l = size_t(a.layer), h = size_t(a.head);
      j["heads"].push_back({{"head", label(a.layer, a.head)}, {"previous", sc.previous[l][h]},
                            {"duplicate", sc.duplicate[l][h]}, {"induction", sc.induction[l][h]},
                            {"induction_tl", sc.induction_tl[l][h]}, {"zero_ablated_loss", a.zero_loss},
                            {"mean_ablated_loss", a.mean_loss}});
    }
    if (comp) j["k_composition"] = {{"layer1_by_layer0", comp->k}, {"random_baseline", comp->baseline}};
    std::printf("%s\n", j.dump(2).c_str());
    return 0;
  }
  auto epoch = [](const std::optional<int64_t>& e) { return e ? std::to_string(*e) : std::string("-"); };
  auto names = [&](const std::vector<std::pair<int64_t, int64_t>>& hs) {
    std::string out;
    for (auto& [l, h] : hs) out += (out.empty() ? "" : ", ") + label(l, h);
    return out.empty() ? std::string("none") : out;
  };
  std::printf("%s: checkpoint epoch %lld; %lld layer(s) of %lld heads\n", dir.c_str(), (long long)final_ck.epoch,
              (long long)L, (long long)H);
  std::printf("repeated-half loss %.3f (first half %.3f; uniform ln %lld = %.3f)\n", base, first_half,
              (long long)model.shape().classes, std::log(double(model.shape().classes)));
  std::printf("transition of the repeated-half loss (%.3f -> %.3f): 10%% at %s, 50%% at %s, 90%% at %s; largest rise "
              "before it %.3f nats at %lld (%s)\n",
              tr.start, tr.lowest, epoch(tr.at10).c_str(), epoch(tr.at50).c_str(), epoch(tr.at90).c_str(), tr.bump,
              (long long)tr.bump_at, tr.bump > 0.02 ? "a bump" : "no bump");
  std::printf("induction heads (score >= %.1f, layers >= 1): %s; previous-token heads (layers below): %s\n\n",
              kHeadScoreThreshold, names(induction_heads).c_str(), names(previous_heads).c_str());
  std::printf("%-6s %9s %9s %9s %12s %14s %14s\n", "head", "previous", "duplicate", "induction", "induction_tl",
              "zero-ablated", "mean-ablated");
  for (auto& a : ablations) {
    const auto l = size_t(a.layer), h = size_t(a.head);
    std::printf("%-6s %9.3f %9.3f %9.3f %12.3f %14.3f %14.3f\n", label(a.layer, a.head).c_str(), sc.previous[l][h],
                sc.duplicate[l][h], sc.induction[l][h], sc.induction_tl[l][h], a.zero_loss, a.mean_loss);
  }
  std::printf("(scores: the share of attention on the pattern among the queries that have one; induction_tl: "
              "TransformerLens's, over every query; ablated: the repeated-half loss)\n");
  if (comp) {
    std::printf("\nK-composition of layer-0 OV into layer-1 QK (rows: layer-1 head; random baseline %.3f):\n",
                comp->baseline);
    for (int64_t h1 = 0; h1 < H; ++h1) {
      std::printf("  L1H%lld:", (long long)h1);
      for (int64_t h0 = 0; h0 < H; ++h0) std::printf(" %6.3f", comp->k[size_t(h1)][size_t(h0)]);
      std::printf("\n");
    }
  }
  return 0;
}

namespace {
// One run's superposition: its files (superposition.csv, wtw.dat) and its report.
SuperpositionReport superposition_of_run(const std::string& dir, bool write) {
  const auto ck = load_checkpoint(resolve_checkpoint(dir));
  const auto r = analyse_superposition(model_from_checkpoint(ck));
  if (write) {
    std::vector<std::string> cols = {"feature", "norm", "interference", "dimensionality", "bias", "represented",
                                     "superposed"};
    for (int64_t k = 0; k < r.m; ++k) cols.push_back("w" + std::to_string(k));
    CsvWriter csv(cols);
    for (size_t i = 0; i < r.features.size(); ++i) {
      const auto& f = r.features[i];
      csv.field(int64_t(i)).field(f.norm).field(f.interference).field(f.dimensionality).field(f.bias);
      csv.field(int64_t(f.norm >= kRepresentedNorm));
      csv.field(int64_t(f.norm >= kRepresentedNorm && f.interference >= kSuperposedInterference));
      for (auto v : f.direction) csv.field(v);
      csv.end_row();
    }
    atomic_write(dir + "/superposition.csv", csv.text());
    std::string mat = "# W^T W as the notebook draws it: entry (i, j) = W_i . W_j\n";
    for (auto& row : r.wtw) {
      for (size_t j = 0; j < row.size(); ++j) mat += (j ? " " : "") + format_number(row[j], "%.4g");
      mat += "\n";
    }
    atomic_write(dir + "/wtw.dat", mat);
  }
  return r;
}
}  // namespace

int run_superposition_command(const AnalysisOptions& opts) {
  const std::string dir = opts.path;
  if (!is_dir(dir)) throw UsageError(dir + ": superposition takes a run directory or a sweep directory");
  configure_threads(1);
  if (exists(dir + "/plan.json")) {
    // A sweep: every finished run, one row per feature, and the phase diagram's cells where n = 2, m = 1.
    const auto plan = read_json_file(dir + "/plan.json");
    CsvWriter csv({"run", "sparsity", "inverse_density", "feature", "importance", "norm", "interference",
                   "dimensionality", "dims_per_feature", "represented", "superposed", "phase", "optimum"});
    nlohmann::json runs = nlohmann::json::array();
    for (auto& run : plan.at("runs")) {
      const std::string name = run.at("name").get<std::string>(), run_dir = dir + "/runs/" + name;
      if (!exists(summary_path(run_dir)) || !finished(read_summary(run_dir).status)) continue;
      const Config cfg = load_run_config(run_dir);
      if (cfg.task.kind != "sparse_features")
        throw UsageError(run_dir + ": task.kind \"" + cfg.task.kind + "\": the superposition analysis is for sparse_features runs");
      const auto r = superposition_of_run(run_dir, true);
      const double S = cfg.task.real("sparsity");
      std::vector<double> importance = cfg.task.reals("importances");
      if (importance.empty())
        for (int64_t i = 0; i < r.n; ++i) importance.push_back(std::pow(cfg.task.real("importance_decay"), double(i)));
      std::string phase, optimum;
      if (r.n == 2 && r.m == 1) {
        phase = two_feature_phase(r);
        optimum = two_feature_optimum(importance[1] / std::max(importance[0], 1e-300), 1 - S);
      }
      for (size_t i = 0; i < r.features.size(); ++i) {
        const auto& f = r.features[i];
        csv.field(name).field(S).field(1 / (1 - S)).field(int64_t(i)).field(importance[i]).field(f.norm);
        csv.field(f.interference).field(f.dimensionality).field(r.dims_per_feature).field(r.represented);
        csv.field(r.superposed).field(phase).field(optimum).end_row();
      }
      runs.push_back({{"run", name}, {"sparsity", S}, {"dims_per_feature", r.dims_per_feature},
                      {"represented", r.represented}, {"superposed", r.superposed}, {"n", r.n}, {"m", r.m}});
      if (!phase.empty()) runs.back()["phase"] = phase, runs.back()["optimum"] = optimum;
    }
    if (runs.empty()) throw UsageError(dir + ": no finished sparse_features runs yet");
    atomic_write(dir + "/superposition.csv", csv.text());
    if (opts.quiet) return 0;
    if (opts.json) {
      std::printf("%s\n", nlohmann::json({{"sweep_dir", dir}, {"runs", runs}}).dump(2).c_str());
      return 0;
    }
    std::printf("%-60s %9s %6s %12s %11s %10s%s\n", "run", "sparsity", "n/m", "D* = m/|W|^2", "represented",
                "superposed", runs[0].contains("phase") ? "  phase (trained / optimum)" : "");
    for (auto& r : runs) {
      std::printf("%-60s %9.4f %3lld/%-2lld %12.3f %11lld %10lld", short_text(r["run"].get<std::string>(), 60).c_str(),
                  r["sparsity"].get<double>(), (long long)r["n"].get<int64_t>(), (long long)r["m"].get<int64_t>(),
                  r["dims_per_feature"].get<double>(), (long long)r["represented"].get<int64_t>(),
                  (long long)r["superposed"].get<int64_t>());
      if (r.contains("phase"))
        std::printf("  %s / %s", r["phase"].get<std::string>().c_str(), r["optimum"].get<std::string>().c_str());
      std::printf("\n");
    }
    std::printf("-> %s/superposition.csv (one row per run and feature); grokking plot %s draws it\n", dir.c_str(),
                dir.c_str());
    return 0;
  }
  const auto r = superposition_of_run(dir, true);
  if (opts.quiet) return 0;
  if (opts.json) {
    nlohmann::json j = {{"run_dir", dir}, {"n", r.n}, {"m", r.m}, {"dims_per_feature", r.dims_per_feature},
                        {"represented", r.represented}, {"superposed", r.superposed}, {"features", nlohmann::json::array()}};
    for (auto& f : r.features)
      j["features"].push_back({{"norm", f.norm}, {"interference", f.interference}, {"dimensionality", f.dimensionality},
                               {"bias", f.bias}, {"direction", f.direction}});
    std::printf("%s\n", j.dump(2).c_str());
    return 0;
  }
  std::printf("%s: %lld features in %lld dimensions; D* = m/||W||_F^2 = %.3f; %lld represented (||W_i|| >= %.1f), "
              "%lld in superposition (interference >= %.1f)\n",
              dir.c_str(), (long long)r.n, (long long)r.m, r.dims_per_feature, (long long)r.represented, kRepresentedNorm,
              (long long)r.superposed, kSuperposedInterference);
  std::printf("%8s %8s %13s %15s %9s\n", "feature", "||W_i||", "interference", "dimensionality", "bias");
  for (size_t i = 0; i < r.features.size(); ++i) {
    const auto& f = r.features[i];
    std::printf("%8zu %8.3f %13.3f %15.3f %9.3f\n", i, f.norm, f.interference, f.dimensionality, f.bias);
  }
  return 0;
}

void write_analysis_files(const std::string& run_dir, const AnalysisFiles& which) {
  if (which.fourier || which.ablation) {
    auto [ck, dir] = load_for_analysis(run_dir);
    Model model = model_from_checkpoint(ck);
    if (which.fourier) write_fourier_files(run_dir, analyse_fourier(model));
    if (which.ablation) {
      const Dataset data = make_dataset(ck.config.task);
      std::vector<int64_t> freqs;
      auto rows = ablate(model, data, AblateOptions{}, &freqs);
      write_ablation_files(run_dir, rows, freqs, excluded_loss_by_frequency(model, data));
    }
  }
  if (which.progress) write_progress(run_dir, measure_progress(run_dir, {}));
}

int run_progress_command(const AnalysisOptions& opts) {
  const auto t0 = std::chrono::steady_clock::now();
  const std::string dir = opts.path;
  RunProgress progress;
  if (opts.from_csv) {
    if (!opts.freqs.empty()) throw UsageError("--from-csv: the key frequencies are progress.csv's; no --freqs");
    if (!is_dir(dir)) throw UsageError(dir + ": progress takes a run directory");
    progress = read_progress(dir + "/progress.csv");
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
    std::printf("%s\n", j.dump(2).c_str());
    return 0;
  }
  auto e = [](const std::optional<int64_t>& v) { return v ? std::to_string(*v) : std::string("?"); };
  std::printf("%s: %zu checkpoints in %.1fs; key frequencies %s -> %s/progress.csv\n", dir.c_str(), rows.size(), secs,
              join_numbers(progress.key_freqs).c_str(), dir.c_str());
  std::printf("%8s %11s %11s %9s %11s %11s %7s %10s\n", "epoch", "train loss", "test loss", "test acc", "restricted",
              "excluded", "gini", "sum w^2");
  const size_t stride = std::max<size_t>(1, rows.size() / 25);
  for (size_t i = 0; i < rows.size(); ++i)
    if (i % stride == 0 || i + 1 == rows.size()) {
      auto& r = rows[i];
      std::printf("%8lld %11.3e %11.3e %9.4f %11.3e %11.3e %7.3f %10.1f\n", (long long)r.epoch, r.train_loss,
                  r.test_loss, r.test_acc, r.restricted_loss, r.excluded_loss, r.gini, r.sum_sq_weights);
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

}  // namespace grokking
