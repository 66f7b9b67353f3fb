// The analyses, as kinds: each declares what it reads of a run by capability (kinds.hpp), the
// files it writes into the run directory, the figures `plot` draws from them and the options it
// takes. One file each in src/analyses/ (the command: load, measure, write, print) and one line
// in src/analyses/registry.cpp; the measures themselves live in src/analysis/. From this one
// table come the subcommands, `grokking analyse`, plot's choice of figures, the files --force
// removes, the hints that name what applies to a run, and the documentation's lists.
// Torch-free.
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "grokking/kinds.hpp"

namespace grokking {

struct Config;

// What an analysis subcommand was given.
struct AnalysisOptions {
  std::string path;              // checkpoint file, run directory or sweep directory (see the analysis' scope)
  bool json = false;             // machine-readable stdout
  std::vector<int64_t> freqs;    // --freqs (ablate, progress) or --irreps (irreps, from 1)
  int64_t draws = 5;             // --draws: random control draws
  uint64_t seed = 0;             // --seed: seed of the control draws
  bool quiet = false;            // write the files, print nothing
  bool from_csv = false;         // progress: the phases from the run's progress.csv, no measuring
  std::string pairs_file;        // patch: a user's clean and corrupted pairs (a, b, a', b' a line)
};

// The options an analysis may take beyond the path and --json.
enum class AnalysisOption { freqs, irreps, draws, seed, from_csv, pairs };

// A file an analysis writes into a run directory; written only with every capability of
// `only_with`, none of `unless_with` and, where given, one of `any_with` (attention.csv needs
// heads; trig_fit.csv is a cycle's that is not a group's; patch_subspace.csv a cycle's or a
// group's).
struct AnalysisFile {
  std::string name;
  uint32_t only_with = 0, unless_with = 0;  // Capability bits
  uint32_t any_with = 0;                     // and, where given, at least one of these
};

struct AnalysisKind {
  enum class Scope {
    checkpoint,    // a checkpoint file, or a run directory's latest checkpoint
    run,           // every checkpoint of a run directory
    run_or_sweep,  // a run directory, or a sweep directory's runs together
  };
  std::string name;  // the subcommand
  std::string doc;   // its help line
  Scope scope = Scope::checkpoint;
  // Every one of `needs`, and at least one of `needs_any` (when given).
  std::vector<Capability> needs, needs_any;
  std::vector<AnalysisFile> files;   // written into the run directory, relative to it
  std::vector<std::string> figures;  // plot's figures drawn from those files
  // The tables report.html shows of it: {heading, one of its files}.
  std::vector<std::pair<std::string, std::string>> report;
  std::vector<AnalysisOption> options;
  std::string source;  // where its measures come from (paper section, repository file)
  int (*run)(const AnalysisOptions&) = nullptr;

  bool applies(Capabilities c) const;
  // The files it writes for a run with these capabilities.
  std::vector<std::string> files_for(Capabilities c) const;
  // "group, pair_readout": what it needs that `c` lacks.
  std::string missing(Capabilities c) const;
};

// The registry (src/analyses/registry.cpp), in documentation order.
const std::vector<const AnalysisKind*>& analysis_kinds();
// The analysis named so; UsageError listing the names otherwise.
const AnalysisKind& find_analysis(const std::string& name);
// The analyses that apply to a config, in registry order.
std::vector<const AnalysisKind*> analyses_for(const Config& cfg);
// "fourier, ablate, progress" (or "none").
std::string analysis_names(const std::vector<const AnalysisKind*>& kinds);
// UsageError unless `kind` applies to `cfg`: "WHERE: irreps needs pairs, group, pair_readout, which
// this run lacks (task repeat, model transformer: sequence, heads); it is read by heads".
void require_applies(const AnalysisKind& kind, const Config& cfg, const std::string& where);

// The files training writes into a run directory (before any analysis), and those plot writes.
const std::vector<std::string>& training_entries();
const std::vector<std::string>& plot_entries();

// `grokking analyse RUN_DIR|SWEEP_DIR`: every analysis that applies, on what is missing or older
// than the run's newest checkpoint (all of them with force); a sweep directory: each of its
// finished runs, then the sweep-wide ones. Prints a line per analysis run unless quiet. Returns
// the exit code.
struct AnalyseOptions {
  std::string path;
  bool force = false;
  bool quiet = false;
  bool dry_run = false;  // say what would run, run nothing
  bool list = false;     // print the registry (what each analysis reads, writes and draws), no path
};
int run_analyse_command(const AnalyseOptions& opts);
// The analyses a run directory lacks (missing or stale files), in registry order.
std::vector<const AnalysisKind*> stale_analyses(const std::string& run_dir, const Config& cfg);
// Brings a run directory's analysis files up to date (what plot calls before drawing). Returns
// the analyses it ran.
std::vector<const AnalysisKind*> update_analyses(const std::string& run_dir, bool force, bool quiet);
// A sweep directory's sweep-wide analyses (scope run_or_sweep) that apply to its finished runs,
// run over the sweep; what ran.
std::vector<const AnalysisKind*> update_sweep_analyses(const std::string& sweep_dir);

}  // namespace grokking
