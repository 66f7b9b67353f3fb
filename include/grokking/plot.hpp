// `grokking plot`: gnuplot figures (PNG and SVG, each with its script) and a self-contained
// report.html for a run or a sweep directory. Torch-free.
#pragma once
#include <string>
#include <vector>

#include "grokking/text.hpp"  // read_csv

namespace grokking {

struct PlotOptions {
  std::string path;           // a run directory or a sweep directory
  bool analyse = true;        // compute fourier.csv / progress.csv when missing
  std::string gnuplot = "gnuplot";
};
int run_plot_command(const PlotOptions& opts);
// The figures plot can draw for a run (training's and every analysis' by name).
std::vector<std::string> run_figure_names();


}  // namespace grokking
