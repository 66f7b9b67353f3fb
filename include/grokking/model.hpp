// The model: one flat buffer of parameters (weights, gradients and the optimiser's moments all
// laid out alike), named per its kind, for one model or S replicas trained side by side. What
// the network computes belongs to its kind (an Architecture, one file each in src/models/): its
// parameter table and a forward batched over the replicas. The model reads the task's shape,
// never its keys.
#pragma once
#include <torch/torch.h>

#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "grokking/config.hpp"
#include "grokking/kinds.hpp"
#include "grokking/task.hpp"

namespace grokking {

// How a parameter starts: N(0, scale^2), U(-scale, scale), ones or zeros (times model.init_scale).
struct ParamInit {
  enum class Kind { normal, uniform, ones, zeros };
  Kind kind = Kind::zeros;
  double scale = 0;
};
struct ParamSpec {
  std::string name;  // its kind's name for it (TransformerLens' for the transformer)
  std::vector<int64_t> shape;
  bool is_bias = false;
  bool trained = true;  // false: frozen at its initial value (no gradient)
  ParamInit init;
};

// Where a parameter tensor lies in the flat buffer: replica r of it is
// flat[offset + r*numel, offset + (r+1)*numel) (the parameter-major layout).
struct ParamBlock {
  int64_t offset = 0, numel = 0;
};
// Replica r's part of a buffer laid out by `blocks` along its last dimension ([..., S*n] ->
// [..., n]): the blocks' replica-r slices, concatenated.
torch::Tensor replica_part(const torch::Tensor& flat, const std::vector<ParamBlock>& blocks, int64_t r);
// The inverse: one replica's flat parts (each [..., n], laid out as a single model's buffer)
// side by side in `blocks`' layout ([..., S*n]).
torch::Tensor pack_replica_parts(const std::vector<torch::Tensor>& parts, const std::vector<ParamBlock>& blocks);

// Activations the analysis needs (one model), filled by a forward that is given one.
struct Cache {
  torch::Tensor attn_pattern;  // [N, n_heads, T] attention of the last position, last layer (transformer)
  torch::Tensor resid_mid;     // [N, d_model] at the last position (transformer)
  torch::Tensor mlp_post;      // [N, hidden]: the hidden neurons the analysis reads (last position)
  torch::Tensor resid_post;    // [N, d_model] (transformer)
  torch::Tensor logits;        // what the forward returns
};

// How the analysis of a pair task ([a, b, =]) reads a model kind.
struct PairReadout {
  // Per operand (a, then b): the parameter whose rows from first_row on are that operand's
  // values ([operand_values, width]): the embedding, or the first layer's weights on one-hot inputs.
  struct Rows {
    std::string param;
    int64_t first_row = 0;
  };
  std::vector<Rows> operands;
  std::string unembed;  // [width, classes]
  // The neuron-logit map W_L = (product of these)^T, [classes, hidden]: how each hidden neuron
  // of Cache::mlp_post writes to the logits.
  std::vector<std::string> neuron_to_logits;
  bool attention = false;  // Cache::attn_pattern is filled
  std::string embedding_label;  // how tables and figures name the operand weights ("W_E")
};

// How the superposition analysis reads a model kind: its feature matrix W [features, hidden] (row
// i: feature i's direction) and its output bias [features]; where the hidden space is a layer of
// ReLU neurons (a privileged basis), neurons_in / neurons_out name their weights [features, m]
// and [m, features] and neurons_hook their activations [N, m], which the neuron analysis reads.
struct FeatureReadout {
  std::string weights, bias;
  std::string neurons_in, neurons_out, neurons_hook;
};

class Model;
struct LossSpec;

// A model's activations by name, as TransformerLens names them, for one model, batch first:
// hook_embed and hook_pos_embed, blocks.L.hook_resid_pre, blocks.L.attn.hook_q / hook_k /
// hook_v / hook_z [N, T, H, d_head], blocks.L.attn.hook_pattern [N, H, T_q, T_k],
// blocks.L.hook_attn_out, blocks.L.hook_resid_mid, blocks.L.mlp.hook_pre / hook_post
// [N, T, d_mlp], blocks.L.hook_mlp_out, blocks.L.hook_resid_post [N, T, d_model]; an MLP's
// hidden.L.hook_post [N, width]; a toy model's hook_hidden [N, m] and hook_out [N, n]. A forward
// given hooks offers each activation by name; the hooks may keep it (run_with_cache) and may
// return a replacement (an ablation, a patch), which the forward goes on with.
class ActivationHooks {
 public:
  virtual ~ActivationHooks() = default;
  // Whether `at` is to be called for this name (the forward skips the offer otherwise).
  virtual bool wants(const std::string& name) const = 0;
  // The activation the forward goes on with: `act`, or a replacement of its shape.
  virtual torch::Tensor at(const std::string& name, const torch::Tensor& act) = 0;
};
// Keeps every activation offered (or only those named), detached.
class ActivationCache : public ActivationHooks {
 public:
  explicit ActivationCache(std::vector<std::string> only = {}) : only_(std::move(only)) {}
  bool wants(const std::string& name) const override;
  torch::Tensor at(const std::string& name, const torch::Tensor& act) override;
  const torch::Tensor& operator[](const std::string& name) const;  // std::out_of_range naming it
  std::vector<std::string> names() const;                         // in the order offered
  bool has(const std::string& name) const { return acts_.count(name) > 0; }

 private:
  std::vector<std::string> only_, order_;
  std::map<std::string, torch::Tensor> acts_;
};

// A model kind's network: its parameters and its forward.
class Architecture {
 public:
  virtual ~Architecture() = default;
  virtual std::vector<ParamSpec> params() const = 0;
  // Outputs for inputs x (Batch::x), batched over the model's replicas: Target::last
  // [S, N, classes]; sequence [S, N, T, classes]; reconstruct [S, N, features]. A cache only
  // for one model.
  virtual torch::Tensor forward(const Model& m, const torch::Tensor& x, Cache* cache) const = 0;
  // The same function, faster where the kind knows the task's structure (the default: forward).
  virtual bool has_fast_path() const { return false; }
  virtual torch::Tensor forward_fast(const Model& m, const torch::Tensor& x, Cache* cache) const {
    return forward(m, x, cache);
  }
  // The training loss of a batch as one op that also computes the parameters' gradients (the
  // same function as batch_loss of forward_fast's outputs), where the kind fuses the whole step
  // and the batch's tensors allow it; an undefined tensor otherwise (the default), and the step
  // goes through forward_fast and batch_loss.
  virtual torch::Tensor fused_loss(const Model& m, const Batch& batch, const LossSpec& spec) const {
    (void)m, (void)batch, (void)spec;
    return {};
  }
  // Each replica's loss of a batch ([S] float64, batch_loss's terms) without the gradients, where
  // the kind computes it without holding the outputs (an evaluation); undefined otherwise.
  virtual torch::Tensor fused_losses(const Model& m, const Batch& batch) const {
    (void)m, (void)batch;
    return {};
  }
  // FLOPs a training step on n examples cannot avoid (forward and backward), for bench; 0: unknown.
  virtual double step_flops(int64_t n_examples) const { (void)n_examples; return 0; }
  // How the pair analysis reads it; nullptr where the kind or the task has no such reading.
  virtual const PairReadout* pair_readout() const { return nullptr; }
  // How the superposition analysis reads it; nullptr where the kind has no feature matrix.
  virtual const FeatureReadout* feature_readout() const { return nullptr; }
  // The generic forward of one model, offering its named activations to `hooks` (see
  // ActivationHooks). Kinds without named activations refuse (UsageError).
  virtual torch::Tensor forward_hooked(const Model& m, const torch::Tensor& x, ActivationHooks& hooks) const;
  // Attention heads: n_layers and n_heads (0 for a kind without attention).
  virtual int64_t attention_layers() const { return 0; }
  virtual int64_t attention_heads() const { return 0; }
};

// One model, or S replicas trained side by side as batched tensors (one per seed or packed run).
class Model {
 public:
  // Initialised on the CPU from train.seed (or from each of `seeds`: replica s gets exactly the
  // weights a single model with train.seed = seeds[s] gets), then moved: the same seed gives
  // the same model on CPU and CUDA.
  explicit Model(const Config& cfg, std::vector<int64_t> seeds = {});

  // The kind's outputs for inputs x: [N, ...] for one model, [S, N, ...] for replicas (for the
  // modular task: logits at the "=" position, [N, P]). forward() is the kind's generic forward,
  // forward_fast() its fast path where it has one (the same function; forward() otherwise).
  torch::Tensor forward(const torch::Tensor& x, Cache* cache = nullptr) const;
  torch::Tensor forward_fast(const torch::Tensor& x, Cache* cache = nullptr) const;
  // One model's generic forward with its activations offered to hooks by name ([N, ...] out).
  torch::Tensor run_with_hooks(const torch::Tensor& x, ActivationHooks& hooks) const;
  // Its outputs, and every activation (or those named) in `cache`.
  torch::Tensor run_with_cache(const torch::Tensor& x, ActivationCache& cache) const { return run_with_hooks(x, cache); }
  // Always with the replica axis first: [S, N, ...].
  torch::Tensor outputs(const torch::Tensor& x, bool fast) const;
  bool has_fast_path() const { return arch_->has_fast_path(); }
  const Architecture& arch() const { return *arch_; }
  const TaskShape& shape() const { return shape_; }

  int64_t replicas() const { return int64_t(seeds_.size()); }
  const std::vector<int64_t>& seeds() const { return seeds_; }
  // Replica s as a single model with its own copy of the weights (same device), its config's
  // train.seed set to its seed.
  Model replica(int64_t s) const;
  // A deep copy of a single model: its own weights and gradients.
  Model clone() const;
  // Replica s's part of a buffer laid out like flat() (weights, gradients, Adam moments).
  torch::Tensor replica_part(const torch::Tensor& flat, int64_t s) const;
  // Every parameter's block in flat(), in params() order.
  std::vector<ParamBlock> param_blocks() const;
  const std::vector<ParamSpec>& specs() const { return specs_; }

  // Named parameters in params() order, each a view into flat() ([S, ...] for S replicas).
  const std::vector<std::pair<std::string, torch::Tensor>>& named_parameters() const { return params_; }
  torch::Tensor param(const std::string& name) const;
  bool has_param(const std::string& name) const;
  const torch::Tensor& weight(size_t index) const { return params_[index].second; }
  // Parameter `index` with a leading replica axis: [S, ...] (S = 1 included).
  torch::Tensor batched(size_t index) const { return replicas() == 1 ? weight(index).unsqueeze(0) : weight(index); }
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
  TaskShape shape_;
  std::shared_ptr<const Architecture> arch_;
  std::vector<int64_t> seeds_;
  std::vector<ParamSpec> specs_;
  torch::Tensor flat_, flat_grad_;
  std::vector<std::pair<std::string, torch::Tensor>> params_;
};

// The parameters a config's model has (its kind's table for its task's shape).
std::vector<ParamSpec> param_specs(const Config& cfg);
std::shared_ptr<const Architecture> make_architecture(const Config& cfg);

// ---- losses (src/loss.cpp) ----
// The training loss of a classification: cross-entropy of softmax (the paper's) or of StableMax
// (Prieto et al. 2025: s(x) = x + 1 for x >= 0, 1/(1 - x) for x < 0, p = s(x)/sum s(x)), or the
// mean squared error against the one-hot label (Gromov 2023), computed in float64 (the default)
// or float32 (what the paper's code effectively computes). Reconstruction tasks have their own
// (the importance-weighted squared error).
struct LossSpec {
  bool stablemax = false, mse = false;
  torch::ScalarType dtype = torch::kFloat64;
  static LossSpec of(const TrainConfig& train);
};
// log p over the last axis of logits [..., C], in spec.dtype.
torch::Tensor log_probs(const torch::Tensor& logits, const LossSpec& spec = {});
// Mean loss of logits [N, C] against labels [N]. For replicas' logits [S, N, C], the sum of
// their means: each replica gets its own gradient.
torch::Tensor loss_fn(const torch::Tensor& logits, const torch::Tensor& labels, const LossSpec& spec = {});
double accuracy(const torch::Tensor& logits, const torch::Tensor& labels);
// Per replica, for logits [S, N, C]: mean loss and accuracy, [S] float64 each.
torch::Tensor replica_losses(const torch::Tensor& logits, const torch::Tensor& labels, const LossSpec& spec = {});
torch::Tensor replica_accuracies(const torch::Tensor& logits, const torch::Tensor& labels);
// Per replica: the fraction of examples whose loss term is exactly zero in spec's precision
// (their gradient has vanished: Prieto et al.'s "zero terms"), [S] float64.
torch::Tensor replica_zero_terms(const torch::Tensor& logits, const torch::Tensor& labels, const LossSpec& spec = {});
// Per replica: the fraction of examples whose softmax has collapsed in spec's precision: the sum
// of exp(logit - max) over the classes is exactly 1 (Prieto et al.'s "softmax collapse"), [S].
torch::Tensor replica_softmax_collapse(const torch::Tensor& logits, const LossSpec& spec = {});

// The same over any task's batch, from the model's outputs with the replica axis ([S, ...]):
// the scored positions of a sequence, the importance-weighted squared error of a
// reconstruction. Accuracy is NaN where the task has none.
struct ReplicaMeasures {
  torch::Tensor loss, acc, zero_terms, collapse;  // [S] float64 each (collapse, zero_terms: 0 where meaningless)
};
torch::Tensor batch_loss(const torch::Tensor& outputs, const Batch& batch, const TaskShape& shape, const LossSpec& spec);
ReplicaMeasures batch_measures(const torch::Tensor& outputs, const Batch& batch, const TaskShape& shape,
                               const LossSpec& spec);
// The model's measures of a batch: batch_measures of its outputs, or on the fast path, where the
// kind computes its losses without holding the outputs (fused_losses), from those.
ReplicaMeasures model_measures(const Model& model, const Batch& batch, bool fast);

// Zero the gradients, forward (fast or generic), the config's loss, backward: the gradients of
// one step, left in model.flat_grad(). Returns the loss (summed over replicas).
torch::Tensor forward_backward(Model& model, const Batch& batch, bool fast);
torch::Tensor forward_backward(Model& model, const torch::Tensor& x, const torch::Tensor& y, bool fast);
torch::Device resolve_device(const std::string& spec);

}  // namespace grokking
