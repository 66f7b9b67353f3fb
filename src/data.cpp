#include "grokking/data.hpp"

#include <ATen/CPUGeneratorImpl.h>

#include <cmath>

namespace grokking {

Dataset make_dataset(const TaskConfig& task) {
  const int64_t p = task.p;
  std::vector<int64_t> tokens, labels;
  tokens.reserve(size_t(p * p * 3));
  for (int64_t a = 0; a < p; ++a)
    for (int64_t b = 0; b < p; ++b) {
      int64_t y = apply_operation(task.operation, a, b, p);
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
  const auto n_train = static_cast<int64_t>(std::floor(task.frac_train * double(n)));
  auto train_idx = perm.slice(0, 0, n_train), test_idx = perm.slice(0, n_train);
  d.train_x = d.all_x.index_select(0, train_idx);
  d.train_y = d.all_y.index_select(0, train_idx);
  d.test_x = d.all_x.index_select(0, test_idx);
  d.test_y = d.all_y.index_select(0, test_idx);
  d.train_mask = torch::zeros({n}, torch::kBool);
  d.train_mask.index_fill_(0, train_idx, true);
  return d;
}

}  // namespace grokking
