// What a training run tells its user besides checkpoints and metrics.csv: the log (stderr and
// each run's train.log), the live bar, the line at each logged evaluation, and summary.json.
// Torch-free.
#pragma once
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "grokking/rundir.hpp"
#include "grokking/train.hpp"

namespace spdlog {
class logger;
}

namespace grokking {

// Plain lines to stderr (warnings and errors only when quiet) and timestamped ones to each
// run directory's train.log.
std::shared_ptr<spdlog::logger> make_run_logger(const std::vector<std::string>& run_dirs, bool quiet);

// A one-line live bar on stderr, drawn only when `enabled` (stderr is a terminal) and at most
// five times a second.
class ProgressBar {
 public:
  explicit ProgressBar(bool enabled) : enabled_(enabled) {}
  void update(int64_t epoch, int64_t total, double epochs_per_s);
  void clear();

 private:
  bool enabled_, shown_ = false;
  std::chrono::steady_clock::time_point last_ = std::chrono::steady_clock::now();
};

// "epoch 12000/25000 | train 2.40e-07 | test 1.45e+01 | acc 1.000/0.231 | 950 ep/s | eta 14s";
// for several replicas the test accuracy's min, mean and max over them instead of one run's figures.
// `unit`: "epoch", or "step" for tasks with fresh batches every step.
std::string progress_line(int64_t epoch, int64_t epochs, const std::vector<MetricsRow>& latest, double epochs_per_s,
                          const std::string& unit = "epoch");
// "done after 25000 epochs in 35m: memorised at epoch 200, grokked at epoch 14500 | final ...".
std::string final_line(const TrainReport& rep);

// Facts of a run that summary.json records beside its results.
struct RunFacts {
  int64_t epochs_planned = 0, eval_every = 0, n_train = 0, n_test = 0, n_params = 0;
  int64_t seeds_side_by_side = 1;
  int threads = 0;
  std::string device, blas, path;
  std::string loss, loss_dtype;  // the training loss, also that of metrics.csv's losses
  bool flush_denormal = false, cuda_graph = false;
  std::string task_kind, model_kind;
};
// A run's summary.json, from how it ended and the facts of the run.
Summary summary_of(const TrainReport& rep, const RunFacts& facts, int64_t seed, const std::string& weights_checksum,
                   double wall_time_s, double epochs_per_s);

}  // namespace grokking
