#include "grokking/limits.hpp"

#include <algorithm>
#include <set>

#include "grokking/error.hpp"

namespace grokking {

namespace {
// The first place where `text` nests deeper than kMaxJsonDepth, as "line L, column C"; "" if none.
std::string too_deep_at(const std::string& text) {
  int depth = 0;
  bool in_string = false, escaped = false;
  size_t line = 1, column = 0;
  for (char ch : text) {
    ++column;
    if (ch == '\n') line++, column = 0;
    if (in_string) {
      if (escaped) escaped = false;
      else if (ch == '\\') escaped = true;
      else if (ch == '"') in_string = false;
    } else if (ch == '"') {
      in_string = true;
    } else if (ch == '[' || ch == '{') {
      if (++depth > kMaxJsonDepth) return "line " + std::to_string(line) + ", column " + std::to_string(column);
    } else if (ch == ']' || ch == '}') {
      depth = std::max(0, depth - 1);  // unbalanced text is the parser's to report
    }
  }
  return "";
}

std::string depth_message(const std::string& origin, const std::string& where) {
  return origin + ": /: JSON nested deeper than " + std::to_string(kMaxJsonDepth) + " levels at " + where +
         " (the limit keeps the parser's stack bounded)";
}
}  // namespace

void check_json_depth(const std::string& text, const std::string& origin) {
  if (auto where = too_deep_at(text); !where.empty()) throw UsageError(depth_message(origin, where));
}

void check_json_depth_run(const std::string& text, const std::string& origin) {
  if (auto where = too_deep_at(text); !where.empty()) throw RunError(depth_message(origin, where));
}

void check_seeds(const std::vector<int64_t>& seeds) {
  if (seeds.size() > kMaxSeeds)
    throw UsageError("--seeds: " + std::to_string(seeds.size()) + " seeds, at most " + std::to_string(kMaxSeeds) +
                     " (each is a model replica, a run directory and an open file trained in one process)");
  std::set<int64_t> seen;
  for (auto s : seeds) {
    if (s < 0) throw UsageError("--seeds: seeds are integers >= 0 (got " + std::to_string(s) + ")");
    if (!seen.insert(s).second)
      throw UsageError("--seeds: seed " + std::to_string(s) + " is listed twice (both would train into seed=" +
                       std::to_string(s) + ")");
  }
}

}  // namespace grokking
