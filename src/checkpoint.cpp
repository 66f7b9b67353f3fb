#include "grokking/checkpoint.hpp"

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
    bytes(c.data_ptr(), c.numel() * c.element_size());
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

uint32_t le32(const std::string& b, size_t at) {
  return uint32_t(uint8_t(b[at])) | uint32_t(uint8_t(b[at + 1])) << 8 | uint32_t(uint8_t(b[at + 2])) << 16 |
         uint32_t(uint8_t(b[at + 3])) << 24;
}
uint16_t le16(const std::string& b, size_t at) { return uint16_t(uint8_t(b[at]) | uint8_t(b[at + 1]) << 8); }

// The file ends with a zip end-of-central-directory record (possibly after a zip64 one) whose
// central directory lies inside the file.
bool zip_is_complete(const std::string& b) {
  const size_t n = b.size();
  if (n < 22) return false;
  const size_t lowest = n > 65557 ? n - 65557 : 0;
  for (size_t at = n - 22 + 1; at-- > lowest;) {
    if (le32(b, at) != 0x06054b50u) continue;
    if (at + 22 + le16(b, at + 20) != n) return false;  // the comment must run to the end
    const uint32_t cdir_size = le32(b, at + 12), cdir_ofs = le32(b, at + 16);
    if (cdir_ofs == 0xffffffffu || cdir_size == 0xffffffffu) return true;  // zip64: LibTorch checks those
    return uint64_t(cdir_ofs) + cdir_size <= at;
  }
  return false;
}

// The bytes of the archive's stored (uncompressed) `*/data.pkl`, or empty when there is none
// the central directory describes plainly (then LibTorch's own checks are all there is).
std::string stored_pickle(const std::string& b) {
  const size_t n = b.size();
  size_t eocd = std::string::npos;
  for (size_t at = n >= 22 ? n - 22 + 1 : 0; at-- > 0;)
    if (le32(b, at) == 0x06054b50u) {
      eocd = at;
      break;
    }
  if (eocd == std::string::npos) return {};
  size_t at = le32(b, eocd + 16);
  const size_t end = std::min<size_t>(eocd, size_t(at) + le32(b, eocd + 12));
  while (at + 46 <= end && le32(b, at) == 0x02014b50u) {
    const size_t name_len = le16(b, at + 28), extra = le16(b, at + 30), comment = le16(b, at + 32);
    if (at + 46 + name_len > end) return {};
    const std::string name = b.substr(at + 46, name_len);
    if (name.size() >= 8 && name.compare(name.size() - 8, 8, "data.pkl") == 0) {
      const uint32_t method = le16(b, at + 10), size = le32(b, at + 20), local = le32(b, at + 42);
      if (method != 0 || size == 0xffffffffu || local == 0xffffffffu || size_t(local) + 30 > n) return {};
      const size_t data = size_t(local) + 30 + le16(b, local + 26) + le16(b, local + 28);
      if (data + size > n) return {};
      return b.substr(data, size);
    }
    at += 46 + name_len + extra + comment;
  }
  return {};
}

// LibTorch 1.13's unpickler allocates what a length field says before it checks that the bytes
// are there: a mutated length in a 7 KB file made it take gigabytes and seconds (found by
// fuzz_checkpoint). Walks the pickle's opcodes and refuses a length that runs past its end. An
// opcode this walk does not know ends it: the rest is left to LibTorch.
bool pickle_lengths_fit(const std::string& pk) {
  const size_t n = pk.size();
  size_t i = 0;
  auto fits = [&](uint64_t len) { return len <= n - i; };
  while (i < n) {
    const auto op = uint8_t(pk[i++]);
    uint64_t len = 0;
    size_t field = 0;  // bytes of the length field
    switch (op) {
      case 'X': case 'B': case 'T': case 0x8b: field = 4; break;  // BINUNICODE, BINBYTES, BINSTRING, LONG4
      case 0x8c: case 'C': case 'U': case 0x8a: field = 1; break;  // SHORT_BINUNICODE/BINBYTES/BINSTRING, LONG1
      case 0x8d: case 0x8e: case 0x96: case 0x95: field = 8; break;  // BINUNICODE8, BINBYTES8, BYTEARRAY8, FRAME
      default: break;
    }
    if (field) {
      if (!fits(field)) return false;
      for (size_t k = 0; k < field; ++k) len |= uint64_t(uint8_t(pk[i + k])) << (8 * k);
      i += field;
      if (op == 0x95) continue;  // FRAME: the length of what follows, not bytes to skip
      if (!fits(len)) return false;
      i += size_t(len);
      continue;
    }
    switch (op) {  // fixed-size arguments
      case 0x80: case 'K': case 'q': case 'h': case 0x82: i += 1; break;  // PROTO, BININT1, BINPUT, BINGET, EXT1
      case 'M': case 0x83: i += 2; break;                                // BININT2, EXT2
      case 'J': case 'r': case 'j': case 0x84: i += 4; break;            // BININT, LONG_BINPUT, LONG_BINGET, EXT4
      case 'G': i += 8; break;                                           // BINFLOAT
      case 'c': {                                                        // GLOBAL: two lines
        for (int line = 0; line < 2; ++line) {
          const size_t nl = pk.find('\n', i);
          if (nl == std::string::npos) return false;
          i = nl + 1;
        }
        break;
      }
      case '.': return true;  // STOP
      case '}': case ']': case ')': case '(': case 'e': case 's': case 'u': case 't': case 'R': case 'Q':
      case 'N': case 0x88: case 0x89: case 0x85: case 0x86: case 0x87: case 'b': case 'a': case '0': case 0x94:
      case 0x81: case 0x92: case 0x93: case 0x8f: case 0x90: case 0x91:
        break;  // no argument
      default: return true;  // not a pickle opcode this walk knows: leave the rest to LibTorch
    }
    if (i > n) return false;
  }
  return true;
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
  if (!pickle_lengths_fit(stored_pickle(raw)))
    bad(path, "not a readable checkpoint: corrupted (a length in data.pkl runs past its end)");
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
    weights.insert(e.key().toStringRef(), e.value().toTensor());
  }
  c10::Dict<std::string, torch::Tensor> optim;
  if (d.contains("optimizer")) {
    auto o = d.at("optimizer");
    if (!o.isGenericDict() || !d.contains("optimizer_step") || !d.at("optimizer_step").isInt())
      bad(path, "optimizer entry is malformed");
    for (auto& e : o.toGenericDict()) {
      if (!e.key().isString() || !e.value().isTensor()) bad(path, "optimizer entry is malformed");
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
