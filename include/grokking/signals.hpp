// Ctrl-C and SIGTERM during a training loop: recorded, so the loop can checkpoint and stop.
#pragma once

namespace grokking {

// Installs SIGINT/SIGTERM handlers for its lifetime. The first signal is recorded for the loop
// to see; a second one ends the process at once (checkpoints are written atomically).
class SignalScope {
 public:
  SignalScope();
  ~SignalScope();
  SignalScope(const SignalScope&) = delete;
  SignalScope& operator=(const SignalScope&) = delete;
  // The signal received since the scope began, or 0.
  int received() const;
};

}  // namespace grokking
