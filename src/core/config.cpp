#include "grokking/config.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <functional>
#include <set>

#include "grokking/error.hpp"
#include "grokking/kinds.hpp"
#include "grokking/limits.hpp"
#include "grokking/text.hpp"

namespace grokking {
using nlohmann::json;

namespace {

// One typed key of Config (the optim, train and output sections, and the keys every task or
// model kind has): how to read and check it (a KindKey), and where it lives in the struct.
struct Field {
  std::string section;
  KindKey spec;
  std::function<void(Config&, const json&)> set;
  std::function<json(const Config&)> get;
  std::string pointer() const { return "/" + section + "/" + spec.key; }
};

template <class S, class T>
Field typed(const char* section, S Config::*s, T S::*m, KindKey spec) {
  return {section, std::move(spec), [=](Config& c, const json& v) { (c.*s).*m = v.get<T>(); },
          [=](const Config& c) { return json((c.*s).*m); }};
}

bool is_cuda_index(const std::string& s) {
  if (s.rfind("cuda:", 0) != 0 || s.size() == 5 || s.size() > 8) return false;
  return std::all_of(s.begin() + 5, s.end(), [](char ch) { return ch >= '0' && ch <= '9'; });
}

KindKey device_key() {
  KindKey k = choice_key("device", "auto", {"auto", "cpu", "cuda"}, "auto picks CUDA when present; cuda:N picks a GPU");
  auto choices = k.read;
  k.read = [choices](const json& v, const std::string& where) {
    if (v.is_string() && is_cuda_index(v.get<std::string>())) return v;
    return choices(v, where);
  };
  return k;
}

// The typed keys, in documentation order. task.kind and model.kind are read apart (they decide
// which other keys the section may hold).
const std::vector<Field>& schema() {
  static const std::vector<Field> fields = [] {
    using C = Config;
    const int64_t big = int64_t(1) << 40;
    std::vector<Field> f;
    f.push_back(typed("task", &C::task, &TaskConfig::seed,
                      integer_key("seed", 598, 0, INT64_MAX, "seed of the data: the train/test split, or the fresh batches")));
    f.push_back(typed("model", &C::model, &ModelConfig::init_scale,
                      real_key("init_scale", 1.0, 0, true, 1000, false, "Omnigrok's alpha: every initial weight is multiplied by this")));
    f.push_back(typed("optim", &C::optim, &OptimConfig::lr, real_key("lr", 1e-3, 0, true, 1e9, false, "AdamW learning rate")));
    f.push_back(typed("optim", &C::optim, &OptimConfig::weight_decay,
                      real_key("weight_decay", 1.0, 0, false, 1e6, false, "AdamW decoupled weight decay")));
    f.push_back(typed("optim", &C::optim, &OptimConfig::beta1, real_key("beta1", 0.9, 0, false, 1, true, "AdamW beta1")));
    f.push_back(typed("optim", &C::optim, &OptimConfig::beta2, real_key("beta2", 0.98, 0, false, 1, true, "AdamW beta2")));
    f.push_back(typed("optim", &C::optim, &OptimConfig::eps, real_key("eps", 1e-8, 0, true, 1, false, "AdamW epsilon")));
    f.push_back(typed("optim", &C::optim, &OptimConfig::warmup_steps,
                      integer_key("warmup_steps", 10, 0, big, "linear warmup: lr*min(step/warmup_steps, 1), step from 0; 0 disables")));
    f.push_back(typed("optim", &C::optim, &OptimConfig::grokfast,
                      choice_key("grokfast", "none", {"none", "ema", "ma"},
                                 "Grokfast (Lee et al. 2024): amplify the slow gradient, ema or ma filter; none: off")));
    f.push_back(typed("optim", &C::optim, &OptimConfig::grokfast_alpha,
                      real_key("grokfast_alpha", 0.98, 0, false, 1, true,
                               "ema: mu <- alpha*mu + (1-alpha)*g (default of the reference code's modular-arithmetic command, not gradfilter_ema's 0.99)")));
    f.push_back(typed("optim", &C::optim, &OptimConfig::grokfast_lamb,
                      real_key("grokfast_lamb", 0.0, 0, false, 1e6, false,
                               "ema, ma: g <- g + lamb*filter; 0: the filter's own default, the reference code's commands' (ema 2.0, ma 5.0)")));
    f.push_back(typed("optim", &C::optim, &OptimConfig::grokfast_window,
                      integer_key("grokfast_window", 100, 1, 100000, "ma: mean of the last window gradients, applied once the window is full")));
    f.push_back(typed("optim", &C::optim, &OptimConfig::orthograd,
                      bool_key("orthograd", false, "Prieto et al. 2025: per parameter, remove the gradient's component along the weights, keep its norm")));
    f.push_back(typed("optim", &C::optim, &OptimConfig::weight_norm,
                      choice_key("weight_norm", "free", {"free", "fixed"},
                                 "fixed: after every step rescale all weights to their total norm at initialisation (Omnigrok)")));
    f.push_back(typed("optim", &C::optim, &OptimConfig::grad_clip,
                      real_key("grad_clip", 0.0, 0, false, 1e9, false,
                               "> 0: scale each model's gradient to at most this total L2 norm before the update (torch's clip_grad_norm_); 0: off")));
    f.push_back(typed("train", &C::train, &TrainConfig::epochs,
                      integer_key("epochs", 25000, 1, big, "training epochs (steps, for tasks that draw fresh batches every step)")));
    f.push_back(typed("train", &C::train, &TrainConfig::batch_size,
                      integer_key("batch_size", 0, 0, big, "0: full batch (one optimiser step per epoch); else minibatch size (for tasks with fresh batches: the batch drawn each step)")));
    f.push_back(typed("train", &C::train, &TrainConfig::seed,
                      integer_key("seed", 999, 0, INT64_MAX, "seed of the initialisation (and of the minibatch order)")));
    f.push_back(typed("train", &C::train, &TrainConfig::device, device_key()));
    f.push_back(typed("train", &C::train, &TrainConfig::threads, integer_key("threads", 0, 0, 1024, "CPU threads; 0: all cores")));
    f.push_back(typed("train", &C::train, &TrainConfig::eval_every,
                      integer_key("eval_every", 100, 1, big, "epochs between evaluations (a metrics.csv row each)")));
    f.push_back(typed("train", &C::train, &TrainConfig::checkpoint_every,
                      integer_key("checkpoint_every", 1000, 1, big, "epochs between checkpoints (one is always written at the end)")));
    f.push_back(typed("train", &C::train, &TrainConfig::log_every,
                      integer_key("log_every", 0, 0, big, "epochs between progress lines on stderr; 0: every evaluation")));
    f.push_back(typed("train", &C::train, &TrainConfig::early_stop_acc,
                      real_key("early_stop_acc", 0.0, 0, false, 1, false,
                               "> 0: stop once test accuracy has held >= this for early_stop_hold epochs; 0: off")));
    f.push_back(typed("train", &C::train, &TrainConfig::early_stop_hold,
                      integer_key("early_stop_hold", 1000, 0, big, "epochs the early-stop accuracy must hold")));
    f.push_back(typed("train", &C::train, &TrainConfig::flush_denormal,
                      bool_key("flush_denormal", true, "CPU: flush denormal floats to zero (keeps full speed after memorisation)")));
    f.push_back(typed("train", &C::train, &TrainConfig::path,
                      choice_key("path", "auto", {"auto", "fast", "plain"},
                                 "training forward: fast where the model kind has such a path (the transformer: the one-layer model on [a, b, =] by the task's structure, any other by its hand-written attention on the CPU; the MLP with embedded inputs: its first layer as two gathered tables; the toy model: its fused step; same loss and gradients); plain: the generic forward; auto: fast where there is one")));
    f.push_back(typed("train", &C::train, &TrainConfig::cuda_graph,
                      bool_key("cuda_graph", true, "CUDA, full batch: capture one training step in a CUDA graph and replay it (needs a LibTorch with CUDA)")));
    f.push_back(typed("train", &C::train, &TrainConfig::loss,
                      choice_key("loss", "softmax", {"softmax", "stablemax", "mse"},
                                 "cross-entropy of softmax, or of StableMax s(x)=x+1 (x>=0), 1/(1-x) (x<0) (Prieto et al. 2025); mse: mean squared error against the one-hot label (Gromov 2023)")));
    f.push_back(typed("train", &C::train, &TrainConfig::loss_dtype,
                      choice_key("loss_dtype", "float64", {"float64", "float32"},
                                 "precision of the loss and its softmax; float32 is what the paper's code computes")));
    f.push_back(typed("output", &C::output, &OutputConfig::dir,
                      text_key("dir", "", "run directory; empty: runs/<config file name without .json>")));
    return f;
  }();
  return fields;
}

const std::vector<std::string>& section_names() {
  static const std::vector<std::string> names = {"task", "model", "optim", "train", "output"};
  return names;
}

int64_t mod(int64_t x, int64_t p) { return ((x % p) + p) % p; }

// A kind's keys, resolved: every key at its default.
json kind_defaults(const std::vector<KindKey>& keys) {
  json out = json::object();
  for (auto& k : keys) out[k.key] = k.default_value;
  return out;
}

// A kind's key, looked up for the typed accessors: a missing one is a programming error.
const json& kind_value(const json& keys, const std::string& section, const std::string& kind, const std::string& key) {
  auto it = keys.find(key);
  if (it == keys.end()) throw std::logic_error(section + ".kind " + kind + " has no key " + key);
  return *it;
}

json read_kind_key(const std::vector<KindKey>& keys, const std::string& section, const std::string& kind,
                   const std::string& k, const json& v) {
  for (auto& key : keys)
    if (key.key == k) return key.read(v, "/" + section + "/" + k);
  throw std::logic_error(section + ".kind " + kind + " has no key " + k);
}

}  // namespace

bool is_prime(int64_t p) {
  if (p < 2) return false;
  for (int64_t d = 2; d * d <= p; ++d)
    if (p % d == 0) return false;
  return true;
}

int64_t pow_mod(int64_t b, int64_t e, int64_t p) {
  int64_t r = 1 % p;
  b = mod(b, p);
  for (; e > 0; e >>= 1, b = b * b % p)
    if (e & 1) r = r * b % p;
  return r;
}

TaskConfig::TaskConfig() : keys(kind_defaults(find_task_kind(kind).keys)) {}
int64_t TaskConfig::integer(const std::string& k) const { return kind_value(keys, "task", kind, k).get<int64_t>(); }
double TaskConfig::real(const std::string& k) const { return kind_value(keys, "task", kind, k).get<double>(); }
const std::string& TaskConfig::text(const std::string& k) const {
  return kind_value(keys, "task", kind, k).get_ref<const std::string&>();
}
bool TaskConfig::flag(const std::string& k) const { return kind_value(keys, "task", kind, k).get<bool>(); }
std::vector<int64_t> TaskConfig::integers(const std::string& k) const {
  return kind_value(keys, "task", kind, k).get<std::vector<int64_t>>();
}
std::vector<double> TaskConfig::reals(const std::string& k) const {
  return kind_value(keys, "task", kind, k).get<std::vector<double>>();
}
TaskConfig& TaskConfig::set(const std::string& k, const json& v) {
  keys[k] = read_kind_key(find_task_kind(kind).keys, "task", kind, k, v);
  return *this;
}

ModelConfig::ModelConfig() : keys(kind_defaults(find_model_kind(kind).keys)) {}
int64_t ModelConfig::integer(const std::string& k) const { return kind_value(keys, "model", kind, k).get<int64_t>(); }
double ModelConfig::real(const std::string& k) const { return kind_value(keys, "model", kind, k).get<double>(); }
const std::string& ModelConfig::text(const std::string& k) const {
  return kind_value(keys, "model", kind, k).get_ref<const std::string&>();
}
bool ModelConfig::flag(const std::string& k) const { return kind_value(keys, "model", kind, k).get<bool>(); }
std::vector<int64_t> ModelConfig::integers(const std::string& k) const {
  return kind_value(keys, "model", kind, k).get<std::vector<int64_t>>();
}
ModelConfig& ModelConfig::set(const std::string& k, const json& v) {
  keys[k] = read_kind_key(find_model_kind(kind).keys, "model", kind, k, v);
  return *this;
}

// Configs and sweep files may be regular files or come through a pipe (`<(jq ...)`,
// /dev/stdin): read whatever it is up to kMaxConfigBytes, never more.
std::string read_text_file(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) throw UsageError(path + ": no such file");
  if (S_ISDIR(st.st_mode)) throw UsageError(path + ": is a directory, not a config file");
  if (S_ISREG(st.st_mode) && uint64_t(st.st_size) > kMaxConfigBytes)
    throw UsageError(path + ": " + std::to_string(st.st_size) + " bytes, more than the " +
                     std::to_string(kMaxConfigBytes >> 20) + " MiB a config or sweep file may have");
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw UsageError(path + ": cannot be read (" + std::strerror(errno) + ")");
  std::string out;
  char buf[1 << 16];
  for (;;) {
    const ssize_t r = ::read(fd, buf, sizeof buf);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      const int err = errno;
      ::close(fd);
      throw UsageError(path + ": cannot be read (" + std::strerror(err) + ")");
    }
    if (r == 0) break;
    out.append(buf, size_t(r));
    if (out.size() > kMaxConfigBytes) {
      ::close(fd);
      throw UsageError(path + ": more than the " + std::to_string(kMaxConfigBytes >> 20) +
                       " MiB a config or sweep file may have (an endless device or stream?)");
    }
  }
  ::close(fd);
  return out;
}

json parse_json_strict(const std::string& text, const std::string& origin) {
  if (text.find_first_not_of(" \t\r\n") == std::string::npos)
    throw UsageError(origin + ": empty file, expected a JSON object (\"{}\" is the all-defaults config)");
  check_json_depth(text, origin);  // before nlohmann's parser and our walks recurse into it
  // Duplicate keys are silently merged by nlohmann; track the keys of every open object.
  std::vector<std::set<std::string>> open;
  std::string duplicate;
  auto cb = [&](int, json::parse_event_t ev, json& parsed) {
    if (ev == json::parse_event_t::object_start) open.emplace_back();
    else if (ev == json::parse_event_t::object_end && !open.empty()) open.pop_back();
    else if (ev == json::parse_event_t::key && !open.empty() && duplicate.empty() &&
             !open.back().insert(parsed.get<std::string>()).second)
      duplicate = parsed.get<std::string>();
    return true;
  };
  json j;
  try {
    j = json::parse(text, cb, /*allow_exceptions=*/true, /*ignore_comments=*/false);
  } catch (const json::exception& e) {
    // e.what(): "[json.exception.parse_error.101] parse error at line 3, column 5: ..."
    std::string msg = e.what();
    auto pos = msg.find("] ");
    if (pos != std::string::npos) msg = msg.substr(pos + 2);
    throw UsageError(origin + ": invalid JSON: " + msg);
  }
  if (!duplicate.empty()) throw UsageError(origin + ": duplicate key \"" + duplicate + "\"");
  return j;
}

namespace {

// Where dump() with U+FFFD for bad bytes and dump() dropping them agree, there were none.
bool valid_utf8(const std::string& s) {
  const json j(s);
  return j.dump(-1, ' ', false, json::error_handler_t::replace) == j.dump(-1, ' ', false, json::error_handler_t::ignore);
}

const std::vector<KindKey>& kind_keys(const std::string& section, const std::string& kind) {
  return section == "task" ? find_task_kind(kind, "/task/kind").keys : find_model_kind(kind, "/model/kind").keys;
}

// The kind of another name that has `key`, for the refusal of a key that belongs to another kind.
std::string kind_with_key(const std::string& section, const std::string& key) {
  auto search = [&](const auto& kinds) -> std::string {
    for (auto* k : kinds)
      for (auto& kk : k->keys)
        if (kk.key == key) return k->name;
    return "";
  };
  return section == "task" ? search(task_kinds()) : search(model_kinds());
}

// A task or model section: its kind first (it decides which keys the section may hold), then
// the typed keys every kind has and the kind's own.
void read_kind_section(Config& c, const std::string& section, const json& body, const std::string& origin) {
  std::string& kind = section == "task" ? c.task.kind : c.model.kind;
  json& keys = section == "task" ? c.task.keys : c.model.keys;
  if (body.contains("kind")) {
    const json& v = body["kind"];
    if (!v.is_string()) fail_got(origin + ": /" + section + "/kind", "must be a string", v);
    kind = v.get<std::string>();
  }
  try {
    (void)kind_keys(section, kind);
  } catch (const UsageError& e) {
    throw UsageError(origin + ": " + e.what());
  }
  keys = kind_defaults(kind_keys(section, kind));
  const auto& fields = schema();
  for (auto& item : body.items()) {
    const std::string& key = item.key();
    const json& value = item.value();
    if (key == "kind") continue;
    const std::string where = origin + ": /" + section + "/" + short_text(key);
    auto typed_field = std::find_if(fields.begin(), fields.end(),
                                    [&](const Field& f) { return f.section == section && f.spec.key == key; });
    if (typed_field != fields.end()) {
      typed_field->set(c, typed_field->spec.read(value, where));
      continue;
    }
    const auto& own_keys = kind_keys(section, kind);
    auto it = std::find_if(own_keys.begin(), own_keys.end(), [&](const KindKey& k) { return k.key == key; });
    if (it != own_keys.end()) {
      keys[key] = it->read(value, where);
      continue;
    }
    const std::string other = kind_with_key(section, key);
    if (!other.empty())
      throw UsageError(where + ": belongs to " + section + ".kind \"" + other + "\"; this config's " + section +
                       ".kind is \"" + kind + "\"");
    std::vector<std::string> allowed = {"kind"};
    for (auto& f : fields)
      if (f.section == section) allowed.push_back(f.spec.key);
    for (auto& k : own_keys) allowed.push_back(k.key);
    throw UsageError(where + ": unknown key; allowed in " + section + " with " + section + ".kind \"" + kind +
                     "\": " + join_comma(allowed));
  }
}

// Each field read and checked on its own (type, range); the checks across fields are validate()'s.
Config read_fields(const json& j, const std::string& origin) {
  if (!j.is_object()) fail_got(origin + ": /", "the config must be a JSON object", j);
  Config c;
  const auto& fields = schema();
  const auto& sections = section_names();
  // The kinds first, whatever the order of the sections in the file.
  for (const std::string section : {"task", "model"})
    if (j.contains(section)) {
      if (!j[section].is_object()) fail_got(origin + ": /" + section, "must be an object", j[section]);
      read_kind_section(c, section, j[section], origin);
    }
  for (auto& section_item : j.items()) {
    // Named, not structured bindings: clang before 16 cannot capture those in the lambdas below.
    const std::string& section = section_item.key();
    const json& body = section_item.value();
    if (std::find(sections.begin(), sections.end(), section) == sections.end())
      fail_got(origin + ": /" + short_text(section), "unknown section; allowed: " + join_comma(sections), json(section));
    if (!body.is_object()) fail_got(origin + ": /" + section, "must be an object", body);
    if (section == "task" || section == "model") continue;  // read above
    for (auto& key_item : body.items()) {
      const std::string& key = key_item.key();
      const json& value = key_item.value();
      auto it = std::find_if(fields.begin(), fields.end(),
                             [&](const Field& f) { return f.section == section && f.spec.key == key; });
      if (it == fields.end()) {
        std::vector<std::string> allowed;
        for (auto& f : fields)
          if (f.section == section) allowed.push_back(f.spec.key);
        throw UsageError(origin + ": /" + section + "/" + short_text(key) + ": unknown key; allowed in " + section +
                         ": " + join_comma(allowed));
      }
      it->set(c, it->spec.read(value, origin + ": " + it->pointer()));
    }
  }
  return c;
}

}  // namespace

Config config_from_json(const json& j, const std::string& origin) {
  Config c = read_fields(j, origin);
  validate(c, origin);
  return c;
}

void validate(const Config& c, const std::string& origin) {
  auto bad = [&](const std::string& ptr, const std::string& what) { throw UsageError(origin + ": " + ptr + ": " + what); };
  const TaskKind& task = find_task_kind(c.task.kind);
  const ModelKind& model = find_model_kind(c.model.kind);
  task.validate(c, origin);
  const TaskShape shape = task.shape(c.task);
  model.validate(c, shape, origin);

  // ---- the training loop against the task's shape ----
  if (shape.fresh_batches) {
    if (c.train.batch_size == 0)
      bad("/train/batch_size", "task.kind \"" + c.task.kind +
                                   "\" draws a fresh batch every step: give its size (> 0; got 0, the full batch of a fixed split)");
  } else if (c.train.batch_size > shape.train_examples) {
    bad("/train/batch_size", "must be 0 (full batch) or at most the " + std::to_string(shape.train_examples) +
                                 " training pairs (a batch is drawn from them without repeats; got " +
                                 std::to_string(c.train.batch_size) + ")");
  }
  if (!shape.has_accuracy()) {
    if (c.train.early_stop_acc > 0)
      bad("/train/early_stop_acc", "task.kind \"" + c.task.kind + "\" has no accuracy to stop on; leave it 0 (got " +
                                       format_number(c.train.early_stop_acc, "%g") + ")");
    if (c.train.loss != "softmax" || c.train.loss_dtype != "float64")
      bad("/train/" + std::string(c.train.loss != "softmax" ? "loss" : "loss_dtype"),
          "task.kind \"" + c.task.kind +
              "\" trains on its own loss (the importance-weighted squared error); leave train.loss and train.loss_dtype at their defaults");
  }
  if (c.train.path == "fast" && !model.has_fast_path(c, shape))
    bad("/train/path", "model.kind \"" + c.model.kind + "\" has no fast path for this task and model (it needs " +
                           model.fast_path_needs + "); use auto or plain");

  // A Grokfast parameter changed from its default for a filter that does not use it is a mistake
  // (compared with the defaults, not with the keys given: a resolved config lists every key).
  const OptimConfig d;
  const auto& o = c.optim;
  if (o.grokfast != "ma" && o.grokfast_window != d.grokfast_window)
    bad("/optim/grokfast_window", "is used only with optim.grokfast \"ma\" (grokfast is \"" + o.grokfast + "\")");
  if (o.grokfast != "ema" && o.grokfast_alpha != d.grokfast_alpha)
    bad("/optim/grokfast_alpha", "is used only with optim.grokfast \"ema\" (grokfast is \"" + o.grokfast + "\")");
  // (2.0 was the written default before the filters had defaults of their own.)
  if (o.grokfast == "none" && o.grokfast_lamb != d.grokfast_lamb && o.grokfast_lamb != 2.0)
    bad("/optim/grokfast_lamb", "is used only with optim.grokfast \"ema\" or \"ma\" (grokfast is \"none\")");

  // ---- limits, before anything is allocated ----
  const double bytes = double(shape.eval_examples) * model.activation_floats(c, shape) * 4.0;
  if (bytes > 16e9)
    bad("/task/" + task.size_key, "too large: evaluating all " + std::to_string(shape.eval_examples) +
                                      " examples at once holds about " + format_number(bytes / 1e9, "%g") +
                                      " GB of activations, at most 16 GB allowed (got " +
                                      shown_json(c.task.keys.value(task.size_key, json())) + ")");
  const double params = model.n_params(c, shape);
  if (params > 3e8)
    bad("/model/" + model.keys.front().key,
        "model too large: " + format_number(params, "%g") +
            " parameters, at most 3e8 (a checkpoint holds 12 bytes a parameter with the Adam moments, "
            "and checkpoints stay under the 4 GiB of a plain zip, which load_checkpoint checks)");
}

json config_to_json(const Config& c) {
  json j = json::object();
  j["task"] = c.task.keys;
  j["task"]["kind"] = c.task.kind;
  j["model"] = c.model.keys;
  j["model"]["kind"] = c.model.kind;
  for (auto& f : schema()) j[f.section][f.spec.key] = f.get(c);
  return j;
}

namespace {
// --set section.kind=NEW on a config whose section holds its old kind's keys (a resolved config
// lists every key): the old kind's keys that stand at their defaults go (the new kind takes its
// own defaults); any other stays, and is refused as belonging to the old kind, since dropping it
// would lose what the user set.
void switch_kind(json& j, const std::string& section, const json& new_kind) {
  if (!j.contains(section) || !j[section].is_object() || !new_kind.is_string()) return;
  json& body = j[section];
  const std::string old_kind = body.value("kind", section == "task" ? std::string("modular") : std::string("transformer"));
  if (old_kind == new_kind.get<std::string>()) return;
  const std::vector<KindKey>* old_keys = nullptr;
  const std::vector<KindKey>* new_keys = nullptr;
  if (section == "task") {
    for (auto* k : task_kinds()) {
      if (k->name == old_kind) old_keys = &k->keys;
      if (k->name == new_kind.get<std::string>()) new_keys = &k->keys;
    }
  } else {
    for (auto* k : model_kinds()) {
      if (k->name == old_kind) old_keys = &k->keys;
      if (k->name == new_kind.get<std::string>()) new_keys = &k->keys;
    }
  }
  if (!old_keys || !new_keys) return;  // an unknown kind: reading the config says so
  // A key both kinds have (activation, init) at the old kind's default takes the new kind's.
  for (auto& k : *old_keys)
    if (body.contains(k.key) && body[k.key] == k.default_value) body.erase(k.key);
  (void)new_keys;
}
}  // namespace

Config parse_config(const std::string& text, const std::string& origin, const std::vector<std::string>& sets) {
  json j = parse_json_strict(text, origin);
  Config c = config_from_json(j, origin);  // the file alone first: its errors name the file
  if (sets.empty()) return c;
  for (const auto& s : sets) {
    // Keys and values become JSON strings, which hold UTF-8 only (config.json is written with
    // them): found by fuzz_set, an invalid byte made dump() throw nlohmann's raw type_error.
    if (!valid_utf8(s)) throw UsageError("--set " + shown_json(json(s)) + ": not valid UTF-8 text");
    const std::string name = "--set " + short_text(s);
    auto eq = s.find('=');
    auto dot = s.find('.');
    if (eq == std::string::npos || dot == std::string::npos || dot > eq)
      throw UsageError(name + ": expected section.key=value, e.g. --set task.p=53");
    std::string section = s.substr(0, dot), key = s.substr(dot + 1, eq - dot - 1), text_value = s.substr(eq + 1);
    check_json_depth(text_value, name);
    json value;
    try {
      value = json::parse(text_value);
    } catch (const json::parse_error&) {
      value = text_value;  // bare words are strings: --set train.device=cpu
    } catch (const json::exception&) {  // 1e999: valid JSON syntax, no double holds it
      throw UsageError(name + ": /" + short_text(section) + "/" + short_text(key) + ": number out of range (got " +
                       short_text(text_value) + ")");
    }
    // Applied to the config as given (not as resolved), so that a key the file left out stays
    // out when the section's kind changes.
    if (key == "kind") switch_kind(j, section, value);
    if (!j.contains(section)) j[section] = json::object();
    if (!j[section].is_object()) fail_got(name + ": /" + short_text(section), "must be an object", j[section]);
    j[section][key] = value;
    c = read_fields(j, name);
  }
  // The checks across fields once every --set is in: --set model.d_head=64 --set
  // model.d_model=256 is one change, not an invalid state on the way.
  std::string all;
  for (auto& s : sets) all += (all.empty() ? "--set " : " --set ") + s;
  validate(c, all.size() > 120 ? origin + " with its --set overrides" : all);
  return c;
}

Config load_config(const std::string& path, const std::vector<std::string>& sets) {
  Config c = parse_config(read_text_file(path), path, sets);
  if (c.output.dir.empty()) {
    std::string stem = path.substr(path.find_last_of('/') == std::string::npos ? 0 : path.find_last_of('/') + 1);
    if (stem.size() > 5 && stem.substr(stem.size() - 5) == ".json") stem.resize(stem.size() - 5);
    c.output.dir = "runs/" + stem;
  }
  return c;
}

std::vector<KeyDoc> config_docs() {
  std::vector<KeyDoc> out;
  Config def;
  auto typed_of = [&](const std::string& section) {
    for (auto& f : schema())
      if (f.section == section) out.push_back({f.section + "." + f.spec.key, f.get(def).dump(), f.spec.doc, ""});
  };
  out.push_back({"task.kind", json(def.task.kind).dump(), "the task: " + task_kind_names(), ""});
  typed_of("task");
  for (auto* k : task_kinds())
    for (auto& key : k->keys)
      out.push_back({"task." + key.key, key.default_value.dump(), key.doc, "task.kind " + k->name});
  out.push_back({"model.kind", json(def.model.kind).dump(), "the model: " + model_kind_names(), ""});
  typed_of("model");
  for (auto* k : model_kinds())
    for (auto& key : k->keys)
      out.push_back({"model." + key.key, key.default_value.dump(), key.doc, "model.kind " + k->name});
  for (const std::string section : {"optim", "train", "output"}) typed_of(section);
  return out;
}

std::string config_file_text(const Config& c) { return config_to_json(c).dump(2) + "\n"; }

const std::vector<std::string>& pack_varying_keys() {
  static const std::vector<std::string> keys = {"train.seed", "optim.lr",  "optim.weight_decay", "optim.beta1",
                                                "optim.beta2", "optim.eps", "output.dir",         "train.threads"};
  return keys;
}

std::vector<std::string> pack_varying_keys(const Config& c) {
  std::vector<std::string> keys = pack_varying_keys();
  for (auto& k : find_task_kind(c.task.kind).pack_varying) keys.push_back("task." + k);
  return keys;
}

std::string pack_key(const Config& c) {
  nlohmann::json j = config_to_json(c);
  for (auto& key : pack_varying_keys(c)) {
    const auto dot = key.find('.');
    j[key.substr(0, dot)].erase(key.substr(dot + 1));
  }
  return j.dump();
}

}  // namespace grokking
