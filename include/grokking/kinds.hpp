// Task kinds and model kinds: what each one declares about itself (its keys, its shape, its
// checks), so that the config, the model and the training loop learn nothing else of it. A new
// kind is one file under src/tasks/ or src/models/ plus one line in that folder's registry.cpp.
// Torch-free: the config and the CLI read these tables without LibTorch's headers.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace grokking {

struct Config;
struct TaskConfig;
class Task;
class Architecture;

// One key of a kind: its name, default, meaning, and how a value is read (checked and
// normalised: 3.0 for an integer key becomes 3). `read` throws UsageError("WHERE: what is
// allowed (got X)").
struct KindKey {
  std::string key;
  nlohmann::json default_value;
  std::string doc;
  std::function<nlohmann::json(const nlohmann::json& value, const std::string& where)> read;
};
// Builders for the usual kinds of keys.
// `why_hi`, where given, says in the refusal of a value above hi why the bound is there.
KindKey integer_key(const std::string& key, int64_t def, int64_t lo, int64_t hi, const std::string& doc,
                    const std::string& why_hi = "");
KindKey real_key(const std::string& key, double def, double lo, bool lo_open, double hi, bool hi_open,
                 const std::string& doc);
KindKey bool_key(const std::string& key, bool def, const std::string& doc);
KindKey choice_key(const std::string& key, const std::string& def, const std::vector<std::string>& choices,
                   const std::string& doc);
// Any string (the kind's validate() checks it with the rest).
KindKey text_key(const std::string& key, const std::string& def, const std::string& doc);
// A list of integers (each in [lo, hi], at most max_len of them, at least 1).
KindKey integer_list_key(const std::string& key, std::vector<int64_t> def, int64_t lo, int64_t hi, size_t max_len,
                         const std::string& doc);
// A list of finite reals (each in [lo, hi]); empty allowed.
KindKey real_list_key(const std::string& key, std::vector<double> def, double lo, double hi, size_t max_len,
                      const std::string& doc);

// What the model and the training loop know of a task: its shape, never its keys.
struct TaskShape {
  enum class Target {
    last,         // one class per input, read at the last position ([a, b, =] -> a.b)
    sequence,     // a class at every position whose label is >= 0 (next-token prediction)
    reconstruct,  // real-valued inputs reproduced at the output (importance-weighted squared error)
  };
  Target target = Target::last;
  int64_t vocab = 0;     // input tokens 0..vocab-1 (0 for real-valued inputs)
  int64_t seq_len = 0;   // tokens per input
  int64_t features = 0;  // real-valued inputs: values per input
  int64_t classes = 0;   // outputs per scored position (the features, for reconstruct)
  // > 0: inputs are [a, b, =] with a, b < operand_values and "=" the token operand_values
  // (what the transformer's fast path and the MLPs' operand encodings need).
  int64_t operand_values = 0;
  // Fresh seeded batches every step instead of a fixed split; an epoch is then one step.
  bool fresh_batches = false;
  int64_t train_examples = 0;  // fixed split: the training set
  int64_t eval_examples = 0;   // evaluated at once (the test set, or the fixed evaluation set)
  bool has_accuracy() const { return target != Target::reconstruct; }
};

// What an analysis can read of a run: its task's structure and its model's parts. An analysis
// declares the ones it needs (analyses.hpp), never a kind's name; a new kind is read by every
// analysis whose capabilities it has.
enum class Capability : uint32_t {
  // the task's structure
  pairs = 1u << 0,     // a fixed split of every pair (a, b) of an operation, inputs [a, b, =]
  cycle = 1u << 1,     // the operation rotates a cycle: a Fourier basis (add, sub; mul, div mod a prime; C_n)
  group = 1u << 2,     // a finite group's table, characters and irreps
  sequence = 1u << 3,  // next-token prediction over sequences (a repeated half)
  features = 1u << 4,  // sparse real-valued features reconstructed
  // the model's parts
  heads = 1u << 8,          // attention heads (patterns, head ablations)
  pair_readout = 1u << 9,   // operand rows, unembedding and neuron-logit map of a pair task
  neurons = 1u << 10,       // hidden neurons: an MLP layer writing to the logits, a toy_mlp's ReLU layer
  feature_matrix = 1u << 11,  // a feature matrix W [features, hidden] and an output bias
};
struct Capabilities {
  uint32_t bits = 0;
  bool has(Capability c) const { return (bits & uint32_t(c)) != 0; }
  Capabilities& add(Capability c) { bits |= uint32_t(c); return *this; }
  Capabilities& add(Capabilities c) { bits |= c.bits; return *this; }
  std::string names() const;  // "pairs, cycle, heads" ("none")
};
// Every capability in declaration order, its name ("pair_readout") and what it means.
const std::vector<Capability>& all_capabilities();
const char* capability_name(Capability c);
const char* capability_doc(Capability c);

// A task kind: `task.kind` names it.
struct TaskKind {
  std::string name, doc;
  std::vector<KindKey> keys;
  // Keys (without "task.") that runs trained side by side in one pack may differ in: their
  // batches are drawn per replica (sparse features: the sparsity and importances).
  std::vector<std::string> pack_varying;
  // The key that sets how many examples are evaluated at once (named when they would not fit).
  std::string size_key;
  std::function<TaskShape(const TaskConfig&)> shape;
  // The structure an analysis can read (Capability's task half) of this config.
  std::function<Capabilities(const TaskConfig&)> structure;
  // The task in a few words for logs and bench ("add mod 113", "compose in D17").
  std::function<std::string(const TaskConfig&)> describe;
  // The checks across keys (and against train.*): UsageError("ORIGIN: /task/key: ...").
  std::function<void(const Config&, const std::string& origin)> validate;
  // The task of a run, or of runs packed side by side (one task config per replica; they differ
  // at most in pack_varying).
  std::function<std::unique_ptr<Task>(const std::vector<TaskConfig>&)> make;
};

// A model kind: `model.kind` names it.
struct ModelKind {
  std::string name, doc;
  std::vector<KindKey> keys;
  // The checks across keys and against the task's shape: UsageError("ORIGIN: /model/key: ...").
  std::function<void(const Config&, const TaskShape&, const std::string& origin)> validate;
  // Parameters of one model, and floats of activation per example of a forward (the memory
  // estimate, checked before anything is allocated).
  std::function<double(const Config&, const TaskShape&)> n_params;
  std::function<double(const Config&, const TaskShape&)> activation_floats;
  // Whether the kind has a faster forward of the same function for this config and shape
  // (train.path "fast" needs one; "auto" takes it where there is one).
  std::function<bool(const Config&, const TaskShape&)> has_fast_path;
  // What a config needs for the fast path, for the refusal of train.path "fast" without it.
  std::string fast_path_needs = "a kind that has one";
  // A line for the run's log about this config, or "" (optional): "nothing to superpose".
  std::function<std::string(const Config&, const TaskShape&)> note;
  std::function<std::shared_ptr<const Architecture>(const Config&, const TaskShape&)> make;
};

// The registries (src/tasks/registry.cpp, src/models/registry.cpp), in documentation order.
const std::vector<const TaskKind*>& task_kinds();
const std::vector<const ModelKind*>& model_kinds();
// The kind named so; UsageError("WHERE: must be one of modular, group, ... (got X)") otherwise.
const TaskKind& find_task_kind(const std::string& name, const std::string& where = "/task/kind");
const ModelKind& find_model_kind(const std::string& name, const std::string& where = "/model/kind");
// "modular, group, repeat, sparse_features"
std::string task_kind_names();
std::string model_kind_names();

// The shape of a task config (its keys read and checked).
TaskShape task_shape(const TaskConfig& task);
// The task in a few words: its kind's describe, or "task KIND".
std::string describe_task(const TaskConfig& task);
// A config's capabilities: its task's structure and its model's parts (from the model kind's
// architecture for this config: attention heads, a pair readout, a feature matrix).
Capabilities capabilities_of(const Config& cfg);

}  // namespace grokking
