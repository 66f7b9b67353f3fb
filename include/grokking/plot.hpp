// `grokking plot`: gnuplot figures (PNG and SVG, each with its script) and a self-contained
// report.html for a run or a sweep directory. Torch-free.
#pragma once
#include <string>
#include <vector>

namespace grokking {

struct PlotOptions {
  std::string path;           // a run directory or a sweep directory
  bool analyse = true;        // compute fourier.csv / progress.csv when missing
  std::string gnuplot = "gnuplot";
};
int run_plot_command(const PlotOptions& opts);

// A tiny CSV table: header and rows of fields (quoted fields are unquoted).
struct CsvTable {
  std::vector<std::string> header;
  std::vector<std::vector<std::string>> rows;
  std::vector<int> lines;  // each row's line number in the file (empty lines are skipped)
  int column(const std::string& name) const;  // -1 when absent
};
CsvTable read_csv(const std::string& path);

}  // namespace grokking
