// Finite groups and their irreducible representations, by their characters: cyclic C_n,
// dihedral D_n (order 2n), symmetric S_n (n <= 6) and alternating A_n (n <= 5). What the group
// task trains on (its multiplication table) and what its analysis measures with (the real
// irreps' characters and isotypic projectors). Torch-free.
#pragma once
#include <complex>
#include <cstdint>
#include <string>
#include <vector>

namespace grokking {

struct FiniteGroup {
  std::string name;  // "C7", "D5", "S4", "A5"
  std::string family;  // "C", "D", "S", "A"
  int64_t n = 0;     // the group's parameter: C_n, D_n, S_n, A_n
  int64_t order = 0;
  // Elements 0..order-1 in the documented order, the identity first:
  //   C_n: k (the residue); D_n: r^k for k < n, then r^k s (index n + k); S_n and A_n: the
  //   permutations of 0..n-1 (even ones for A_n) in lexicographic order of their images.
  std::vector<std::string> names;            // "3"; "r^2 s"; "(0 1 2)(3 4)"
  std::vector<std::vector<int>> images;      // S_n, A_n: each permutation as its images p(0..n-1)
  std::vector<int32_t> table;                // order*order: a.b (for permutations (a.b)(i) = a(b(i)))
  std::vector<int32_t> inverse;
  std::vector<int32_t> class_of;             // each element's conjugacy class
  std::vector<std::vector<int32_t>> classes; // conjugacy classes, the identity's first
  int32_t mul(int64_t a, int64_t b) const { return table[size_t(a * order + b)]; }
  bool abelian() const;
};

// "C<n>" (n >= 1), "D<n>" (n >= 1, order 2n), "S<n>" (1 <= n <= 6), "A<n>" (1 <= n <= 5).
// UsageError("WHERE: ... (got X)") naming the allowed values otherwise.
FiniteGroup make_group(const std::string& spec, const std::string& where);
// The order a spec names without building the group (the memory estimate, before anything is
// allocated); UsageError as make_group.
int64_t group_order(const std::string& spec, const std::string& where);

// The operations of the group task: a.b, a.b.a^-1 (Power et al.'s conjugation) and a.b.a.
const std::vector<std::string>& group_operation_names();
int32_t group_operation(const FiniteGroup& g, const std::string& op, int32_t a, int32_t b);

// The complex irreducible characters, one value per element: C_n and D_n in closed form, S_n by
// the Murnaghan-Nakayama rule (every partition of n), A_n from S_n (a self-conjugate partition
// splits into two irreps on the classes of its diagonal hook lengths).
struct ComplexIrrep {
  std::string name;
  int64_t dim = 0;
  std::vector<std::complex<double>> character;  // per element
};
std::vector<ComplexIrrep> complex_irreps(const FiniteGroup& g);
// The Frobenius-Schur indicator (1/|G|) sum_g chi(g^2): 1 real, 0 complex, -1 quaternionic.
double frobenius_schur(const FiniteGroup& g, const ComplexIrrep& irrep);

// The real irreps the measures work with: a real-type complex irrep as it is; a complex one
// together with its conjugate (as the cos/sin pair of a frequency of C_n); a quaternionic one
// doubled.
struct RealIrrep {
  std::string name;
  int64_t dim = 0;                 // real dimension
  std::vector<double> character;   // the real irrep's character, per element
  // The isotypic projector on functions of G: P[x][y] = scale * projector_character[x y^-1]
  // (scale = d/|G| with d the complex constituent's dimension): P f is f's part in this irrep's
  // isotypic component; the projectors of all real irreps sum to the identity.
  std::vector<double> projector_character;
  double projector_scale = 0;
  int64_t frequency = 0;  // C_n: the Fourier frequency k of the cos/sin pair it is (0: trivial; n/2: sign)
  bool trivial() const { return name == "trivial"; }
};
std::vector<RealIrrep> real_irreps(const FiniteGroup& g);

}  // namespace grokking
