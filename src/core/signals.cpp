#include "grokking/signals.hpp"

#include <signal.h>
#include <unistd.h>

#include <atomic>

namespace grokking {

namespace {
std::atomic<int> g_signal{0};
struct sigaction g_old_int {}, g_old_term {};

extern "C" void on_signal(int sig) {
  if (g_signal.load() != 0) ::_exit(128 + sig);  // a second Ctrl-C: stop now (checkpoints are atomic)
  g_signal.store(sig);
}
}  // namespace

SignalScope::SignalScope() {
  g_signal.store(0);
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, &g_old_int);
  sigaction(SIGTERM, &sa, &g_old_term);
}

SignalScope::~SignalScope() {
  sigaction(SIGINT, &g_old_int, nullptr);
  sigaction(SIGTERM, &g_old_term, nullptr);
}

int SignalScope::received() const { return g_signal.load(); }

}  // namespace grokking
