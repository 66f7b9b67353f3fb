#include <algorithm>
#include <cmath>
#include <optional>

#include "grokking/analysis.hpp"
#include "grokking/error.hpp"

namespace grokking {

// The paper's reading of W_L (section 4.2): W_L ~ sum_k cos(w_k) u_k^T + sin(w_k) v_k^T, and the
// terms u_k . MLP(a, b), v_k . MLP(a, b) ~ multiples of cos(w_k(a+b)), sin(w_k(a+b)); and its
// ablations in section 4.4 (the MLP activations projected onto those directions, or off them).
NeuronLogitReading read_neuron_logit_map(const Model& model, const Dataset& data, const std::vector<int64_t>& freqs,
                                         PairPass* pass) {
  torch::NoGradGuard no_grad;
  const Cycle cycle = cycle_of(model.config().task);
  const int64_t n = cycle.n;
  if (readout_of(model).neuron_to_logits.empty())
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

  // Section 4.4: the activations projected onto span{u_k, v_k} or its complement; the logits move
  // by the change through W_L (the rest of the forward is untouched).
  const auto Q = rows.empty() ? torch::zeros({wl.size(1), 0}, torch::kFloat64)
                              : std::get<0>(at::linalg_qr(coeffs.t()));  // [m, 2K] orthonormal
  const auto W = W_L.t();                                              // [m, C]

  // One pass over the pairs in chunks. Table 1: each direction's reading of the activations over
  // the pairs on the cycle, u_k . MLP(a, b): its variance there (sums less the first pair's
  // reading, so that a large mean costs no precision) and its dot product with cos or sin
  // (w_k(a+b)) (the directions sum to zero over the cycle's grid: centring does not change it).
  const auto index_of = torch::tensor(cycle.index_of, torch::kInt64);
  auto read_sum = torch::zeros({int64_t(rows.size())}, torch::kFloat64), read_sq = read_sum.clone(), along = read_sum.clone();
  torch::Tensor shift;
  double on_cycle_pairs = 0;
  SplitSums as_is, projected, null_space;
  std::optional<PairPass> own;
  if (!pass) pass = &own.emplace(model);
  pass->each([&](int64_t first, const Cache& c) {
    const int64_t n_rows = c.logits.size(0);
    const auto x = data.all_x.narrow(0, first, n_rows);
    const auto y = data.all_y.narrow(0, first, n_rows), train = data.train_mask.narrow(0, first, n_rows);
    const auto acts = c.mlp_post.to(torch::kCPU, torch::kFloat64);  // [rows, m]
    const auto logits = c.logits.to(torch::kCPU, torch::kFloat64);
    const auto on = index_of.index_select(0, x.select(1, 0)).ge(0).logical_and(index_of.index_select(0, x.select(1, 1)).ge(0));
    const auto grid = on.nonzero().squeeze(1);
    auto read = acts.index_select(0, grid).matmul(coeffs.t());  // [grid rows, 2K]
    if (!shift.defined() && read.size(0) > 0) shift = read[0].clone();
    if (shift.defined()) read = read - shift;
    read_sum += read.sum(0), read_sq += read.pow(2).sum(0);
    along += (relation_directions(cycle, x, freqs).index_select(1, grid) * read.t()).sum(1);
    on_cycle_pairs += double(grid.size(0));
    const auto onto = acts.matmul(Q).matmul(Q.t());
    as_is.add(logits, y, train);
    projected.add(logits + (onto - acts).matmul(W), y, train);
    null_space.add(logits - onto.matmul(W), y, train);
  });
  const auto var = (read_sq - read_sum.pow(2) / std::max(on_cycle_pairs, 1.0)).contiguous();
  for (size_t i = 0; i < rows.size(); ++i) {
    const double v = var[int64_t(i)].item<double>(), a = along[int64_t(i)].item<double>();
    const double fve = v > 0 ? a * a / v : 0.0;
    if (is_cos[i]) {
      r.fve_cos.push_back(fve);
      if (i + 1 == rows.size() || is_cos[i + 1]) r.fve_sin.push_back(std::nan(""));  // k = n/2: no sin row
    } else {
      r.fve_sin.push_back(fve);
    }
  }
  r.model = as_is.splits(), r.projected = projected.splits(), r.null_space = null_space.splits();
  return r;
}

}  // namespace grokking
