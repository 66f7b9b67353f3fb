// `grokking patch`: activation and path patching of a transformer on its task's clean and
// corrupted inputs (Wang et al. 2022, section 3; Goldowsky-Dill et al. 2023).
#include <algorithm>
#include <cmath>
#include <cstdio>

#include "common.hpp"
#include "grokking/error.hpp"
#include "grokking/patching.hpp"
#include "grokking/rundir.hpp"
#include "grokking/task.hpp"
#include "grokking/text.hpp"
#include "grokking/threads.hpp"

namespace grokking {
using namespace analyses;

namespace {

const AnalysisKind& kind();

std::string head_label(int64_t l, int64_t h) { return "L" + std::to_string(l) + "H" + std::to_string(h); }

// patch_resid.csv, patch_heads.csv and patch_paths.csv: a row per cell, what plot draws.
void write_files(const std::string& dir, const PatchReport& r) {
  CsvWriter resid({"layer", "position", "recovered"});
  for (size_t l = 0; l < r.resid.size(); ++l)
    for (size_t t = 0; t < r.resid[l].size(); ++t) resid.field(int64_t(l)).field(int64_t(t)).field(r.resid[l][t]).end_row();
  atomic_write(dir + "/patch_resid.csv", resid.text());
  CsvWriter heads({"layer", "head", "recovered"});
  for (size_t l = 0; l < r.head_out.size(); ++l)
    for (size_t h = 0; h < r.head_out[l].size(); ++h) heads.field(int64_t(l)).field(int64_t(h)).field(r.head_out[l][h]).end_row();
  atomic_write(dir + "/patch_heads.csv", heads.text());
  CsvWriter paths({"sender", "receiver", "recovered"});
  for (auto& e : r.paths) paths.field(head_label(e.layer, e.head)).field(e.receiver).field(e.recovered).end_row();
  atomic_write(dir + "/patch_paths.csv", paths.text());
}

void print_json(const Checkpoint& ck, const PatchReport& r) {
  nlohmann::json j = {{"checkpoint", ck.path}, {"epoch", ck.epoch}, {"metric", r.metric_name},
                      {"corruption", r.corruption}, {"clean", r.clean}, {"corrupted", r.corrupted},
                      {"normalisation", "(patched - corrupted) / (clean - corrupted)"},
                      {"resid_pre", r.resid}, {"heads", r.head_out}, {"paths", nlohmann::json::array()}};
  for (auto& e : r.paths)
    j["paths"].push_back({{"sender", head_label(e.layer, e.head)}, {"receiver", e.receiver}, {"recovered", e.recovered}});
  std::printf("%s\n", j.dump(2).c_str());
}

void print_text(const Checkpoint& ck, const PatchReport& r) {
  std::printf("checkpoint %s (epoch %lld)\nmetric: %s\ncorrupted inputs: %s\n", ck.path.c_str(), (long long)ck.epoch,
              r.metric_name.c_str(), r.corruption.c_str());
  std::printf("clean %.4g, corrupted %.4g; activation patching: the corrupted run with one clean activation, the "
              "share restored (patched - corrupted) / (clean - corrupted)\n\n",
              r.clean, r.corrupted);
  std::printf("the residual stream into each block restored at one position (columns: positions 0..%lld)\n",
              (long long)r.positions - 1);
  for (size_t l = 0; l < r.resid.size(); ++l) {
    std::printf("  L%zu ", l);
    for (double v : r.resid[l]) std::printf(" %5.2f", v);
    std::printf("\n");
  }
  std::printf("\neach head's output restored (every position)\n      ");
  for (int64_t h = 0; h < r.heads; ++h) std::printf(" %6s", ("H" + std::to_string(h)).c_str());
  std::printf("\n");
  for (size_t l = 0; l < r.head_out.size(); ++l) {
    std::printf("  L%zu  ", l);
    for (double v : r.head_out[l]) std::printf(" %6.3f", v);
    std::printf("\n");
  }
  if (r.paths.empty()) {
    std::printf("\npaths: none (path patching needs a model without LayerNorm)\n");
    return;
  }
  auto sorted = r.paths;
  std::stable_sort(sorted.begin(), sorted.end(), [](auto& a, auto& b) { return a.recovered > b.recovered; });
  std::printf("\npaths sender -> receiver (a later head's query, key or value input, or the logits directly): the "
              "clean run with that edge alone carrying the sender's corrupted output; the share of the effect it "
              "carries, (clean - patched) / (clean - corrupted), the largest first:\n");
  for (size_t i = 0; i < sorted.size() && i < 10; ++i)
    std::printf("  %-6s -> %-10s %7.3f\n", head_label(sorted[i].layer, sorted[i].head).c_str(), sorted[i].receiver.c_str(),
                sorted[i].recovered);
}

int run(const AnalysisOptions& opts) {
  auto [ck, run_dir] = load_for_analysis(kind(), opts.path);
  const Model model = model_from_checkpoint(ck);
  const auto sets = make_task(ck.config.task)->patch_sets(opts.seed);
  const PatchReport r = patch(model, sets);
  if (!run_dir.empty()) write_files(run_dir, r);
  if (opts.quiet) return 0;
  if (opts.json) print_json(ck, r);
  else print_text(ck, r);
  return 0;
}

}  // namespace

const AnalysisKind& patch_analysis() { return kind(); }

namespace {
const AnalysisKind& kind() {
  static const AnalysisKind k = [] {
    AnalysisKind a;
    a.name = "patch";
    a.doc = "Activation and path patching on the task's clean and corrupted inputs: the residual stream by layer and "
            "position, each head's output, each head-to-head and head-to-logits path";
    a.scope = AnalysisKind::Scope::checkpoint;
    a.needs = {Capability::heads};
    a.needs_any = {Capability::sequence, Capability::pairs};
    a.files = {{"patch_resid.csv"}, {"patch_heads.csv"}, {"patch_paths.csv"}};
    a.figures = {"patch"};
    a.report = {{"Patching: each head's output restored", "patch_heads.csv"},
                {"Patching: paths sender -> receiver", "patch_paths.csv"}};
    a.options = {AnalysisOption::seed};
    a.source = "Wang et al. 2022, section 3 (activation and path patching, the normalised metric); "
               "Goldowsky-Dill et al. 2023 (path patching)";
    a.run = run;
    return a;
  }();
  return k;
}
}  // namespace

}  // namespace grokking
