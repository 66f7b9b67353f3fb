// The one-layer transformer of Nanda et al. (2023) with TransformerLens names and shapes,
// its dataset, and an AdamW over one flat parameter buffer.
#pragma once
#include <torch/torch.h>

#include <string>
#include <utility>
#include <vector>

#include "grokking/config.hpp"

namespace grokking {

// ---- data ----
struct Dataset {
  torch::Tensor train_x, train_y;  // [n_train, 3] int64 tokens [a, b, =], [n_train] labels
  torch::Tensor test_x, test_y;
  torch::Tensor all_x, all_y;      // every pair in (a, b) row-major order
  torch::Tensor train_mask;        // [n_all] bool: which of all_x are in train
};
// All pairs of the operation, split by a permutation drawn from task.seed.
Dataset make_dataset(const TaskConfig& task);

// ---- model ----
struct ParamSpec {
  std::string name;              // TransformerLens state-dict name
  std::vector<int64_t> shape;
  bool is_bias;
};
std::vector<ParamSpec> param_specs(const Config& cfg);

// Activations the analysis needs, at the last position.
struct Cache {
  torch::Tensor attn_pattern;  // [N, n_heads, 3] attention of the "=" position
  torch::Tensor resid_mid;     // [N, d_model]
  torch::Tensor mlp_post;      // [N, d_mlp]
  torch::Tensor resid_post;    // [N, d_model]
  torch::Tensor logits;        // [N, P], what the forward returns
};

// One model, or S replicas trained side by side as batched tensors (one per seed).
class Model {
 public:
  // Initialised on the CPU from train.seed (or from each of `seeds`: replica s gets exactly the
  // weights a single model with train.seed = seeds[s] gets), then moved: the same seed gives
  // the same model on CPU and CUDA.
  explicit Model(const Config& cfg, std::vector<int64_t> seeds = {});

  // Logits at the "=" position for tokens [N, 3]: [N, P] float32 ([S, N, P] for S replicas).
  torch::Tensor forward(const torch::Tensor& x, Cache* cache = nullptr) const;  // all positions (reference)
  // Last position only, the same function; fills the same cache (one model only).
  torch::Tensor forward_fast(const torch::Tensor& x, Cache* cache = nullptr) const;

  int64_t replicas() const { return int64_t(seeds_.size()); }
  const std::vector<int64_t>& seeds() const { return seeds_; }
  // Replica s as a single model with its own copy of the weights (same device), its config's
  // train.seed set to its seed.
  Model replica(int64_t s) const;
  // A deep copy of a single model: its own weights and gradients.
  Model clone() const;
  // Replica s's part of a buffer laid out like flat() (weights, gradients, Adam moments).
  torch::Tensor replica_part(const torch::Tensor& flat, int64_t s) const;

  // TransformerLens-named parameters, each a view into flat() ([S, ...] for S replicas).
  const std::vector<std::pair<std::string, torch::Tensor>>& named_parameters() const { return params_; }
  torch::Tensor param(const std::string& name) const;
  torch::Tensor& flat() { return flat_; }
  const torch::Tensor& flat() const { return flat_; }
  torch::Tensor& flat_grad() { return flat_grad_; }
  const Config& config() const { return cfg_; }

  void to(torch::Device device);
  // Replaces the weights (e.g. from a checkpoint); shapes must match.
  void load(const std::vector<std::pair<std::string, torch::Tensor>>& weights);
  double sum_squared_weights() const;

 private:
  void bind_views();
  Config cfg_;
  std::vector<int64_t> seeds_;
  std::vector<ParamSpec> specs_;
  torch::Tensor flat_, flat_grad_;
  std::vector<std::pair<std::string, torch::Tensor>> params_;
};

// Cross-entropy of logits [N, P] against labels [N], computed in float64 (mean). For replicas'
// logits [S, N, P], the sum of their means: each replica gets its own gradient.
torch::Tensor loss_fn(const torch::Tensor& logits, const torch::Tensor& labels);
double accuracy(const torch::Tensor& logits, const torch::Tensor& labels);
// Per replica, for logits [S, N, P]: mean loss and accuracy, [S] float64 each.
torch::Tensor replica_losses(const torch::Tensor& logits, const torch::Tensor& labels);
torch::Tensor replica_accuracies(const torch::Tensor& logits, const torch::Tensor& labels);

// ---- optimiser ----
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

// Zero the gradients, forward (fast or plain), float64 loss, backward: the gradients of one
// step, left in model.flat_grad(). Returns the loss.
torch::Tensor forward_backward(Model& model, const torch::Tensor& x, const torch::Tensor& y, bool fast);
// One optimiser step on a batch: forward_backward, then AdamW at `lr`. Returns the loss (a
// tensor: reading it on a GPU synchronises).
torch::Tensor train_step(Model& model, FlatAdamW& opt, const torch::Tensor& x, const torch::Tensor& y, bool fast,
                         double lr);

torch::Device resolve_device(const std::string& spec);

}  // namespace grokking
