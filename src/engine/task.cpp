// What every task shares: batches, the defaults of the Task interface, and the registry's make.
#include "grokking/task.hpp"

#include <random>

#include "grokking/error.hpp"

namespace grokking {

namespace {
// Real-valued inputs carry a replica axis first: [S, N, F].
bool per_replica(const torch::Tensor& x) { return x.scalar_type() != torch::kInt64; }
}  // namespace

int64_t Batch::size() const { return per_replica(x) ? x.size(1) : x.size(0); }

Batch Batch::to(torch::Device device) const {
  Batch b{x.to(device), y.to(device), weight.defined() ? weight.to(device) : weight};
  return b;
}

Batch Batch::slice(int64_t begin, int64_t end) const {
  const int64_t axis = per_replica(x) ? 1 : 0;
  return {x.slice(axis, begin, end), y.slice(per_replica(x) ? 1 : 0, begin, end), weight};
}

Batch Batch::index_select(const torch::Tensor& idx) const {
  const int64_t axis = per_replica(x) ? 1 : 0;
  return {x.index_select(axis, idx), y.index_select(axis, idx), weight};
}

const Dataset& Task::dataset() const {
  throw std::logic_error("this task draws fresh batches every step; it has no fixed split");
}
Batch Task::train_batch(int64_t, int64_t) const { throw std::logic_error("this task has a fixed split, not fresh batches"); }
Batch Task::eval_batch() const { throw std::logic_error("this task has a fixed split, not an evaluation set"); }
std::vector<std::vector<double>> Task::extra_measures(const torch::Tensor&, const Batch&) const { return {}; }

PatchSets Task::patch_sets(uint64_t seed) const {
  if (shape().operand_values == 0 || shape().fresh_batches || shape().target != TaskShape::Target::last)
    throw UsageError("this task has no clean and corrupted inputs to patch");
  const Dataset& d = dataset();
  const int64_t values = shape().operand_values, n = d.all_x.size(0);
  // Every pair's row by (a, b) (a pair the operation leaves out, x/0, has none).
  std::vector<int64_t> row(size_t(values * values), -1);
  auto x = d.all_x.accessor<int64_t, 2>();
  auto y = d.all_y.accessor<int64_t, 1>();
  for (int64_t r = 0; r < n; ++r) row[size_t(x[r][0] * values + x[r][1])] = r;
  // Each pair against (a', b): a' drawn from the other operands until its answer differs.
  std::mt19937_64 rng(seed);
  std::vector<int64_t> clean_rows, corrupt_rows;
  for (int64_t r = 0; r < n; ++r) {
    for (int tries = 0; tries < 32; ++tries) {
      const int64_t a2 = int64_t(rng() % uint64_t(values)), r2 = row[size_t(a2 * values + x[r][1])];
      if (r2 >= 0 && y[r2] != y[r]) {
        clean_rows.push_back(r), corrupt_rows.push_back(r2);
        break;
      }
    }
  }
  auto ci = torch::tensor(clean_rows, torch::kInt64), ki = torch::tensor(corrupt_rows, torch::kInt64);
  PatchSets p;
  p.clean = d.all_x.index_select(0, ci);
  p.corrupted = d.all_x.index_select(0, ki);
  const auto right = d.all_y.index_select(0, ci), wrong = d.all_y.index_select(0, ki);
  p.metric = [right, wrong](const torch::Tensor& logits) {  // [N, C]
    const auto l = logits.to(torch::kCPU, torch::kFloat64);
    return (l.gather(1, right.unsqueeze(1)) - l.gather(1, wrong.unsqueeze(1))).mean().item<double>();
  };
  p.metric_name = "logit difference logit(a.b) - logit(a'.b)";
  p.corruption = "a replaced by a' with another answer";
  return p;
}

std::unique_ptr<Task> make_task(const TaskConfig& task) { return make_task(std::vector<TaskConfig>{task}); }

std::unique_ptr<Task> make_task(const std::vector<TaskConfig>& replicas) {
  if (replicas.empty()) throw std::invalid_argument("make_task: no task config");
  return find_task_kind(replicas[0].kind).make(replicas);
}

Dataset make_dataset(const TaskConfig& task) {
  auto t = make_task(task);
  if (t->shape().fresh_batches)
    throw UsageError("task.kind \"" + task.kind + "\" draws fresh batches every step; it has no fixed set of pairs");
  return t->dataset();
}

}  // namespace grokking
