// `grokking compare`: arms of a sweep side by side, with the statistics a fair comparison needs
// (medians with bootstrap intervals, censored runs counted, a rank test against a baseline).
// Torch-free.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "grokking/progress.hpp"

namespace grokking {

// One run's outcome: the epoch it grokked at, or (censored) the last epoch it reached without.
struct Outcome {
  double value = 0;
  bool censored = false;
};

// The median of outcomes, censored values taken at their last epoch (a lower bound for that
// run). `lower_bound` is set when the median itself is a censored value: the true median is at
// least that.
struct Median {
  double value = 0;
  bool lower_bound = false;
};
Median median_of(std::vector<Outcome> x);

// Percentile bootstrap (seeded: the same seed gives the same interval) of the median:
// `draws` resamples with replacement; the 2.5th and 97.5th percentiles of their medians.
struct Interval {
  double lo = 0, hi = 0;
};
Interval bootstrap_median(const std::vector<Outcome>& x, uint64_t seed, int draws = 10000);
// The same for the ratio median(x) / median(base), resampling both.
Interval bootstrap_ratio(const std::vector<Outcome>& x, const std::vector<Outcome>& base, uint64_t seed,
                         int draws = 10000);

// Mann–Whitney U of x against y, censored values ranked after every uncensored one and tied
// with each other (exact when all runs were planned for the same number of epochs, the case of
// a sweep). U counts pairs with x < y (earlier grokking in x) plus half the ties; p is
// two-sided, from the normal approximation with the tie correction.
struct RankTest {
  double u = 0, z = 0, p = 1;
};
RankTest mann_whitney(const std::vector<Outcome>& x, const std::vector<Outcome>& y);

// The smallest ratio of medians a two-sided rank test at alpha 0.05 would detect with 80 % power
// between arms of n1 and n2 runs whose log epochs spread with standard deviation sd: the normal
// approximation, exp((z_0.975 + z_0.8) sd sqrt(1/n1 + 1/n2) / sqrt(3/pi)) (3/pi: the rank test's
// efficiency against the t test for normal data). Infinite below two runs an arm.
double detectable_ratio(double sd, size_t n1, size_t n2);
// The standard deviation of log(outcome) (censored runs at their last epoch: an understatement).
double log_spread(const std::vector<Outcome>& x);

struct CompareOptions {
  std::string sweep_dir;
  std::vector<std::string> by;  // swept keys that define an arm; the others (seeds) are pooled
  std::string baseline;         // the baseline arm's values, "v1,v2" in --by order; empty: the first arm
  bool json = false;
  uint64_t seed = 0;  // of the bootstrap
  // The outcome: the first epoch with test accuracy >= acc (0: the summaries' grokked epoch, 99 %);
  // with gap, the epochs from train accuracy >= acc to test accuracy >= acc (Omnigrok's measure).
  double acc = 0;
  bool gap = false;
  std::vector<int64_t> at;  // also each arm's median test accuracy at these epochs
  // Group runs: each run's irreps in the order they became key (its irreps_progress.csv, which
  // `progress` writes), and per arm the final key sets and pairwise orders across the seeds.
  bool irreps = false;
};

struct Arm {
  std::string label;  // "key=value, key2=value2"
  std::vector<std::string> values;
  std::vector<std::string> runs;  // run names
  std::vector<Outcome> grokked, delay;
  int64_t n_grokked = 0;
  Median grok_median, delay_median;
  Interval grok_ci, delay_ci;
  Interval ratio_ci;
  double ratio = 0;  // median grokked epoch / the baseline's
  RankTest test;
  double log_sd = 0;            // spread of the arm's log outcomes
  double detectable = 0;        // the ratio against the baseline this comparison could detect
  std::vector<double> acc_at;   // median test accuracy at opts.at (NaN where no run got there)
  std::vector<std::vector<double>> per_run_acc;  // each run's test accuracy at opts.at
  // With opts.irreps: each run's crossings (empty where it has no irreps_progress.csv; those runs
  // are named in no_irreps) and their summary over the arm's runs that have one.
  std::vector<std::vector<IrrepCrossing>> irrep_orders;
  std::vector<std::string> no_irreps;
  IrrepOrderSummary irrep_summary;
};
// Groups the finished runs of a sweep into arms and computes their statistics; the baseline
// arm is first. UsageError for a directory that is not a sweep, a --by key it did not sweep, a
// baseline no arm has.
std::vector<Arm> compare_sweep(const CompareOptions& opts);
int run_compare_command(const CompareOptions& opts);

}  // namespace grokking
