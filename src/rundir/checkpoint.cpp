#include "grokking/checkpoint.hpp"

#include "grokking/checkpoint_format.hpp"

#include <string_view>
#include <optional>
#include <memory>
#include <map>
#include <algorithm>

#include "grokking/compat.hpp"
#include "grokking/error.hpp"
#include "grokking/rundir.hpp"
#include "grokking/text.hpp"

namespace grokking {

namespace {

// FNV-1a, 64-bit: enough to catch a flipped bit or a truncated tensor.
struct Hasher {
  uint64_t h = 1469598103934665603ull;
  void bytes(const void* data, size_t n) {
    auto* p = static_cast<const unsigned char*>(data);
    for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 1099511628211ull;
  }
  void str(const std::string& s) { bytes(s.data(), s.size()), bytes("\0", 1); }
  void i64(int64_t x) { bytes(&x, sizeof x); }
  void tensor(const torch::Tensor& t) {
    auto c = t.contiguous().cpu();
    for (auto s : c.sizes()) i64(s);
    str(std::string(c.dtype().name()));
    bytes(c.data_ptr(), size_t(c.numel()) * size_t(c.element_size()));
  }
  std::string hex() const {
    char buf[17];
    std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(h));
    return buf;
  }
};

std::string checksum(int64_t epoch, const std::string& config, const c10::Dict<std::string, torch::Tensor>& model,
                     const c10::Dict<std::string, torch::Tensor>* optim, int64_t optim_step) {
  Hasher h;
  h.str("grokking-checkpoint");
  h.i64(kCheckpointVersion);
  h.i64(epoch);
  h.str(config);
  for (auto& e : model) h.str(e.key()), h.tensor(e.value());
  if (optim) {
    h.i64(optim_step);
    for (auto& e : *optim) h.str(e.key()), h.tensor(e.value());
  }
  return h.hex();
}

[[noreturn]] void bad(const std::string& path, const std::string& what) { throw RunError(path + ": " + what); }

// A tensor from the pickle whose sizes, strides and offset reach past its storage (the
// unpickler does not check; hashing it read out of bounds, found by fuzz_checkpoint).
bool view_fits_storage(const torch::Tensor& t) {
  if (!t.defined()) return false;
  if (t.numel() == 0) return true;
  if (t.storage_offset() < 0) return false;
  unsigned __int128 last = uint64_t(t.storage_offset());
  for (int64_t d = 0; d < t.dim(); ++d) {
    if (t.stride(d) < 0 || t.size(d) < 0) return false;
    last += (unsigned __int128)uint64_t(t.size(d) - 1) * uint64_t(t.stride(d));
    if (last > (unsigned __int128)1 << 64) return false;
  }
  return (last + 1) * uint64_t(t.element_size()) <= t.storage().nbytes();
}

}  // namespace

void save_checkpoint(const std::string& path, const Model& model, const OptimState* optimizer, int64_t epoch) {
  torch::NoGradGuard no_grad;
  if (model.replicas() != 1) throw std::logic_error("save_checkpoint takes one model; use Model::replica");
  c10::Dict<std::string, torch::Tensor> weights;
  for (auto& [name, t] : model.named_parameters()) weights.insert(name, t.detach().to(torch::kCPU).clone());
  const std::string config = config_to_json(model.config()).dump();

  c10::impl::GenericDict d(c10::StringType::get(), c10::AnyType::get());
  d.insert("format", std::string("grokking-checkpoint"));
  d.insert("format_version", kCheckpointVersion);
  d.insert("epoch", epoch);
  d.insert("config", config);
  d.insert("model", weights);
  c10::Dict<std::string, torch::Tensor> optim;
  int64_t step = 0;
  if (optimizer) {
    optim.insert("exp_avg", optimizer->exp_avg.to(torch::kCPU).clone());
    optim.insert("exp_avg_sq", optimizer->exp_avg_sq.to(torch::kCPU).clone());
    for (auto& [name, t] : optimizer->extra) optim.insert(name, t.to(torch::kCPU).clone());
    step = optimizer->step;
    d.insert("optimizer", optim);
    d.insert("optimizer_step", step);
  }
  d.insert("checksum", checksum(epoch, config, weights, optimizer ? &optim : nullptr, step));
  std::vector<char> bytes = torch::pickle_save(c10::IValue(d));
  atomic_write(path, std::string(bytes.begin(), bytes.end()));
}

Checkpoint load_checkpoint(const std::string& path) {
  if (is_dir(path)) bad(path, "is a directory; give a checkpoint file or a run directory");
  std::string raw = read_file(path);
  if (raw.empty()) bad(path, "empty file, not a grokking checkpoint");
  // LibTorch 1.13's in-memory zip reader trusts the archive's own offsets and reads past the
  // end of a truncated file (found by AddressSanitizer): check the end-of-central-directory
  // record and the central directory's extent ourselves first.
  if (!zip_is_complete(raw)) bad(path, "not a readable checkpoint: truncated or not a zip archive");
  if (!archive_fits(raw))
    bad(path, "not a readable checkpoint: not a grokking checkpoint, or corrupted (its zip directory or data.pkl does "
              "not check out)");
  c10::IValue iv;
  try {
    std::vector<char> bytes(raw.begin(), raw.end());
    iv = torch::pickle_load(bytes);
  } catch (const std::exception& e) {
    std::string why = compat::what(e);
    if (auto nl = why.find('\n'); nl != std::string::npos) why.resize(nl);
    bad(path, "not a readable checkpoint: not a grokking checkpoint, or truncated/corrupted (" + why + ")");
  }
  if (!iv.isGenericDict()) bad(path, "not a grokking checkpoint (a pickle, but not a dict)");
  auto d = iv.toGenericDict();
  auto get = [&](const char* key) -> c10::IValue {
    if (!d.contains(key)) bad(path, std::string("not a grokking checkpoint (no '") + key + "' entry)");
    return d.at(key);
  };
  if (!get("format").isString() || get("format").toStringRef() != "grokking-checkpoint")
    bad(path, "not a grokking checkpoint (format tag missing)");
  auto version = get("format_version");
  if (!version.isInt() || version.toInt() != kCheckpointVersion)
    bad(path, "checkpoint format version " + (version.isInt() ? std::to_string(version.toInt()) : "?") +
                  " is not supported (this build reads version " + std::to_string(kCheckpointVersion) + ")");

  Checkpoint ck;
  ck.path = path;
  auto epoch = get("epoch"), config = get("config"), model = get("model"), sum = get("checksum");
  if (!epoch.isInt() || !config.isString() || !model.isGenericDict() || !sum.isString())
    bad(path, "checkpoint entries have the wrong types");
  ck.epoch = epoch.toInt();
  const std::string config_text = config.toStringRef();
  try {
    ck.config = parse_config(config_text, path + " (embedded config)");
  } catch (const UsageError& e) {
    bad(path, std::string("embedded config is invalid: ") + e.what());
  }
  c10::Dict<std::string, torch::Tensor> weights;
  for (auto& e : model.toGenericDict()) {
    if (!e.key().isString() || !e.value().isTensor()) bad(path, "model entry is not a name->tensor dict");
    if (!view_fits_storage(e.value().toTensor()))
      bad(path, "corrupted: tensor " + e.key().toStringRef() + " reaches past its storage");
    weights.insert(e.key().toStringRef(), e.value().toTensor());
  }
  c10::Dict<std::string, torch::Tensor> optim;
  if (d.contains("optimizer")) {
    auto o = d.at("optimizer");
    if (!o.isGenericDict() || !d.contains("optimizer_step") || !d.at("optimizer_step").isInt())
      bad(path, "optimizer entry is malformed");
    for (auto& e : o.toGenericDict()) {
      if (!e.key().isString() || !e.value().isTensor()) bad(path, "optimizer entry is malformed");
      if (!view_fits_storage(e.value().toTensor()))
        bad(path, "corrupted: optimizer tensor " + e.key().toStringRef() + " reaches past its storage");
      optim.insert(e.key().toStringRef(), e.value().toTensor());
    }
    ck.has_optimizer = true;
    ck.optimizer_step = d.at("optimizer_step").toInt();
  }
  if (checksum(ck.epoch, config_text, weights, ck.has_optimizer ? &optim : nullptr, ck.optimizer_step) !=
      sum.toStringRef())
    bad(path, "checksum mismatch: the file is corrupted; not loaded");

  // Names and shapes must be exactly those of the embedded config's model.
  int64_t total = 0;
  for (auto& spec : param_specs(ck.config)) {
    if (!weights.contains(spec.name)) bad(path, "missing parameter " + spec.name);
    auto t = weights.at(spec.name);
    if (t.sizes().vec() != spec.shape)
      bad(path, "parameter " + spec.name + " has shape " + format_shape(t.sizes().vec()) +
                    " but the embedded config's model needs " + format_shape(spec.shape));
    if (t.scalar_type() != torch::kFloat32)
      bad(path, "parameter " + spec.name + " is " + std::string(c10::toString(t.scalar_type())) + ", not Float");
    ck.weights.emplace_back(spec.name, t);
    total += t.numel();
  }
  if (int64_t(weights.size()) != int64_t(ck.weights.size())) bad(path, "unexpected extra parameters");
  if (ck.has_optimizer) {
    if (!optim.contains("exp_avg") || !optim.contains("exp_avg_sq") || optim.at("exp_avg").numel() != total ||
        optim.at("exp_avg_sq").numel() != total)
      bad(path, "optimizer state does not match the model");
    ck.exp_avg = optim.at("exp_avg");
    ck.exp_avg_sq = optim.at("exp_avg_sq");
    for (auto& e : optim)
      if (e.key() != "exp_avg" && e.key() != "exp_avg_sq") ck.optimizer_extra.emplace_back(e.key(), e.value());
  }
  return ck;
}

std::string resolve_checkpoint(const std::string& p) {
  if (!exists(p)) throw RunError(p + ": no such file or directory");
  if (!is_dir(p)) return p;
  auto list = list_checkpoints(p);
  if (list.empty()) throw RunError(p + ": no checkpoints in " + p + "/checkpoints (is it a run directory?)");
  return list.back().second;
}

std::string weights_checksum(const Model& model) {
  Hasher h;
  for (auto& [name, t] : model.named_parameters()) h.str(name), h.tensor(t.detach());
  return h.hex();
}

Model model_from_checkpoint(const Checkpoint& ck) {
  Model m(ck.config);
  m.load(ck.weights);
  return m;
}

}  // namespace grokking
