// Checkpoints (zip container, pickle, tensors, config text) as fourier/ablate/progress and
// --resume read them: load_checkpoint on a file.
#include "fuzz_common.hpp"
#include "grokking/checkpoint.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = fuzz::scratch_file("epoch_0000001.pt", data, size);
  return fuzz::expect_tool_errors([&] { grokking::load_checkpoint(path); });
}
