// `grokking sweep`: grids of runs driven from one file, sharded across processes or machines.
#pragma once
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace grokking {

struct SweepRun {
  std::string name;               // directory name under <sweep>/runs, says its values
  std::vector<std::string> sets;  // section.key=value overrides of the base config
  nlohmann::json values;          // {"section.key": value}
};

struct SweepPlan {
  std::string dir;        // the sweep directory
  nlohmann::json base;    // resolved base config
  std::vector<std::string> keys;  // swept keys, in column order
  std::vector<SweepRun> runs;
};

// Reads a sweep file: {"base": PATH or {config}, "grid": {"section.key": [values]},
// "points": [{"section.key": value, ...}], "dir": PATH}. Every run's config is validated
// before anything runs. UsageError naming the file and field otherwise.
SweepPlan load_sweep(const std::string& path, const std::string& dir_override = "");
// The runs of shard i of n (0 <= i < n): run j belongs to shard j mod n.
std::vector<SweepRun> shard(const std::vector<SweepRun>& runs, int64_t i, int64_t n);
// "i/n" -> {i, n}; UsageError otherwise.
std::pair<int64_t, int64_t> parse_shard(const std::string& text);

struct SweepOptions {
  std::string sweep_path;
  std::string dir;       // overrides the sweep file's dir
  std::string shard;     // "i/n"
  bool list = false;
  int64_t jobs = 0;            // runs at once; 0 (not given): 1, or with --pack on a CPU one a core
  int64_t pack = 1;           // new runs with one pack_key() trained side by side, up to this many a process
  int64_t threads = 0;        // --threads: each training's threads (0: its config's train.threads, else cores / jobs)
  std::string aggregate_dir;  // --aggregate DIR: only rebuild sweep.csv
  std::string self_exe;       // the grokking binary to run each training with
  bool quiet = false;
};
int run_sweep_command(const SweepOptions& opts);
// Rebuilds <dir>/sweep.csv from the finished runs; returns the number of rows.
size_t aggregate_sweep(const std::string& dir);

}  // namespace grokking
