// Experiment config: every key has a documented default, so `{}` is a valid config.
// Torch-free: included by the CLI and by tools that only read run directories.
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace grokking {

// The task: its kind and data seed, typed; every other key belongs to the kind (src/tasks/) and
// is kept resolved, all of the kind's keys present, in `keys`.
struct TaskConfig {
  TaskConfig();  // the modular task with its defaults
  std::string kind = "modular";  // see task_kinds()
  int64_t seed = 598;            // seed of the data: the train/test split, or the fresh batches
  nlohmann::json keys;           // the kind's keys, e.g. {"operation": "add", "p": 113, "frac_train": 0.3}
  // A key of the kind (std::logic_error when the kind has no such key: a programming error).
  int64_t integer(const std::string& key) const;
  double real(const std::string& key) const;
  const std::string& text(const std::string& key) const;
  bool flag(const std::string& key) const;
  std::vector<int64_t> integers(const std::string& key) const;
  std::vector<double> reals(const std::string& key) const;
  // Sets a key, read and checked as a config file's value is (UsageError when out of range).
  TaskConfig& set(const std::string& key, const nlohmann::json& value);
};

// The model: its kind and Omnigrok's initialisation scale, typed; every other key belongs to the
// kind (src/models/), resolved in `keys`.
struct ModelConfig {
  ModelConfig();  // the transformer with its defaults
  std::string kind = "transformer";  // see model_kinds()
  double init_scale = 1.0;           // Omnigrok's alpha: every initial weight times this
  nlohmann::json keys;               // e.g. {"d_model": 128, "n_heads": 4, ...}
  int64_t integer(const std::string& key) const;
  double real(const std::string& key) const;
  const std::string& text(const std::string& key) const;
  bool flag(const std::string& key) const;
  std::vector<int64_t> integers(const std::string& key) const;
  ModelConfig& set(const std::string& key, const nlohmann::json& value);
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
  double grokfast_lamb = 0.0;     // ema, ma: g <- g + lamb*filter; 0: the filter's default (ema 2, ma 5)
  // The amplification that applies: grokfast_lamb, or the filter's default (Lee et al.'s
  // modular-arithmetic commands: 2.0 with the EMA filter, 5.0 with the MA one).
  double grokfast_amplification() const { return grokfast_lamb > 0 ? grokfast_lamb : grokfast == "ma" ? 5.0 : 2.0; }
  int64_t grokfast_window = 100;  // ma: gradients averaged
  bool orthograd = false;         // Prieto et al. 2025: gradient orthogonal to the weights, norm kept
  std::string weight_norm = "free";  // free | fixed: Omnigrok's constant total weight norm
  double grad_clip = 0;           // > 0: each replica's gradient scaled to at most this total norm
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
  std::string loss = "softmax";       // softmax | stablemax (Prieto et al. 2025) | mse (against one-hot)
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
// The same for a config: those, and the task kind's own (the sparsity of sparse features).
std::vector<std::string> pack_varying_keys(const Config& c);
std::string pack_key(const Config& c);

// Parses JSON text, rejecting duplicate keys; errors name `origin`, line and column.
nlohmann::json parse_json_strict(const std::string& text, const std::string& origin);
std::string read_text_file(const std::string& path);

// The documented keys: {"section.key", default as JSON text, description}.
struct KeyDoc {
  std::string key, default_value, doc;
  std::string kind;  // for a kind's key: "task.kind modular", "model.kind mlp"; empty for the others
};
std::vector<KeyDoc> config_docs();

// Integer helpers shared by the tasks and the analysis.
bool is_prime(int64_t p);
int64_t pow_mod(int64_t base, int64_t exponent, int64_t modulus);

}  // namespace grokking
