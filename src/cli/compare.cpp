#include <memory>

#include "commands.hpp"
#include "grokking/compare.hpp"

namespace grokking::cli {

Command compare_command(CLI::App& app) {
  auto opts = std::make_shared<CompareOptions>();
  auto* sub = app.add_subcommand("compare", "Arms of a sweep side by side: medians, bootstrap intervals, rank test");
  sub->add_option("sweep_dir", opts->sweep_dir, "Sweep directory")->required();
  sub->add_option("--by", opts->by, "Swept key that defines an arm (repeatable); other keys, such as train.seed, are pooled")
      ->required();
  sub->add_option("--baseline", opts->baseline, "The baseline arm's values, comma-separated in --by order (default: the first arm)");
  sub->add_option("--seed", opts->seed, "Seed of the bootstrap");
  sub->add_flag("--json", opts->json, "Machine-readable output on stdout");
  return {sub, [opts] { return run_compare_command(*opts); }};
}

}  // namespace grokking::cli
