// fourier, ablate and progress: the analysis of a checkpoint or of a whole run.
#include <memory>

#include "commands.hpp"
#include "grokking/commands.hpp"
#include "grokking/text.hpp"

namespace grokking::cli {

namespace {
// The options every analysis subcommand has: the path and --json.
CLI::App* analysis_subcommand(CLI::App& app, AnalysisOptions& opts, const char* name, const char* help,
                              const char* path_help) {
  auto* sub = app.add_subcommand(name, help);
  sub->add_option("path", opts.path, path_help)->required();
  sub->add_flag("--json", opts.json, "Machine-readable output on stdout");
  return sub;
}
}  // namespace

Command fourier_command(CLI::App& app) {
  auto opts = std::make_shared<AnalysisOptions>();
  auto* sub = analysis_subcommand(app, *opts, "fourier",
                                  "Fourier spectra of W_E, W_U and the MLP neurons; key frequencies; Gini",
                                  "Checkpoint file, or run directory (its latest checkpoint)");
  return {sub, [opts] { return run_fourier_command(*opts); }};
}

Command ablate_command(CLI::App& app) {
  auto opts = std::make_shared<AnalysisOptions>();
  auto freqs = std::make_shared<std::string>();
  auto* sub = analysis_subcommand(app, *opts, "ablate",
                                  "Loss and accuracy with frequencies ablated, in logit and in weight space",
                                  "Checkpoint file, or run directory (its latest checkpoint)");
  sub->add_option("--freqs", *freqs, "Frequencies to ablate, e.g. 14,35,41 (default: the key frequencies)");
  sub->add_option("--draws", opts->draws, "Random control draws")->check(CLI::Range(1, 1000));
  sub->add_option("--seed", opts->seed, "Seed of the random control draws");
  return {sub, [opts, freqs] {
            if (!freqs->empty()) opts->freqs = parse_int_list(*freqs, "--freqs");
            return run_ablate_command(*opts);
          }};
}

Command progress_command(CLI::App& app) {
  auto opts = std::make_shared<AnalysisOptions>();
  auto freqs = std::make_shared<std::string>();
  auto* sub = analysis_subcommand(app, *opts, "progress", "Progress measures over every checkpoint of a run, and its phases",
                                  "Run directory");
  sub->add_option("--freqs", *freqs, "Key frequencies to use (default: those of the final checkpoint)");
  sub->add_flag("--from-csv", opts->from_csv,
                "Find the phases again from the run's progress.csv, without measuring the checkpoints");
  return {sub, [opts, freqs] {
            if (!freqs->empty()) opts->freqs = parse_int_list(*freqs, "--freqs");
            return run_progress_command(*opts);
          }};
}

Command irreps_command(CLI::App& app) {
  auto opts = std::make_shared<AnalysisOptions>();
  auto irreps = std::make_shared<std::string>();
  auto* sub = analysis_subcommand(app, *opts, "irreps",
                                  "A group run by irreducible representations: logit similarity, key irreps, embeddings, "
                                  "hidden neurons, excluded and restricted loss with controls",
                                  "Checkpoint file, or run directory (its latest checkpoint)");
  sub->add_option("--irreps", *irreps, "Irreps to treat as key, by their number in the table, e.g. 2,7 (default: the rule)");
  sub->add_option("--draws", opts->draws, "Random control draws")->check(CLI::Range(1, 1000));
  sub->add_option("--seed", opts->seed, "Seed of the random control draws");
  return {sub, [opts, irreps] {
            if (!irreps->empty()) opts->freqs = parse_int_list(*irreps, "--irreps");
            return run_irreps_command(*opts);
          }};
}

Command heads_command(CLI::App& app) {
  auto opts = std::make_shared<AnalysisOptions>();
  auto* sub = analysis_subcommand(app, *opts, "heads",
                                  "Induction heads of a repeat-task run: per-head scores over training, the transition, "
                                  "head ablations, K-composition",
                                  "Run directory");
  return {sub, [opts] { return run_heads_command(*opts); }};
}

Command superposition_command(CLI::App& app) {
  auto opts = std::make_shared<AnalysisOptions>();
  auto* sub = analysis_subcommand(app, *opts, "superposition",
                                  "Toy models of superposition: each feature's norm, interference and dimensionality, "
                                  "D*; over a sweep, the dimensionality against 1/(1-S) and the two-feature phase diagram",
                                  "Run directory, or sweep directory");
  return {sub, [opts] { return run_superposition_command(*opts); }};
}

}  // namespace grokking::cli
