// The optimiser: AdamW over the model's one flat parameter buffer, and the training step.
#pragma once
#include <torch/torch.h>

#include "grokking/config.hpp"
#include "grokking/model.hpp"

namespace grokking {

struct OptimState {
  torch::Tensor exp_avg, exp_avg_sq;  // flat, in parameter order
  int64_t step = 0;
  // The interventions' state, by name: grokfast_ema [n]; grokfast_ma [window, n] with
  // grokfast_ma_next and grokfast_ma_count (int64 scalars); weight_norm_target (float64 scalar).
  std::vector<std::pair<std::string, torch::Tensor>> extra;
};

// AdamW with the arithmetic of torch::optim::AdamW, applied to one flat buffer: a handful of
// kernels per step instead of a handful per parameter. Frozen (zero) parameters have zero
// gradients and stay exactly zero. The interventions of OptimConfig run around the update, each
// as its reference code does it: Grokfast's filter and then ⊥Grad change the gradient before
// it, the fixed weight norm rescales the weights after it. Which ones run is decided here, once.
class FlatAdamW {
 public:
  FlatAdamW(torch::Tensor param, torch::Tensor grad, const OptimConfig& opt);
  // The same over a model's parameters: per-tensor and per-replica interventions need its layout.
  FlatAdamW(Model& model, const OptimConfig& opt);
  // Replicas with hyperparameters of their own (`sweep --pack`): replica r takes lr,
  // weight_decay, beta1, beta2 and eps from per_replica[r], everything else from `opt`
  // (pack_key() decides which configs may differ; the interventions' settings may not). Where
  // the replicas' values all equal opt's this is the constructor above, arithmetic included;
  // otherwise the update runs on per-element tensors of the hyperparameters (float rounding
  // apart, each replica's update is the one it would get alone: tested).
  FlatAdamW(Model& model, const OptimConfig& opt, const std::vector<OptimConfig>& per_replica);
  void step(double lr);
  // Whether an intervention changes the plain AdamW update.
  bool has_interventions() const;
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
  // Per-replica hyperparameters: step(lr) scales every replica's own lr by lr / opt.lr.
  double scheduled_lr() const;
  // Replica r's learning rate at step `step` (counted from 0).
  double lr_at(int64_t replica, int64_t step) const;
  int64_t steps() const { return step_; }
  torch::Tensor& exp_avg() { return exp_avg_; }
  torch::Tensor& exp_avg_sq() { return exp_avg_sq_; }
  void set_state(torch::Tensor exp_avg, torch::Tensor exp_avg_sq, int64_t step);
  // A whole state, as state() returns it (from a checkpoint): RunError when an intervention's
  // state is missing or has the wrong shape.
  void set_state(const OptimState& state);
  OptimState state() const;
  // Replica r's part, as a single model's optimiser would hold it.
  OptimState state(int64_t replica) const;

 private:
  void grokfast_filter();        // g <- g + lamb * (EMA or window mean of past g)
  void orthogonalise();          // per tensor and replica: g minus its component along w, |g| kept
  void fix_weight_norm();        // per replica: w rescaled to the initial total norm
  torch::Tensor replica_norms() const;  // [S] float64: each replica's total weight norm
  torch::Tensor replica_part(const torch::Tensor& flat, int64_t r) const;  // [S*n] -> [n]
  // Per-replica hyperparameters: the update with per-element tensors, from the lr's warm-up
  // factor and the bias corrections ([S] float64) that step() or step_on_device() schedule.
  void update_per_replica(const torch::Tensor& factor, const torch::Tensor& bias_correction1,
                          const torch::Tensor& bias_correction2);
  torch::Tensor spread(const torch::Tensor& per_replica) const;  // [S] float64 -> [S*n] param dtype

  torch::Tensor param_, grad_, exp_avg_, exp_avg_sq_;
  torch::Tensor device_step_;  // float64 scalar on the parameters' device, for step_on_device()
  OptimConfig opt_;
  int64_t step_ = 0;
  std::vector<ParamBlock> blocks_;  // empty: the flat buffer is one tensor of one replica
  int64_t replicas_ = 1;
  torch::Tensor ema_;                 // grokfast "ema": mu, like the gradient
  torch::Tensor window_;              // grokfast "ma": [window, n] ring of past gradients
  int64_t window_next_ = 0, window_count_ = 0;
  torch::Tensor norm_target_;         // weight_norm "fixed": [S] float64 initial norms
  // Per-replica hyperparameters (empty when every replica has opt_'s): each replica's OptimConfig;
  // on the parameters' device, [S] float64 lr, lr*wd, beta1, beta2; the replica of every element
  // of the flat buffer; per element, beta1, 1 - beta1, beta2, 1 - beta2, eps.
  std::vector<OptimConfig> per_replica_;
  torch::Tensor lr_s_, lrwd_s_, beta1_s_, beta2_s_, replica_of_;
  torch::Tensor beta1_e_, one_minus_beta1_e_, beta2_e_, one_minus_beta2_e_, eps_e_;
};

// One optimiser step on a batch: forward_backward, then AdamW at `lr`. Returns the loss (a
// tensor: reading it on a GPU synchronises).
torch::Tensor train_step(Model& model, FlatAdamW& opt, const torch::Tensor& x, const torch::Tensor& y, bool fast,
                         double lr);

}  // namespace grokking
