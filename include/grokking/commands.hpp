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

struct AnalysisOptions {
  std::string path;              // checkpoint file or run directory
  bool json = false;             // machine-readable stdout
  std::vector<int64_t> freqs;    // ablate/progress: frequencies to use instead of the key ones
  int64_t draws = 5;             // ablate: random control draws
  uint64_t seed = 0;             // ablate: seed of the control draws
  bool quiet = false;
  bool from_csv = false;         // progress: the phases from the run's progress.csv, no measuring
};
int run_fourier_command(const AnalysisOptions& opts);
// The analysis files of a run directory, computed from its checkpoints and written there (what
// plot's figures draw), without printing: fourier.csv, attention.csv, neuron_spectrum.dat and
// logit_spectrum.dat; ablate.csv and excluded_by_freq.csv; progress.csv and summary.json's phases.
// UsageError where the run's task or model has no such analysis.
struct AnalysisFiles {
  bool fourier = false, ablation = false, progress = false;
};
void write_analysis_files(const std::string& run_dir, const AnalysisFiles& which);
int run_ablate_command(const AnalysisOptions& opts);
int run_progress_command(const AnalysisOptions& opts);
// `grokking irreps`: a group run's irreps (freqs holds irrep indices from 1: --irreps).
int run_irreps_command(const AnalysisOptions& opts);
// `grokking heads`: a repeat-task run's attention heads over training and at its end.
int run_heads_command(const AnalysisOptions& opts);
// `grokking superposition`: a toy model of superposition's geometry, or a sweep's (path: a run or a sweep directory).
int run_superposition_command(const AnalysisOptions& opts);

struct BenchOptions {
  std::string config_path;        // empty: defaults (the paper's P=113 setup)
  std::vector<std::string> sets;
  int steps = 20;
  int64_t seeds = 0;  // > 1: also time this many seeds side by side
  bool json = false;
};
int run_bench_command(const BenchOptions& opts);

}  // namespace grokking
