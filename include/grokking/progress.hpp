// Progress measures over every checkpoint of a run (SCIENCE.md section 5), and the phases of
// training read from them. Torch-free.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace grokking {

// The measures of one checkpoint: a row of progress.csv.
struct ProgressRow {
  int64_t epoch = 0;
  double train_loss = 0, test_loss = 0, train_acc = 0, test_acc = 0;
  double restricted_loss = 0, excluded_loss = 0, gini = 0, sum_sq_weights = 0;
  // Restricted logits on train and test (loss) and all pairs (accuracy); Gini of W_L's
  // per-frequency norms; the excluded loss with each key frequency alone removed.
  double restricted_train_loss = 0, restricted_test_loss = 0, restricted_acc = 0, gini_wl = 0;
  std::vector<double> excluded_by_key;
};

struct Phases {
  bool grokked = false;
  std::optional<int64_t> memorisation_end;       // = circuit formation start
  std::optional<int64_t> circuit_formation_end;  // = cleanup start
  std::optional<int64_t> cleanup_end;
  std::string note;
};
Phases detect_phases(const std::vector<ProgressRow>& rows);
// summary.json's "phases": {grokked, key_freqs, memorisation: {start, end}, ..., note}.
nlohmann::json phases_json(const Phases& phases, const std::vector<int64_t>& key_freqs);

struct RunProgress {
  std::vector<int64_t> key_freqs;  // used for every checkpoint
  std::vector<ProgressRow> rows;   // one per epoch_N.pt, in epoch order
  Phases phases;
};
// Measures every checkpoint of `run_dir` with the key frequencies `freqs` (empty: those of the
// final checkpoint, neuron method, as the paper does), on one worker thread per usable CPU,
// each with single-threaded kernels. The first failing checkpoint in epoch order is the error
// reported. UsageError for a path that is not a run directory or an operation without a
// Fourier basis; RunError for missing, broken or foreign checkpoints.
RunProgress measure_progress(const std::string& run_dir, const std::vector<int64_t>& freqs = {});
// Writes <run_dir>/progress.csv and, when the run has a summary.json, its "phases".
void write_progress(const std::string& run_dir, const RunProgress& progress);

}  // namespace grokking
