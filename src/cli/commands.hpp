// The subcommands of the `grokking` executable, one function each (CLI11's subcommand-per-file
// layout): it declares the subcommand and its options on `app` and returns what runs it once the
// command line is parsed. Conversions of option text happen when it runs, so that their errors
// reach main's one try/catch like every other.
#pragma once
#include <CLI/CLI.hpp>

#include <functional>
#include <vector>

namespace grokking::cli {

struct Command {
  CLI::App* app;             // the subcommand, to ask whether it was the one parsed
  std::function<int()> run;  // returns the exit code
};

Command train_command(CLI::App& app);
Command config_command(CLI::App& app);
// One subcommand per registered analysis (analyses.hpp), in the registry's order.
std::vector<Command> analysis_commands(CLI::App& app);
// `grokking analyse`: every analysis that applies to a run or a sweep.
Command analyse_command(CLI::App& app);
Command bench_command(CLI::App& app);
Command sweep_command(CLI::App& app);
Command compare_command(CLI::App& app);
Command plot_command(CLI::App& app);

}  // namespace grokking::cli
