#include <torch/torch.h>

#include <numeric>

#include <cmath>
#include <limits>

#include "catch.hpp"
#include "grokked_run.hpp"
#include "grokking/analysis.hpp"
#include "grokking/checkpoint.hpp"
#include "grokking/error.hpp"
#include "grokking/progress.hpp"
#include "grokking/rundir.hpp"
#include "helpers.hpp"

using namespace grokking;

TEST_CASE("the Fourier basis is orthonormal, for odd and even P", "[analysis]") {
  for (int64_t p : {113, 23, 12}) {
    auto F = fourier_basis(p);
    CHECK(F.size(0) == p);
    CHECK((F.matmul(F.t()) - torch::eye(p, torch::kFloat64)).abs().max().item<double>() < 1e-12);
  }
  CHECK(n_frequencies(113) == 56);
  CHECK(frequency_rows(113, 56) == std::vector<int64_t>{111, 112});  // the last frequency is tested too
  CHECK(frequency_rows(12, 6) == std::vector<int64_t>{11});
}

TEST_CASE("a planted pure-frequency embedding has all its norm at that frequency", "[analysis]") {
  const int64_t p = 31, d = 8, k = 7;
  auto x = torch::arange(p, torch::kFloat64).unsqueeze(1);
  auto v1 = torch::randn({1, d}, torch::kFloat64), v2 = torch::randn({1, d}, torch::kFloat64);
  auto W = torch::cos(2 * M_PI * k * x / p).matmul(v1) + torch::sin(2 * M_PI * k * x / p).matmul(v2);
  auto norms = frequency_norms(W);
  REQUIRE(norms.size() == 15);
  // ||cos||^2 = P/2, so the norm is sqrt(P/2 (|v1|^2 + |v2|^2)).
  double expect = std::sqrt(p / 2.0 * (v1.pow(2).sum().item<double>() + v2.pow(2).sum().item<double>()));
  CHECK(norms[k - 1] == Approx(expect).epsilon(1e-10));
  for (int64_t j = 1; j <= 15; ++j)
    if (j != k) CHECK(norms[size_t(j - 1)] < 1e-10);
  // Its cos and sin parts apart: sqrt(P/2) |v1| and sqrt(P/2) |v2|.
  auto parts = frequency_components(W);
  CHECK(parts.cos[k - 1] == Approx(std::sqrt(p / 2.0 * v1.pow(2).sum().item<double>())).epsilon(1e-10));
  CHECK(parts.sin[k - 1] == Approx(std::sqrt(p / 2.0 * v2.pow(2).sum().item<double>())).epsilon(1e-10));
  // Even P: the last frequency has a cos row only.
  auto even = frequency_components(torch::cos(M_PI * torch::arange(12, torch::kFloat64)).unsqueeze(1));
  CHECK(even.cos.back() == Approx(std::sqrt(12.0)).epsilon(1e-10));
  CHECK(even.sin.back() == 0.0);
  // One non-zero value among n: Gini = (n-1)/n. Equal values: 0.
  CHECK(gini(norms) == Approx(14.0 / 15.0).epsilon(1e-9));
  CHECK(gini(std::vector<double>(10, 2.5)) == Approx(0.0).margin(1e-12));
}

TEST_CASE("an untrained model's spectrum is spread out", "[analysis]") {
  Config cfg;
  cfg.task.set("p", 23);
  auto r = analyse_fourier(Model(cfg));
  CHECK(r.gini_embed < 0.35);
  CHECK(r.key_embed.size() <= 2);
}

// ---- on the grokked configs/ci-small.json model (trained once per test process) ----

TEST_CASE("a grokked model is sparse in frequency, and both methods find its key frequencies", "[ci-small]") {
  const auto& run = test::grokked_run();
  auto ck = load_checkpoint(resolve_checkpoint(run.dir));
  Model m = model_from_checkpoint(ck);
  auto r = analyse_fourier(m);
  Config untrained_cfg = ck.config;
  auto untrained = analyse_fourier(Model(untrained_cfg));
  INFO("key (neurons) " << r.key_neurons.size() << ", key (embed) " << r.key_embed.size());
  CHECK(r.key_neurons.size() >= 1);
  CHECK(r.key_neurons.size() <= 6);
  CHECK(r.frac_neurons_clustered > 0.6);
  CHECK(r.gini_embed > untrained.gini_embed + 0.15);
  // The embedding norms single out the neurons' frequencies.
  for (auto k : r.key_embed)
    CHECK(std::find(r.key_neurons.begin(), r.key_neurons.end(), k) != r.key_neurons.end());
  // The neuron-logit map W_L is sparse in the same frequencies, and sparser than untrained.
  CHECK(r.key_wl == r.key_neurons);
  CHECK(r.gini_wl > untrained.gini_wl + 0.15);
  // The paper's clusters (>= 85 %) are a subset of the >= 50 % ones; the histogram counts the live neurons.
  CHECK(r.frac_neurons_85 <= r.frac_neurons_clustered);
  CHECK(r.frac_neurons_85 > 0.5);
  int64_t live = 0;
  for (auto k : r.neuron_freq) live += k > 0;
  CHECK(std::accumulate(r.neuron_frac_hist.begin(), r.neuron_frac_hist.end(), int64_t(0)) == live);
  // The attention to a varies with a at a key frequency, in most heads.
  REQUIRE(r.attn_key.size() == size_t(ck.config.model.integer("n_heads")));
  size_t at_key = 0;
  for (auto k : r.attn_key) at_key += std::find(r.key_neurons.begin(), r.key_neurons.end(), k) != r.key_neurons.end();
  CHECK(2 * at_key >= r.attn_key.size());
  // Over (a, b) each head is mostly a degree-2 polynomial of one frequency, the one it varies with over a.
  REQUIRE(r.attn_2d_key.size() == r.attn_key.size());
  size_t polynomial = 0;
  for (size_t h = 0; h < r.attn_key.size(); ++h) {
    CHECK(r.attn_2d_frac[h] >= 0);
    CHECK(r.attn_2d_frac[h] <= 1 + 1e-9);
    if (r.attn_2d_frac[h] > 0.8 && r.attn_2d_key[h] == r.attn_key[h]) ++polynomial;
  }
  CHECK(2 * polynomial >= r.attn_key.size());
}


TEST_CASE("the Fourier analysis in chunks of pairs and blocks of columns gives the figures of the whole", "[analysis]") {
  // An untrained model has a spread spectrum: every component is non-zero, so every block counts.
  for (const std::string op : {"add", "mul"}) {  // mul: the cycle of discrete logs, pairs with a 0 left out
    INFO(op);
    Config cfg = test::tiny_config(11);
    cfg.task.set("operation", op);
    Model model(cfg);
    const Cycle cycle = cycle_of(cfg.task);
    const int64_t n = cycle.n, classes = model.shape().classes;
    const auto whole = analyse_fourier(model);
    // Chunks of 7 pairs, nothing held (every pass runs the model again), 3 columns of the
    // logits' spectrum a pass (4 passes).
    PairBounds small;
    small.chunk = 7, small.hold_bytes = 0, small.block_bytes = 8.0 * double(n * classes * 3);
    const auto parts = analyse_fourier(model, small);
    // The reference: the logits and the hidden activations of every pair at once, transformed whole.
    const auto data = make_dataset(cfg.task);
    const Cache all = run_pair_forward(model);
    const auto grid = cycle_grid(cycle, data.all_x);
    const auto F = fourier_basis(n);
    const auto L = all.logits.to(torch::kFloat64).index_select(0, grid).reshape({n, n, -1});
    const auto C = torch::tensordot(F, torch::tensordot(F, L, {1}, {0}), {1}, {1});  // [j', i', c]
    const auto expected = C.pow(2).sum(2).sqrt().t();
    REQUIRE(parts.logit_2d_norm.sizes() == expected.sizes());
    CHECK(torch::allclose(whole.logit_2d_norm, expected, 1e-5, 1e-7));
    CHECK(torch::allclose(parts.logit_2d_norm, expected, 1e-5, 1e-7));
    const auto spectrum = neuron_spectrum(all.mlp_post.index_select(0, grid), n);
    CHECK(torch::allclose(parts.neuron_frac_matrix, spectrum.frac, 1e-4, 1e-6));
    CHECK(torch::allclose(whole.neuron_frac_matrix, spectrum.frac, 1e-4, 1e-6));
    CHECK(parts.neuron_freq == whole.neuron_freq);
    CHECK(parts.key_neurons == whole.key_neurons);
    CHECK(key_frequencies(model) == whole.key_neurons);  // one pass, no logit spectrum
    CHECK(!analyse_fourier(model, small, false).logit_2d_norm.defined());
    // The attention to a: its mean over b, and its spectrum over (a, b).
    const auto to_a = all.attn_pattern.select(2, 0).to(torch::kFloat64);
    const auto by_a = torch::zeros({cycle.p, to_a.size(1)}, torch::kFloat64)
                          .index_add_(0, data.all_x.select(1, 0), to_a)
                          .index_select(0, torch::tensor(cycle.value_of, torch::kInt64)) /
                      double(cycle.p);
    CHECK(torch::allclose(parts.attn_by_a, by_a, 1e-5, 1e-7));
    const auto heads = neuron_spectrum(to_a.index_select(0, grid), n);
    REQUIRE(parts.attn_2d_frac.size() == size_t(to_a.size(1)));
    for (int64_t h = 0; h < to_a.size(1); ++h) {
      CHECK(parts.attn_2d_frac[size_t(h)] == Approx(heads.frac.select(1, h).max().item<double>()).epsilon(1e-4));
      CHECK(parts.attn_2d_frac[size_t(h)] == Approx(whole.attn_2d_frac[size_t(h)]).epsilon(1e-4));
    }
  }
}
