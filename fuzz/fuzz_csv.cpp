// The CSV reader of `grokking plot` (sweep.csv, fourier.csv, ablate.csv, progress.csv), the
// progress.csv reader of `progress --from-csv` (and the phase rules it runs on what it read), and
// the JSON files of run and sweep directories (summary.json, plan.json) read_json_file reads.
#include "fuzz_common.hpp"
#include "grokking/plot.hpp"
#include "grokking/progress.hpp"
#include "grokking/rundir.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = fuzz::scratch_file("table.csv", data, size);
  fuzz::expect_tool_errors([&] { grokking::read_csv(path); });
  fuzz::expect_tool_errors([&] { grokking::read_progress(path); });
  return fuzz::expect_tool_errors([&] { grokking::read_json_file(path); });
}
