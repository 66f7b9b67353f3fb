#include "grokking/analysis.hpp"

#include <algorithm>

#include "grokking/error.hpp"
#include "grokking/groups.hpp"

namespace grokking {

// ---------------------------------------------------------------------------------------------
// The cycle an operation rotates on. Addition and subtraction mod P move a around Z_P; over
// the nonzero residues of a prime P, multiplication and division are addition and subtraction
// of discrete logarithms: with a generator g of Z_P^*, a = g^i, b = g^j give a*b = g^(i+j) and
// a/b = g^(i-j), indices mod P-1. The analysis works in the Fourier basis of those indices.


int64_t primitive_root(int64_t p) {
  if (!is_prime(p)) throw std::invalid_argument("primitive_root: P must be prime");
  if (p == 2) return 1;
  std::vector<int64_t> factors;  // the distinct primes of P-1
  int64_t rest = p - 1;
  for (int64_t d = 2; d * d <= rest; ++d)
    if (rest % d == 0) {
      factors.push_back(d);
      while (rest % d == 0) rest /= d;
    }
  if (rest > 1) factors.push_back(rest);
  for (int64_t g = 2; g < p; ++g)
    if (std::all_of(factors.begin(), factors.end(), [&](int64_t q) { return pow_mod(g, (p - 1) / q, p) != 1; }))
      return g;
  throw std::logic_error("primitive_root: none found");  // every prime has one
}

Cycle cycle_of(const TaskConfig& task) {
  // A cyclic group under composition is addition mod n, its elements the residues in order.
  if (task.kind == "group") {
    const std::string spec = task.text("group"), op = task.text("operation");
    if (spec[0] != 'C' || op != "compose")
      throw UsageError("the Fourier analysis is for addition on a cycle; task.group " + spec + " with operation " + op +
                       " is analysed by irreps instead: grokking irreps");
    TaskConfig add;
    add.set("operation", "add").set("p", group_order(spec, "/task/group"));
    add.seed = task.seed;
    return cycle_of(add);
  }
  if (task.kind != "modular")
    throw UsageError("the Fourier analysis is for the modular task's add, sub, mul and div; task.kind \"" + task.kind +
                     "\" has no Fourier basis of its own");
  const auto& op = task.text("operation");
  const int64_t p = task.integer("p");
  Cycle c;
  c.operation = op, c.p = p;
  c.index_of.assign(size_t(p), -1);
  if (op == "add" || op == "sub") {
    c.n = p;
    c.b_sign = op == "add" ? 1 : -1;
    c.relation = op == "add" ? "a+b" : "a-b";
    for (int64_t v = 0; v < p; ++v) c.value_of.push_back(v), c.index_of[size_t(v)] = v;
    return c;
  }
  if (op == "mul" || op == "div") {
    if (!is_prime(p) || p < 3)
      throw UsageError("the analysis of '" + op + "' works on discrete logarithms, which need a prime P >= 3 (got " +
                       std::to_string(p) + ")");
    c.n = p - 1;
    c.generator = primitive_root(p);
    c.b_sign = op == "mul" ? 1 : -1;
    c.relation = op == "mul" ? "log a + log b" : "log a - log b";
    for (int64_t i = 0, v = 1; i < p - 1; ++i, v = v * c.generator % p) c.value_of.push_back(v), c.index_of[size_t(v)] = i;
    return c;
  }
  throw UsageError("the Fourier analysis is for add, sub, mul and div; operation '" + op +
                   "' has no known Fourier basis");
}

void require_fourier_basis(const TaskConfig& task) { (void)cycle_of(task); }

torch::Tensor on_cycle(const torch::Tensor& by_value, const Cycle& c) {
  return by_value.index_select(0, torch::tensor(c.value_of, torch::kInt64).to(by_value.device()));
}

torch::Tensor cycle_grid(const Cycle& c, const torch::Tensor& pairs) {
  auto cpu = pairs.to(torch::kCPU).contiguous();
  auto acc = cpu.accessor<int64_t, 2>();
  std::vector<int64_t> at(size_t(c.p * c.p), -1);  // pair (a, b) -> its row in `pairs`
  for (int64_t r = 0; r < cpu.size(0); ++r) at[size_t(acc[r][0] * c.p + acc[r][1])] = r;
  std::vector<int64_t> grid;
  grid.reserve(size_t(c.n * c.n));
  for (auto a : c.value_of)
    for (auto b : c.value_of) {
      const int64_t r = at[size_t(a * c.p + b)];
      if (r < 0) throw std::invalid_argument("cycle_grid: pair (" + std::to_string(a) + ", " + std::to_string(b) + ") missing");
      grid.push_back(r);
    }
  return torch::tensor(grid, torch::kInt64);
}

torch::Tensor relation_directions(const Cycle& c, const torch::Tensor& pairs, const std::vector<int64_t>& freqs) {
  auto cpu = pairs.to(torch::kCPU).contiguous();
  auto acc = cpu.accessor<int64_t, 2>();
  const int64_t n_pairs = cpu.size(0);
  // The index i + s*j of each pair; pairs off the cycle (a 0 under mul/div) get no direction.
  std::vector<double> idx(size_t(n_pairs), 0.0), on(size_t(n_pairs), 0.0);
  for (int64_t r = 0; r < n_pairs; ++r) {
    const int64_t i = c.index_of[size_t(acc[r][0])], j = c.index_of[size_t(acc[r][1])];
    if (i < 0 || j < 0) continue;
    idx[size_t(r)] = double(((i + c.b_sign * j) % c.n + c.n) % c.n), on[size_t(r)] = 1.0;
  }
  auto index = torch::tensor(idx, torch::kFloat64), mask = torch::tensor(on, torch::kFloat64);
  std::vector<torch::Tensor> dirs;
  for (auto k : freqs) {
    auto phase = 2 * M_PI * double(k) * index / double(c.n);
    dirs.push_back(torch::cos(phase) * mask);
    if (2 * k != c.n) dirs.push_back(torch::sin(phase) * mask);  // sin(pi t) is 0 at every integer t
  }
  // Unit length over the whole grid, whichever of its pairs are given (a chunk of them): each
  // value of i + s j occurs n times there, so |cos|^2 = n^2 / 2 (n^2 at k = n/2) and |sin|^2 = n^2 / 2.
  size_t at = 0;
  for (auto k : freqs) {
    const double half = double(c.n) * double(c.n) / 2.0;
    dirs[at++] /= std::sqrt(2 * k == c.n ? 2 * half : half);
    if (2 * k != c.n) dirs[at++] /= std::sqrt(half);
  }
  if (dirs.empty()) return torch::zeros({0, n_pairs}, torch::kFloat64);
  return torch::stack(dirs);
}

torch::Tensor project_onto(const torch::Tensor& logits, const torch::Tensor& directions) {
  return directions.t().matmul(directions.matmul(logits.to(torch::kFloat64)));
}

}  // namespace grokking
