// The number lists of --seeds and --freqs, with the checks the CLI applies to them.
#include "fuzz_common.hpp"
#include "grokking/limits.hpp"
#include "grokking/text.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  fuzz::expect_tool_errors([&] { grokking::check_seeds(grokking::parse_int_list(text, "--seeds", grokking::kMaxSeeds)); });
  return fuzz::expect_tool_errors([&] { grokking::parse_int_list(text, "--freqs"); });
}
