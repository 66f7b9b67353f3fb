// `grokking train`: the experiment runner. Torch-free interface.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "grokking/config.hpp"
#include "grokking/rundir.hpp"

namespace grokking {

struct TrainOptions {
  std::string config_path;        // empty with resume_dir
  std::vector<std::string> sets;  // section.key=value overrides
  std::string out_dir;            // overrides output.dir
  std::string resume_dir;         // continue this run from its latest checkpoint
  bool force = false;             // start over in a non-empty run directory
  bool quiet = false;             // no progress lines (warnings and errors still print)
  std::vector<int64_t> seeds;     // several seeds side by side: runs in <dir>/seed=K
};

struct TrainReport {
  RunStatus status = RunStatus::completed;
  bool fresh_batches = false;  // the task draws fresh batches: its epochs are steps, it has no milestones
  std::string run_dir;
  int64_t epochs_done = 0;
  int signal = 0;  // the signal that interrupted the run, if any
  MetricsRow final;
  Milestones milestones;
  // The peak of the gradient-weight cosine after memorisation, and its epoch.
  std::optional<double> grad_weight_cos_peak;
  std::optional<int64_t> grad_weight_cos_peak_epoch;
  double wall_s = 0;
};

// Prepares (or reopens) the run directory and trains. Throws UsageError / RunError.
TrainReport run_train(const TrainOptions& opts);
// Trains `cfg` into an existing, locked run directory (config.json already written).
TrainReport train(const Config& cfg, const std::string& run_dir, bool resume, bool quiet);
// Trains one model per seed side by side as batched tensors, each into its own prepared run
// directory, which ends up holding what a single-seed run would have written.
std::vector<TrainReport> train_replicas(const Config& cfg, const std::vector<int64_t>& seeds,
                                        const std::vector<std::string>& dirs, bool resume, bool quiet);

// Trains one model per config side by side, each into its own prepared run directory (config.json
// written), which ends up holding what training that config alone would have written (on the
// CPU bit for bit). The configs must have one pack_key(); each run ends on its own (early stop,
// divergence, its epoch budget) while the others go on. With `slots` (0: all), at most that many
// train at once: as one ends, the next takes its place (continuous packing; see TrainingRun for
// when a run may enter mid-way). Returns the reports of the runs that started; RunError after
// all are written when any diverged.
std::vector<TrainReport> train_packed(const std::vector<Config>& cfgs, const std::vector<std::string>& dirs,
                                      bool resume, bool quiet, int64_t slots = 0);
// `grokking train --packed DIR... [--slots N]`: the fresh run directories `sweep --pack`
// prepared (config.json and nothing of a run yet), locked and trained side by side, N at a time.
std::vector<TrainReport> run_packed(const std::vector<std::string>& dirs, bool quiet, int64_t slots = 0);

// Whether runs of this config can train side by side (--seeds, sweep --pack): every replica
// must train on the same batch each step: the full batch of a fixed split, or the fresh batches
// a task draws from its own seed (a minibatch order is drawn from train.seed).
bool side_by_side(const Config& c);

// Resolved config of a run directory, with the overrides a resume may change applied.
Config load_run_config(const std::string& run_dir, const std::vector<std::string>& sets = {});

}  // namespace grokking
