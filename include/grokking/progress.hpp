// Progress measures over every checkpoint of a run (Nanda et al. 2023, section 5), and the phases of
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
  // The restricted logits of the test pairs built from the test pairs alone (loss, accuracy): what
  // a memoriser cannot pass (restricted_heldout; read_restricted for groups).
  double heldout_restricted_loss = 0, heldout_restricted_acc = 0;
  std::vector<double> excluded_by_key;
  // The logits' trig fit at the key frequencies (fit_logit_trig; not for groups): its share of the
  // centred logits' variance and alpha_k per key frequency (the paper's Fig. 14), in trig_fit.csv.
  double trig_fve = 0;
  std::vector<double> alpha;
};

// How the progress measures changed over one phase: their values at its first and last checkpoint.
struct PhaseChange {
  double train_loss[2], test_loss[2], excluded_loss[2], restricted_loss[2], sum_sq_weights[2], gini[2];
};

struct Phases {
  bool grokked = false;
  std::optional<int64_t> memorisation_end;       // = circuit formation start
  std::optional<int64_t> circuit_formation_end;  // = cleanup start
  std::optional<int64_t> cleanup_end;
  std::string note;
  // Where the phases were found: each phase's change, and which of the paper's definitions of it
  // the change meets (see detect_phases); `failed` names the ones it does not ("" when all hold).
  std::vector<PhaseChange> changes;  // memorisation, circuit formation, cleanup (those found)
  std::string failed;
  // Two more of the paper's statements, evaluated at the boundaries found but not part of the
  // rule (the rule was validated without them): the restricted loss falls during circuit
  // formation (the circuit forms before grokking), and the Gini of W_L jumps in cleanup as that
  // of the embeddings does. {statement, holds}.
  std::vector<std::pair<std::string, bool>> not_in_rule;
};
// The phases of Nanda et al. (2023, section 5.2) from the progress measures. The run is cut into
// four regimes (memorisation, circuit formation, cleanup, what follows; the three phases at least
// three checkpoints each, sharing their boundaries, what follows at least cleanup's last one) by
// least squares: a straight line per regime through each of log10 train, excluded and restricted
// loss, the sum of squared weights and the Gini coefficient (each divided by its range; never the
// test loss). The boundaries are the best such fit among all those where every phase meets the
// paper's definition of it:
//   memorisation: the training set is fit by its end; train and excluded loss fall;
//   circuit formation: excluded loss rises, weight norm falls, test loss flat (it moves less than a
//     quarter as many decades as it falls in cleanup, in all and per epoch);
//   cleanup: test loss falls and test accuracy reaches 99 % in it; weight norm and restricted loss
//     fall; the Gini jumps (rises faster per epoch than in circuit formation); the excluded loss
//     levels off (rises fewer decades than in circuit formation).
// Where no boundaries meet them all, the run does not show the three phases: the best fit overall
// is returned with the definitions it fails (`failed`, `note`). A run that never reached 99 % test
// accuracy gets only memorisation's end (two regimes; memorisation's definition met). Runs of
// more than 500 checkpoints are searched on 500 of them spread evenly (plus the first that fit
// the training set and the first at 99 % test accuracy). Non-finite measures: no phases, a note.
Phases detect_phases(const std::vector<ProgressRow>& rows);
// summary.json's "phases": {grokked, key_freqs, memorisation: {start, end}, ..., note}.
nlohmann::json phases_json(const Phases& phases, const std::vector<int64_t>& key_freqs);

struct RunProgress {
  // The key frequencies used for every checkpoint; for a group run, the key irreps' numbers
  // (from 1, as `grokking irreps` lists them).
  std::vector<int64_t> key_freqs;
  // A group run: every irrep's name, and per checkpoint its logit similarity (irreps_progress.csv).
  std::vector<std::string> irrep_names;
  std::vector<std::vector<double>> irrep_similarity;
  // And per checkpoint and irrep its own excluded, restricted and held-out restricted loss
  // (IrrepProgress; irreps_losses.csv). Empty when read back from the CSV files.
  std::vector<std::vector<double>> irrep_excluded, irrep_restricted, irrep_heldout;
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
// Reads a progress.csv that write_progress wrote back (`progress --from-csv`: the phases again
// without measuring the checkpoints again). RunError naming the file, line and column otherwise.
RunProgress read_progress(const std::string& path);

// A group run's irreps in the order they become key (Chughtai et al.'s question: is the order
// universal?): per irrep, the first checkpoint where its logit similarity exceeds the key rule's
// 0.005, the checkpoint from which it stays above it to the end (none: not above at the end), and
// the one from which it stays below (none: above at the end, or never above). Irreps never above
// are left out; the rest ordered by key_from (those not key at the end last).
struct IrrepCrossing {
  std::string name;
  std::optional<int64_t> first_above, key_from, dropped_at;
};
std::vector<IrrepCrossing> irrep_crossings(const RunProgress& p);
// The irreps' names and per checkpoint similarities of a run's irreps_progress.csv (progress
// writes it), with rows' epochs; RunError naming the file where it is malformed.
RunProgress read_irreps_progress(const std::string& path);

// The orders of several runs (seeds) side by side: the final key sets and how often each; for
// each two irreps that both became key for good in some run, in how many of those runs the first
// did so strictly before the second (ties: the same checkpoint); and the same for the order in
// which irreps dropped out for good (what tells runs apart where a memorising network passes the
// rule with every irrep, so that all become key at once).
struct IrrepOrderSummary {
  struct KeySet {
    std::vector<std::string> irreps;  // sorted by name
    int64_t runs = 0;
  };
  std::vector<KeySet> key_sets;  // most runs first
  struct Pair {
    std::string first, second;  // first before second in at least as many runs as the reverse
    int64_t before = 0, after = 0, tied = 0;
  };
  std::vector<Pair> pairs, drop_pairs;  // the most runs first
  int64_t runs = 0;
};
IrrepOrderSummary summarise_irrep_orders(const std::vector<std::vector<IrrepCrossing>>& runs);

}  // namespace grokking
