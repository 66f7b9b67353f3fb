// grokking: a thin command line over the library. Parse, dispatch to the one subcommand given,
// turn every exception into one line on stderr and an exit code.
#include <CLI/CLI.hpp>

#include <csignal>
#include <cstdio>
#include <vector>
#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include "cli/commands.hpp"
#include "grokking/commands.hpp"
#include "grokking/error.hpp"

using namespace grokking;

int main(int argc, char** argv) {
  std::signal(SIGXFSZ, SIG_IGN);  // a file-size limit becomes a write error we can report
#if defined(__GLIBC__)
  // Keep tensors of up to 32 MiB on the heap: glibc otherwise maps and unmaps each one, and the
  // page faults cost more than the arithmetic (progress over 251 P=113 checkpoints: 83 s -> 50 s).
  mallopt(M_MMAP_THRESHOLD, 32 * 1024 * 1024);
  mallopt(M_TRIM_THRESHOLD, 256 * 1024 * 1024);
#endif
  init_cli_logging();

  CLI::App app{"grokking: train and analyse the small models of the grokking papers (and induction heads, superposition)"};
  app.set_version_flag("--version", std::string("grokking ") + GROKKING_VERSION);
  app.require_subcommand(1);
  // Training and configs, then every registered analysis, then the rest.
  std::vector<cli::Command> commands = {cli::train_command(app), cli::config_command(app), cli::analyse_command(app)};
  for (auto& c : cli::analysis_commands(app)) commands.push_back(c);
  for (auto* make : {cli::bench_command, cli::sweep_command, cli::compare_command, cli::plot_command})
    commands.push_back(make(app));

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "error: %s (see grokking --help)\n", e.what());
    return kExitUsage;
  }

  try {
    for (auto& command : commands)
      if (command.app->parsed()) return command.run();
  } catch (const UsageError& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return kExitUsage;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", describe_exception(e).c_str());
    return kExitFailure;
  }
  return kExitOk;
}
