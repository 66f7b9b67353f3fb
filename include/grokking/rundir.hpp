// The run directory on disk: atomic files, metrics.csv, the lock. Torch-free.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace grokking {

// Writes `data` to `path` through a temporary file, fsync and rename: a kill at any moment
// leaves either the old file or the new one. Throws RunError naming the path on any failure
// (a full disk included); the temporary file is removed.
void atomic_write(const std::string& path, const std::string& data);
// Appends one complete line with a single write and fsync.
void append_line(const std::string& path, const std::string& line);
std::string read_file(const std::string& path);  // RunError when missing or unreadable
bool exists(const std::string& path);
bool is_dir(const std::string& path);
void make_dirs(const std::string& path);  // RunError when impossible (a file is in the way, permissions)
// Removes the temporary files of atomic writes that a kill interrupted, in a run directory and
// its checkpoints/.
void remove_temporaries(const std::string& run_dir);

// One evaluation: a row of metrics.csv.
struct MetricsRow {
  int64_t epoch = 0;
  double train_loss = 0, test_loss = 0, train_acc = 0, test_acc = 0, sum_sq_weights = 0, lr = 0, elapsed_s = 0;
  // Diagnostics (Prieto et al. 2025): the fraction of training examples whose loss term is
  // exactly zero in the loss's precision ("zero terms": their gradient has vanished), the
  // fraction whose softmax has collapsed (sum of exp(logit - max) exactly 1), and the cosine
  // between the negative gradient of the training loss and the weights (near 1: a step mostly
  // scales the weights up).
  double zero_terms = 0, softmax_collapse = 0, grad_weight_cos = 0;
  // The task's own figures, in its column order (the repeat task's first-half loss).
  std::vector<std::pair<std::string, double>> extra;
};
// The transition of a repeat-task run's repeated-half loss (metrics.csv's test_loss): the first
// evaluations at which it has made 10 %, 50 % and 90 % of its drop from its first value to its
// lowest; Olsson et al.'s bump, the loss curve turning steeper (a non-convex stretch of the loss
// against log step): the largest height of the curve above its lower convex hull, over the
// evaluations after step 0, in nats, and where; and the largest rise above the running minimum
// before the 90 % point (a loss that goes up, which their bump is not).
struct Transition {
  std::optional<int64_t> at10, at50, at90;
  double start = 0, lowest = 0, bump = 0, rise = 0;
  int64_t bump_at = 0, rise_at = 0;
};
Transition find_transition(const std::vector<MetricsRow>& rows);

// metrics.csv's header: the columns every run has, then a task's own.
std::string metrics_header(const std::vector<std::string>& extra_columns = {});
const std::vector<std::string>& metrics_columns();
std::string format_row(const MetricsRow& r);
// Rows of a metrics.csv, read by column name (also the files written before zero_terms and
// softmax_collapse, or before the diagnostics: what they lack reads 0, or NaN where it was not
// measured); a half-written last line is dropped. RunError naming file and line.
std::vector<MetricsRow> read_metrics(const std::string& path);
void write_metrics(const std::string& path, const std::vector<MetricsRow>& rows,
                   const std::vector<std::string>& extra_columns = {});

// Figures derived from the metrics: the memorisation and grokking epochs.
struct Milestones {
  std::optional<int64_t> memorised;  // first evaluation with train accuracy 100 %
  std::optional<int64_t> grokked;    // first evaluation with test accuracy >= 99 %
};
Milestones find_milestones(const std::vector<MetricsRow>& rows, double grok_acc = 0.99);

// How a run ended.
enum class RunStatus { completed, early_stopped, interrupted, diverged };
std::string to_string(RunStatus s);
// RunError("ORIGIN: /status: ...") for a name that is none of them.
RunStatus parse_status(const std::string& name, const std::string& origin);
// Completed or early-stopped: nothing left to train.
inline bool finished(RunStatus s) { return s == RunStatus::completed || s == RunStatus::early_stopped; }

// summary.json: one typed struct, written by training (and its "phases" by `grokking progress`),
// read by resume, sweeps, compare, plot and report. Every key is written; reading accepts the
// files of earlier versions, whose keys it does not know read as unset.
struct Summary {
  RunStatus status = RunStatus::completed;
  std::string task_kind = "modular", model_kind = "transformer";
  int64_t epochs = 0, epochs_planned = 0;
  MetricsRow final;  // epoch, losses, accuracies, sum of squared weights at the last evaluation
  std::optional<int64_t> memorised_epoch, grokked_epoch, grokking_delay;
  int64_t milestone_resolution_epochs = 0;
  double wall_time_s = 0, epochs_per_s = 0;
  int64_t n_train = 0, n_test = 0, n_params = 0;
  std::string weights_checksum;
  int64_t seed = 0, seeds_side_by_side = 1;
  std::string device, blas, path, loss, loss_dtype, libtorch, grokking_version;
  int64_t threads = 0;
  bool flush_denormal = false, cuda_graph = false;
  // The cosine between the negative gradient and the weights at its peak after memorisation.
  std::optional<double> grad_weight_cos_peak;
  std::optional<int64_t> grad_weight_cos_peak_epoch;
  nlohmann::json phases;  // null until `grokking progress` ran
  // A task with accuracy (a classification): a reconstruction's summary has no accuracies,
  // memorisation or grokking epochs, and writes none.
  bool has_accuracy() const { return loss != "weighted_squared_error"; }
  nlohmann::json to_json() const;
  // RunError naming `origin` and the key of a value of the wrong type.
  static Summary from_json(const nlohmann::json& j, const std::string& origin);
};
std::string summary_path(const std::string& run_dir);
Summary read_summary(const std::string& run_dir);  // RunError naming the file
void write_summary(const std::string& run_dir, const Summary& s);

// An exclusive lock on a run directory, released by the kernel when the process dies.
class RunLock {
 public:
  explicit RunLock(const std::string& dir);  // UsageError when another process holds it
  ~RunLock();
  RunLock(const RunLock&) = delete;
  RunLock& operator=(const RunLock&) = delete;

 private:
  int fd_ = -1;
};

// Every file and folder grokking writes into a run directory (training, analysis, plots), relative
// to it: the one list that --force clears and that the README documents.
const std::vector<std::string>& run_dir_entries();
// Removes every entry of run_dir_entries() from a run directory (folders with their contents);
// anything else a user put there stays.
void clear_run_dir(const std::string& run_dir);

// Checkpoints of a run: {epoch, path} sorted by epoch (weights-only epoch_N.pt files).
std::vector<std::pair<int64_t, std::string>> list_checkpoints(const std::string& run_dir);
std::string checkpoint_path(const std::string& run_dir, int64_t epoch);
std::string resume_path(const std::string& run_dir);

nlohmann::json read_json_file(const std::string& path);  // RunError naming the file

// Formats seconds as 1h02m, 3m05s or 12s.
std::string format_duration(double seconds);

}  // namespace grokking
