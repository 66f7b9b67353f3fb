// What every task shares: batches, the defaults of the Task interface, and the registry's make.
#include "grokking/task.hpp"

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
