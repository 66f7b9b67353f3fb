// `grokking fourier`: the Fourier spectra of a pair model on a cycle (Nanda et al. 2023).
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

const AnalysisKind& fourier_analysis();

namespace {

// fourier.csv, attention.csv (models with attention), neuron_spectrum.dat and logit_spectrum.dat.
void write_files(const std::string& run_dir, const FourierReport& r) {
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

int run_fourier(const AnalysisOptions& opts) {
  auto [ck, run_dir] = load_for_analysis(fourier_analysis(), opts.path);
  Model model = model_from_checkpoint(ck);
  auto r = analyse_fourier(model);
  const int64_t nf = n_frequencies(r.cycle.n);
  if (!run_dir.empty()) write_files(run_dir, r);
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

}  // namespace

const AnalysisKind& fourier_analysis() {
  static const AnalysisKind k = [] {
    AnalysisKind a;
    a.name = "fourier";
    a.doc = "Fourier spectra of W_E, W_U and the MLP neurons; key frequencies; Gini";
    a.scope = AnalysisKind::Scope::checkpoint;
    a.needs = {Capability::pairs, Capability::cycle, Capability::pair_readout};
    a.files = {{"fourier.csv"}, {"attention.csv", uint32_t(Capability::heads)}, {"neuron_spectrum.dat"}, {"logit_spectrum.dat"}};
    a.figures = {"spectrum", "neurons", "logits2d", "attention"};
    a.source = "Nanda et al. 2023, sections 4.1-4.2 and Fig. 3-5 (key frequencies, neuron clusters)";
    a.report = {{"Fourier spectrum (one row a frequency)", "fourier.csv"}};
    a.run = run_fourier;
    return a;
  }();
  return k;
}

}  // namespace grokking
