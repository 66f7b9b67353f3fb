#include <torch/torch.h>

#include <cmath>
#include <limits>

#include "catch.hpp"
#include "grokked_run.hpp"
#include "grokking/analysis.hpp"
#include "grokking/checkpoint.hpp"
#include "grokking/progress.hpp"
#include "grokking/rundir.hpp"
#include "helpers.hpp"

using namespace grokking;

TEST_CASE("neuron spectra of planted activations have their closed forms", "[analysis]") {
  const int64_t p = 11;
  auto a = torch::arange(p, torch::kFloat64).view({p, 1}).expand({p, p}).reshape(-1);  // row-major (a, b)
  auto b = torch::arange(p, torch::kFloat64).view({1, p}).expand({p, p}).reshape(-1);
  auto w = [&](int64_t k) { return 2 * M_PI * double(k) / double(p); };
  auto acts = torch::stack({
                               5 + torch::cos(w(3) * a) * torch::sin(w(3) * b),  // both inputs at k=3, offset
                               torch::cos(w(2) * a) + 2 * torch::sin(w(4) * b),  // variance 1 : 4 at k=2, k=4
                               torch::full({p * p}, 7.0, torch::kFloat64),       // constant: no variance
                               torch::cos(w(1) * a) * torch::cos(w(2) * b),      // two frequencies: no block
                           },
                           1);
  auto s = neuron_spectrum(acts, p);
  REQUIRE(s.frac.sizes() == torch::IntArrayRef({5, 4}));
  auto f = [&](int64_t k, int64_t neuron) { return s.frac[k - 1][neuron].item<double>(); };
  // Variance over the P^2 pairs: cos^2 averages 1/2, a product of two 1/4.
  CHECK(s.variance[0].item<double>() == Approx(p * p / 4.0).epsilon(1e-5));
  CHECK(s.variance[1].item<double>() == Approx(p * p * (0.5 + 2.0)).epsilon(1e-5));
  CHECK(s.variance[2].item<double>() == Approx(0.0).margin(1e-6));
  CHECK(f(3, 0) == Approx(1.0).epsilon(1e-5));
  CHECK(f(2, 1) == Approx(0.2).epsilon(1e-5));
  CHECK(f(4, 1) == Approx(0.8).epsilon(1e-5));
  for (int64_t k = 1; k <= 5; ++k) {
    CHECK(f(k, 3) == Approx(0.0).margin(1e-5));
    if (k != 3) CHECK(f(k, 0) == Approx(0.0).margin(1e-5));
    if (k != 2 && k != 4) CHECK(f(k, 1) == Approx(0.0).margin(1e-5));
  }
}
