// The zip and pickle checks of checkpoint loading (checkpoint_format.hpp).
#include "grokking/checkpoint_format.hpp"

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string_view>
#include <vector>

namespace grokking {

namespace {

uint32_t le32(const std::string& b, size_t at) {
  return uint32_t(uint8_t(b[at])) | uint32_t(uint8_t(b[at + 1])) << 8 | uint32_t(uint8_t(b[at + 2])) << 16 |
         uint32_t(uint8_t(b[at + 3])) << 24;
}
uint16_t le16(const std::string& b, size_t at) { return uint16_t(uint8_t(b[at]) | uint8_t(b[at + 1]) << 8); }

// The file ends with a zip end-of-central-directory record (possibly after a zip64 one) whose
// central directory lies inside the file.
bool zip_complete(const std::string& b) {
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

uint64_t le64(const std::string& b, size_t at) { return uint64_t(le32(b, at)) | uint64_t(le32(b, at + 4)) << 32; }

// The archive's central directory as LibTorch's zip reader (miniz) will see it: entries by
// name with their stored size and where their data starts. Refused (nullopt) when it is not
// plain: a zip64 size or offset marker (checkpoints stay under 4 GiB, config.cpp), a zip64
// directory that disagrees with the plain one (miniz reads the zip64 one), a compressed or
// duplicate entry, or data outside the file.
struct ZipEntry {
  uint64_t size = 0;
  size_t data = 0;
};
std::optional<std::map<std::string, ZipEntry>> zip_directory(const std::string& b) {
  const size_t n = b.size();
  if (n < 22) return std::nullopt;
  size_t eocd = std::string::npos;
  for (size_t at = n - 22 + 1; at-- > 0;)
    if (le32(b, at) == 0x06054b50u) {
      eocd = at;
      break;
    }
  if (eocd == std::string::npos) return std::nullopt;
  const uint64_t entries = le16(b, eocd + 10), cdir_size = le32(b, eocd + 12), cdir_ofs = le32(b, eocd + 16);
  if (entries == 0xffff || cdir_size == 0xffffffffu || cdir_ofs == 0xffffffffu) return std::nullopt;
  if (eocd >= 20 && le32(b, eocd - 20) == 0x07064b50u) {  // zip64 locator: its record must agree
    const uint64_t z = le64(b, eocd - 20 + 8);
    if (z + 56 > eocd - 20 || le32(b, size_t(z)) != 0x06064b50u) return std::nullopt;
    if (le64(b, size_t(z) + 32) != entries || le64(b, size_t(z) + 40) != cdir_size ||
        le64(b, size_t(z) + 48) != cdir_ofs)
      return std::nullopt;
  }
  if (cdir_ofs + cdir_size > eocd) return std::nullopt;
  std::map<std::string, ZipEntry> out;
  size_t at = size_t(cdir_ofs);
  const size_t end = size_t(cdir_ofs + cdir_size);
  for (uint64_t e = 0; e < entries; ++e) {
    if (at + 46 > end || le32(b, at) != 0x02014b50u) return std::nullopt;
    const size_t name_len = le16(b, at + 28), extra = le16(b, at + 30), comment = le16(b, at + 32);
    if (at + 46 + name_len > end) return std::nullopt;
    const uint32_t method = le16(b, at + 10), size = le32(b, at + 20), usize = le32(b, at + 24), local = le32(b, at + 42);
    if (method != 0 || size != usize || size == 0xffffffffu || local == 0xffffffffu || size_t(local) + 30 > n)
      return std::nullopt;
    const size_t data = size_t(local) + 30 + le16(b, local + 26) + le16(b, local + 28);
    if (data + size > n) return std::nullopt;
    if (!out.emplace(b.substr(at + 46, name_len), ZipEntry{size, data}).second) return std::nullopt;  // duplicate
    at += 46 + name_len + extra + comment;
  }
  return out;
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

// Walks a pickle as LibTorch's unpickler will run it, before it does. That unpickler trusts
// what the file says, and the fuzzer made each of these cost gigabytes or read out of bounds
// (fuzz_checkpoint): a length field (it allocates the length before checking that the bytes are
// there), a memo index (it grows its memo table to whatever index a BINPUT names), and a
// storage's element count (it sizes the storage by the count in the persistent id, not by the
// record it reads). So: only the opcodes torch::pickle_save writes, each with its exact stack
// effect; every length within what follows; memo indices in order; and every persistent id
// ('storage', type, key, location, count) naming a record of `records` that holds count
// elements of its type. Tokens are shared, never copied, and keep at most 64 bytes of text and
// the items of tuples of at most 5, so the walk itself stays linear in the file.
namespace {
// The walk pickle_fits makes: the stack and memo as tokens, the read position, and one method per
// opcode group that needs more than a line.
struct PickleWalk {
  struct Tok {
    char kind = 'o';  // s(tring) i(nt) g(lobal) t(uple) m(ark) o(ther)
    std::string text;
    uint64_t value = 0;
    std::vector<std::shared_ptr<const Tok>> items;
  };
  using Ptr = std::shared_ptr<const Tok>;

  PickleWalk(std::string_view p, const std::map<std::string, uint64_t>& r) : pk(p), records(r), n(p.size()) {}

  bool fits(uint64_t len) const { return len <= n - i; }
  uint64_t le(size_t at, size_t bytes) const {
    uint64_t v = 0;
    for (size_t k = 0; k < bytes; ++k) v |= uint64_t(uint8_t(pk[at + k])) << (8 * k);
    return v;
  }
  bool pop(size_t k, std::vector<Ptr>* items) {  // k values (no mark among them)
    if (stack.size() < k) return false;
    for (size_t j = stack.size() - k; j < stack.size(); ++j) {
      if (stack[j]->kind == 'm') return false;
      if (items) items->push_back(stack[j]);
    }
    stack.resize(stack.size() - k);
    return true;
  }
  bool pop_to_mark(std::vector<Ptr>* items) {
    auto m = std::find_if(stack.rbegin(), stack.rend(), [](const Ptr& t) { return t->kind == 'm'; });
    if (m == stack.rend()) return false;
    const size_t from = size_t(stack.rend() - m);  // just after the mark
    if (items)
      for (size_t j = from; j < stack.size(); ++j) items->push_back(stack[j]);
    stack.resize(from - 1);
    return true;
  }
  static Ptr tuple_of(std::vector<Ptr> items) {
    Tok t;
    t.kind = 't';
    if (items.size() <= 5) t.items = std::move(items);
    return std::make_shared<const Tok>(std::move(t));
  }
  bool put(uint64_t id) {  // BINPUT / LONG_BINPUT: indices in order, of a value
    if (id > memo.size() || stack.empty() || stack.back()->kind == 'm') return false;
    if (id == memo.size()) memo.push_back(stack.back());
    else memo[size_t(id)] = stack.back();
    return true;
  }
  // BINUNICODE, SHORT_BINUNICODE (text of at most 64 bytes kept), LONG1 (an integer of at most 8 bytes kept).
  bool text_or_long(uint8_t op) {
    const size_t field = op == 'X' ? 4 : 1;
    if (!fits(field)) return false;
    const uint64_t len = le(i, field);
    i += field;
    if (!fits(len)) return false;
    Tok t;
    if (op != 0x8a && len <= 64) t.kind = 's', t.text = std::string(pk.substr(i, size_t(len)));
    if (op == 0x8a && len <= 8 && (len == 0 || !(uint8_t(pk[i + len - 1]) & 0x80))) t.kind = 'i', t.value = le(i, size_t(len));
    stack.push_back(std::make_shared<const Tok>(std::move(t)));
    i += size_t(len);
    return true;
  }
  // GLOBAL: two lines of at most 64 bytes.
  bool global() {
    Tok t;
    t.kind = 'g';
    for (int line = 0; line < 2; ++line) {
      const size_t nl = pk.find('\n', i);
      if (nl == std::string_view::npos || nl - i > 64) return false;
      t.text += std::string(pk.substr(i, nl - i)) + (line == 0 ? "\n" : "");
      i = nl + 1;
    }
    stack.push_back(std::make_shared<const Tok>(std::move(t)));
    return true;
  }
  // BINPERSID: ('storage', type, key, location, count) naming a record that holds count elements.
  bool persistent_id() {
    std::vector<Ptr> id;
    if (!pop(1, &id)) return false;
    const auto& it = id[0]->items;
    if (id[0]->kind != 't' || it.size() != 5 || it[0]->kind != 's' || it[0]->text != "storage" ||
        it[1]->kind != 'g' || it[2]->kind != 's' || it[4]->kind != 'i')
      return false;
    const size_t elem = storage_element_size(it[1]->text);
    auto rec = records.find(it[2]->text);
    if (elem == 0 || rec == records.end() || it[4]->value > rec->second / elem) return false;
    stack.push_back(other);
    return true;
  }
  bool run();

  std::string_view pk;
  const std::map<std::string, uint64_t>& records;
  const size_t n;
  size_t i = 0;
  std::vector<Ptr> stack, memo;
  const Ptr other = std::make_shared<const Tok>();
  const Ptr mark = std::make_shared<const Tok>(Tok{'m', {}, 0, {}});
};

bool PickleWalk::run() {
while (i < n) {
  const auto op = uint8_t(pk[i++]);
  switch (op) {
    case 'X': case 0x8c: case 0x8a:  // BINUNICODE, SHORT_BINUNICODE, LONG1
      if (!text_or_long(op)) return false;
      break;
    case 'K': case 'M': case 'J': {  // BININT1, BININT2, BININT
      const size_t bytes = op == 'K' ? 1 : op == 'M' ? 2 : 4;
      if (!fits(bytes)) return false;
      Tok t;
      t.kind = 'i', t.value = le(i, bytes);
      if (op == 'J' && (t.value & 0x80000000u)) t.kind = 'o';  // negative
      stack.push_back(std::make_shared<const Tok>(std::move(t)));
      i += bytes;
      break;
    }
    case 'G':  // BINFLOAT
      if (!fits(8)) return false;
      i += 8;
      stack.push_back(other);
      break;
    case 'c':  // GLOBAL: two lines
      if (!global()) return false;
      break;
    case 'q': case 'r': {  // BINPUT, LONG_BINPUT
      const size_t bytes = op == 'q' ? 1 : 4;
      if (!fits(bytes) || !put(le(i, bytes))) return false;
      i += bytes;
      break;
    }
    case 'h': case 'j': {  // BINGET, LONG_BINGET
      const size_t bytes = op == 'h' ? 1 : 4;
      if (!fits(bytes)) return false;
      const uint64_t id = le(i, bytes);
      i += bytes;
      if (id >= memo.size()) return false;
      stack.push_back(memo[size_t(id)]);
      break;
    }
    case 0x80:  // PROTO
      if (!fits(1)) return false;
      i += 1;
      break;
    case '}': case ']': case ')': case 'N': case 0x88: case 0x89:  // empty dict/list/tuple, None, True, False
      stack.push_back(op == ')' ? tuple_of({}) : other);
      break;
    case '(': stack.push_back(mark); break;  // MARK
    case 't': {                             // TUPLE
      std::vector<Ptr> items;
      if (!pop_to_mark(&items)) return false;
      stack.push_back(tuple_of(std::move(items)));
      break;
    }
    case 0x85: case 0x86: case 0x87: {  // TUPLE1..3
      std::vector<Ptr> items;
      if (!pop(size_t(op - 0x84), &items)) return false;
      stack.push_back(tuple_of(std::move(items)));
      break;
    }
    case 'R':  // REDUCE: callable, args -> result
      if (!pop(2, nullptr)) return false;
      stack.push_back(other);
      break;
    case 'u': case 'e':  // SETITEMS, APPENDS: onto the dict/list below the mark
      if (!pop_to_mark(nullptr) || stack.empty() || stack.back()->kind == 'm') return false;
      break;
    case 'Q':  // BINPERSID: ('storage', type, key, location, count)
      if (!persistent_id()) return false;
      break;
    case '.': return stack.size() == 1;  // STOP: the one object
    default: return false;  // not an opcode torch::pickle_save writes
  }
}
  return false;  // no STOP
}
}  // namespace

bool pickle_fits(std::string_view pk, const std::map<std::string, uint64_t>& records) {
  return PickleWalk(pk, records).run();
}

// LibTorch reads data.pkl through the central directory; a second local header named
// */data.pkl would be a file grokking did not write: each is walked to the end of the file and
// must be a pickle whose storages fit too.
bool local_pickles_fit(const std::string& b, const std::map<std::string, uint64_t>& records) {
  static const std::string kLocal("PK\x03\x04", 4);
  for (size_t at = b.find(kLocal); at != std::string::npos; at = b.find(kLocal, at + 1)) {
    if (at + 30 > b.size()) break;
    const size_t name_len = le16(b, at + 26), extra = le16(b, at + 28);
    if (at + 30 + name_len > b.size()) continue;
    if (name_len < 8 || b.compare(at + 30 + name_len - 8, 8, "data.pkl") != 0) continue;
    const size_t data = at + 30 + name_len + extra;
    if (data > b.size() || !pickle_fits(std::string_view(b).substr(data), records)) return false;
  }
  return true;
}

}  // namespace

bool zip_is_complete(const std::string& b) { return zip_complete(b); }

// The archive is a plain zip with one */data.pkl whose pickle walks clean against the sizes of
// its */data/<key> records.
bool archive_fits(const std::string& b) {
  auto dir = zip_directory(b);
  if (!dir) return false;
  std::map<std::string, uint64_t> records;
  const ZipEntry* pickle = nullptr;
  for (auto& [name, e] : *dir) {
    if (name.size() >= 8 && name.compare(name.size() - 8, 8, "data.pkl") == 0) {
      if (pickle) return false;
      pickle = &e;
    }
    const size_t slash = name.find("/data/");
    if (slash != std::string::npos) records[name.substr(slash + 6)] = e.size;
  }
  if (!pickle) return false;
  return pickle_fits(std::string_view(b).substr(pickle->data, size_t(pickle->size)), records) &&
         local_pickles_fit(b, records);
}


}  // namespace grokking
