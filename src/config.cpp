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
#include "grokking/limits.hpp"
#include "grokking/text.hpp"

namespace grokking {
using nlohmann::json;

namespace {

// One documented key of the schema: how to read, write and check it.
struct Field {
  std::string section, key, doc;
  std::function<void(Config&, const json&, const std::string& where)> read;
  std::function<json(const Config&)> write;
  std::string pointer() const { return "/" + section + "/" + key; }
};

// Invalid UTF-8 (a --set value is any bytes) is shown replaced, not thrown by dump().
std::string shown(const json& v) {
  std::string s = v.dump(-1, ' ', false, json::error_handler_t::replace);
  return s.size() > 40 ? s.substr(0, 37) + "..." : s;
}

// Where dump() with U+FFFD for bad bytes and dump() dropping them agree, there were none.
bool valid_utf8(const std::string& s) {
  const json j(s);
  return j.dump(-1, ' ', false, json::error_handler_t::replace) == j.dump(-1, ' ', false, json::error_handler_t::ignore);
}

[[noreturn]] void fail(const std::string& where, const std::string& what, const json& got) {
  throw UsageError(where + ": " + what + " (got " + shown(got) + ")");
}

template <class S, class T>
T& member(Config& c, S Config::*s, T S::*m) {
  return (c.*s).*m;
}

// Integer in [lo, hi]; `why_hi`, where given, says in the refusal why the upper bound is there.
template <class S>
Field int_field(const char* sec, const char* key, S Config::*s, int64_t S::*m, int64_t lo,
                int64_t hi, const char* doc, const char* why_hi = nullptr) {
  Field f{sec, key, doc, nullptr, nullptr};
  const std::string range = "[" + std::to_string(lo) + ", " + std::to_string(hi) + "]";
  const std::string why = why_hi ? std::string("; ") + why_hi : std::string();
  f.read = [=](Config& c, const json& v, const std::string& where) {
    int64_t x = 0;
    if (v.is_number_integer()) {
      if (v.is_number_unsigned() && v.get<uint64_t>() > uint64_t(INT64_MAX))
        fail(where, "must be an integer in " + range + why, v);
      x = v.get<int64_t>();
    } else if (v.is_number_float() && std::isfinite(v.get<double>()) &&
               std::floor(v.get<double>()) == v.get<double>() && std::fabs(v.get<double>()) < 9e18) {
      x = static_cast<int64_t>(v.get<double>());
    } else {
      fail(where, "must be an integer", v);
    }
    if (x < lo) fail(where, "must be an integer in " + range, v);
    if (x > hi) fail(where, "must be an integer in " + range + why, v);
    member(c, s, m) = x;
  };
  f.write = [=](const Config& c) { return json(member(const_cast<Config&>(c), s, m)); };
  return f;
}

// Finite real in (lo, hi) or [lo, hi] depending on the open flags.
template <class S>
Field real_field(const char* sec, const char* key, S Config::*s, double S::*m, double lo, bool lo_open,
                 double hi, bool hi_open, const char* doc) {
  Field f{sec, key, doc, nullptr, nullptr};
  f.read = [=](Config& c, const json& v, const std::string& where) {
    if (!v.is_number()) fail(where, "must be a number", v);
    double x = v.get<double>();
    std::string range = std::string(lo_open ? "(" : "[") + format_number(lo, "%g") + ", " +
                        (std::isinf(hi) ? "inf" : format_number(hi, "%g")) + (hi_open ? ")" : "]");
    if (!std::isfinite(x)) fail(where, "must be a finite number in " + range, v);
    if ((lo_open ? x <= lo : x < lo) || (hi_open ? x >= hi : x > hi))
      fail(where, "must be in " + range, v);
    member(c, s, m) = x;
  };
  f.write = [=](const Config& c) { return json(member(const_cast<Config&>(c), s, m)); };
  return f;
}

template <class S>
Field bool_field(const char* sec, const char* key, S Config::*s, bool S::*m, const char* doc) {
  Field f{sec, key, doc, nullptr, nullptr};
  f.read = [=](Config& c, const json& v, const std::string& where) {
    if (!v.is_boolean()) fail(where, "must be true or false", v);
    member(c, s, m) = v.get<bool>();
  };
  f.write = [=](const Config& c) { return json(member(const_cast<Config&>(c), s, m)); };
  return f;
}

// A string; `choices` empty means any string, `accept` may allow more (cuda:N).
template <class S>
Field string_field(const char* sec, const char* key, S Config::*s, std::string S::*m,
                   std::vector<std::string> choices, const char* doc,
                   std::function<bool(const std::string&)> accept = nullptr) {
  Field f{sec, key, doc, nullptr, nullptr};
  f.read = [=](Config& c, const json& v, const std::string& where) {
    if (!v.is_string()) fail(where, "must be a string", v);
    std::string x = v.get<std::string>();
    if (!choices.empty() && std::find(choices.begin(), choices.end(), x) == choices.end() &&
        !(accept && accept(x))) {
      std::string list;
      for (auto& ch : choices) list += (list.empty() ? "" : ", ") + ch;
      fail(where, "must be one of " + list, v);
    }
    member(c, s, m) = x;
  };
  f.write = [=](const Config& c) { return json(member(const_cast<Config&>(c), s, m)); };
  return f;
}

bool is_cuda_index(const std::string& s) {
  if (s.rfind("cuda:", 0) != 0 || s.size() == 5 || s.size() > 8) return false;
  return std::all_of(s.begin() + 5, s.end(), [](char ch) { return ch >= '0' && ch <= '9'; });
}

const std::vector<Field>& schema() {
  static const std::vector<Field> fields = [] {
    using C = Config;
    const int64_t big = int64_t(1) << 40;
    std::vector<Field> f;
    f.push_back(string_field("task", "operation", &C::task, &TaskConfig::operation, operation_names(),
                             "binary operation mod p (Power et al. 2022)"));
    f.push_back(int_field("task", "p", &C::task, &TaskConfig::p, 2, 4096, "modulus P; vocabulary is P numbers plus \"=\"",
                          "all P^2 pairs are evaluated at once: 4096^2 pairs already hold gigabytes of activations"));
    f.push_back(real_field("task", "frac_train", &C::task, &TaskConfig::frac_train, 0, true, 1, true,
                           "fraction of all pairs in the training set"));
    f.push_back(int_field("task", "seed", &C::task, &TaskConfig::seed, 0, INT64_MAX, "seed of the train/test split"));
    f.push_back(int_field("model", "d_model", &C::model, &ModelConfig::d_model, 1, 65536, "residual width"));
    f.push_back(int_field("model", "n_heads", &C::model, &ModelConfig::n_heads, 1, 1024, "attention heads"));
    f.push_back(int_field("model", "d_head", &C::model, &ModelConfig::d_head, 1, 65536, "width of each head; n_heads*d_head must equal d_model"));
    f.push_back(int_field("model", "d_mlp", &C::model, &ModelConfig::d_mlp, 1, 1 << 20, "MLP hidden width"));
    f.push_back(string_field("model", "activation", &C::model, &ModelConfig::activation, {"relu", "gelu"},
                             "MLP activation"));
    f.push_back(bool_field("model", "train_biases", &C::model, &ModelConfig::train_biases,
                           "false: every b_* stays zero and frozen, as in the TransformerLens demo"));
    f.push_back(string_field("model", "init", &C::model, &ModelConfig::init, {"tl", "paper"},
                             "tl: every W_* ~ N(0, (0.8/sqrt(d_model))^2); paper: randn/sqrt(d_model), W_U randn/sqrt(d_vocab)"));
    f.push_back(real_field("model", "init_scale", &C::model, &ModelConfig::init_scale, 0, true, 1000, false,
                           "Omnigrok's alpha: every initial weight is multiplied by this"));
    f.push_back(real_field("optim", "lr", &C::optim, &OptimConfig::lr, 0, true, 1e9, false, "AdamW learning rate"));
    f.push_back(real_field("optim", "weight_decay", &C::optim, &OptimConfig::weight_decay, 0, false, 1e6, false,
                           "AdamW decoupled weight decay"));
    f.push_back(real_field("optim", "beta1", &C::optim, &OptimConfig::beta1, 0, false, 1, true, "AdamW beta1"));
    f.push_back(real_field("optim", "beta2", &C::optim, &OptimConfig::beta2, 0, false, 1, true, "AdamW beta2"));
    f.push_back(real_field("optim", "eps", &C::optim, &OptimConfig::eps, 0, true, 1, false, "AdamW epsilon"));
    f.push_back(int_field("optim", "warmup_steps", &C::optim, &OptimConfig::warmup_steps, 0, big,
                          "linear warmup: lr*min(step/warmup_steps, 1), step from 0; 0 disables"));
    f.push_back(string_field("optim", "grokfast", &C::optim, &OptimConfig::grokfast, {"none", "ema", "ma"},
                             "Grokfast (Lee et al. 2024): amplify the slow gradient, ema or ma filter; none: off"));
    f.push_back(real_field("optim", "grokfast_alpha", &C::optim, &OptimConfig::grokfast_alpha, 0, false, 1, true,
                           "ema: mu <- alpha*mu + (1-alpha)*g (default of the reference code's modular-arithmetic command, not gradfilter_ema's 0.99)"));
    f.push_back(real_field("optim", "grokfast_lamb", &C::optim, &OptimConfig::grokfast_lamb, 0, false, 1e6, false,
                           "ema, ma: g <- g + lamb*filter (modular-arithmetic command's 2.0, not the signatures' 5.0)"));
    f.push_back(int_field("optim", "grokfast_window", &C::optim, &OptimConfig::grokfast_window, 1, 100000,
                          "ma: mean of the last window gradients, applied once the window is full"));
    f.push_back(bool_field("optim", "orthograd", &C::optim, &OptimConfig::orthograd,
                           "Prieto et al. 2025: per parameter, remove the gradient's component along the weights, keep its norm"));
    f.push_back(string_field("optim", "weight_norm", &C::optim, &OptimConfig::weight_norm, {"free", "fixed"},
                             "fixed: after every step rescale all weights to their total norm at initialisation (Omnigrok)"));
    f.push_back(int_field("train", "epochs", &C::train, &TrainConfig::epochs, 1, big, "training epochs"));
    f.push_back(int_field("train", "batch_size", &C::train, &TrainConfig::batch_size, 0, big,
                          "0: full batch (one optimiser step per epoch); else minibatch size"));
    f.push_back(int_field("train", "seed", &C::train, &TrainConfig::seed, 0, INT64_MAX,
                          "seed of the initialisation (and of the minibatch order)"));
    f.push_back(string_field("train", "device", &C::train, &TrainConfig::device, {"auto", "cpu", "cuda"},
                             "auto picks CUDA when present; cuda:N picks a GPU", is_cuda_index));
    f.push_back(int_field("train", "threads", &C::train, &TrainConfig::threads, 0, 1024, "CPU threads; 0: all cores"));
    f.push_back(int_field("train", "eval_every", &C::train, &TrainConfig::eval_every, 1, big,
                          "epochs between evaluations (a metrics.csv row each)"));
    f.push_back(int_field("train", "checkpoint_every", &C::train, &TrainConfig::checkpoint_every, 1, big,
                          "epochs between checkpoints (one is always written at the end)"));
    f.push_back(int_field("train", "log_every", &C::train, &TrainConfig::log_every, 0, big,
                          "epochs between progress lines on stderr; 0: every evaluation"));
    f.push_back(real_field("train", "early_stop_acc", &C::train, &TrainConfig::early_stop_acc, 0, false, 1, false,
                           "> 0: stop once test accuracy has held >= this for early_stop_hold epochs; 0: off"));
    f.push_back(int_field("train", "early_stop_hold", &C::train, &TrainConfig::early_stop_hold, 0, big,
                          "epochs the early-stop accuracy must hold"));
    f.push_back(bool_field("train", "flush_denormal", &C::train, &TrainConfig::flush_denormal,
                           "CPU: flush denormal floats to zero (keeps full speed after memorisation)"));
    f.push_back(string_field("train", "path", &C::train, &TrainConfig::path, {"auto", "fast", "plain"},
                             "training forward: fast uses the [a, b, =] structure (same loss and gradients); plain runs all positions"));
    f.push_back(bool_field("train", "cuda_graph", &C::train, &TrainConfig::cuda_graph,
                           "CUDA, full batch: capture one training step in a CUDA graph and replay it (needs a LibTorch with CUDA)"));
    f.push_back(string_field("train", "loss", &C::train, &TrainConfig::loss, {"softmax", "stablemax"},
                             "cross-entropy of softmax, or of StableMax s(x)=x+1 (x>=0), 1/(1-x) (x<0) (Prieto et al. 2025)"));
    f.push_back(string_field("train", "loss_dtype", &C::train, &TrainConfig::loss_dtype, {"float64", "float32"},
                             "precision of the loss and its softmax; float32 is what the paper's code computes"));
    f.push_back(string_field("output", "dir", &C::output, &OutputConfig::dir, {},
                             "run directory; empty: runs/<config file name without .json>"));
    return f;
  }();
  return fields;
}

}  // namespace

const std::vector<std::string>& operation_names() {
  static const std::vector<std::string> ops = {
      "add", "sub", "mul", "div", "x^2+y^2", "x^2+xy+y^2", "x^2+xy+y^2+x", "x^3+xy", "x^3+xy^2+y", "mixed"};
  return ops;
}

namespace {
int64_t mod(int64_t x, int64_t p) { return ((x % p) + p) % p; }
int64_t pow_mod(int64_t b, int64_t e, int64_t p) {
  int64_t r = 1 % p;
  b = mod(b, p);
  for (; e > 0; e >>= 1, b = b * b % p)
    if (e & 1) r = r * b % p;
  return r;
}
bool is_prime(int64_t p) {
  if (p < 2) return false;
  for (int64_t d = 2; d * d <= p; ++d)
    if (p % d == 0) return false;
  return true;
}
}  // namespace

int64_t apply_operation(const std::string& op, int64_t a, int64_t b, int64_t p) {
  if (op == "add") return mod(a + b, p);
  if (op == "sub") return mod(a - b, p);
  if (op == "mul") return mod(a * b, p);
  if (op == "div") return b == 0 ? -1 : mod(a * pow_mod(b, p - 2, p), p);  // Fermat inverse, p prime
  if (op == "x^2+y^2") return mod(a * a + b * b, p);
  if (op == "x^2+xy+y^2") return mod(a * a + a * b + b * b, p);
  if (op == "x^2+xy+y^2+x") return mod(a * a + a * b + b * b + a, p);
  if (op == "x^3+xy") return mod(a * a % p * a + a * b, p);
  if (op == "x^3+xy^2+y") return mod(a * a % p * a + a * (b * b % p) + b, p);
  if (op == "mixed")  // Power et al.: x/y if y is odd, else x-y
    return b % 2 == 1 ? mod(a * pow_mod(b, p - 2, p), p) : mod(a - b, p);
  throw UsageError("unknown operation '" + op + "'");
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
// Each field read and checked on its own (type, range); the checks across fields are validate()'s.
Config read_fields(const json& j, const std::string& origin);
}  // namespace

Config config_from_json(const json& j, const std::string& origin) {
  Config c = read_fields(j, origin);
  validate(c, origin);
  return c;
}

namespace {
Config read_fields(const json& j, const std::string& origin) {
  if (!j.is_object()) fail(origin + ": /", "the config must be a JSON object", j);
  Config c;
  const auto& fields = schema();
  for (auto& section_item : j.items()) {
    // Named, not structured bindings: clang before 16 cannot capture those in the lambdas below.
    const std::string& section = section_item.key();
    const json& body = section_item.value();
    bool known = std::any_of(fields.begin(), fields.end(), [&](const Field& f) { return f.section == section; });
    if (!known)
      fail(origin + ": /" + section, "unknown section; allowed: task, model, optim, train, output", json(section));
    if (!body.is_object()) fail(origin + ": /" + section, "must be an object", body);
    for (auto& key_item : body.items()) {
      const std::string& key = key_item.key();
      const json& value = key_item.value();
      auto it = std::find_if(fields.begin(), fields.end(),
                             [&](const Field& f) { return f.section == section && f.key == key; });
      if (it == fields.end()) {
        std::string allowed;
        for (auto& f : fields)
          if (f.section == section) allowed += (allowed.empty() ? "" : ", ") + f.key;
        throw UsageError(origin + ": /" + section + "/" + key + ": unknown key; allowed in " + section + ": " + allowed);
      }
      it->read(c, value, origin + ": " + it->pointer());
    }
  }
  return c;
}
}  // namespace

void validate(const Config& c, const std::string& origin) {
  auto bad = [&](const std::string& ptr, const std::string& what) { throw UsageError(origin + ": " + ptr + ": " + what); };
  if (c.model.n_heads * c.model.d_head != c.model.d_model)
    bad("/model/d_model", "must equal n_heads*d_head = " + std::to_string(c.model.n_heads) + "*" +
                              std::to_string(c.model.d_head) + " (got " + std::to_string(c.model.d_model) + ")");
  const auto& op = c.task.operation;
  if ((op == "div" || op == "mixed") && !is_prime(c.task.p))
    bad("/task/p", "must be prime for operation '" + op + "' (got " + std::to_string(c.task.p) + ")");
  const int64_t pairs = (op == "div") ? c.task.p * (c.task.p - 1) : c.task.p * c.task.p;
  const auto n_train = static_cast<int64_t>(std::floor(c.task.frac_train * double(pairs)));
  if (n_train < 1 || n_train >= pairs)
    bad("/task/frac_train", "leaves an empty train or test set: " + std::to_string(n_train) + " of " +
                                std::to_string(pairs) + " pairs (got " + format_number(c.task.frac_train, "%g") + ")");
  if (c.train.batch_size > n_train)
    bad("/train/batch_size", "must be 0 (full batch) or at most the " + std::to_string(n_train) +
                                 " training pairs (a batch is drawn from them without repeats; got " +
                                 std::to_string(c.train.batch_size) + ")");
  // A Grokfast parameter changed from its default for a filter that does not use it is a mistake
  // (compared with the defaults, not with the keys given: a resolved config lists every key).
  const OptimConfig d;
  const auto& o = c.optim;
  if (o.grokfast != "ma" && o.grokfast_window != d.grokfast_window)
    bad("/optim/grokfast_window", "is used only with optim.grokfast \"ma\" (grokfast is \"" + o.grokfast + "\")");
  if (o.grokfast != "ema" && o.grokfast_alpha != d.grokfast_alpha)
    bad("/optim/grokfast_alpha", "is used only with optim.grokfast \"ema\" (grokfast is \"" + o.grokfast + "\")");
  if (o.grokfast == "none" && o.grokfast_lamb != d.grokfast_lamb)
    bad("/optim/grokfast_lamb", "is used only with optim.grokfast \"ema\" or \"ma\" (grokfast is \"none\")");
  // Refuse before allocating: the evaluation holds a [pairs, d_mlp] float activation.
  const double bytes = double(pairs) * double(std::max(c.model.d_mlp, c.task.p)) * 4.0 * 3.0;
  if (bytes > 16e9)
    bad("/task/p", "too large: evaluating all " + std::to_string(pairs) + " pairs at once holds about " +
                       format_number(bytes / 1e9, "%g") + " GB of activations, at most 16 GB allowed (got " +
                       std::to_string(c.task.p) + ")");
  const double params = double(c.model.d_model) * double(4 * c.model.d_model + 2 * c.model.d_mlp + 2 * c.task.p + 4);
  if (params > 3e8)
    bad("/model/d_model", "model too large: " + format_number(params, "%g") +
                              " parameters, at most 3e8 (a checkpoint holds 12 bytes a parameter with the Adam moments, "
                              "and checkpoints stay under the 4 GiB of a plain zip, which load_checkpoint checks)");
}

json config_to_json(const Config& c) {
  json j = json::object();
  for (auto& f : schema()) j[f.section][f.key] = f.write(c);
  return j;
}

Config parse_config(const std::string& text, const std::string& origin, const std::vector<std::string>& sets) {
  json j = parse_json_strict(text, origin);
  Config c = config_from_json(j, origin);  // the file alone first: its errors name the file
  if (sets.empty()) return c;
  for (const auto& s : sets) {
    // Keys and values become JSON strings, which hold UTF-8 only (config.json is written with
    // them): found by fuzz_set, an invalid byte made dump() throw nlohmann's raw type_error.
    if (!valid_utf8(s)) throw UsageError("--set " + shown(json(s)) + ": not valid UTF-8 text");
    auto eq = s.find('=');
    auto dot = s.find('.');
    if (eq == std::string::npos || dot == std::string::npos || dot > eq)
      throw UsageError("--set " + s + ": expected section.key=value, e.g. --set task.p=53");
    std::string section = s.substr(0, dot), key = s.substr(dot + 1, eq - dot - 1), text_value = s.substr(eq + 1);
    check_json_depth(text_value, "--set " + s);
    json value;
    try {
      value = json::parse(text_value);
    } catch (const json::parse_error&) {
      value = text_value;  // bare words are strings: --set train.device=cpu
    } catch (const json::exception&) {  // 1e999: valid JSON syntax, no double holds it
      throw UsageError("--set " + s + ": /" + section + "/" + key + ": number out of range (got " +
                       (text_value.size() > 40 ? text_value.substr(0, 37) + "..." : text_value) + ")");
    }
    json one = config_to_json(c);
    if (!one.contains(section) || !one[section].is_object() || !one[section].contains(key)) {
      json probe = json::object();
      probe[section][key] = value;
      config_from_json(probe, "--set " + s);  // throws the unknown-key message
    }
    one[section][key] = value;
    c = read_fields(one, "--set " + s);
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
  for (auto& f : schema()) out.push_back({f.section + "." + f.key, f.write(def).dump(), f.doc});
  return out;
}

std::string config_file_text(const Config& c) { return config_to_json(c).dump(2) + "\n"; }

const std::vector<std::string>& pack_varying_keys() {
  static const std::vector<std::string> keys = {"train.seed", "optim.lr",  "optim.weight_decay", "optim.beta1",
                                                "optim.beta2", "optim.eps", "output.dir",         "train.threads"};
  return keys;
}

std::string pack_key(const Config& c) {
  nlohmann::json j = config_to_json(c);
  for (auto& key : pack_varying_keys()) {
    const auto dot = key.find('.');
    j[key.substr(0, dot)].erase(key.substr(dot + 1));
  }
  return j.dump();
}

}  // namespace grokking
