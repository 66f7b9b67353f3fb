// `grokking compare`: arms of a sweep side by side, with the statistics a fair comparison needs
// (medians with bootstrap intervals, censored runs counted, a rank test against a baseline).
// Torch-free.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

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

struct CompareOptions {
  std::string sweep_dir;
  std::vector<std::string> by;  // swept keys that define an arm; the others (seeds) are pooled
  std::string baseline;         // the baseline arm's values, "v1,v2" in --by order; empty: the first arm
  bool json = false;
  uint64_t seed = 0;  // of the bootstrap
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
};
// Groups the finished runs of a sweep into arms and computes their statistics; the baseline
// arm is first. UsageError for a directory that is not a sweep, a --by key it did not sweep, a
// baseline no arm has.
std::vector<Arm> compare_sweep(const CompareOptions& opts);
int run_compare_command(const CompareOptions& opts);

}  // namespace grokking
