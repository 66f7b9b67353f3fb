// The one-layer transformer of Nanda et al. (2023) with TransformerLens names and shapes, and
// its loss.
#pragma once
#include <torch/torch.h>

#include <string>
#include <utility>
#include <vector>

#include "grokking/config.hpp"
#include "grokking/data.hpp"

namespace grokking {

// ---- model ----
struct ParamSpec {
  std::string name;              // TransformerLens state-dict name
  std::vector<int64_t> shape;
  bool is_bias;
};
std::vector<ParamSpec> param_specs(const Config& cfg);
// The parameters by name, in param_specs() order (a test pins it): Model::weight(W_Q) is
// blocks.0.attn.W_Q.
enum ParamId : size_t {
  W_E, W_pos,                          // embed.W_E, pos_embed.W_pos
  W_Q, W_K, W_V, W_O, b_Q, b_K, b_V, b_O,  // blocks.0.attn.*
  W_in, b_in, W_out, b_out,            // blocks.0.mlp.*
  W_U, b_U,                            // unembed.*
  kNumParams
};

// Where a parameter tensor lies in the flat buffer: replica r of it is
// flat[offset + r*numel, offset + (r+1)*numel) (the parameter-major layout).
struct ParamBlock {
  int64_t offset = 0, numel = 0;
};
// Replica r's part of a buffer laid out by `blocks` along its last dimension ([..., S*n] ->
// [..., n]): the blocks' replica-r slices, concatenated.
torch::Tensor replica_part(const torch::Tensor& flat, const std::vector<ParamBlock>& blocks, int64_t r);

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
  // Every parameter's block in flat(), in param_specs() order.
  std::vector<ParamBlock> param_blocks() const;

  // TransformerLens-named parameters, each a view into flat() ([S, ...] for S replicas).
  const std::vector<std::pair<std::string, torch::Tensor>>& named_parameters() const { return params_; }
  torch::Tensor param(const std::string& name) const;
  const torch::Tensor& weight(ParamId id) const { return params_[id].second; }
  torch::Tensor& flat() { return flat_; }
  const torch::Tensor& flat() const { return flat_; }
  torch::Tensor& flat_grad() { return flat_grad_; }
  const Config& config() const { return cfg_; }
  // Replaces the config a checkpoint of this model records (a packed run's own, with its lr and
  // weight decay); std::invalid_argument unless task, model and seed are this model's.
  void set_config(const Config& cfg);

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

// The training loss: cross-entropy of softmax (the paper's) or of StableMax (Prieto et al. 2025:
// s(x) = x + 1 for x >= 0, 1/(1 - x) for x < 0, p = s(x)/sum s(x)), computed in float64 (the
// default) or float32 (what the paper's code effectively computes).
struct LossSpec {
  bool stablemax = false;
  torch::ScalarType dtype = torch::kFloat64;
  static LossSpec of(const TrainConfig& train);
};
// log p over the last axis of logits [..., P], in spec.dtype.
torch::Tensor log_probs(const torch::Tensor& logits, const LossSpec& spec = {});
// Mean loss of logits [N, P] against labels [N]. For replicas' logits [S, N, P], the sum of
// their means: each replica gets its own gradient.
torch::Tensor loss_fn(const torch::Tensor& logits, const torch::Tensor& labels, const LossSpec& spec = {});
double accuracy(const torch::Tensor& logits, const torch::Tensor& labels);
// Per replica, for logits [S, N, P]: mean loss and accuracy, [S] float64 each.
torch::Tensor replica_losses(const torch::Tensor& logits, const torch::Tensor& labels, const LossSpec& spec = {});
torch::Tensor replica_accuracies(const torch::Tensor& logits, const torch::Tensor& labels);
// Per replica: the fraction of pairs whose loss term is exactly zero in spec's precision (their
// gradient has vanished: Prieto et al.'s softmax collapse), [S] float64.
torch::Tensor replica_collapse(const torch::Tensor& logits, const torch::Tensor& labels, const LossSpec& spec = {});

// Zero the gradients, forward (fast or plain), the config's loss (LossSpec::of), backward: the
// gradients of one step, left in model.flat_grad(). Returns the loss.
torch::Tensor forward_backward(Model& model, const torch::Tensor& x, const torch::Tensor& y, bool fast);
torch::Device resolve_device(const std::string& spec);

}  // namespace grokking
