#include <unistd.h>

#include <memory>

#include "commands.hpp"
#include "grokking/limits.hpp"
#include "grokking/sweep.hpp"

namespace grokking::cli {

Command sweep_command(CLI::App& app) {
  auto opts = std::make_shared<SweepOptions>();
  auto* sub = app.add_subcommand("sweep", "Run a grid of configs; --list for shell loops, --shard for clusters");
  sub->add_option("sweep", opts->sweep_path, "Sweep file (JSON: base, grid, arms, points, dir)");
  sub->add_option("--dir", opts->dir, "Sweep directory (overrides the file's dir)");
  sub->add_flag("--list", opts->list, "Print one run a line: its name and --set overrides");
  sub->add_option("--shard", opts->shard, "Run only shard i of n (0 <= i < n): runs j with j mod n = i");
  sub->add_option("--jobs", opts->jobs,
                  "Runs (or packs) at once on this machine, threads split between them (default 1; with --pack "
                  "on a CPU, one a core)")
      ->check(CLI::Range(1, 256));
  sub->add_option("--pack", opts->pack,
                  "Train new runs that share a task, model and schedule side by side in one process, N at a "
                  "time, a finished run's place going to the next (they may differ in seed, lr, weight decay, "
                  "betas, eps)")
      ->check(CLI::Range(int64_t(1), int64_t(kMaxSeeds)));
  sub->add_option("--threads", opts->threads,
                  "Threads of each training (default: the config's train.threads where it sets one, else the "
                  "cores split between the runs at once)")
      ->check(CLI::Range(1, 1024));
  sub->add_option("--aggregate", opts->aggregate_dir, "Only rebuild DIR/sweep.csv from the finished runs");
  sub->add_flag("-q,--quiet", opts->quiet, "Only warnings and errors on stderr");
  return {sub, [opts] {
            // Each run trains in a child process of this very binary.
            char exe[4096];
            const ssize_t len = ::readlink("/proc/self/exe", exe, sizeof exe - 1);
            opts->self_exe = len > 0 ? std::string(exe, size_t(len)) : std::string("grokking");
            return run_sweep_command(*opts);
          }};
}

}  // namespace grokking::cli
