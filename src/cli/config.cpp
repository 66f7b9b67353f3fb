#include <memory>

#include "commands.hpp"
#include "grokking/commands.hpp"

namespace grokking::cli {

Command config_command(CLI::App& app) {
  auto opts = std::make_shared<ConfigOptions>();
  auto* sub = app.add_subcommand("config", "Print the resolved config (defaults when no file), or --doc");
  sub->add_option("config", opts->config_path, "Experiment config (JSON)");
  sub->add_option("--set", opts->sets, "Override a key: section.key=value (repeatable)");
  sub->add_flag("--doc", opts->doc, "List every key with its default and meaning");
  return {sub, [opts] { return run_config_command(*opts); }};
}

}  // namespace grokking::cli
