// Text in and out, shared by every command: numbers, number lists, CSV files and optional
// values in JSON. Torch-free.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace grokking {

// A JSON value as the user wrote it, cut short for an error message (at most 40 characters);
// invalid UTF-8 (a --set value is any bytes) shown replaced, never thrown.
std::string shown_json(const nlohmann::json& v);

// Throws UsageError "where: what (got <shown_json(got)>)".
[[noreturn]] void fail_got(const std::string& where, const std::string& what, const nlohmann::json& got);

// {"a", "b"} -> "a, b".
std::string join_comma(const std::vector<std::string>& items);

// printf-style formatting of one number: format_number(0.1234567, "%.3f") == "0.123".
std::string format_number(double v, const char* printf_format = "%.4g");

// An optional value as JSON: the value, or null.
nlohmann::json optional_json(const std::optional<int64_t>& v);

// "1,2,5-7" -> {1, 2, 5, 6, 7}; UsageError naming `what` otherwise, and when the list would
// hold more than `max_values` numbers (refused before any range is expanded).
std::vector<int64_t> parse_int_list(const std::string& text, const std::string& what, size_t max_values = 4096);

// Text from the user as an error quotes it: at most `max` characters, "..." where cut.
std::string short_text(const std::string& s, size_t max = 40);

// A tensor shape as "[114, 128]".
std::string format_shape(const std::vector<int64_t>& shape);

// Numbers joined by `sep`; "-" for none.
std::string join_numbers(const std::vector<int64_t>& v, const char* sep = " ");

// A CSV file built row by row: fields are written as they come, strings quoted when they hold a
// comma, quote or line break, doubles with 9 significant digits (float32 round-trips).
class CsvWriter {
 public:
  explicit CsvWriter(const std::vector<std::string>& columns);
  CsvWriter& field(double v);
  CsvWriter& field(int64_t v);
  CsvWriter& field(int v) { return field(int64_t(v)); }
  CsvWriter& field(size_t v) { return field(int64_t(v)); }
  CsvWriter& field(const std::string& v);
  CsvWriter& field(const char* v) { return field(std::string(v)); }
  // A JSON scalar: null as an empty field, a string as field(string), anything else as dumped.
  CsvWriter& field(const nlohmann::json& v);
  // Ends the row; std::logic_error when it did not have one field per column.
  void end_row();
  const std::string& text() const { return text_; }

 private:
  void separate();
  std::string text_;
  size_t columns_, in_row_ = 0;
};

// A tiny CSV table: header and rows of fields (quoted fields are unquoted).
struct CsvTable {
  std::vector<std::string> header;
  std::vector<std::vector<std::string>> rows;
  std::vector<int> lines;  // each row's line number in the file (empty lines are skipped)
  int column(const std::string& name) const;  // -1 when absent
};
// RFC 4180 fields: quoted ones may hold commas and doubled quotes. RunError when unreadable.
CsvTable read_csv(const std::string& path);

}  // namespace grokking
