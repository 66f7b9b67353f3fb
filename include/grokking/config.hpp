// Experiment config: every key has a documented default, so `{}` is a valid config.
// Torch-free: included by the CLI and by tools that only read run directories.
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace grokking {

struct TaskConfig {
  std::string operation = "add";  // see operation_names()
  int64_t p = 113;                // modulus; tokens 0..p-1 are numbers, token p is "="
  double frac_train = 0.3;        // fraction of all pairs used for training
  int64_t seed = 598;             // seed of the train/test split
};

struct ModelConfig {
  int64_t d_model = 128;
  int64_t n_heads = 4;
  int64_t d_head = 32;
  int64_t d_mlp = 512;
  std::string activation = "relu";  // relu | gelu
  bool train_biases = false;        // false: every b_* is zero and frozen (TL demo)
  std::string init = "tl";          // tl: N(0, (0.8/sqrt(d_model))^2) on every W_*; paper: randn/sqrt(fan)
  double init_scale = 1.0;          // Omnigrok's alpha: every initial weight times this
};

struct OptimConfig {
  double lr = 1e-3;
  double weight_decay = 1.0;
  double beta1 = 0.9;
  double beta2 = 0.98;
  double eps = 1e-8;
  int64_t warmup_steps = 10;  // lr factor min(step/warmup, 1), step counted from 0 (paper's LambdaLR)
  // Interventions on the update; the defaults leave plain AdamW.
  std::string grokfast = "none";  // none | ema | ma: Grokfast's slow-gradient amplifier (Lee et al. 2024)
  double grokfast_alpha = 0.98;   // ema: mu <- alpha*mu + (1-alpha)*g
  double grokfast_lamb = 2.0;     // ema, ma: g <- g + lamb*filter
  int64_t grokfast_window = 100;  // ma: gradients averaged
  bool orthograd = false;         // Prieto et al. 2025: gradient orthogonal to the weights, norm kept
  std::string weight_norm = "free";  // free | fixed: Omnigrok's constant total weight norm
};

struct TrainConfig {
  int64_t epochs = 25000;
  int64_t batch_size = 0;  // 0: full batch (one step per epoch)
  int64_t seed = 999;      // model initialisation (and minibatch order) seed
  std::string device = "auto";  // auto | cpu | cuda | cuda:N
  int64_t threads = 0;          // 0: all cores
  int64_t eval_every = 100;
  int64_t checkpoint_every = 1000;
  int64_t log_every = 0;        // 0: log at every evaluation
  double early_stop_acc = 0.0;  // > 0: stop once test accuracy held >= this ...
  int64_t early_stop_hold = 1000;  // ... for this many epochs
  bool flush_denormal = true;   // CPU: flush denormals to zero (2x faster after memorisation)
  std::string path = "auto";    // auto | fast | plain: training forward implementation
  bool cuda_graph = true;       // CUDA, full batch: capture the step in a CUDA graph and replay it
  std::string loss = "softmax";       // softmax | stablemax (Prieto et al. 2025)
  std::string loss_dtype = "float64";  // float64 | float32: precision of the loss
};

struct OutputConfig {
  std::string dir;  // empty: runs/<config file stem>
};

struct Config {
  TaskConfig task;
  ModelConfig model;
  OptimConfig optim;
  TrainConfig train;
  OutputConfig output;
};

// Reads and validates a config file, applies `section.key=value` overrides, validates again.
// Throws UsageError("FILE: /section/key: what is allowed (got X)").
Config load_config(const std::string& path, const std::vector<std::string>& sets = {});
// Same, from JSON text; `origin` names the source in messages.
Config parse_config(const std::string& text, const std::string& origin,
                    const std::vector<std::string>& sets = {});
Config config_from_json(const nlohmann::json& j, const std::string& origin);
nlohmann::json config_to_json(const Config& c);
// A run directory's config.json, as every writer of one writes it (resume compares texts).
std::string config_file_text(const Config& c);
void validate(const Config& c, const std::string& origin);

// Runs that can train side by side in one process (`sweep --pack`): configs equal in everything
// but the keys of pack_varying_keys() (the seed, lr, weight decay, Adam's betas and eps, the
// output directory and the thread count). pack_key(c) is c's JSON without those keys: two
// configs pack together when their keys are equal.
const std::vector<std::string>& pack_varying_keys();
std::string pack_key(const Config& c);

// Parses JSON text, rejecting duplicate keys; errors name `origin`, line and column.
nlohmann::json parse_json_strict(const std::string& text, const std::string& origin);
std::string read_text_file(const std::string& path);

// The documented keys: {"section.key", default as JSON text, description}.
struct KeyDoc {
  std::string key, default_value, doc;
};
std::vector<KeyDoc> config_docs();

const std::vector<std::string>& operation_names();
// The label of (a, b) for an operation, or -1 when the pair is not in the dataset (x/0).
int64_t apply_operation(const std::string& op, int64_t a, int64_t b, int64_t p);

}  // namespace grokking
