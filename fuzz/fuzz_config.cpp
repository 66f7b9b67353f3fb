// Config JSON as `grokking train FILE` reads it: parse_config on the file's text.
#include "fuzz_common.hpp"
#include "grokking/config.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  return fuzz::expect_tool_errors([&] { grokking::parse_config(text, "fuzz.json"); });
}
