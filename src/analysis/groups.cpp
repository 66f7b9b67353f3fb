// Finite groups, their conjugacy classes and characters (groups.hpp). Torch-free.
#include "grokking/groups.hpp"

#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>

#include "grokking/error.hpp"
#include "grokking/text.hpp"

namespace grokking {

namespace {

using cplx = std::complex<double>;

[[noreturn]] void bad_spec(const std::string& where, const std::string& spec, const std::string& why) {
  throw UsageError(where + ": " + why + " (got \"" + short_text(spec) + "\")");
}

// "S5" -> {'S', 5}, with the limits of each family.
std::pair<char, int64_t> parse_spec(const std::string& spec, const std::string& where) {
  const std::string allowed = "must be C<n> (cyclic, n >= 1), D<n> (dihedral of order 2n, n >= 1), S<n> (symmetric, "
                              "n <= 6) or A<n> (alternating, n <= 5)";
  if (spec.size() < 2 || std::string("CDSA").find(spec[0]) == std::string::npos) bad_spec(where, spec, allowed);
  int64_t n = 0;
  for (size_t i = 1; i < spec.size(); ++i) {
    if (spec[i] < '0' || spec[i] > '9' || i > 7) bad_spec(where, spec, allowed);
    n = n * 10 + (spec[i] - '0');
  }
  const char f = spec[0];
  if (n < 1) bad_spec(where, spec, std::string(1, f) + "<n> needs n >= 1");
  if (f == 'S' && n > 6) bad_spec(where, spec, "S<n> is offered up to S6 (720 elements); S7 has 5040");
  if (f == 'A' && n > 5) bad_spec(where, spec, "A<n> is offered up to A5 (60 elements); A6 has 360");
  if ((f == 'C' && n > 4096) || (f == 'D' && n > 2048))
    bad_spec(where, spec, "at most 4096 elements: every pair is evaluated at once");
  return {f, n};
}

int64_t factorial(int64_t n) { return n <= 1 ? 1 : n * factorial(n - 1); }

std::string cycle_notation(const std::vector<int>& p) {
  std::vector<bool> seen(p.size(), false);
  std::string out;
  for (size_t i = 0; i < p.size(); ++i) {
    if (seen[i] || p[i] == int(i)) continue;
    out += "(";
    for (size_t j = i; !seen[j]; j = size_t(p[j])) {
      seen[j] = true;
      out += (out.back() == '(' ? "" : " ") + std::to_string(j);
    }
    out += ")";
  }
  return out.empty() ? "()" : out;
}

bool even(const std::vector<int>& p) {
  int transpositions = 0;
  std::vector<bool> seen(p.size(), false);
  for (size_t i = 0; i < p.size(); ++i) {
    if (seen[i]) continue;
    int len = 0;
    for (size_t j = i; !seen[j]; j = size_t(p[j])) seen[j] = true, ++len;
    transpositions += len - 1;
  }
  return transpositions % 2 == 0;
}

// Cycle type, parts in decreasing order (fixed points as 1s).
std::vector<int> cycle_type(const std::vector<int>& p) {
  std::vector<int> parts;
  std::vector<bool> seen(p.size(), false);
  for (size_t i = 0; i < p.size(); ++i) {
    if (seen[i]) continue;
    int len = 0;
    for (size_t j = i; !seen[j]; j = size_t(p[j])) seen[j] = true, ++len;
    parts.push_back(len);
  }
  std::sort(parts.rbegin(), parts.rend());
  return parts;
}

void finish(FiniteGroup& g) {
  const int64_t N = g.order;
  g.inverse.assign(size_t(N), -1);
  for (int64_t a = 0; a < N; ++a)
    for (int64_t b = 0; b < N; ++b)
      if (g.mul(a, b) == 0) g.inverse[size_t(a)] = int32_t(b);
  // Conjugacy classes by orbits of x -> y x y^-1, the identity's first (element 0).
  g.class_of.assign(size_t(N), -1);
  for (int64_t x = 0; x < N; ++x) {
    if (g.class_of[size_t(x)] >= 0) continue;
    const auto c = int32_t(g.classes.size());
    g.classes.emplace_back();
    for (int64_t y = 0; y < N; ++y) {
      const int32_t z = g.mul(g.mul(y, x), g.inverse[size_t(y)]);
      if (g.class_of[size_t(z)] < 0) g.class_of[size_t(z)] = c, g.classes.back().push_back(z);
    }
    std::sort(g.classes.back().begin(), g.classes.back().end());
  }
}

}  // namespace

bool FiniteGroup::abelian() const {
  for (int64_t a = 0; a < order; ++a)
    for (int64_t b = 0; b < a; ++b)
      if (mul(a, b) != mul(b, a)) return false;
  return true;
}

int64_t group_order(const std::string& spec, const std::string& where) {
  const auto [f, n] = parse_spec(spec, where);
  if (f == 'C') return n;
  if (f == 'D') return 2 * n;
  if (f == 'S') return factorial(n);
  return n <= 1 ? 1 : factorial(n) / 2;
}

FiniteGroup make_group(const std::string& spec, const std::string& where) {
  const auto [f, n] = parse_spec(spec, where);
  FiniteGroup g;
  g.name = spec;
  g.family = std::string(1, f);
  g.n = n;
  if (f == 'C') {
    g.order = n;
    for (int64_t k = 0; k < n; ++k) g.names.push_back(std::to_string(k));
    g.table.resize(size_t(n * n));
    for (int64_t a = 0; a < n; ++a)
      for (int64_t b = 0; b < n; ++b) g.table[size_t(a * n + b)] = int32_t((a + b) % n);
  } else if (f == 'D') {
    // r^a s^f . r^b s^g = r^(a + (-1)^f b) s^(f + g): element index k + f*n.
    g.order = 2 * n;
    for (int64_t fl = 0; fl < 2; ++fl)
      for (int64_t k = 0; k < n; ++k)
        g.names.push_back((k == 0 ? std::string(fl ? "" : "e") : k == 1 ? "r" : "r^" + std::to_string(k)) +
                          (fl ? (k == 0 ? "s" : " s") : ""));
    g.table.resize(size_t(g.order * g.order));
    for (int64_t x = 0; x < g.order; ++x)
      for (int64_t y = 0; y < g.order; ++y) {
        const int64_t a = x % n, fx = x / n, b = y % n, fy = y / n;
        const int64_t k = ((a + (fx ? -b : b)) % n + n) % n;
        g.table[size_t(x * g.order + y)] = int32_t(k + ((fx + fy) % 2) * n);
      }
  } else {
    std::vector<int> p(static_cast<size_t>(n));
    std::iota(p.begin(), p.end(), 0);
    do {
      if (f == 'S' || even(p)) g.images.push_back(p);
    } while (std::next_permutation(p.begin(), p.end()));
    g.order = int64_t(g.images.size());
    std::map<std::vector<int>, int32_t> index;
    for (size_t i = 0; i < g.images.size(); ++i) index[g.images[i]] = int32_t(i), g.names.push_back(cycle_notation(g.images[i]));
    g.table.resize(size_t(g.order * g.order));
    std::vector<int> ab(static_cast<size_t>(n));
    for (int64_t a = 0; a < g.order; ++a)
      for (int64_t b = 0; b < g.order; ++b) {
        for (int64_t i = 0; i < n; ++i) ab[size_t(i)] = g.images[size_t(a)][size_t(g.images[size_t(b)][size_t(i)])];
        g.table[size_t(a * g.order + b)] = index.at(ab);
      }
  }
  finish(g);
  return g;
}

const std::vector<std::string>& group_operation_names() {
  static const std::vector<std::string> ops = {"compose", "conjugate", "a*b*a"};
  return ops;
}

int32_t group_operation(const FiniteGroup& g, const std::string& op, int32_t a, int32_t b) {
  if (op == "compose") return g.mul(a, b);
  if (op == "conjugate") return g.mul(g.mul(a, b), g.inverse[size_t(a)]);
  if (op == "a*b*a") return g.mul(g.mul(a, b), a);
  throw UsageError("unknown group operation '" + op + "'");
}

namespace {

// ---- S_n: characters by the Murnaghan-Nakayama rule, on beta-sets (first-column hook lengths) ----

// chi^lambda(mu): removing rim hooks of the lengths of mu, one after another, each signed by
// (-1)^(its height). A rim hook of length r is a bead of the beta-set moved down by r onto an
// empty place; its height is the number of beads it passes.
int64_t murnaghan_nakayama(const std::vector<int>& lambda, std::vector<int> mu) {
  if (mu.empty()) return 1;  // lambda is empty too: the sizes agree
  const int r = mu.back();
  mu.pop_back();
  const int k = int(lambda.size());
  std::vector<int> beta;
  for (int i = 0; i < k; ++i) beta.push_back(lambda[size_t(i)] + (k - 1 - i));  // decreasing
  int64_t total = 0;
  for (int i = 0; i < k; ++i) {
    const int b = beta[size_t(i)], to = b - r;
    if (to < 0 || std::find(beta.begin(), beta.end(), to) != beta.end()) continue;
    int passed = 0;
    for (int c : beta) passed += (c > to && c < b) ? 1 : 0;
    std::vector<int> next = beta;
    next[size_t(i)] = to;
    std::sort(next.rbegin(), next.rend());
    std::vector<int> rest;
    for (int j = 0; j < k; ++j)
      if (const int part = next[size_t(j)] - (k - 1 - j); part > 0) rest.push_back(part);
    total += (passed % 2 ? -1 : 1) * murnaghan_nakayama(rest, mu);
  }
  return total;
}

std::vector<std::vector<int>> partitions(int n, int max_part) {
  if (n == 0) return {{}};
  std::vector<std::vector<int>> out;
  for (int first = std::min(n, max_part); first >= 1; --first)
    for (auto rest : partitions(n - first, first)) {
      rest.insert(rest.begin(), first);
      out.push_back(rest);
    }
  return out;
}

std::vector<int> conjugate_partition(const std::vector<int>& lambda) {
  std::vector<int> out;
  for (int j = 0; !lambda.empty() && j < lambda[0]; ++j) {
    int count = 0;
    for (int part : lambda) count += part > j ? 1 : 0;
    out.push_back(count);
  }
  return out;
}

std::string partition_text(const std::vector<int>& lambda) {
  std::string out = "(";
  for (size_t i = 0; i < lambda.size(); ++i) out += (i ? "," : "") + std::to_string(lambda[i]);
  return out + ")";
}

// The usual names: trivial (n), sign (1^n), standard (n-1,1), standard⊗sign (2,1^(n-2)).
std::string partition_name(const std::vector<int>& lambda, int n) {
  const std::string p = partition_text(lambda);
  if (n == 1) return "trivial";
  if (lambda == std::vector<int>{n}) return "trivial";
  if (lambda == std::vector<int>(size_t(n), 1)) return "sign";
  if (n >= 3 && lambda == std::vector<int>{n - 1, 1}) return "standard " + p;
  if (n >= 4 && lambda == conjugate_partition({n - 1, 1})) return "standard⊗sign " + p;
  return p;
}

std::vector<ComplexIrrep> symmetric_irreps(const FiniteGroup& g) {
  std::vector<ComplexIrrep> out;
  for (auto& lambda : partitions(int(g.n), int(g.n))) {
    ComplexIrrep r;
    r.name = partition_name(lambda, int(g.n));
    for (auto& p : g.images) r.character.push_back(double(murnaghan_nakayama(lambda, cycle_type(p))));
    r.dim = int64_t(std::lround(r.character[0].real()));
    out.push_back(r);
  }
  return out;
}

// A_n from S_n: lambda and its conjugate restrict to the same irrep; a self-conjugate lambda
// splits into two, which differ only on the two A_n classes of the cycle type given by its
// diagonal hook lengths h (distinct odd parts): there chi+- = (e +- sqrt(e q))/2 with
// q = prod h and e = (-1)^((q-1)/2) (the "+" one on the class holding the lexicographically
// first such permutation), elsewhere chi^lambda/2.
std::vector<ComplexIrrep> alternating_irreps(const FiniteGroup& g) {
  const int n = int(g.n);
  if (n <= 2) return {ComplexIrrep{"trivial", 1, {1.0}}};  // the trivial group
  std::vector<ComplexIrrep> out;
  std::vector<std::vector<int>> done;
  for (auto& lambda : partitions(n, n)) {
    const auto conj = conjugate_partition(lambda);
    if (std::find(done.begin(), done.end(), conj) != done.end()) continue;
    done.push_back(lambda);
    std::vector<cplx> chi;
    for (auto& p : g.images) chi.push_back(double(murnaghan_nakayama(lambda, cycle_type(p))));
    if (conj != lambda) {
      ComplexIrrep r{partition_name(lambda, n), int64_t(std::lround(chi[0].real())), chi};
      out.push_back(r);
      continue;
    }
    // The diagonal hook lengths of a self-conjugate partition: 2(lambda_i - i) + 1.
    std::vector<int> hooks;
    for (int i = 0; i < int(lambda.size()) && lambda[size_t(i)] > i; ++i) hooks.push_back(2 * (lambda[size_t(i)] - i) - 1);
    std::sort(hooks.rbegin(), hooks.rend());
    int q = 1;
    for (int h : hooks) q *= h;
    const double e = ((q - 1) / 2) % 2 == 0 ? 1.0 : -1.0;
    const cplx root = std::sqrt(cplx(e * q, 0));
    int32_t plus_class = -1;
    for (int64_t x = 0; x < g.order && plus_class < 0; ++x) {
      auto type = cycle_type(g.images[size_t(x)]);
      type.erase(std::remove(type.begin(), type.end(), 1), type.end());  // fixed points
      auto want = hooks;
      want.erase(std::remove(want.begin(), want.end(), 1), want.end());
      if (type == want) plus_class = g.class_of[size_t(x)];
    }
    for (int sign : {1, -1}) {
      ComplexIrrep r;
      r.name = partition_text(lambda) + (sign > 0 ? "+" : "-");
      for (int64_t x = 0; x < g.order; ++x) {
        auto type = cycle_type(g.images[size_t(x)]);
        type.erase(std::remove(type.begin(), type.end(), 1), type.end());
        auto want = hooks;
        want.erase(std::remove(want.begin(), want.end(), 1), want.end());
        if (type != want) {
          r.character.push_back(chi[size_t(x)] / 2.0);
          continue;
        }
        const int s = g.class_of[size_t(x)] == plus_class ? sign : -sign;
        r.character.push_back((e + double(s) * root) / 2.0);
      }
      r.dim = int64_t(std::lround(r.character[0].real()));
      out.push_back(r);
    }
  }
  return out;
}

}  // namespace

std::vector<ComplexIrrep> complex_irreps(const FiniteGroup& g) {
  const int64_t N = g.order, n = g.n;
  std::vector<ComplexIrrep> out;
  if (g.family == "C") {
    for (int64_t k = 0; k < n; ++k) {
      ComplexIrrep r{k == 0 ? "trivial" : "k=" + std::to_string(k), 1, {}};
      for (int64_t x = 0; x < N; ++x) r.character.push_back(std::polar(1.0, 2 * M_PI * double(k * x % n) / double(n)));
      out.push_back(r);
    }
  } else if (g.family == "D") {
    auto rot = [&](int64_t x) { return x % n; };
    auto refl = [&](int64_t x) { return x / n; };
    auto one_d = [&](const std::string& name, auto value) {
      ComplexIrrep r{name, 1, {}};
      for (int64_t x = 0; x < N; ++x) r.character.push_back(double(value(x)));
      out.push_back(r);
    };
    one_d("trivial", [](int64_t) { return 1; });
    one_d("sign", [&](int64_t x) { return refl(x) ? -1 : 1; });
    if (n % 2 == 0) {
      one_d("r-sign", [&](int64_t x) { return rot(x) % 2 ? -1 : 1; });
      one_d("r-sign⊗sign", [&](int64_t x) { return (rot(x) % 2 ? -1 : 1) * (refl(x) ? -1 : 1); });
    }
    for (int64_t k = 1; 2 * k < n; ++k) {
      ComplexIrrep r{"freq " + std::to_string(k), 2, {}};
      for (int64_t x = 0; x < N; ++x)
        r.character.push_back(refl(x) ? 0.0 : 2 * std::cos(2 * M_PI * double(k * rot(x) % n) / double(n)));
      out.push_back(r);
    }
  } else if (g.family == "S") {
    out = symmetric_irreps(g);
  } else {
    out = alternating_irreps(g);
  }
  return out;
}

double frobenius_schur(const FiniteGroup& g, const ComplexIrrep& irrep) {
  cplx s = 0;
  for (int64_t x = 0; x < g.order; ++x) s += irrep.character[size_t(g.mul(x, x))];
  return s.real() / double(g.order);
}

std::vector<RealIrrep> real_irreps(const FiniteGroup& g) {
  const auto complex = complex_irreps(g);
  const int64_t N = g.order;
  std::vector<bool> used(complex.size(), false);
  std::vector<RealIrrep> out;
  for (size_t i = 0; i < complex.size(); ++i) {
    if (used[i]) continue;
    used[i] = true;
    const auto& c = complex[i];
    RealIrrep r;
    r.projector_scale = double(c.dim) / double(N);
    const double fs = frobenius_schur(g, c);
    if (fs > 0.5) {  // real type: the character is real
      r.name = c.name;
      r.dim = c.dim;
      for (auto& v : c.character) r.character.push_back(v.real());
      r.projector_character = r.character;
    } else if (fs < -0.5) {  // quaternionic: the real irrep is it twice; the isotypic component is the same
      r.name = c.name + " (quaternionic)";
      r.dim = 2 * c.dim;
      for (auto& v : c.character) r.character.push_back(2 * v.real()), r.projector_character.push_back(v.real());
    } else {  // complex: paired with its conjugate
      size_t j = i + 1;
      for (; j < complex.size(); ++j) {
        bool conj = !used[j];
        for (int64_t x = 0; conj && x < N; ++x)
          conj = std::abs(complex[j].character[size_t(x)] - std::conj(c.character[size_t(x)])) < 1e-9;
        if (conj) break;
      }
      if (j == complex.size()) throw std::logic_error("real_irreps: no conjugate for " + c.name);
      used[j] = true;
      r.dim = 2 * c.dim;
      for (auto& v : c.character) r.character.push_back(2 * v.real());
      r.projector_character = r.character;
      // C_n: k and n-k together are frequency k; A_n: the two halves of a split partition.
      if (g.family == "C") r.name = c.name;
      else r.name = c.name.substr(0, c.name.size() - 1) + "±";
    }
    if (g.family == "C") {
      const int64_t k = c.name == "trivial" ? 0 : std::stoll(c.name.substr(2));
      r.frequency = std::min(k, g.n - k);
      if (2 * k == g.n) r.name = "sign";
      else if (k > 0) r.name = "freq " + std::to_string(r.frequency);
    }
    out.push_back(r);
  }
  return out;
}

}  // namespace grokking
