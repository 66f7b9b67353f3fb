#include <algorithm>
#include <cmath>

#include "grokking/analysis.hpp"
#include "grokking/error.hpp"

namespace grokking {

// The paper's reading of W_L (section 4.2): W_L ~ sum_k cos(w_k) u_k^T + sin(w_k) v_k^T, and the
// terms u_k . MLP(a, b), v_k . MLP(a, b) ~ multiples of cos(w_k(a+b)), sin(w_k(a+b)); and its
// ablations in section 4.4 (the MLP activations projected onto those directions, or off them).
NeuronLogitReading read_neuron_logit_map(const Model& model, const Dataset& data, const Cache& all_pairs,
                                         const std::vector<int64_t>& freqs) {
  torch::NoGradGuard no_grad;
  const Cycle cycle = cycle_of(model.config().task);
  const int64_t n = cycle.n;
  if (!all_pairs.mlp_post.defined())
    throw UsageError("model.kind \"" + model.config().model.kind + "\" has no hidden neurons for W_L to read (attn_only)");
  for (auto k : freqs)
    if (k < 1 || k > n_frequencies(n))
      throw UsageError("frequency " + std::to_string(k) + " is out of range 1.." + std::to_string(n_frequencies(n)));
  NeuronLogitReading r;
  r.present = true;
  r.freqs = freqs;

  const auto W_L = neuron_logit_map(model);                // [C, m]
  auto wl = on_cycle(W_L, cycle);                           // [n, m], classes on the cycle
  wl = wl - wl.mean(0, true);                               // the constant component moves no softmax
  const auto F = fourier_basis(n);
  std::vector<int64_t> rows;                                // cos, sin rows of each key frequency
  std::vector<bool> is_cos;                                 // (frequency n/2 has no sin row)
  for (auto k : freqs) {
    const auto fr = frequency_rows(n, k);
    for (size_t j = 0; j < fr.size(); ++j) rows.push_back(fr[j]), is_cos.push_back(j == 0);
  }
  r.directions = int64_t(rows.size());
  const auto B = F.index_select(0, torch::tensor(rows, torch::kInt64));  // [2K, n]
  const auto coeffs = B.matmul(wl);                                      // [2K, m]: u_k, v_k as rows
  const double norm = wl.norm().item<double>();
  r.residual = norm > 0 ? (wl - B.t().matmul(coeffs)).norm().item<double>() / norm : 0.0;
  {
    auto sv = at::linalg_svdvals(wl).contiguous();
    const double* s = sv.data_ptr<double>();
    double total = 0, top = 0;
    for (int64_t i = 0; i < sv.size(0); ++i) {
      total += s[i] * s[i];
      if (i < int64_t(rows.size())) top += s[i] * s[i];
      if (i < 20) r.singular.push_back(s[i]);
    }
    r.top_share = total > 0 ? top / total : 0.0;
  }

  // Table 1: each direction's reading of the activations over the pairs on the cycle.
  const auto grid = cycle_grid(cycle, data.all_x);
  const auto acts = all_pairs.mlp_post.to(torch::kCPU, torch::kFloat64);  // [N, m]
  const auto on_grid = acts.index_select(0, grid);                         // [n^2, m]
  const auto read = on_grid.matmul(coeffs.t());                            // [n^2, 2K]
  const auto centred = read - read.mean(0, true);
  const auto dirs = relation_directions(cycle, data.all_x, freqs).index_select(1, grid);  // [2K, n^2]
  for (size_t i = 0; i < rows.size(); ++i) {
    auto x = centred.select(1, int64_t(i));
    const double var = x.pow(2).sum().item<double>();
    const double along = dirs[int64_t(i)].dot(x).item<double>();  // each direction sums to 0 over the grid
    const double fve = var > 0 ? along * along / var : 0.0;
    if (is_cos[i]) {
      r.fve_cos.push_back(fve);
      if (i + 1 == rows.size() || is_cos[i + 1]) r.fve_sin.push_back(std::nan(""));  // k = n/2: no sin row
    } else {
      r.fve_sin.push_back(fve);
    }
  }

  // Section 4.4: the activations projected onto span{u_k, v_k} or its complement; the logits move
  // by the change through W_L (the rest of the forward is untouched).
  const auto Q = rows.empty() ? torch::zeros({acts.size(1), 0}, torch::kFloat64)
                              : std::get<0>(at::linalg_qr(coeffs.t()));  // [m, 2K] orthonormal
  const auto onto = acts.matmul(Q).matmul(Q.t());
  const auto logits = all_pairs.logits.to(torch::kCPU, torch::kFloat64);
  const auto W = W_L.t();  // [m, C]
  r.model = evaluate_splits(logits, data.all_y, data.train_mask);
  r.projected = evaluate_splits(logits + (onto - acts).matmul(W), data.all_y, data.train_mask);
  r.null_space = evaluate_splits(logits - onto.matmul(W), data.all_y, data.train_mask);
  return r;
}

}  // namespace grokking
