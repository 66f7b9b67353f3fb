// The analysis subcommands, one per registered analysis (analyses.hpp), and `analyse`.
#include <memory>

#include "commands.hpp"
#include "grokking/analyses.hpp"
#include "grokking/text.hpp"

namespace grokking::cli {

namespace {
const char* path_help(AnalysisKind::Scope scope) {
  switch (scope) {
    case AnalysisKind::Scope::checkpoint: return "Checkpoint file, or run directory (its latest checkpoint)";
    case AnalysisKind::Scope::run: return "Run directory";
    case AnalysisKind::Scope::run_or_sweep: return "Run directory, or sweep directory";
  }
  return "";
}

Command analysis_command(CLI::App& app, const AnalysisKind& kind) {
  auto opts = std::make_shared<AnalysisOptions>();
  auto list = std::make_shared<std::string>();
  auto* sub = app.add_subcommand(kind.name, kind.doc);
  sub->add_option("path", opts->path, path_help(kind.scope))->required();
  sub->add_flag("--json", opts->json, "Machine-readable output on stdout");
  const char* list_flag = nullptr;
  for (auto o : kind.options) switch (o) {
      case AnalysisOption::freqs:
        list_flag = "--freqs";
        sub->add_option("--freqs", *list,
                        kind.scope == AnalysisKind::Scope::run
                            ? "Key frequencies to use, e.g. 14,35,41 (default: those of the final checkpoint; a group "
                              "run: irrep numbers)"
                            : "Frequencies to ablate, e.g. 14,35,41 (default: the key frequencies)");
        break;
      case AnalysisOption::irreps:
        list_flag = "--irreps";
        sub->add_option("--irreps", *list, "Irreps to treat as key, by their number in the table, e.g. 2,7 (default: the rule)");
        break;
      case AnalysisOption::draws:
        sub->add_option("--draws", opts->draws, "Random control draws")->check(CLI::Range(1, 1000));
        break;
      case AnalysisOption::seed: sub->add_option("--seed", opts->seed, "Seed of the random draws (controls, corrupted inputs)"); break;
      case AnalysisOption::pairs:
        sub->add_option("--pairs", opts->pairs_file,
                        "A file of clean and corrupted pairs, a line each: a, b, a', b' (the run directory's files are "
                        "not written)");
        break;
      case AnalysisOption::from_csv:
        sub->add_flag("--from-csv", opts->from_csv,
                      "Find the phases again from the run's progress.csv, without measuring the checkpoints");
        break;
    }
  const auto* k = &kind;
  return {sub, [opts, list, list_flag, k] {
            if (list_flag && !list->empty()) opts->freqs = parse_int_list(*list, list_flag);
            return k->run(*opts);
          }};
}
}  // namespace

std::vector<Command> analysis_commands(CLI::App& app) {
  std::vector<Command> out;
  for (auto* k : analysis_kinds()) out.push_back(analysis_command(app, *k));
  return out;
}

Command analyse_command(CLI::App& app) {
  auto opts = std::make_shared<AnalyseOptions>();
  auto* sub = app.add_subcommand(
      "analyse", "Every analysis that applies to a run (or to each finished run of a sweep, then the sweep): what is "
                 "missing or older than the newest checkpoint");
  sub->add_option("path", opts->path, "Run directory, or sweep directory");
  sub->add_flag("--list", opts->list, "List every analysis: what it reads, the files it writes, the figures plot draws");
  sub->add_flag("--force", opts->force, "Redo every analysis that applies, up to date or not");
  sub->add_flag("-n,--dry-run", opts->dry_run, "Say what would run, run nothing");
  sub->add_flag("-q,--quiet", opts->quiet, "No progress lines");
  return {sub, [opts] { return run_analyse_command(*opts); }};
}

}  // namespace grokking::cli
