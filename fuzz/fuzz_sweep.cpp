// Sweep files as `grokking sweep FILE` reads them: load_sweep on a file.
#include "fuzz_common.hpp"
#include "grokking/sweep.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = fuzz::scratch_file("sweep.json", data, size);
  return fuzz::expect_tool_errors([&] { grokking::load_sweep(path); });
}
