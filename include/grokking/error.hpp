// Errors that reach the user as one line and an exit code.
#pragma once
#include <stdexcept>
#include <string>

namespace grokking {

// Exit codes shared by every subcommand.
enum ExitCode : int {
  kExitOk = 0,
  kExitFailure = 1,    // a run or analysis failed (I/O, diverged loss, corrupt checkpoint)
  kExitUsage = 2,      // bad command line or config: nothing was written
  kExitIncomplete = 3, // a sweep ended with runs that another process still holds (not in its sweep.csv)
  kExitSigint = 130,   // interrupted by Ctrl-C after a checkpoint
  kExitSigterm = 143,  // interrupted by SIGTERM after a checkpoint
};

// Bad input from the user (config, --set, arguments): exit 2, nothing written.
struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// A failure while running: exit 1.
struct RunError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

}  // namespace grokking
