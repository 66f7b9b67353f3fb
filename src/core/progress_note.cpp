#include "grokking/progress_note.hpp"

#include <spdlog/spdlog.h>

#include <atomic>
#include <utility>

#include "grokking/rundir.hpp"  // format_duration

namespace grokking {

namespace {
std::atomic<bool> g_notes{true};
std::atomic<bool> g_run_lines{false};
}  // namespace

void set_progress_notes(bool on) { g_notes = on; }
void set_run_lines(bool on) { g_run_lines = on; }
bool run_lines() { return g_run_lines; }
bool progress_notes() { return g_notes; }

ProgressNote::ProgressNote(std::string what, size_t total, double every_seconds)
    : what_(std::move(what)), total_(total), every_(every_seconds), start_(Clock::now()), last_(start_) {}

void ProgressNote::tick() {
  if (!g_notes) return;
  std::lock_guard<std::mutex> lock(mutex_);
  ++done_;
  const auto now = Clock::now();
  if (done_ >= total_ || std::chrono::duration<double>(now - last_).count() < every_) return;
  last_ = now;
  const double spent = std::chrono::duration<double>(now - start_).count();
  const double left = spent / double(done_) * double(total_ - done_);
  spdlog::info("{}: {}/{}, {} left", what_, done_, total_, format_duration(left));
}

namespace {
thread_local ProgressScope* g_scope = nullptr;
}  // namespace

ProgressScope::ProgressScope(std::string what, size_t total) : note_(std::move(what), total), outer_(g_scope) {
  g_scope = this;
}
ProgressScope::~ProgressScope() { g_scope = outer_; }
ProgressNote* ProgressScope::active() { return g_scope ? &g_scope->note_ : nullptr; }

}  // namespace grokking
