#include "grokking/analysis.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

#include "grokking/error.hpp"

namespace grokking {

// The neurons' 2-D Fourier spectra over the pairs (a, b).

void for_each_run(const torch::Tensor& index, const std::function<void(int64_t begin, int64_t end, int64_t value)>& fn) {
  const auto iv = index.to(torch::kCPU).contiguous();
  const int64_t* ip = iv.data_ptr<int64_t>();
  const int64_t rows = iv.size(0);
  for (int64_t begin = 0; begin < rows;) {
    int64_t end = begin + 1;
    while (end < rows && ip[end] == ip[begin]) ++end;
    fn(begin, end, ip[begin]);
    begin = end;
  }
}

SpectrumSums::SpectrumSums(int64_t n, int64_t width)
    : n_(n), basis_(fourier_basis(n).to(torch::kFloat32)) {
  // Per frequency k, the products of its basis rows {const, cos k, sin k} over a (u) and over b
  // (v), laid out block after block: product row (k, u, v) reads basis row u at i and v at j.
  std::vector<int64_t> u_rows, v_rows;
  for (int64_t k = 1; k <= n_frequencies(n); ++k) {
    auto rows = frequency_rows(n, k);
    rows.insert(rows.begin(), 0);
    blocks_.push_back(int64_t(rows.size()));
    for (auto u : rows)
      for (auto v : rows) u_rows.push_back(u), v_rows.push_back(v);
  }
  u_rows_ = torch::tensor(u_rows, torch::kInt64), v_rows_ = torch::tensor(v_rows, torch::kInt64);
  coeffs_ = torch::zeros({int64_t(u_rows.size()), width}, torch::kFloat64);
  sum_ = torch::zeros({width}, torch::kFloat64), sum_sq_ = sum_.clone();
}

void SpectrumSums::add(const torch::Tensor& values, const torch::Tensor& i, const torch::Tensor& j) {
  torch::NoGradGuard no_grad;
  const int64_t rows = values.size(0);
  if (rows == 0) return;
  auto x = values.to(torch::kCPU, torch::kFloat32);
  // Every value less the first pair's (per column): over the whole grid only the (const, const)
  // component moves, which the spectrum leaves out, and the float32 products lose nothing to a
  // large mean.
  if (!shift_.defined()) shift_ = x[0].clone();
  x = x - shift_;
  // Each run of pairs with one i at once (pairs in row-major order come a row at a time): the
  // transform over b of the run, Y = F[:, j] x ([n, width]: n s width multiplies), then every
  // product row (k, u, v) adds F[u, i] Y[v] (9 n/2 rows): n^3 width in all over the grid.
  for_each_run(i, [&](int64_t begin, int64_t end, int64_t at) {
    const auto Y = basis_.index_select(1, j.narrow(0, begin, end - begin)).matmul(x.narrow(0, begin, end - begin));
    const auto at_i = basis_.select(1, at).index_select(0, u_rows_);  // F[u, i] per product row
    coeffs_ += (at_i.unsqueeze(1) * Y.index_select(0, v_rows_)).to(torch::kFloat64);
  });
  const auto xd = x.to(torch::kFloat64);
  sum_ += xd.sum(0), sum_sq_ += xd.pow(2).sum(0);
  count_ += double(rows);
}

NeuronSpectrum SpectrumSums::spectrum() const {
  if (count_ != double(n_ * n_))
    throw std::logic_error("SpectrumSums: " + std::to_string(int64_t(count_)) + " pairs added, the grid has " +
                           std::to_string(n_ * n_));
  NeuronSpectrum s;
  s.variance = (sum_sq_ - sum_.pow(2) / count_).clamp_min(0);  // the sum of all squared centred coefficients
  std::vector<torch::Tensor> explained;
  int64_t at = 0;
  for (const auto b : blocks_) {
    const int64_t size = b * b;
    // Leave out the first product, (const, const): it is what centring removes.
    explained.push_back(coeffs_.narrow(0, at + 1, size - 1).pow(2).sum(0));
    at += size;
  }
  s.frac = torch::stack(explained) / s.variance.clamp_min(1e-30);
  return s;
}

NeuronSpectrum neuron_spectrum(const torch::Tensor& acts, int64_t p) {
  if (acts.dim() != 2 || acts.size(0) != p * p) throw std::invalid_argument("neuron_spectrum: acts must be [P^2, m]");
  const auto pair = torch::arange(p * p, torch::kInt64);
  SpectrumSums sums(p, acts.size(1));
  sums.add(acts, pair.div(p, "floor"), pair.remainder(p));
  return sums.spectrum();
}

}  // namespace grokking
