// metrics.csv as --resume reads it: read_metrics on a file.
#include "fuzz_common.hpp"
#include "grokking/rundir.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = fuzz::scratch_file("metrics.csv", data, size);
  return fuzz::expect_tool_errors([&] { grokking::read_metrics(path); });
}
