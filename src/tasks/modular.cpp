// The modular task (task.kind "modular", the default): every pair (a, b) of residues mod P under
// one of Power et al.'s operations, inputs [a, b, =], the label at the last position; a fixed
// split of the pairs drawn from task.seed.
#include <ATen/CPUGeneratorImpl.h>

#include <cmath>

#include "grokking/error.hpp"
#include "grokking/task.hpp"
#include "grokking/text.hpp"

namespace grokking {

const std::vector<std::string>& operation_names() {
  static const std::vector<std::string> ops = {
      "add", "sub", "mul", "div", "x^2+y^2", "x^2+xy+y^2", "x^2+xy+y^2+x", "x^3+xy", "x^3+xy^2+y", "mixed"};
  return ops;
}

namespace {
int64_t mod(int64_t x, int64_t p) { return ((x % p) + p) % p; }
}  // namespace

int64_t apply_operation(const std::string& op, int64_t a, int64_t b, int64_t p) {
  if (op == "add") return mod(a + b, p);
  if (op == "sub") return mod(a - b, p);
  if (op == "mul") return mod(a * b, p);
  if (op == "div") return b == 0 ? -1 : mod(a * pow_mod(b, p - 2, p), p);  // Fermat inverse, p prime
  if (op == "x^2+y^2") return mod(a * a + b * b, p);
  if (op == "x^2+xy+y^2") return mod(a * a + a * b + b * b, p);
  if (op == "x^2+xy+y^2+x") return mod(a * a + a * b + b * b + a, p);
  if (op == "x^3+xy") return mod(a * a % p * a + a * b, p);
  if (op == "x^3+xy^2+y") return mod(a * a % p * a + a * (b * b % p) + b, p);
  if (op == "mixed")  // Power et al.: x/y if y is odd, else x-y
    return b % 2 == 1 ? mod(a * pow_mod(b, p - 2, p), p) : mod(a - b, p);
  throw UsageError("unknown operation '" + op + "'");
}

namespace {

int64_t n_pairs(const TaskConfig& t) {
  const int64_t p = t.integer("p");
  return t.text("operation") == "div" ? p * (p - 1) : p * p;
}

TaskShape modular_shape(const TaskConfig& t) {
  TaskShape s;
  const int64_t p = t.integer("p");
  s.target = TaskShape::Target::last;
  s.vocab = p + 1, s.seq_len = 3, s.classes = p, s.operand_values = p;
  s.eval_examples = n_pairs(t);
  s.train_examples = static_cast<int64_t>(std::floor(t.real("frac_train") * double(s.eval_examples)));
  return s;
}

// Every pair of the operation, split by a permutation drawn from task.seed.
Dataset pairs_dataset(const TaskConfig& task) {
  const int64_t p = task.integer("p");
  const std::string& op = task.text("operation");
  std::vector<int64_t> tokens, labels;
  tokens.reserve(size_t(p * p * 3));
  for (int64_t a = 0; a < p; ++a)
    for (int64_t b = 0; b < p; ++b) {
      const int64_t y = apply_operation(op, a, b, p);
      if (y < 0) continue;  // x/0 is not in the dataset
      tokens.insert(tokens.end(), {a, b, p});
      labels.push_back(y);
    }
  const auto n = int64_t(labels.size());
  Dataset d;
  d.all_x = torch::tensor(tokens, torch::kInt64).view({n, 3});
  d.all_y = torch::tensor(labels, torch::kInt64);
  auto gen = at::detail::createCPUGenerator(static_cast<uint64_t>(task.seed));
  auto perm = torch::randperm(n, gen, torch::kInt64);
  const auto n_train = static_cast<int64_t>(std::floor(task.real("frac_train") * double(n)));
  auto train_idx = perm.slice(0, 0, n_train), test_idx = perm.slice(0, n_train);
  d.train_x = d.all_x.index_select(0, train_idx);
  d.train_y = d.all_y.index_select(0, train_idx);
  d.test_x = d.all_x.index_select(0, test_idx);
  d.test_y = d.all_y.index_select(0, test_idx);
  d.train_mask = torch::zeros({n}, torch::kBool);
  d.train_mask.index_fill_(0, train_idx, true);
  return d;
}

class ModularTask : public Task {
 public:
  explicit ModularTask(const TaskConfig& t) : Task(modular_shape(t)), data_(pairs_dataset(t)) {}
  const Dataset& dataset() const override { return data_; }

 private:
  Dataset data_;
};

void modular_validate(const Config& c, const std::string& origin) {
  auto bad = [&](const std::string& ptr, const std::string& what) { throw UsageError(origin + ": " + ptr + ": " + what); };
  const auto& t = c.task;
  const std::string& op = t.text("operation");
  const int64_t p = t.integer("p");
  if ((op == "div" || op == "mixed") && !is_prime(p))
    bad("/task/p", "must be prime for operation '" + op + "' (got " + std::to_string(p) + ")");
  const TaskShape s = modular_shape(t);
  if (s.train_examples < 1 || s.train_examples >= s.eval_examples)
    bad("/task/frac_train", "leaves an empty train or test set: " + std::to_string(s.train_examples) + " of " +
                                std::to_string(s.eval_examples) + " pairs (got " +
                                format_number(t.real("frac_train"), "%g") + ")");
}

}  // namespace

const TaskKind& modular_task() {
  static const TaskKind kind = [] {
    TaskKind k;
    k.name = "modular";
    k.doc = "a binary operation mod P on every pair (Power et al. 2022; Nanda et al. 2023): inputs [a, b, =], label at the last position";
    k.keys = {
        choice_key("operation", "add", operation_names(), "binary operation mod p (Power et al. 2022)"),
        integer_key("p", 113, 2, 4096, "modulus P; vocabulary is P numbers plus \"=\"",
                    "a full-batch step runs every training pair at once: a fraction of 4096^2 pairs already holds gigabytes of activations"),
        real_key("frac_train", 0.3, 0, true, 1, true, "fraction of all pairs in the training set"),
    };
    k.size_key = "p";
    k.shape = modular_shape;
    k.describe = [](const TaskConfig& t) { return t.text("operation") + " mod " + std::to_string(t.integer("p")); };
    // Add and sub rotate Z_P; mul and div rotate the discrete logarithms of Z_P^* (P prime).
    k.structure = [](const TaskConfig& t) {
      Capabilities c;
      c.add(Capability::pairs);
      const auto& op = t.text("operation");
      const int64_t p = t.integer("p");
      if (op == "add" || op == "sub" || ((op == "mul" || op == "div") && p >= 3 && is_prime(p))) c.add(Capability::cycle);
      return c;
    };
    k.validate = modular_validate;
    k.make = [](const std::vector<TaskConfig>& replicas) -> std::unique_ptr<Task> {
      return std::make_unique<ModularTask>(replicas.at(0));
    };
    return k;
  }();
  return kind;
}

}  // namespace grokking
