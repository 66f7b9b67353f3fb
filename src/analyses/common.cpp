#include "common.hpp"

#include "grokking/error.hpp"
#include "grokking/rundir.hpp"
#include "grokking/threads.hpp"

namespace grokking::analyses {

namespace {
// The run directory a checkpoint belongs to ("" when it is not inside one).
std::string run_dir_of(const std::string& path, const std::string& ckpt) {
  if (is_dir(path)) return path;
  auto slash = ckpt.find_last_of('/');
  std::string parent = slash == std::string::npos ? "." : ckpt.substr(0, slash);
  if (parent.size() >= 12 && parent.substr(parent.size() - 12) == "/checkpoints") {
    std::string run = parent.substr(0, parent.size() - 12);
    if (exists(run + "/config.json")) return run;
  }
  if (parent == "checkpoints" && exists("config.json")) return ".";
  return "";
}

}  // namespace

nlohmann::json split_json(const Split& s) { return {{"loss", s.loss}, {"acc", s.acc}}; }

nlohmann::json cycle_json(const Cycle& c) {
  return {{"n", c.n}, {"relation", c.relation}, {"generator", c.generator}};
}

std::string cycle_text(const Cycle& c) {
  if (c.generator == 0) return "frequencies of the residues mod " + std::to_string(c.p) + " (directions " + c.relation + ")";
  return "frequencies of the discrete logarithms base " + std::to_string(c.generator) + " mod " + std::to_string(c.p) +
         " (a = " + std::to_string(c.generator) + "^i, indices mod " + std::to_string(c.n) + "; directions " + c.relation +
         "; 0 is off the cycle)";
}

Loaded load_for_analysis(const AnalysisKind& kind, const std::string& path) {
  configure_threads(0);
  auto file = resolve_checkpoint(path);
  Loaded l{load_checkpoint(file), ""};
  l.run_dir = run_dir_of(path, file);
  require_applies(kind, l.ck.config, path);
  return l;
}

Loaded load_final(const AnalysisKind& kind, const std::string& dir) {
  if (!is_dir(dir)) throw UsageError(dir + ": " + kind.name + " takes a run directory");
  const auto list = list_checkpoints(dir);
  if (list.empty()) throw RunError(dir + ": no checkpoints in " + dir + "/checkpoints");
  Loaded l{load_checkpoint(list.back().second), dir};
  require_applies(kind, l.ck.config, dir);
  return l;
}

}  // namespace grokking::analyses
