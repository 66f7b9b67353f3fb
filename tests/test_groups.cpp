// Finite groups and their characters: the tables are groups, and the characters are every
// irrep's, checked over the complex numbers (orthogonality, sum of squares, as many as classes).
#include <cmath>
#include <complex>
#include <functional>
#include <map>

#include "catch.hpp"
#include "grokking/error.hpp"
#include "grokking/groups.hpp"
#include "helpers.hpp"

using namespace grokking;
using test::error_of;

namespace {
const std::vector<std::string> kGroups = {"C1", "C2", "C7", "C12", "D1", "D2", "D3", "D4", "D5", "D6", "S1", "S2",
                                          "S3", "S4", "S5", "S6", "A3", "A4", "A5"};
}  // namespace

TEST_CASE("groups: the tables are groups, the identity first, and the orders are right", "[groups]") {
  const std::map<std::string, int64_t> orders = {{"C7", 7}, {"D5", 10}, {"S4", 24}, {"S5", 120}, {"S6", 720},
                                                 {"A4", 12}, {"A5", 60}, {"D1", 2}, {"S1", 1}};
  for (auto& spec : kGroups) {
    INFO(spec);
    const FiniteGroup g = make_group(spec, "x");
    if (orders.count(spec)) CHECK(g.order == orders.at(spec));
    CHECK(g.order == group_order(spec, "x"));
    bool ok = true;
    for (int64_t a = 0; a < g.order && ok; ++a) {
      ok = ok && g.mul(0, a) == a && g.mul(a, 0) == a;                        // identity first
      ok = ok && g.mul(a, g.inverse[size_t(a)]) == 0;                          // inverses
      for (int64_t b = 0; b < g.order && ok; ++b)
        for (int64_t c = 0; c < g.order && ok && g.order <= 120; ++c)        // associativity
          ok = g.mul(g.mul(a, b), c) == g.mul(a, g.mul(b, c));
    }
    CHECK(ok);
    CHECK(g.names.size() == size_t(g.order));
  }
  // Conventions: S_n composes right to left ((a.b)(i) = a(b(i))); D_n's s r s = r^-1.
  const FiniteGroup s3 = make_group("S3", "x");
  for (int64_t a = 0; a < s3.order; ++a)
    for (int64_t b = 0; b < s3.order; ++b)
      for (int i = 0; i < 3; ++i)
        CHECK(s3.images[size_t(s3.mul(a, b))][size_t(i)] == s3.images[size_t(a)][size_t(s3.images[size_t(b)][size_t(i)])]);
  const FiniteGroup d5 = make_group("D5", "x");
  CHECK(d5.mul(d5.mul(5, 1), 5) == 4);  // s r s = r^-1 = r^4
  CHECK(d5.names[6] == "r s");
  CHECK(make_group("S4", "x").classes.size() == 5);
  CHECK(make_group("A5", "x").classes.size() == 5);
  CHECK(make_group("A4", "x").classes.size() == 4);
  CHECK(make_group("S6", "x").classes.size() == 11);
  CHECK_FALSE(make_group("S3", "x").abelian());
  CHECK(make_group("C12", "x").abelian());
}

TEST_CASE("groups: bad specs are refused naming what is allowed", "[groups]") {
  CHECK(error_of([] { make_group("S7", "cfg: /task/group"); }) ==
        "cfg: /task/group: S<n> is offered up to S6 (720 elements); S7 has 5040 (got \"S7\")");
  CHECK(error_of([] { make_group("D0", "w"); }).find("D<n> needs n >= 1") != std::string::npos);
  CHECK(error_of([] { make_group("A6", "w"); }).find("A<n> is offered up to A5") != std::string::npos);
  for (auto* bad : {"Q8", "S", "s5", "C-3", "S5x", "", "C99999999999"})
    CHECK(error_of([&] { make_group(bad, "w"); }).find("w: ") == 0);
}

TEST_CASE("characters: orthonormal rows and columns, sum of squared dimensions |G|, as many as classes", "[groups]") {
  for (auto& spec : kGroups) {
    INFO(spec);
    const FiniteGroup g = make_group(spec, "x");
    const auto irreps = complex_irreps(g);
    const auto N = double(g.order);
    CHECK(irreps.size() == g.classes.size());
    int64_t sum_sq = 0;
    for (auto& r : irreps) sum_sq += r.dim * r.dim;
    CHECK(sum_sq == g.order);
    // Rows: (1/|G|) sum_g chi_i(g) conj(chi_j(g)) = delta_ij.
    double worst_row = 0;
    for (size_t i = 0; i < irreps.size(); ++i)
      for (size_t j = 0; j < irreps.size(); ++j) {
        std::complex<double> s = 0;
        for (int64_t x = 0; x < g.order; ++x) s += irreps[i].character[size_t(x)] * std::conj(irreps[j].character[size_t(x)]);
        worst_row = std::max(worst_row, std::abs(s / N - (i == j ? 1.0 : 0.0)));
      }
    CHECK(worst_row < 1e-9);
    // Columns: sum_i chi_i(g) conj(chi_i(h)) = |C_G(g)| when g ~ h, else 0; class functions.
    double worst_col = 0;
    for (auto& cg : g.classes)
      for (auto& ch : g.classes) {
        std::complex<double> s = 0;
        for (auto& r : irreps) s += r.character[size_t(cg[0])] * std::conj(r.character[size_t(ch[0])]);
        const double want = &cg == &ch ? N / double(cg.size()) : 0.0;
        worst_col = std::max(worst_col, std::abs(s - want));
      }
    CHECK(worst_col < 1e-9);
    for (auto& r : irreps)
      for (auto& c : g.classes)
        for (auto x : c) CHECK(std::abs(r.character[size_t(x)] - r.character[size_t(c[0])]) < 1e-12);
  }
}

TEST_CASE("real irreps: named, their isotypic projectors sum to the identity, and C_n's are the frequencies", "[groups]") {
  for (auto& spec : kGroups) {
    INFO(spec);
    const FiniteGroup g = make_group(spec, "x");
    const auto irreps = real_irreps(g);
    int64_t sum_sq_complex = 0;
    for (auto& r : irreps) {
      // The projector's trace is the dimension of the isotypic component: d^2 per complex constituent.
      const double trace = r.projector_scale * r.projector_character[0] * double(g.order);
      sum_sq_complex += std::lround(trace);
      for (auto v : r.character) CHECK(std::isfinite(v));
    }
    CHECK(sum_sq_complex == g.order);
    // sum_rho P_rho = I: sum_rho scale_rho chi_rho(x y^-1) = delta_xy, at y = identity.
    for (int64_t x = 0; x < g.order; ++x) {
      double s = 0;
      for (auto& r : irreps) s += r.projector_scale * r.projector_character[size_t(x)];
      CHECK(std::abs(s - (x == 0 ? 1.0 : 0.0)) < 1e-9);
    }
    CHECK(irreps[0].name == "trivial");
  }
  // C_n: the 2-d real irrep of frequency k has the character 2 cos(2 pi k x / n): the span of the
  // cos/sin rows of frequency k in the Fourier basis.
  const FiniteGroup c7 = make_group("C7", "x");
  const auto r7 = real_irreps(c7);
  REQUIRE(r7.size() == 4);  // trivial and frequencies 1, 2, 3
  for (int64_t k = 1; k <= 3; ++k) {
    CHECK(r7[size_t(k)].frequency == k);
    CHECK(r7[size_t(k)].name == "freq " + std::to_string(k));
    CHECK(r7[size_t(k)].dim == 2);
    for (int64_t x = 0; x < 7; ++x) CHECK(r7[size_t(k)].character[size_t(x)] == Approx(2 * std::cos(2 * M_PI * double(k * x) / 7)));
  }
  CHECK(real_irreps(make_group("C12", "x"))[6].name == "sign");
  // S_n's named irreps; A4's complex pair is one real irrep; A5's split pair stays two (real).
  std::vector<std::string> s5;
  for (auto& r : real_irreps(make_group("S5", "x"))) s5.push_back(r.name + ":" + std::to_string(r.dim));
  CHECK(s5 == std::vector<std::string>{"trivial:1", "standard (4,1):4", "(3,2):5", "(3,1,1):6", "(2,2,1):5",
                                       "standard⊗sign (2,1,1,1):4", "sign:1"});
  std::vector<std::string> a4, a5;
  for (auto& r : real_irreps(make_group("A4", "x"))) a4.push_back(r.name + ":" + std::to_string(r.dim));
  for (auto& r : real_irreps(make_group("A5", "x"))) a5.push_back(r.name + ":" + std::to_string(r.dim));
  CHECK(a4 == std::vector<std::string>{"trivial:1", "standard (3,1):3", "(2,2)±:2"});
  CHECK(a5 == std::vector<std::string>{"trivial:1", "standard (4,1):4", "(3,2):5", "(3,1,1)+:3", "(3,1,1)-:3"});
  // The dihedral group's irreps: two (four for even n) of dimension 1, and the 2-d frequencies.
  std::vector<std::string> d6;
  for (auto& r : real_irreps(make_group("D6", "x"))) d6.push_back(r.name + ":" + std::to_string(r.dim));
  CHECK(d6 == std::vector<std::string>{"trivial:1", "sign:1", "r-sign:1", "r-sign⊗sign:1", "freq 1:2", "freq 2:2"});
}

TEST_CASE("group operations: compose, Power et al.'s conjugation and a.b.a", "[groups]") {
  const FiniteGroup g = make_group("S4", "x");
  for (int32_t a = 0; a < g.order; a += 5)
    for (int32_t b = 0; b < g.order; b += 3) {
      CHECK(group_operation(g, "compose", a, b) == g.mul(a, b));
      CHECK(g.mul(group_operation(g, "conjugate", a, b), a) == g.mul(a, b));
      CHECK(group_operation(g, "a*b*a", a, b) == g.mul(g.mul(a, b), a));
    }
}
