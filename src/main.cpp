// grokking: a thin command line over the library. Parse, dispatch, turn every exception into
// one line on stderr and an exit code.
#include <CLI/CLI.hpp>

#include <cstdio>
#include <csignal>
#if defined(__GLIBC__)
#include <malloc.h>
#endif
#include <unistd.h>

#include "grokking/commands.hpp"
#include "grokking/error.hpp"
#include "grokking/plot.hpp"
#include "grokking/sweep.hpp"
#include "grokking/train.hpp"

using namespace grokking;

int main(int argc, char** argv) {
  std::signal(SIGXFSZ, SIG_IGN);  // a file-size limit becomes a write error we can report
#if defined(__GLIBC__)
  // Keep tensors of up to 32 MiB on the heap: glibc otherwise maps and unmaps each one, and the
  // page faults cost more than the arithmetic (progress over 251 P=113 checkpoints: 83 s -> 50 s).
  mallopt(M_MMAP_THRESHOLD, 32 * 1024 * 1024);
  mallopt(M_TRIM_THRESHOLD, 256 * 1024 * 1024);
#endif
  init_cli_logging();

  CLI::App app{"grokking: train and analyse the transformers of the grokking papers"};
  app.set_version_flag("--version", std::string("grokking ") + GROKKING_VERSION);
  app.require_subcommand(1);

  // ---- train ----
  TrainOptions train;
  auto* t = app.add_subcommand("train", "Train a model from a JSON config into a run directory");
  t->add_option("config", train.config_path, "Experiment config (JSON); {} is all defaults");
  t->add_option("--set", train.sets, "Override a key: section.key=value (repeatable)");
  t->add_option("--out", train.out_dir, "Run directory (overrides output.dir)");
  t->add_option("--resume", train.resume_dir, "Continue the run in this directory from its latest checkpoint");
  t->add_flag("--force", train.force, "Start over in a non-empty run directory");
  t->add_flag("-q,--quiet", train.quiet, "Only warnings and errors on stderr");
  std::string seeds_text;
  t->add_option("--seeds", seeds_text, "Train these seeds side by side (e.g. 0-7) into <dir>/seed=K");

  // ---- config ----
  std::string config_path;
  std::vector<std::string> config_sets;
  bool config_doc = false;
  auto* c = app.add_subcommand("config", "Print the resolved config (defaults when no file), or --doc");
  c->add_option("config", config_path, "Experiment config (JSON)");
  c->add_option("--set", config_sets, "Override a key: section.key=value (repeatable)");
  c->add_flag("--doc", config_doc, "List every key with its default and meaning");

  // ---- analysis: fourier, ablate, progress ----
  AnalysisOptions an;
  std::string freqs_text;
  auto analysis = [&](const char* name, const char* help, const char* what) {
    auto* sub = app.add_subcommand(name, help);
    sub->add_option("path", an.path, what)->required();
    sub->add_flag("--json", an.json, "Machine-readable output on stdout");
    return sub;
  };
  auto* fo = analysis("fourier", "Fourier spectra of W_E, W_U and the MLP neurons; key frequencies; Gini",
                      "Checkpoint file, or run directory (its latest checkpoint)");
  auto* ab = analysis("ablate", "Loss and accuracy with frequencies ablated, in logit and in weight space",
                      "Checkpoint file, or run directory (its latest checkpoint)");
  ab->add_option("--freqs", freqs_text, "Frequencies to ablate, e.g. 14,35,41 (default: the key frequencies)");
  ab->add_option("--draws", an.draws, "Random control draws")->check(CLI::Range(1, 1000));
  ab->add_option("--seed", an.seed, "Seed of the random control draws");
  auto* pr = analysis("progress", "Progress measures over every checkpoint of a run, and its phases",
                      "Run directory");
  pr->add_option("--freqs", freqs_text, "Key frequencies to use (default: those of the final checkpoint)");

  // ---- bench ----
  BenchOptions bench;
  auto* be = app.add_subcommand("bench", "Time the plain and fast training steps against the machine's GEMM peak");
  be->add_option("config", bench.config_path, "Experiment config (default: the paper's P=113 setup)");
  be->add_option("--set", bench.sets, "Override a key: section.key=value (repeatable)");
  be->add_option("--steps", bench.steps, "Timed steps per path (median reported)")->check(CLI::Range(1, 100000));
  be->add_option("--seeds", bench.seeds, "Also time this many seeds trained side by side")->check(CLI::Range(2, 1024));
  be->add_flag("--json", bench.json, "Machine-readable output on stdout");

  // ---- sweep ----
  SweepOptions sw;
  auto* swc = app.add_subcommand("sweep", "Run a grid of configs; --list for shell loops, --shard for clusters");
  swc->add_option("sweep", sw.sweep_path, "Sweep file (JSON: base, grid, points, dir)");
  swc->add_option("--dir", sw.dir, "Sweep directory (overrides the file's dir)");
  swc->add_flag("--list", sw.list, "Print one run a line: its name and --set overrides");
  swc->add_option("--shard", sw.shard, "Run only shard i of n (0 <= i < n): runs j with j mod n = i");
  swc->add_option("--jobs", sw.jobs, "Runs at once on this machine (threads split between them)")->check(CLI::Range(1, 256));
  swc->add_option("--aggregate", sw.aggregate_dir, "Only rebuild DIR/sweep.csv from the finished runs");
  swc->add_flag("-q,--quiet", sw.quiet, "Only warnings and errors on stderr");

  // ---- plot ----
  PlotOptions plot;
  bool no_analysis = false;
  auto* pl = app.add_subcommand("plot", "PNG/SVG figures (with their gnuplot scripts) and report.html");
  pl->add_option("path", plot.path, "Run directory or sweep directory")->required();
  pl->add_flag("--no-analysis", no_analysis, "Do not compute fourier/progress/ablate CSVs that are missing");

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "error: %s (see grokking --help)\n", e.what());
    return kExitUsage;
  }

  try {
    if (t->parsed()) {
      if (!seeds_text.empty()) train.seeds = parse_int_list(seeds_text, "--seeds");
      auto rep = run_train(train);
      if (rep.status == "interrupted") return rep.signal == SIGTERM ? kExitSigterm : kExitSigint;
      return kExitOk;
    }
    if (c->parsed()) return run_config_command(config_path, config_sets, config_doc);
    if (!freqs_text.empty()) an.freqs = parse_int_list(freqs_text, "--freqs");
    if (fo->parsed()) return run_fourier_command(an);
    if (ab->parsed()) return run_ablate_command(an);
    if (pr->parsed()) return run_progress_command(an);
    if (be->parsed()) return run_bench_command(bench);
    if (pl->parsed()) {
      plot.analyse = !no_analysis;
      return run_plot_command(plot);
    }
    if (swc->parsed()) {
      char exe[4096];
      ssize_t len = ::readlink("/proc/self/exe", exe, sizeof exe - 1);
      sw.self_exe = len > 0 ? std::string(exe, size_t(len)) : std::string(argv[0]);
      return run_sweep_command(sw);
    }
  } catch (const UsageError& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return kExitUsage;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", describe_exception(e).c_str());
    return kExitFailure;
  }
  return kExitOk;
}
