// Entry points of the subcommands other than train, and shared CLI helpers. Torch-free.
#pragma once
#include <exception>
#include <string>
#include <vector>

namespace grokking {

// The default logger writes plain lines to stderr: stdout is for tables and --json.
void init_cli_logging();

// One line for any exception (a LibTorch error without its C++ backtrace).
std::string describe_exception(const std::exception& e);

// `grokking config`: the documented keys and defaults, or a resolved config.
struct ConfigOptions {
  std::string config_path;  // empty: all defaults
  std::vector<std::string> sets;
  bool doc = false;  // list every key instead
};
int run_config_command(const ConfigOptions& opts);

}  // namespace grokking

namespace grokking {

struct BenchOptions {
  std::string config_path;        // empty: defaults (the paper's P=113 setup)
  std::vector<std::string> sets;
  int steps = 20;
  int64_t seeds = 0;  // > 1: also time this many seeds side by side
  bool json = false;
  // A line per shipped model family (the configs under configs/, read from the working
  // directory), each on the path training takes; `sets` apply to every one.
  bool families = false;
  // With families: also time each family's plain PyTorch peer (scripts/peers/*.py and
  // scripts/paper_step.py, run by `python`) in the same run.
  bool vs_peer = false;
  std::string python;  // empty: python3 on PATH if it imports torch, else /usr/bin/python3
};
int run_bench_command(const BenchOptions& opts);

}  // namespace grokking
