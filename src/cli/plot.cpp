#include <memory>

#include "commands.hpp"
#include "grokking/plot.hpp"

namespace grokking::cli {

Command plot_command(CLI::App& app) {
  auto opts = std::make_shared<PlotOptions>();
  auto no_analysis = std::make_shared<bool>(false);
  auto* sub = app.add_subcommand("plot", "PNG/SVG figures (with their gnuplot scripts) and report.html");
  sub->add_option("path", opts->path, "Run directory or sweep directory")->required();
  sub->add_flag("--no-analysis", *no_analysis, "Do not compute fourier/progress/ablate CSVs that are missing");
  return {sub, [opts, no_analysis] {
            opts->analyse = !*no_analysis;
            return run_plot_command(*opts);
          }};
}

}  // namespace grokking::cli
