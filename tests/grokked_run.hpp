#pragma once
// One training of configs/<name>.json (ci-small, ci-small-sub, ci-small-mul) per test process,
// shared by the regression tests and the analysis tests that need a grokked model.
#include <map>
#include <string>

#include "catch.hpp"
#include "grokking/analysis.hpp"
#include "grokking/rundir.hpp"
#include "grokking/train.hpp"
#include "helpers.hpp"

namespace grokking::test {

struct GrokkedRun {
  std::string dir;
  TrainReport report;
};

inline const GrokkedRun& grokked_run(const std::string& name = "ci-small") {
  static std::map<std::string, GrokkedRun> runs;
  auto it = runs.find(name);
  if (it != runs.end()) return it->second;
  const GrokkedRun run = [&] {
    Config cfg = load_config(source_dir() + "/configs/" + name + ".json");
    cfg.train.device = "cpu";
    cfg.train.threads = 1;  // ctest runs tests side by side on two cores
    GrokkedRun r;
    r.dir = temp_dir(name);
    make_dirs(r.dir + "/checkpoints");
    atomic_write(r.dir + "/config.json", config_to_json(cfg).dump(2));
    r.report = train(cfg, r.dir, false, true);
    return r;
  }();
  return runs.emplace(name, run).first->second;
}

// The ablation row whose name starts with `prefix`, in `space` (a failed check when none does).
inline AblationResult find_ablation(const std::vector<AblationResult>& rows, const std::string& prefix,
                                    const std::string& space) {
  for (auto& r : rows)
    if (r.name.rfind(prefix, 0) == 0 && r.space == space) return r;
  FAIL("no ablation " << prefix);
  return rows[0];
}

}  // namespace grokking::test
