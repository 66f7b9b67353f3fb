// What the analysis commands share: loading a checkpoint with its run directory, checked against
// the analysis' capabilities, and the JSON of common pieces. Internal to src/analyses/.
#pragma once
#include <nlohmann/json.hpp>

#include <string>

#include "grokking/analyses.hpp"
#include "grokking/analysis.hpp"
#include "grokking/checkpoint.hpp"

namespace grokking::analyses {

struct Loaded {
  Checkpoint ck;
  std::string run_dir;  // "" when the checkpoint is not inside a run directory
};
// The checkpoint at `path` (a file, or a run directory's latest), refused with a hint unless
// `kind` applies to its config.
Loaded load_for_analysis(const AnalysisKind& kind, const std::string& path);
// A run directory's final checkpoint (`kind` checked as above); RunError when it has none.
Loaded load_final(const AnalysisKind& kind, const std::string& run_dir);

nlohmann::json split_json(const Split& s);
nlohmann::json cycle_json(const Cycle& c);
// One line saying what the frequencies are frequencies of.
std::string cycle_text(const Cycle& c);

}  // namespace grokking::analyses
