// The subcommands of the `grokking` executable, one function each (CLI11's subcommand-per-file
// layout): it declares the subcommand and its options on `app` and returns what runs it once the
// command line is parsed. Conversions of option text happen when it runs, so that their errors
// reach main's one try/catch like every other.
#pragma once
#include <CLI/CLI.hpp>

#include <functional>

namespace grokking::cli {

struct Command {
  CLI::App* app;             // the subcommand, to ask whether it was the one parsed
  std::function<int()> run;  // returns the exit code
};

Command train_command(CLI::App& app);
Command config_command(CLI::App& app);
Command fourier_command(CLI::App& app);
Command ablate_command(CLI::App& app);
Command progress_command(CLI::App& app);
Command irreps_command(CLI::App& app);
Command heads_command(CLI::App& app);
Command superposition_command(CLI::App& app);
Command bench_command(CLI::App& app);
Command sweep_command(CLI::App& app);
Command compare_command(CLI::App& app);
Command plot_command(CLI::App& app);

}  // namespace grokking::cli
