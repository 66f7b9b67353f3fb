// A line on stderr every few seconds while long work goes through many items (checkpoints,
// runs): "what: 12/251, 40 s left". Torch-free; thread-safe; nothing at all when notes are off
// (-q) or when the work ends before the first line is due.
#pragma once
#include <chrono>
#include <cstddef>
#include <mutex>
#include <string>

namespace grokking {

// Off: no ProgressNote prints (a command's -q). On by default.
void set_progress_notes(bool on);
bool progress_notes();

// Training quiet (-q) but for one line per run on stderr at each log interval and one when it
// ends ("NAME: epoch 1000/10000 | ...", "NAME: early stop after ..."): what a sweep's
// training children print, so that a packed sweep says where each run is. Off by default.
void set_run_lines(bool on);
bool run_lines();

class ProgressNote {
 public:
  ProgressNote(std::string what, size_t total, double every_seconds = 5);
  // One item done; prints when the last line is `every_seconds` old.
  void tick();

 private:
  using Clock = std::chrono::steady_clock;
  std::string what_;
  size_t total_, done_ = 0;
  double every_;
  Clock::time_point start_, last_;
  std::mutex mutex_;
};

// Work made of many passes (an analysis that runs a model over every pair a dozen times): while
// one is alive on this thread, each pass ticks its note instead of noting itself, so that the
// lines say where the whole work is ("irreps, 15 passes over 518400 pairs: 120/960, 5m left").
class ProgressScope {
 public:
  ProgressScope(std::string what, size_t total);
  ~ProgressScope();
  ProgressScope(const ProgressScope&) = delete;
  ProgressScope& operator=(const ProgressScope&) = delete;
  // The innermost live scope's note on this thread, or nullptr.
  static ProgressNote* active();

 private:
  ProgressNote note_;
  ProgressScope* outer_;
};

}  // namespace grokking
