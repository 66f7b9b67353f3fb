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

// The flat buffers an intervention works on: the weights and the gradient, laid out per
// parameter and replica (blocks; one block of one replica for a bare buffer).
struct FlatView {
  torch::Tensor& param;
  torch::Tensor& grad;
  const std::vector<ParamBlock>& blocks;
  int64_t replicas;
  // Each replica's squared L2 norm of `t` (laid out like param), [S] float64.
  torch::Tensor replica_sq_norms(const torch::Tensor& t) const;
  // Multiplies each replica's part of `t` by factor[r] ([S], t's dtype).
  void scale_replicas(torch::Tensor& t, const torch::Tensor& factor) const;
};

// An intervention on the plain AdamW update (OptimConfig's grokfast, orthograd, grad_clip,
// weight_norm): it changes the gradient before the update or the weights after it, and keeps
// whatever state it needs under its own names in the checkpoint. FlatAdamW picks the ones a
// config asks for once, when it is built; an intervention that is off costs nothing.
class Intervention {
 public:
  virtual ~Intervention() = default;
  virtual void before_update(FlatView&) {}
  virtual void after_update(FlatView&) {}
  // Its state for a checkpoint (replica r's part, or all of it for r < 0), and back.
  virtual void save(std::vector<std::pair<std::string, torch::Tensor>>& extra, const FlatView& view, int64_t r) const {
    (void)extra, (void)view, (void)r;
  }
  virtual void load(const OptimState& state, const FlatView& view) { (void)state, (void)view; }
};

// The interventions a config asks for, in the order they run (src/interventions.cpp).
std::vector<std::unique_ptr<Intervention>> make_interventions(const OptimConfig& opt, const FlatView& view);

// AdamW with the arithmetic of torch::optim::AdamW, applied to one flat buffer: a handful of
// kernels per step instead of a handful per parameter. Frozen (zero) parameters have zero
// gradients and stay exactly zero. The interventions of OptimConfig run around the update, each
// as its reference code does it: Grokfast's filter, ⊥Grad and gradient clipping change the
// gradient before it (in that order), the fixed weight norm rescales the weights after it.
class FlatAdamW {
 public:
  FlatAdamW(torch::Tensor param, torch::Tensor grad, const OptimConfig& opt);
  // The same over a model's parameters: per-tensor and per-replica interventions need its layout.
  FlatAdamW(Model& model, const OptimConfig& opt);
  // Replicas with hyperparameters of their own (`sweep --pack`): replica r takes lr,
  // weight_decay, beta1, beta2 and eps from per_replica[r], everything else from `opt`
  // (pack_key() decides which configs may differ; the interventions' settings may not). Where
  // the replicas' values all equal opt's this is the constructor above, arithmetic included;
  // otherwise, on the CPU, the single-model update runs on each replica's slices with its own
  // numbers (bit-identical to it alone), and on a GPU on per-element tensors of the
  // hyperparameters (float rounding apart the same: tested).
  FlatAdamW(Model& model, const OptimConfig& opt, const std::vector<OptimConfig>& per_replica);
  ~FlatAdamW();
  void step(double lr);
  // Whether an intervention changes the plain AdamW update.
  bool has_interventions() const { return !interventions_.empty(); }
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
  // Replica r's step count (all equal steps() unless set_state gave each its own).
  int64_t steps(int64_t replica) const { return own_steps_.empty() ? step_ : own_steps_[size_t(replica)]; }
  // Whether the replicas' step counts differ (then step_on_device() is not available).
  bool own_steps() const { return !own_steps_.empty(); }
  torch::Tensor& exp_avg() { return exp_avg_; }
  torch::Tensor& exp_avg_sq() { return exp_avg_sq_; }
  void set_state(torch::Tensor exp_avg, torch::Tensor exp_avg_sq, int64_t step);
  // A whole state, as state() returns it (from a checkpoint): RunError when an intervention's
  // state is missing or has the wrong shape.
  void set_state(const OptimState& state);
  // The same with each replica's own step count (runs that entered a pack at different times:
  // each has its own bias corrections and warm-up).
  void set_state(const OptimState& state, const std::vector<int64_t>& steps);
  OptimState state() const;
  // Replica r's part, as a single model's optimiser would hold it.
  OptimState state(int64_t replica) const;

 private:
  FlatView view() const;
  void set_layout(std::vector<ParamBlock> blocks, int64_t replicas);
  // Per-replica hyperparameters: the update with per-element tensors, from the lr's warm-up
  // factor and the bias corrections ([S] float64) that step() or step_on_device() schedule.
  void update_per_replica(const torch::Tensor& factor, const torch::Tensor& bias_correction1,
                          const torch::Tensor& bias_correction2);
  torch::Tensor spread(const torch::Tensor& per_replica) const;  // [S] float64 -> [S*n] param dtype
  // On the CPU, replica by replica and parameter by parameter: the single-model arithmetic on each
  // replica's slices with its own hyperparameters and step count (bit-identical to it alone).
  void update_each_replica(double lr);

  mutable torch::Tensor param_, grad_;
  torch::Tensor exp_avg_, exp_avg_sq_;
  torch::Tensor device_step_;  // float64 scalar on the parameters' device, for step_on_device()
  OptimConfig opt_;
  int64_t step_ = 0;
  std::vector<int64_t> own_steps_;  // per replica when their counts differ (step_ is replica 0's)
  std::vector<ParamBlock> blocks_;  // every parameter's block (one block for a bare buffer)
  int64_t replicas_ = 1;
  std::vector<std::unique_ptr<Intervention>> interventions_;
  // Per-replica hyperparameters (empty when every replica has opt_'s): each replica's OptimConfig;
  // on the parameters' device, [S] float64 lr, lr*wd, beta1, beta2; the replica of every element
  // of the flat buffer; per element, beta1, 1 - beta1, beta2, 1 - beta2, eps.
  std::vector<OptimConfig> per_replica_;
  torch::Tensor lr_s_, lrwd_s_, beta1_s_, beta2_s_, replica_of_;
  torch::Tensor beta1_e_, one_minus_beta1_e_, beta2_e_, one_minus_beta2_e_, eps_e_;
};

// Replicas' states (each as state(r) or a single model's optimiser returns it) side by side in
// `blocks`' layout, as one optimiser over their pack would hold them: moments and per-element
// intervention state by parameter block, per-replica ones ([1]) concatenated, shared scalars
// (which must agree) once. The step is the first one's: give each its own to set_state.
OptimState pack_states(const std::vector<OptimState>& states, const std::vector<ParamBlock>& blocks);

// One optimiser step on a batch: forward_backward, then AdamW at `lr`. Returns the loss (a
// tensor: reading it on a GPU synchronises).
torch::Tensor train_step(Model& model, FlatAdamW& opt, const Batch& batch, bool fast, double lr);
torch::Tensor train_step(Model& model, FlatAdamW& opt, const torch::Tensor& x, const torch::Tensor& y, bool fast,
                         double lr);

}  // namespace grokking
