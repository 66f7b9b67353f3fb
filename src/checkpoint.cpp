#include "grokking/checkpoint.hpp"

#include <string_view>
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

// Bytes per element of the storage classes a persistent id names ("torch\nFloatStorage").
size_t storage_element_size(const std::string& global) {
  static const std::map<std::string, size_t> sizes = {
      {"torch\nFloatStorage", 4}, {"torch\nDoubleStorage", 8}, {"torch\nHalfStorage", 2}, {"torch\nBFloat16Storage", 2},
      {"torch\nLongStorage", 8},  {"torch\nIntStorage", 4},    {"torch\nShortStorage", 2}, {"torch\nCharStorage", 1},
      {"torch\nByteStorage", 1},  {"torch\nBoolStorage", 1}};
  auto it = sizes.find(global);
  return it == sizes.end() ? 0 : it->second;
}

// Walks a pickle's opcodes. LibTorch 1.13's unpickler trusts what the file says, and the
// fuzzer made each of these cost gigabytes or read out of bounds (fuzz_checkpoint): a length
// field (it allocates the length before checking that the bytes are there), a memo index (it
// grows its memo table to whatever index a BINPUT names), and a storage's element count (it
// sizes the storage by the count in the persistent id, not by the record it reads). So every
// length must fit in what follows, memo indices must come in order, and with `records` (the
// archive's data/<key> sizes) every persistent id ('storage', type, key, location, count) must
// name a record that holds count elements of its type. Without `records`, an opcode the walk
// does not know ends it (the rest is LibTorch's); with them, it refuses the file.
bool pickle_fits(std::string_view pk, const std::map<std::string, uint64_t>* records) {
  const size_t n = pk.size();
  size_t i = 0;
  auto fits = [&](uint64_t len) { return len <= n - i; };
  auto le = [&](size_t at, size_t bytes) {
    uint64_t v = 0;
    for (size_t k = 0; k < bytes; ++k) v |= uint64_t(uint8_t(pk[at + k])) << (8 * k);
    return v;
  };
  // A token per value pushed (only strings, integers, globals and tuples are told apart; the
  // stack is exact between a MARK and its TUPLE, which is all the persistent ids need).
  struct Tok {
    char kind = 'o';  // s(tring) i(nt) g(lobal) t(uple) m(ark) o(ther)
    std::string text;
    uint64_t value = 0;
    std::vector<Tok> items;
  };
  std::vector<Tok> stack;
  std::vector<Tok> memo;
  auto push = [&](Tok t) {
    if (records) stack.push_back(std::move(t));
  };
  auto put = [&](uint64_t id) {  // BINPUT / LONG_BINPUT / MEMOIZE: indices in order
    if (id > memo.size()) return false;
    if (id == memo.size()) memo.emplace_back();
    if (records && !stack.empty()) memo[size_t(id)] = stack.back();
    return true;
  };
  auto pop_to_mark = [&] {
    Tok tuple;
    tuple.kind = 't';
    if (!records) return tuple;
    auto m = std::find_if(stack.rbegin(), stack.rend(), [](const Tok& t) { return t.kind == 'm'; });
    if (m == stack.rend()) return tuple;
    const auto from = m.base();  // just after the mark
    tuple.items.assign(std::make_move_iterator(from), std::make_move_iterator(stack.end()));
    stack.erase(from - 1, stack.end());
    return tuple;
  };
  while (i < n) {
    const auto op = uint8_t(pk[i++]);
    size_t field = 0;  // bytes of the length field
    switch (op) {
      case 'X': case 'B': case 'T': case 0x8b: field = 4; break;  // BINUNICODE, BINBYTES, BINSTRING, LONG4
      case 0x8c: case 'C': case 'U': case 0x8a: field = 1; break;  // SHORT_BINUNICODE/BINBYTES/BINSTRING, LONG1
      case 0x8d: case 0x8e: case 0x96: case 0x95: field = 8; break;  // BINUNICODE8, BINBYTES8, BYTEARRAY8, FRAME
      default: break;
    }
    if (field) {
      if (!fits(field)) return false;
      const uint64_t len = le(i, field);
      i += field;
      if (!fits(len)) return false;  // (a FRAME's length, too, is of bytes that must follow)
      if (op == 0x95) continue;      // FRAME: the length of what follows, not bytes to skip
      Tok t;
      if (op == 'X' || op == 0x8c || op == 0x8d) t.kind = 's', t.text = std::string(pk.substr(i, size_t(len)));
      if (op == 0x8a && len <= 8) t.kind = 'i', t.value = le(i, size_t(len));
      push(std::move(t));
      i += size_t(len);
      continue;
    }
    auto arg = [&](size_t bytes) {
      if (!fits(bytes)) return false;
      i += bytes;
      return true;
    };
    switch (op) {
      case 'q': if (!fits(1) || !put(le(i, 1))) return false; i += 1; break;  // BINPUT
      case 'r': if (!fits(4) || !put(le(i, 4))) return false; i += 4; break;  // LONG_BINPUT
      case 0x94: if (!put(memo.size())) return false; break;                  // MEMOIZE
      case 'h': case 'j': {                                                    // BINGET, LONG_BINGET
        const size_t bytes = op == 'h' ? 1 : 4;
        if (!fits(bytes)) return false;
        const uint64_t id = le(i, bytes);
        i += bytes;
        if (id >= memo.size()) return false;
        push(memo[size_t(id)]);
        break;
      }
      case 'K': case 'M': case 'J': {  // BININT1, BININT2, BININT
        const size_t bytes = op == 'K' ? 1 : op == 'M' ? 2 : 4;
        if (!fits(bytes)) return false;
        Tok t;
        t.kind = 'i', t.value = le(i, bytes);
        if (op == 'J' && (t.value & 0x80000000u)) t.kind = 'o';  // negative
        push(std::move(t));
        i += bytes;
        break;
      }
      case 0x80: case 0x82: if (!arg(1)) return false; break;  // PROTO, EXT1
      case 0x83: if (!arg(2)) return false; break;             // EXT2
      case 0x84: if (!arg(4)) return false; break;             // EXT4
      case 'G': if (!arg(8)) return false; push(Tok{}); break; // BINFLOAT
      case 'c': {                                              // GLOBAL: two lines
        Tok t;
        t.kind = 'g';
        for (int line = 0; line < 2; ++line) {
          const size_t nl = pk.find('\n', i);
          if (nl == std::string_view::npos) return false;
          t.text += std::string(pk.substr(i, nl - i)) + (line == 0 ? "\n" : "");
          i = nl + 1;
        }
        push(std::move(t));
        break;
      }
      case '(': { Tok t; t.kind = 'm'; push(std::move(t)); break; }  // MARK
      case 't': push(pop_to_mark()); break;                          // TUPLE
      case 'e': case 'u': case 'l': case 'd': pop_to_mark(); break;  // APPENDS, SETITEMS (onto what is below)
      case 'Q': {                                                    // BINPERSID
        if (!records) break;
        if (stack.empty()) return false;
        Tok id = std::move(stack.back());
        stack.pop_back();
        const auto& it = id.items;
        if (id.kind != 't' || it.size() != 5 || it[0].kind != 's' || it[0].text != "storage" || it[1].kind != 'g' ||
            it[2].kind != 's' || it[4].kind != 'i')
          return false;
        const size_t elem = storage_element_size(it[1].text);
        auto rec = records->find(it[2].text);
        if (elem == 0 || rec == records->end() || it[4].value > rec->second / elem) return false;
        push(Tok{});
        break;
      }
      case '.': return true;  // STOP
      case '}': case ']': case ')': case 'N': case 0x88: case 0x89: push(Tok{}); break;  // a new value
      case 's': case 'R': case 'b': case 'a': case '0': case 0x85: case 0x86: case 0x87: case 0x81:
      case 0x92: case 0x93: case 0x8f: case 0x90: case 0x91:
        // Changes values below the top; the tokens stay approximate there, which the
        // persistent ids (built between a MARK and a TUPLE) do not depend on.
        if (records && (op == 0x85 || op == 0x86 || op == 0x87 || op == 'R')) push(Tok{});
        break;
      default:
        // Not an opcode this walk knows: with records, a file grokking did not write.
        return records == nullptr;
    }
    if (i > n) return false;
  }
  return records == nullptr;  // a pickle ends with STOP
}

// LibTorch finds data.pkl through the zip64 records when the plain ones disagree, and the
// local headers of its archives carry no sizes: every local header named */data.pkl has its
// pickle walked to the end of the file, and a length that runs past the file refuses it (a
// 7.8 KB checkpoint whose plain central directory claimed 0 bytes made LibTorch allocate
// 4 GB; found by fuzz_checkpoint).
bool local_pickles_fit(const std::string& b) {
  static const std::string kLocal("PK\x03\x04", 4);
  for (size_t at = b.find(kLocal); at != std::string::npos; at = b.find(kLocal, at + 1)) {
    if (at + 30 > b.size()) break;
    const size_t name_len = le16(b, at + 26), extra = le16(b, at + 28);
    if (at + 30 + name_len > b.size()) continue;
    if (name_len < 8 || b.compare(at + 30 + name_len - 8, 8, "data.pkl") != 0) continue;
    const size_t data = at + 30 + name_len + extra;
    if (data > b.size() || !pickle_fits(std::string_view(b).substr(data), nullptr)) return false;
  }
  return true;
}

// Sizes of the archive's */data/<key> records (the tensors' storages) by key, from the plain
// central directory.
std::map<std::string, uint64_t> record_sizes(const std::string& b) {
  std::map<std::string, uint64_t> out;
  const size_t n = b.size();
  size_t eocd = std::string::npos;
  for (size_t at = n >= 22 ? n - 22 + 1 : 0; at-- > 0;)
    if (le32(b, at) == 0x06054b50u) {
      eocd = at;
      break;
    }
  if (eocd == std::string::npos) return out;
  size_t at = le32(b, eocd + 16);
  const size_t end = std::min<size_t>(eocd, size_t(at) + le32(b, eocd + 12));
  while (at + 46 <= end && le32(b, at) == 0x02014b50u) {
    const size_t name_len = le16(b, at + 28), extra = le16(b, at + 30), comment = le16(b, at + 32);
    if (at + 46 + name_len > end) break;
    const std::string name = b.substr(at + 46, name_len);
    const size_t slash = name.find("/data/");
    if (slash != std::string::npos) out[name.substr(slash + 6)] = le32(b, at + 24);
    at += 46 + name_len + extra + comment;
  }
  return out;
}

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
  const auto records = record_sizes(raw);
  if (!pickle_fits(stored_pickle(raw), &records) || !local_pickles_fit(raw))
    bad(path, "not a readable checkpoint: corrupted (a length or memo index in data.pkl is out of range)");
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
