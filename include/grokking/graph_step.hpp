// A full-batch training step captured once into a CUDA graph and replayed: one graph launch
// per step instead of a few hundred kernel launches, which dominate at the paper's size on a
// GPU. Compiled in only against a LibTorch with CUDA (GROKKING_CUDA_GRAPHS); elsewhere
// built() is false and the training loop runs its steps one kernel at a time.
#pragma once
#include <memory>

#include "grokking/model.hpp"
#include "grokking/optim.hpp"

namespace grokking {

class GraphedStep {
 public:
  static bool built();
  // Model and optimiser on one CUDA device; x, y the full training batch on it. Nothing runs yet.
  GraphedStep(Model& model, FlatAdamW& opt, torch::Tensor x, torch::Tensor y, bool fast);
  ~GraphedStep();
  GraphedStep(const GraphedStep&) = delete;
  GraphedStep& operator=(const GraphedStep&) = delete;
  // One real training step at opt.scheduled_lr(), the same update as train_step. The first
  // few run eagerly on a side stream (CUDA needs warm-up before capture), the next is captured
  // and replayed, and every later one is a replay. Returns the loss: a device tensor that the
  // next run overwrites.
  torch::Tensor run();
  bool captured() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The step a graph captures: zero the gradients, forward, float64 loss, backward, and the
// device-scheduled AdamW update (FlatAdamW::step_on_device). The host's step count is the
// caller's to advance (opt.count_device_step()), once the step has run. Runs on any device.
torch::Tensor device_scheduled_step(Model& model, FlatAdamW& opt, const torch::Tensor& x, const torch::Tensor& y,
                                    bool fast);

}  // namespace grokking
