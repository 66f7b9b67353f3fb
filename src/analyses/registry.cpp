// The analyses, in documentation order, and what is read off their table: applicability, the
// run directory's files, `grokking analyse`. A new analysis: a file in this folder defining
// `const AnalysisKind& NAME_analysis()`, and its name in this list. Torch-free.
#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <cstdio>

#include <spdlog/spdlog.h>

#include "grokking/analyses.hpp"
#include "grokking/config.hpp"
#include "grokking/error.hpp"
#include "grokking/progress_note.hpp"
#include "grokking/rundir.hpp"
#include "grokking/text.hpp"
#include "grokking/train.hpp"

#define GROKKING_ANALYSES(X) X(fourier) X(ablate) X(progress) X(irreps) X(cosets) X(heads) X(patch) X(superposition)

namespace grokking {

#define GROKKING_DECLARE(name) const AnalysisKind& name##_analysis();
GROKKING_ANALYSES(GROKKING_DECLARE)
#undef GROKKING_DECLARE

const std::vector<const AnalysisKind*>& analysis_kinds() {
#define GROKKING_ENTRY(name) &name##_analysis(),
  static const std::vector<const AnalysisKind*> kinds = {GROKKING_ANALYSES(GROKKING_ENTRY)};
#undef GROKKING_ENTRY
  return kinds;
}

bool AnalysisKind::applies(Capabilities c) const {
  for (auto n : needs)
    if (!c.has(n)) return false;
  if (needs_any.empty()) return true;
  for (auto n : needs_any)
    if (c.has(n)) return true;
  return false;
}

std::vector<std::string> AnalysisKind::files_for(Capabilities c) const {
  std::vector<std::string> out;
  for (auto& f : files)
    if ((c.bits & f.only_with) == f.only_with && (c.bits & f.unless_with) == 0 && (!f.any_with || (c.bits & f.any_with)))
      out.push_back(f.name);
  return out;
}

std::string AnalysisKind::missing(Capabilities c) const {
  std::string out;
  for (auto n : needs)
    if (!c.has(n)) out += (out.empty() ? "" : ", ") + std::string(capability_name(n)) + " (" + capability_doc(n) + ")";
  bool any = needs_any.empty();
  for (auto n : needs_any) any = any || c.has(n);
  if (!any) {
    std::string alts;
    for (auto n : needs_any) alts += (alts.empty() ? "" : " or ") + std::string(capability_name(n));
    out += (out.empty() ? "" : ", ") + alts;
  }
  return out;
}

const AnalysisKind& find_analysis(const std::string& name) {
  for (auto* k : analysis_kinds())
    if (k->name == name) return *k;
  throw UsageError("no analysis named " + short_text(name) + " (" + analysis_names(analysis_kinds()) + ")");
}

std::vector<const AnalysisKind*> analyses_for(const Config& cfg) {
  const Capabilities c = capabilities_of(cfg);
  std::vector<const AnalysisKind*> out;
  for (auto* k : analysis_kinds())
    if (k->applies(c)) out.push_back(k);
  return out;
}

std::string analysis_names(const std::vector<const AnalysisKind*>& kinds) {
  std::string out;
  for (auto* k : kinds) out += (out.empty() ? "" : ", ") + k->name;
  return out.empty() ? "none" : out;
}

void require_applies(const AnalysisKind& kind, const Config& cfg, const std::string& where) {
  const Capabilities c = capabilities_of(cfg);
  if (kind.applies(c)) return;
  const auto others = analyses_for(cfg);
  throw UsageError(where + ": " + kind.name + " needs " + kind.missing(c) + ", which this run lacks (task " +
                   cfg.task.kind + ", model " + cfg.model.kind + ": " + c.names() + "); " +
                   (others.empty() ? std::string("no analysis reads it") : "it is read by " + analysis_names(others)));
}

const std::vector<std::string>& training_entries() {
  // group.json: the group task's elements, written when a run starts.
  static const std::vector<std::string> e = {"config.json", "metrics.csv", "summary.json", "train.log", "checkpoints",
                                             "group.json"};
  return e;
}

const std::vector<std::string>& plot_entries() {
  static const std::vector<std::string> e = {"plots", "report.html"};
  return e;
}

// ---------------------------------------------------------------------------------------------
// grokking analyse

namespace {

// Modification time in nanoseconds (0 when missing).
int64_t mtime_ns(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return 0;
  return int64_t(st.st_mtim.tv_sec) * 1000000000 + int64_t(st.st_mtim.tv_nsec);
}

// The newest checkpoint's time: what an analysis file must not be older than.
int64_t newest_checkpoint_ns(const std::string& run_dir) {
  int64_t newest = 0;
  for (auto& [epoch, path] : list_checkpoints(run_dir)) newest = std::max(newest, mtime_ns(path));
  return newest;
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

std::vector<const AnalysisKind*> stale_analyses(const std::string& run_dir, const Config& cfg) {
  const Capabilities c = capabilities_of(cfg);
  const int64_t newest = newest_checkpoint_ns(run_dir);
  std::vector<const AnalysisKind*> out;
  for (auto* k : analysis_kinds()) {
    if (!k->applies(c)) continue;
    for (auto& f : k->files_for(c)) {
      const int64_t t = mtime_ns(run_dir + "/" + f);
      if (t == 0 || t < newest) {
        out.push_back(k);
        break;
      }
    }
  }
  return out;
}

std::vector<const AnalysisKind*> update_analyses(const std::string& run_dir, bool force, bool quiet) {
  const Config cfg = load_run_config(run_dir);
  if (list_checkpoints(run_dir).empty()) throw UsageError(run_dir + ": no checkpoints to analyse yet");
  const auto todo = force ? analyses_for(cfg) : stale_analyses(run_dir, cfg);
  for (auto* k : todo) {
    const auto t0 = std::chrono::steady_clock::now();
    AnalysisOptions o;
    o.path = run_dir;
    o.quiet = true;
    k->run(o);
    if (!quiet) spdlog::info("{}: {} ({:.1f}s)", run_dir, k->name, seconds_since(t0));
  }
  return todo;
}

// The registry as a table: what each analysis reads, the files it writes, the figures plot draws.
void print_registry() {
  for (auto* k : analysis_kinds()) {
    std::string needs;
    for (auto n : k->needs) needs += (needs.empty() ? "" : " + ") + std::string(capability_name(n));
    if (!k->needs_any.empty()) {
      std::string any;
      for (auto n : k->needs_any) any += (any.empty() ? "" : " | ") + std::string(capability_name(n));
      needs += needs.empty() ? any : " + (" + any + ")";
    }
    std::string files;
    for (auto& f : k->files) {
      std::string cond;
      for (auto c : all_capabilities()) {
        if (f.only_with & uint32_t(c)) cond += (cond.empty() ? "" : ", ") + std::string("with ") + capability_name(c);
        if (f.unless_with & uint32_t(c)) cond += (cond.empty() ? "" : ", ") + std::string("not with ") + capability_name(c);
      }
      std::string any;
      for (auto c : all_capabilities())
        if (f.any_with & uint32_t(c)) any += (any.empty() ? "" : " or ") + std::string(capability_name(c));
      if (!any.empty()) cond += (cond.empty() ? "" : ", ") + std::string("with ") + any;
      files += (files.empty() ? "" : ", ") + f.name + (cond.empty() ? "" : " (" + cond + ")");
    }
    std::string figures;
    for (auto& f : k->figures) figures += (figures.empty() ? "" : ", ") + f;
    std::printf("%s\n  reads   %s\n  writes  %s\n", k->name.c_str(), needs.c_str(), files.c_str());
    if (!figures.empty()) std::printf("  draws   %s\n", figures.c_str());
  }
}

std::vector<const AnalysisKind*> update_sweep_analyses(const std::string& dir) {
  const auto plan = read_json_file(dir + "/plan.json");
  std::vector<const AnalysisKind*> kinds;
  for (auto& run : plan.at("runs")) {
    const std::string run_dir = dir + "/runs/" + run.at("name").get<std::string>();
    if (!exists(summary_path(run_dir)) || !finished(read_summary(run_dir).status)) continue;
    for (auto* k : analyses_for(load_run_config(run_dir)))
      if (k->scope == AnalysisKind::Scope::run_or_sweep && std::find(kinds.begin(), kinds.end(), k) == kinds.end())
        kinds.push_back(k);
  }
  for (auto* k : kinds) {
    AnalysisOptions o;
    o.path = dir;
    o.quiet = true;
    k->run(o);
  }
  return kinds;
}

int run_analyse_command(const AnalyseOptions& opts) {
  if (opts.list) return print_registry(), kExitOk;
  set_progress_notes(!opts.quiet);
  const std::string& dir = opts.path;
  if (dir.empty()) throw UsageError("analyse: a run directory or a sweep directory (or --list)");
  if (!is_dir(dir)) throw UsageError(dir + ": analyse takes a run directory or a sweep directory");
  auto describe = [&](const std::string& run_dir, const Config& cfg) {
    const auto todo = opts.force ? analyses_for(cfg) : stale_analyses(run_dir, cfg);
    std::printf("%s: %s\n", run_dir.c_str(), todo.empty() ? "up to date" : ("would run " + analysis_names(todo)).c_str());
  };
  if (!exists(dir + "/plan.json")) {
    const Config cfg = load_run_config(dir);
    if (analyses_for(cfg).empty())
      throw UsageError(dir + ": no analysis reads this run (task " + cfg.task.kind + ", model " + cfg.model.kind + ")");
    if (opts.dry_run) return describe(dir, cfg), kExitOk;
    const auto done = update_analyses(dir, opts.force, opts.quiet);
    if (!opts.quiet && done.empty()) spdlog::info("{}: up to date ({})", dir, analysis_names(analyses_for(cfg)));
    return kExitOk;
  }
  // A sweep: its finished runs one by one (a failure is reported and the rest go on), then the
  // analyses that read the sweep as a whole.
  const auto plan = read_json_file(dir + "/plan.json");
  int failures = 0, analysed = 0;
  std::vector<const AnalysisKind*> sweep_wide;
  for (auto& run : plan.at("runs")) {
    const std::string run_dir = dir + "/runs/" + run.at("name").get<std::string>();
    if (!exists(summary_path(run_dir)) || !finished(read_summary(run_dir).status)) continue;
    try {
      const Config cfg = load_run_config(run_dir);
      for (auto* k : analyses_for(cfg))
        if (k->scope == AnalysisKind::Scope::run_or_sweep &&
            std::find(sweep_wide.begin(), sweep_wide.end(), k) == sweep_wide.end())
          sweep_wide.push_back(k);
      if (opts.dry_run) {
        describe(run_dir, cfg);
      } else {
        update_analyses(run_dir, opts.force, opts.quiet);
      }
      ++analysed;
    } catch (const std::exception& e) {
      spdlog::error("{}: {}", run_dir, e.what());
      ++failures;
    }
  }
  if (analysed == 0 && failures == 0) throw UsageError(dir + ": no finished runs to analyse yet");
  for (auto* k : sweep_wide) {
    if (opts.dry_run) {
      std::printf("%s: would run %s over the sweep\n", dir.c_str(), k->name.c_str());
      continue;
    }
    const auto t0 = std::chrono::steady_clock::now();
    AnalysisOptions o;
    o.path = dir;
    o.quiet = true;
    k->run(o);
    if (!opts.quiet) spdlog::info("{}: {} over the sweep ({:.1f}s)", dir, k->name, seconds_since(t0));
  }
  if (failures) {
    spdlog::error("{}: {} of {} runs failed to analyse", dir, failures, failures + analysed);
    return kExitFailure;
  }
  return kExitOk;
}

}  // namespace grokking
