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
int run_config_command(const std::string& config_path, const std::vector<std::string>& sets, bool doc);

}  // namespace grokking
