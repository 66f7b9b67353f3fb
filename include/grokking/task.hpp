// Tasks: what a model learns. A task states its shape (kinds.hpp), makes its data (a fixed
// seeded split, or fresh seeded batches every step) and keeps whatever structure its analysis
// needs; the model and the training loop read only the shape. One file per kind in src/tasks/.
#pragma once
#include <torch/torch.h>

#include <array>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "grokking/config.hpp"
#include "grokking/kinds.hpp"

namespace grokking {

// The fixed split of a task whose examples can be listed (every pair of an operation).
struct Dataset {
  torch::Tensor train_x, train_y;  // [n_train, T] int64 tokens ([a, b, =]), [n_train] labels
  torch::Tensor test_x, test_y;
  torch::Tensor all_x, all_y;      // every example, in the task's order ((a, b) row-major for pairs)
  torch::Tensor train_mask;        // [n_all] bool: which of all_x are in train
};

// A batch: what goes in, and what is scored.
struct Batch {
  // Tokens [N, T] int64, shared by every replica; or real values [S, N, F], one set per replica.
  torch::Tensor x;
  // TaskShape::Target::last: labels [N]; sequence: labels [N, T], -1 where nothing is scored;
  // reconstruct: the targets [S, N, F].
  torch::Tensor y;
  torch::Tensor weight;  // reconstruct: each replica's importance of each feature [S, F]
  int64_t size() const;  // examples
  Batch to(torch::Device device) const;
  Batch slice(int64_t begin, int64_t end) const;     // examples begin..end-1
  Batch index_select(const torch::Tensor& idx) const;  // examples idx (int64 on x's device)
};

// Inputs for activation patching (Wang et al. 2022): a clean set, a corrupted set of the same
// shape whose answers differ, and the metric of the clean behaviour on one model's outputs
// (higher: more of it), which patching normalises as (patched - corrupted) / (clean - corrupted).
struct PatchSets {
  torch::Tensor clean, corrupted;  // inputs [N, T]
  std::function<double(const torch::Tensor& outputs)> metric;
  std::string metric_name, corruption;  // what the metric and the corruption are, in words
};

class Task {
 public:
  explicit Task(TaskShape shape) : shape_(shape) {}
  virtual ~Task() = default;
  const TaskShape& shape() const { return shape_; }
  // A fixed split (shape().fresh_batches false): the examples and the split.
  virtual const Dataset& dataset() const;
  // Fresh batches (shape().fresh_batches): the training batch of step `step` (counted from 0), a
  // function of the task's seed and the step alone, so that a resumed run draws the same ones;
  // and the fixed, seeded evaluation set.
  virtual Batch train_batch(int64_t step, int64_t batch_size) const;
  virtual Batch eval_batch() const;
  // Figures of the task's own, measured on the evaluation set beside loss and accuracy (the
  // first half's loss of a repeated sequence): their metrics.csv columns, and per replica their
  // values from the model's outputs on eval_batch() ([S, ...] as the model returns them).
  virtual std::vector<std::string> extra_columns() const { return {}; }
  // Files of the task's own in a run directory (the group's elements, group.json), written when
  // a run starts; on resume the ones there are checked against them (RunError when they differ).
  virtual void write_files(const std::string& run_dir, bool resume) const { (void)run_dir, (void)resume; }
  virtual std::vector<std::vector<double>> extra_measures(const torch::Tensor& outputs, const Batch& eval) const;
  // Clean and corrupted inputs for patching, drawn from `seed`. The default: a fixed split's
  // pairs [a, b, =] (at most kMaxPatchPairs of them) against (a', b) with another answer, scored
  // by the logit difference logit(a.b) - logit(a'.b); tasks of other shapes refuse (UsageError).
  virtual PatchSets patch_sets(uint64_t seed) const;
  // A user's pairs {a, b, a', b'} of a pair task: (a, b) clean, (a', b') corrupted, each pair one
  // the task has and the two answers different (UsageError naming `origin` and the row otherwise).
  PatchSets patch_sets_from(const std::vector<std::array<int64_t, 4>>& pairs, const std::string& origin) const;
  static constexpr int64_t kMaxPatchPairs = 4096;

 protected:
  // Dataset rows {clean, corrupted} as patching sets with the logit-difference metric.
  PatchSets pair_patch_sets(const std::vector<std::array<int64_t, 2>>& rows) const;

 private:
  TaskShape shape_;
};

// The task of a config (its kind's), or of runs packed side by side (one task config each).
std::unique_ptr<Task> make_task(const TaskConfig& task);
std::unique_ptr<Task> make_task(const std::vector<TaskConfig>& replicas);
// The fixed split of a task: UsageError for a task that draws fresh batches.
Dataset make_dataset(const TaskConfig& task);

// ---- the modular task (src/tasks/modular.cpp) ----
// Power et al.'s operations mod P, in documentation order.
const std::vector<std::string>& operation_names();
// The label of (a, b) for an operation, or -1 when the pair is not in the dataset (x/0).
int64_t apply_operation(const std::string& op, int64_t a, int64_t b, int64_t p);

}  // namespace grokking
