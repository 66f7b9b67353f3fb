#pragma once
#include <torch/torch.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include "grokking/config.hpp"
#include "grokking/rundir.hpp"
#include "grokking/simd.hpp"
#include "grokking/threads.hpp"

namespace grokking::test {

// A tiny, fast config: P=11, a two-head model of width 16.
inline Config tiny_config(int64_t p = 11) {
  Config c;
  c.task.set("p", p);
  c.task.set("frac_train", 0.5);
  c.task.seed = 1;
  c.model.set("d_model", 16);
  c.model.set("n_heads", 2);
  c.model.set("d_head", 8);
  c.model.set("d_mlp", 32);
  c.train.seed = 2;
  c.train.epochs = 50;
  c.train.eval_every = 10;
  c.train.checkpoint_every = 20;
  c.train.threads = 1;
  c.train.device = "cpu";
  return c;
}

// Runs the hand-written kernels at one instruction set while in scope (simd.hpp), then at the
// level before: the tests go through every level the CPU has.
struct ScopedSimd {
  explicit ScopedSimd(Simd level) : before(simd_level()) { force_simd_level(level); }
  ~ScopedSimd() { force_simd_level(before); }
  ScopedSimd(const ScopedSimd&) = delete;
  ScopedSimd& operator=(const ScopedSimd&) = delete;
  Simd before;
};

// A CPU training step on this many threads (threads.hpp: step_shards) while in scope, then as before.
struct ScopedShards {
  explicit ScopedShards(int n) : before(step_shards()) { set_step_shards(n); }
  ~ScopedShards() { set_step_shards(before); }
  ScopedShards(const ScopedShards&) = delete;
  ScopedShards& operator=(const ScopedShards&) = delete;
  int before;
};

// A fresh empty directory under the build tree's temporary area.
inline std::string temp_dir(const std::string& name) {
  std::string base = std::string(std::getenv("TMPDIR") ? std::getenv("TMPDIR") : "/tmp") + "/grokking-test-" +
                     std::to_string(::getpid()) + "-" + name;
  std::string cmd = "rm -rf '" + base + "' && mkdir -p '" + base + "'";
  if (std::system(cmd.c_str()) != 0) throw std::runtime_error("cannot create " + base);
  return base;
}

// What f throws (its what()), or "" where it throws nothing.
inline std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

inline bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

inline std::string source_dir() { return GROKKING_SOURCE_DIR; }

// A new run directory holding cfg's config.json, as `grokking train` prepares it.
inline std::string prepare_run(const Config& cfg, const std::string& name) {
  std::string dir = temp_dir(name);
  make_dirs(dir + "/checkpoints");
  atomic_write(dir + "/config.json", config_to_json(cfg).dump(2));
  return dir;
}

// metrics.csv's rows as text, without the wall time: what a resumed run must reproduce exactly.
inline std::vector<std::string> metric_lines_without_time(const std::string& path) {
  std::vector<std::string> out;
  for (auto& r : read_metrics(path)) {
    auto row = r;
    row.elapsed_s = 0;
    out.push_back(format_row(row));
  }
  return out;
}

// The one measure of every parity test (a second implementation against the plain one, as
// llm.c's test_gpt2 prints maxdiff): max_i |got_i - ref_i| / max(|ref_i|, floor), printed with
// `what` so that a passing test shows how close it was. floor < 0 (the default) is max_i |ref_i|:
// the largest difference relative to the reference's scale. A small floor makes it relative
// element by element (losses spanning decades); floor 1 makes it absolute for values in [0, 1]
// (accuracies). Infinite when the shapes differ or either side has a NaN.
inline double max_rel_diff(const torch::Tensor& got, const torch::Tensor& ref, const std::string& what,
                           double floor = -1) {
  double d = std::numeric_limits<double>::infinity();
  if (got.sizes() == ref.sizes()) {
    auto g = got.detach().to(torch::kCPU, torch::kFloat64), r = ref.detach().to(torch::kCPU, torch::kFloat64);
    const double f = floor < 0 ? std::max(r.abs().max().item<double>(), 1e-300) : floor;
    auto rel = (g - r).abs() / r.abs().clamp_min(f);
    if (!rel.isnan().any().item<bool>()) d = rel.numel() ? rel.max().item<double>() : 0.0;
  }
  std::printf("maxdiff %-48s %.3e\n", what.c_str(), d);
  return d;
}
inline double max_rel_diff(const std::vector<double>& got, const std::vector<double>& ref, const std::string& what,
                           double floor = -1) {
  auto t = [](const std::vector<double>& v) { return torch::tensor(v, torch::kFloat64); };
  return max_rel_diff(t(got), t(ref), what, floor);
}

// Two runs' metrics.csv rows compared with max_rel_diff, column by column: losses element by
// element (floor 1e-6), accuracies absolutely, the sum of squared weights relative to its
// scale. Every field is infinite when the epochs differ.
struct MetricsDiff {
  double loss = 0, acc = 0, sum_sq_weights = 0;
};
inline MetricsDiff metrics_max_diff(const std::vector<MetricsRow>& got, const std::vector<MetricsRow>& ref,
                                    const std::string& what) {
  auto col = [](const std::vector<MetricsRow>& rows, auto member) {
    std::vector<double> v;
    for (auto& r : rows) v.push_back(double(r.*member));
    return v;
  };
  MetricsDiff d;
  if (col(got, &MetricsRow::epoch) != col(ref, &MetricsRow::epoch)) {
    std::printf("maxdiff %-48s epochs differ\n", what.c_str());
    const double inf = std::numeric_limits<double>::infinity();
    return {inf, inf, inf};
  }
  for (auto [m, name] : {std::pair{&MetricsRow::train_loss, "train_loss"}, {&MetricsRow::test_loss, "test_loss"}})
    d.loss = std::max(d.loss, max_rel_diff(col(got, m), col(ref, m), what + " " + name, 1e-6));
  for (auto [m, name] : {std::pair{&MetricsRow::train_acc, "train_acc"}, {&MetricsRow::test_acc, "test_acc"}})
    d.acc = std::max(d.acc, max_rel_diff(col(got, m), col(ref, m), what + " " + name, 1.0));
  d.sum_sq_weights = max_rel_diff(col(got, &MetricsRow::sum_sq_weights), col(ref, &MetricsRow::sum_sq_weights),
                                  what + " sum_sq_weights");
  return d;
}

}  // namespace grokking::test
