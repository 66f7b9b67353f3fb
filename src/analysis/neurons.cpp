#include "grokking/analysis.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

#include "grokking/error.hpp"

namespace grokking {

// The neurons' 2-D Fourier spectra over the pairs (a, b).

SpectrumSums::SpectrumSums(int64_t n, int64_t width)
    : n_(n), width_(width), basis_(fourier_basis(n).to(torch::kFloat32)) {
  for (int64_t k = 1; k <= n_frequencies(n); ++k) {
    auto rows = frequency_rows(n, k);
    rows.insert(rows.begin(), 0);
    blocks_.push_back(torch::tensor(rows, torch::kInt64));
    products_ += int64_t(rows.size() * rows.size());
  }
  coeffs_ = torch::zeros({products_, width}, torch::kFloat64);
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
  const auto Fi = basis_.index_select(1, i), Fj = basis_.index_select(1, j);  // [n, rows]
  std::vector<torch::Tensor> w;
  for (const auto& b : blocks_)
    w.push_back((Fi.index_select(0, b).unsqueeze(1) * Fj.index_select(0, b).unsqueeze(0)).reshape({b.size(0) * b.size(0), rows}));
  coeffs_ += torch::cat(w).matmul(x).to(torch::kFloat64);  // [products, width]
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
  for (const auto& b : blocks_) {
    const int64_t size = b.size(0) * b.size(0);
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
