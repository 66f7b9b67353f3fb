// The optimiser: AdamW over the model's one flat parameter buffer, and the training step.
#pragma once
#include <torch/torch.h>

#include "grokking/config.hpp"
#include "grokking/model.hpp"

namespace grokking {

struct OptimState {
  torch::Tensor exp_avg, exp_avg_sq;  // flat, in parameter order
  int64_t step = 0;
};

// AdamW with the arithmetic of torch::optim::AdamW, applied to one flat buffer: a handful of
// kernels per step instead of a handful per parameter. Frozen (zero) parameters have zero
// gradients and stay exactly zero.
class FlatAdamW {
 public:
  FlatAdamW(torch::Tensor param, torch::Tensor grad, const OptimConfig& opt);
  void step(double lr);
  // The same update with the step count and everything that depends on it (the warm-up
  // learning rate, the bias corrections) in device tensors that the update itself advances:
  // nothing read from the host changes between steps, so a CUDA graph can capture it. The
  // learning rate is scheduled_lr(). Bit-identical to step(scheduled_lr()) on the CPU (tested).
  // It leaves the host's count alone: a captured step runs later, once per replay.
  void step_on_device();
  // A step_on_device() ran (eagerly or replayed from a graph): advance the host's count.
  void count_device_step() { ++step_; }
  const torch::Tensor& device_step() const { return device_step_; }
  // lr for the next step: lr * min(step/warmup, 1), step counted from 0 (the paper's LambdaLR).
  double scheduled_lr() const;
  int64_t steps() const { return step_; }
  torch::Tensor& exp_avg() { return exp_avg_; }
  torch::Tensor& exp_avg_sq() { return exp_avg_sq_; }
  void set_state(torch::Tensor exp_avg, torch::Tensor exp_avg_sq, int64_t step);
  OptimState state() const;

 private:
  torch::Tensor param_, grad_, exp_avg_, exp_avg_sq_;
  torch::Tensor device_step_;  // float64 scalar on the parameters' device, for step_on_device()
  OptimConfig opt_;
  int64_t step_ = 0;
};

// One optimiser step on a batch: forward_backward, then AdamW at `lr`. Returns the loss (a
// tensor: reading it on a GPU synchronises).
torch::Tensor train_step(Model& model, FlatAdamW& opt, const torch::Tensor& x, const torch::Tensor& y, bool fast,
                         double lr);

}  // namespace grokking
