#include "grokking/text.hpp"

#include <cstdio>
#include <sstream>
#include <stdexcept>

#include "grokking/error.hpp"
#include "grokking/rundir.hpp"

namespace grokking {

std::string shown_json(const nlohmann::json& v) {
  std::string s = v.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  return s.size() > 40 ? s.substr(0, 37) + "..." : s;
}

void fail_got(const std::string& where, const std::string& what, const nlohmann::json& got) {
  throw UsageError(where + ": " + what + " (got " + shown_json(got) + ")");
}

std::string join_comma(const std::vector<std::string>& items) {
  std::string out;
  for (auto& s : items) out += (out.empty() ? "" : ", ") + s;
  return out;
}

std::string format_number(double v, const char* printf_format) {
  char buf[64];
  std::snprintf(buf, sizeof buf, printf_format, v);
  return buf;
}

nlohmann::json optional_json(const std::optional<int64_t>& v) { return v ? nlohmann::json(*v) : nlohmann::json(); }

std::vector<int64_t> parse_int_list(const std::string& text, const std::string& what, size_t max_values) {
  std::vector<int64_t> out;
  size_t i = 0;
  auto bad = [&]() -> std::vector<int64_t> {
    throw UsageError(what + ": expected numbers like 1,2,5-7 (got '" + (text.size() > 60 ? text.substr(0, 57) + "..." : text) + "')");
  };
  auto too_many = [&](uint64_t n) {
    throw UsageError(what + ": " + (n > uint64_t(INT64_MAX) ? std::string("too many") : std::to_string(n)) +
                     " values, at most " + std::to_string(max_values) + " (refused before anything is created)");
  };
  if (text.empty()) bad();
  while (i < text.size()) {
    size_t j = text.find(',', i);
    std::string part = text.substr(i, j == std::string::npos ? std::string::npos : j - i);
    auto dash = part.find('-', 1);
    try {
      size_t used = 0;
      if (dash == std::string::npos) {
        out.push_back(std::stoll(part, &used));
        if (used != part.size()) bad();
      } else {
        size_t u1 = 0, u2 = 0;
        int64_t lo = std::stoll(part.substr(0, dash), &u1), hi = std::stoll(part.substr(dash + 1), &u2);
        if (u1 != dash || u2 != part.size() - dash - 1 || hi < lo) bad();
        // In unsigned arithmetic: hi - lo overflows int64 for a range like -9e18-9e18.
        const uint64_t span = uint64_t(hi) - uint64_t(lo);
        if (span >= max_values || out.size() + span + 1 > max_values) too_many(out.size() + span + 1);
        for (uint64_t k = 0; k <= span; ++k) out.push_back(lo + int64_t(k));
      }
    } catch (const std::logic_error&) {
      bad();
    }
    if (out.size() > max_values) too_many(out.size());
    if (j == std::string::npos) break;
    i = j + 1;
  }
  return out;
}

std::string short_text(const std::string& s, size_t max) {
  return s.size() > max ? s.substr(0, max - 3) + "..." : s;
}

std::string format_shape(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (auto d : shape) s += (s.size() > 1 ? ", " : "") + std::to_string(d);
  return s + "]";
}

std::string join_numbers(const std::vector<int64_t>& v, const char* sep) {
  std::string s;
  for (auto x : v) s += (s.empty() ? "" : sep) + std::to_string(x);
  return s.empty() ? "-" : s;
}

CsvWriter::CsvWriter(const std::vector<std::string>& columns) : columns_(columns.size()) {
  for (auto& c : columns) field(c);
  end_row();
}

void CsvWriter::separate() {
  if (in_row_++ > 0) text_ += ',';
}

CsvWriter& CsvWriter::field(double v) {
  separate();
  text_ += format_number(v, "%.9g");
  return *this;
}

CsvWriter& CsvWriter::field(int64_t v) {
  separate();
  text_ += std::to_string(v);
  return *this;
}

CsvWriter& CsvWriter::field(const std::string& v) {
  separate();
  if (v.find_first_of(",\"\n\r") == std::string::npos) {
    text_ += v;
    return *this;
  }
  text_ += '"';
  for (char ch : v) text_ += ch == '"' ? std::string("\"\"") : std::string(1, ch);
  text_ += '"';
  return *this;
}

CsvWriter& CsvWriter::field(const nlohmann::json& v) {
  if (v.is_null()) {
    separate();
    return *this;
  }
  if (v.is_string()) return field(v.get<std::string>());
  // A list or an object holds commas: quoted as any text with them (RFC 4180).
  if (v.is_structured()) return field(v.dump());
  separate();
  text_ += v.dump();
  return *this;
}

void CsvWriter::end_row() {
  if (in_row_ != columns_)
    throw std::logic_error("CSV row with " + std::to_string(in_row_) + " fields for " + std::to_string(columns_) +
                           " columns");
  text_ += '\n';
  in_row_ = 0;
}

int CsvTable::column(const std::string& name) const {
  for (size_t i = 0; i < header.size(); ++i)
    if (header[i] == name) return int(i);
  return -1;
}

CsvTable read_csv(const std::string& path) {
  CsvTable t;
  std::istringstream in(read_file(path));
  std::string line;
  auto split = [](const std::string& l) {
    std::vector<std::string> out;
    std::string cur;
    bool quoted = false;
    for (size_t i = 0; i < l.size(); ++i) {
      char ch = l[i];
      if (quoted) {
        if (ch == '"' && i + 1 < l.size() && l[i + 1] == '"') cur += '"', ++i;
        else if (ch == '"') quoted = false;
        else cur += ch;
      } else if (ch == '"') {
        quoted = true;
      } else if (ch == ',') {
        out.push_back(cur), cur.clear();
      } else {
        cur += ch;
      }
    }
    out.push_back(cur);
    return out;
  };
  if (std::getline(in, line)) t.header = split(line);
  for (int lineno = 2; std::getline(in, line); ++lineno)
    if (!line.empty()) {
      t.rows.push_back(split(line));
      t.lines.push_back(lineno);
    }
  return t;
}

}  // namespace grokking
