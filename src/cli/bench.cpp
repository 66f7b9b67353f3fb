#include <memory>

#include "commands.hpp"
#include "grokking/commands.hpp"

namespace grokking::cli {

Command bench_command(CLI::App& app) {
  auto opts = std::make_shared<BenchOptions>();
  auto* sub = app.add_subcommand("bench", "Time the plain and fast training steps against the machine's GEMM peak");
  sub->add_option("config", opts->config_path, "Experiment config (default: the paper's P=113 setup)");
  sub->add_option("--set", opts->sets, "Override a key: section.key=value (repeatable)");
  sub->add_option("--steps", opts->steps, "Timed steps per path (median reported)")->check(CLI::Range(1, 100000));
  sub->add_option("--seeds", opts->seeds, "Also time this many seeds trained side by side")->check(CLI::Range(2, 1024));
  sub->add_flag("--json", opts->json, "Machine-readable output on stdout");
  sub->add_flag("--families", opts->families,
                "A line per model family at its shipped config (modular fast and plain, generic transformer, MLP, "
                "toy models packed); run from the repository root")
      ->excludes(sub->get_option("config"))
      ->excludes(sub->get_option("--seeds"));
  sub->add_flag("--vs-peer", opts->vs_peer,
                "With --families: also time each family's plain PyTorch peer (scripts/peers/, scripts/paper_step.py) "
                "in the same run, with as many threads, and print the ratio")
      ->needs(sub->get_option("--families"));
  sub->add_option("--python", opts->python,
                  "The Python with torch that runs the peers (default: python3 on PATH, else /usr/bin/python3)")
      ->needs(sub->get_option("--vs-peer"));
  return {sub, [opts] { return run_bench_command(*opts); }};
}

}  // namespace grokking::cli
