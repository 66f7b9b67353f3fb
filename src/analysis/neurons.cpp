#include "grokking/analysis.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

#include "grokking/error.hpp"

namespace grokking {

// The neurons' 2-D Fourier spectra over the pairs (a, b).

NeuronSpectrum neuron_spectrum(const torch::Tensor& acts, int64_t p) {
  torch::NoGradGuard no_grad;
  if (acts.dim() != 2 || acts.size(0) != p * p) throw std::invalid_argument("neuron_spectrum: acts must be [P^2, m]");
  const int64_t m = acts.size(1), nf = n_frequencies(p);
  // Float32 like the activations themselves (fractions good to about 1e-6): at P=113 the float64
  // version spent most of its time converting and allocating 50 MB tensors.
  auto x = acts.to(torch::kFloat32);
  // Centring removes exactly the (const, const) component; the basis is orthonormal, so the
  // other coefficients do not change.
  auto centred = x - x.mean(0, true);
  NeuronSpectrum s;
  s.variance = centred.pow(2).sum(0).to(torch::kFloat64);  // = the sum of all squared coefficients
  // Transform over a once ([i, b, m]); over b only the 3x3 block {const, cos k, sin k}^2 of each
  // frequency is needed, 3 basis rows per frequency: P^2 m (P + 9) multiplies instead of the
  // 2 P^3 m of the full 2-D transform.
  auto F = fourier_basis(p).to(torch::kFloat32);
  auto over_a = F.matmul(centred.view({p, p * m})).view({p, p, m});
  std::vector<torch::Tensor> explained;
  for (int64_t k = 1; k <= nf; ++k) {
    auto rows = frequency_rows(p, k);
    rows.insert(rows.begin(), 0);
    auto idx = torch::tensor(rows, torch::kInt64);
    auto block = torch::matmul(F.index_select(0, idx), over_a.index_select(0, idx));  // [i, j, m]
    explained.push_back(block.to(torch::kFloat64).pow(2).sum(torch::IntArrayRef{0, 1}));  // over the (a, b) block
  }
  s.frac = torch::stack(explained) / s.variance.clamp_min(1e-30);
  return s;
}

}  // namespace grokking
