// --set overrides: one per line of the input, applied to the default config as
// `grokking config --set A --set B` does.
#include <vector>

#include "fuzz_common.hpp"
#include "grokking/config.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  std::vector<std::string> sets;
  size_t start = 0;
  for (size_t nl; (nl = text.find('\n', start)) != std::string::npos; start = nl + 1) sets.push_back(text.substr(start, nl - start));
  sets.push_back(text.substr(start));
  return fuzz::expect_tool_errors([&] { grokking::parse_config("{}", "(defaults)", sets); });
}
