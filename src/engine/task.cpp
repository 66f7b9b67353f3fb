// What every task shares: batches, the defaults of the Task interface, and the registry's make.
#include "grokking/task.hpp"

#include <algorithm>
#include <numeric>
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

namespace {
void require_pairs(const TaskShape& shape) {
  if (shape.operand_values == 0 || shape.fresh_batches || shape.target != TaskShape::Target::last)
    throw UsageError("this task has no clean and corrupted inputs to patch");
}
// Every pair's row in the dataset by (a, b): -1 for a pair the operation leaves out (x/0).
std::vector<int64_t> pair_rows(const Dataset& d, int64_t values) {
  std::vector<int64_t> row(size_t(values * values), -1);
  auto x = d.all_x.accessor<int64_t, 2>();
  for (int64_t r = 0; r < d.all_x.size(0); ++r) row[size_t(x[r][0] * values + x[r][1])] = r;
  return row;
}
}  // namespace

PatchSets Task::patch_sets(uint64_t seed) const {
  require_pairs(shape());
  const Dataset& d = dataset();
  const int64_t values = shape().operand_values, n = d.all_x.size(0);
  const auto row = pair_rows(d, values);
  auto x = d.all_x.accessor<int64_t, 2>();
  auto y = d.all_y.accessor<int64_t, 1>();
  // At most kMaxPatchPairs pairs, drawn from `seed` (every pair where there are fewer), each
  // against (a', b): a' drawn from the other operands until its answer differs.
  std::mt19937_64 rng(seed);
  std::vector<int64_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  if (n > kMaxPatchPairs) {
    std::shuffle(order.begin(), order.end(), rng);
    order.resize(size_t(kMaxPatchPairs));
    std::sort(order.begin(), order.end());
  }
  std::vector<std::array<int64_t, 2>> rows;
  for (int64_t r : order) {
    for (int tries = 0; tries < 32; ++tries) {
      const int64_t a2 = int64_t(rng() % uint64_t(values)), r2 = row[size_t(a2 * values + x[r][1])];
      if (r2 >= 0 && y[r2] != y[r]) {
        rows.push_back({r, r2});
        break;
      }
    }
  }
  PatchSets p = pair_patch_sets(rows);
  p.corruption = "a replaced by a' with another answer";
  return p;
}

PatchSets Task::patch_sets_from(const std::vector<std::array<int64_t, 4>>& pairs, const std::string& origin) const {
  require_pairs(shape());
  const Dataset& d = dataset();
  const int64_t values = shape().operand_values;
  const auto row = pair_rows(d, values);
  auto y = d.all_y.accessor<int64_t, 1>();
  std::vector<std::array<int64_t, 2>> rows;
  for (size_t i = 0; i < pairs.size(); ++i) {
    const auto& q = pairs[i];
    const std::string at = origin + ": row " + std::to_string(i + 1) + ": ";
    for (auto v : q)
      if (v < 0 || v >= values)
        throw UsageError(at + std::to_string(v) + " is not an operand (0.." + std::to_string(values - 1) + ")");
    const int64_t r = row[size_t(q[0] * values + q[1])], r2 = row[size_t(q[2] * values + q[3])];
    if (r < 0 || r2 < 0)
      throw UsageError(at + "the pair (" + std::to_string(r < 0 ? q[0] : q[2]) + ", " + std::to_string(r < 0 ? q[1] : q[3]) +
                       ") is not in the task");
    if (y[r] == y[r2]) throw UsageError(at + "the clean and corrupted pairs have the same answer");
    rows.push_back({r, r2});
  }
  if (rows.empty()) throw UsageError(origin + ": no pairs");
  PatchSets p = pair_patch_sets(rows);
  p.corruption = "the pairs of " + origin;
  return p;
}

PatchSets Task::pair_patch_sets(const std::vector<std::array<int64_t, 2>>& rows) const {
  const Dataset& d = dataset();
  std::vector<int64_t> clean_rows, corrupt_rows;
  for (auto& r : rows) clean_rows.push_back(r[0]), corrupt_rows.push_back(r[1]);
  auto ci = torch::tensor(clean_rows, torch::kInt64), ki = torch::tensor(corrupt_rows, torch::kInt64);
  PatchSets p;
  p.clean = d.all_x.index_select(0, ci);
  p.corrupted = d.all_x.index_select(0, ki);
  const auto right = d.all_y.index_select(0, ci), wrong = d.all_y.index_select(0, ki);
  p.metric = [right, wrong](const torch::Tensor& logits) {  // [N, C]
    const auto l = logits.to(torch::kCPU, torch::kFloat64);
    return (l.gather(1, right.unsqueeze(1)) - l.gather(1, wrong.unsqueeze(1))).mean().item<double>();
  };
  p.metric_name = "logit difference logit(clean answer) - logit(corrupted answer)";
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
