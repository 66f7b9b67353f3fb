// The dataset: every pair of the task's operation, split into train and test.
#pragma once
#include <torch/torch.h>

#include "grokking/config.hpp"

namespace grokking {

struct Dataset {
  torch::Tensor train_x, train_y;  // [n_train, 3] int64 tokens [a, b, =], [n_train] labels
  torch::Tensor test_x, test_y;
  torch::Tensor all_x, all_y;      // every pair in (a, b) row-major order
  torch::Tensor train_mask;        // [n_all] bool: which of all_x are in train
};
// All pairs of the operation, split by a permutation drawn from task.seed.
Dataset make_dataset(const TaskConfig& task);

}  // namespace grokking
