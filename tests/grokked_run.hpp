#pragma once
// One training of configs/ci-small.json per test process, shared by the regression test and
// the analysis tests that need a grokked model.
#include "grokking/rundir.hpp"
#include "grokking/train.hpp"
#include "helpers.hpp"

namespace grokking::test {

struct GrokkedRun {
  std::string dir;
  TrainReport report;
};

inline const GrokkedRun& grokked_run() {
  static const GrokkedRun run = [] {
    Config cfg = load_config(source_dir() + "/configs/ci-small.json");
    cfg.train.device = "cpu";
    cfg.train.threads = 1;  // ctest runs tests side by side on two cores
    GrokkedRun r;
    r.dir = temp_dir("ci-small");
    make_dirs(r.dir + "/checkpoints");
    atomic_write(r.dir + "/config.json", config_to_json(cfg).dump(2));
    r.report = train(cfg, r.dir, false, true);
    return r;
  }();
  return run;
}

}  // namespace grokking::test
