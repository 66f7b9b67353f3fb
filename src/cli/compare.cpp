#include <memory>

#include "commands.hpp"
#include "grokking/compare.hpp"
#include "grokking/error.hpp"
#include "grokking/text.hpp"

namespace grokking::cli {

Command compare_command(CLI::App& app) {
  auto opts = std::make_shared<CompareOptions>();
  auto* sub = app.add_subcommand("compare", "Arms of a sweep side by side: medians, bootstrap intervals, rank test");
  sub->add_option("sweep_dir", opts->sweep_dir, "Sweep directory")->required();
  sub->add_option("--by", opts->by,
                  "Swept key that defines an arm (repeatable); other keys, such as train.seed, are pooled (none: all "
                  "runs one arm)");
  sub->add_option("--baseline", opts->baseline, "The baseline arm's values, comma-separated in --by order (default: the first arm)");
  sub->add_option("--seed", opts->seed, "Seed of the bootstrap");
  sub->add_flag("--json", opts->json, "Machine-readable output on stdout");
  sub->add_option("--acc", opts->acc, "Outcome: the first epoch with test accuracy >= ACC, from metrics.csv (default: the 99 % grokked epoch)")
      ->check(CLI::Range(0.0, 1.0));
  sub->add_flag("--gap", opts->gap, "With --acc: the epochs from train accuracy >= ACC to test accuracy >= ACC (Omnigrok's gap)");
  sub->add_flag("--irreps", opts->irreps,
                "Group runs: each run's irreps in the order they became key (its irreps_progress.csv, from progress), "
                "the final key sets and the pairwise orders across each arm's seeds");
  auto at = std::make_shared<std::string>();
  sub->add_option("--at", *at, "Also each arm's median test accuracy at these epochs, e.g. 5000,10000,15000");
  return {sub, [opts, at] {
            if (opts->gap && opts->acc <= 0) throw UsageError("--gap needs --acc (the accuracy both must reach)");
            if (!at->empty()) opts->at = parse_int_list(*at, "--at");
            return run_compare_command(*opts);
          }};
}

}  // namespace grokking::cli
