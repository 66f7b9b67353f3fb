#include <csignal>
#include <memory>

#include "commands.hpp"
#include "grokking/error.hpp"
#include "grokking/limits.hpp"
#include "grokking/progress_note.hpp"
#include "grokking/text.hpp"
#include "grokking/train.hpp"

namespace grokking::cli {

Command train_command(CLI::App& app) {
  auto opts = std::make_shared<TrainOptions>();
  auto seeds = std::make_shared<std::string>();
  auto* sub = app.add_subcommand("train", "Train a model from a JSON config into a run directory");
  sub->add_option("config", opts->config_path, "Experiment config (a JSON file; one holding {} gives every default)");
  sub->add_option("--set", opts->sets, "Override a key: section.key=value (repeatable)");
  sub->add_option("--out", opts->out_dir, "Run directory (overrides output.dir)");
  sub->add_option("--resume", opts->resume_dir, "Continue the run in this directory from its latest checkpoint");
  sub->add_flag("--force", opts->force, "Start over in a non-empty run directory");
  sub->add_flag("-q,--quiet", opts->quiet, "Only warnings and errors on stderr");
  auto lines = std::make_shared<bool>(false);
  sub->add_flag("--run-lines", *lines,
                "With -q: still one line per run on stderr at each log interval and when it ends (what sweep's "
                "training processes print)");
  sub->add_option("--seeds", *seeds, "Train these seeds side by side (e.g. 0-7) into <dir>/seed=K");
  auto packed = std::make_shared<std::vector<std::string>>();
  sub->add_option("--packed", *packed,
                  "Train these fresh run directories (each with its config.json) side by side; sweep --pack uses it")
      ->excludes("config")
      ->excludes("--resume")
      ->excludes("--seeds")
      ->excludes("--out")
      ->excludes("--force");
  auto slots = std::make_shared<int64_t>(0);
  sub->add_option("--slots", *slots,
                  "With --packed: train at most N side by side; as a run ends, the next directory takes its place")
      ->check(CLI::Range(int64_t(1), int64_t(kMaxSeeds)))
      ->needs("--packed");
  return {sub, [opts, seeds, packed, slots, lines] {
            set_run_lines(*lines);
            set_progress_notes(!opts->quiet);
            if (!packed->empty()) {
              if (!opts->sets.empty()) throw UsageError("--packed: the runs' config.json files say everything; no --set");
              auto reps = run_packed(*packed, opts->quiet, *slots);
              for (auto& rep : reps)
                if (rep.status == RunStatus::interrupted) return rep.signal == SIGTERM ? int(kExitSigterm) : int(kExitSigint);
              return int(kExitOk);
            }
            if (!seeds->empty()) {
              opts->seeds = parse_int_list(*seeds, "--seeds", kMaxSeeds);
              check_seeds(opts->seeds);  // before the run directories are created
            }
            auto rep = run_train(*opts);
            if (rep.status == RunStatus::interrupted) return rep.signal == SIGTERM ? int(kExitSigterm) : int(kExitSigint);
            return int(kExitOk);
          }};
}

}  // namespace grokking::cli
