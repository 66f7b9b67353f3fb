#include "grokking/limits.hpp"

#include <algorithm>
#include <set>

#include <sys/resource.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>

#include "grokking/config.hpp"
#include "grokking/error.hpp"
#include "grokking/kinds.hpp"
#include "grokking/text.hpp"

namespace grokking {

namespace {
// The first place where `text` nests deeper than kMaxJsonDepth, as "line L, column C"; "" if none.
std::string too_deep_at(const std::string& text) {
  int depth = 0;
  bool in_string = false, escaped = false;
  size_t line = 1, column = 0;
  for (char ch : text) {
    ++column;
    if (ch == '\n') line++, column = 0;
    if (in_string) {
      if (escaped) escaped = false;
      else if (ch == '\\') escaped = true;
      else if (ch == '"') in_string = false;
    } else if (ch == '"') {
      in_string = true;
    } else if (ch == '[' || ch == '{') {
      if (++depth > kMaxJsonDepth) return "line " + std::to_string(line) + ", column " + std::to_string(column);
    } else if (ch == ']' || ch == '}') {
      depth = std::max(0, depth - 1);  // unbalanced text is the parser's to report
    }
  }
  return "";
}

std::string depth_message(const std::string& origin, const std::string& where) {
  return origin + ": /: JSON nested deeper than " + std::to_string(kMaxJsonDepth) + " levels at " + where +
         " (the limit keeps the parser's stack bounded)";
}
}  // namespace

void check_json_depth(const std::string& text, const std::string& origin) {
  if (auto where = too_deep_at(text); !where.empty()) throw UsageError(depth_message(origin, where));
}

void check_json_depth_run(const std::string& text, const std::string& origin) {
  if (auto where = too_deep_at(text); !where.empty()) throw RunError(depth_message(origin, where));
}

void check_seeds(const std::vector<int64_t>& seeds) {
  if (seeds.size() > kMaxSeeds)
    throw UsageError("--seeds: " + std::to_string(seeds.size()) + " seeds, at most " + std::to_string(kMaxSeeds) +
                     " (each is a model replica, a run directory and an open file trained in one process)");
  std::set<int64_t> seen;
  for (auto s : seeds) {
    if (s < 0) throw UsageError("--seeds: seeds are integers >= 0 (got " + std::to_string(s) + ")");
    if (!seen.insert(s).second)
      throw UsageError("--seeds: seed " + std::to_string(s) + " is listed twice (both would train into seed=" +
                       std::to_string(s) + ")");
  }
}

int64_t evaluation_chunk(const TaskShape& shape) {
  constexpr int64_t most = 16384;
  if (shape.target == TaskShape::Target::sequence && shape.seq_len > 0 && shape.classes > 0)
    return std::clamp<int64_t>((int64_t(1) << 18) / (shape.seq_len * std::max(shape.classes, shape.seq_len)), 16, most);
  if (shape.target != TaskShape::Target::last || shape.classes <= 0) return most;
  return std::clamp<int64_t>((int64_t(1) << 21) / shape.classes, 256, most);
}

double estimate_memory_bytes(const Config& c, int64_t replicas) {
  const TaskShape shape = task_shape(c.task);
  const ModelKind& model = find_model_kind(c.model.kind);
  const double params = model.n_params(c, shape), act = model.activation_floats(c, shape);
  // Weights, gradients, two Adam moments and a few temporaries of the update; Grokfast's window.
  double per_param = 6;
  if (c.optim.grokfast == "ma") per_param += double(c.optim.grokfast_window);
  if (c.optim.grokfast == "ema") per_param += 1;
  const double batch = shape.fresh_batches ? double(c.train.batch_size)
                                           : double(c.train.batch_size > 0 ? c.train.batch_size : shape.train_examples);
  // A step keeps its activations for the backward (about three times the forward's); an
  // evaluation runs in chunks.
  const double eval = double(std::min<int64_t>(shape.eval_examples, evaluation_chunk(shape)));
  return 4.0 * double(replicas) * (params * per_param + act * (3 * batch + eval));
}

namespace {
// What this process may still allocate: its address-space limit less what it maps now, or the
// machine's memory when there is no limit.
double allocatable_bytes(std::string& what) {
  const double page = double(::sysconf(_SC_PAGESIZE));
  const double physical = double(::sysconf(_SC_PHYS_PAGES)) * page;
  what = "the machine's " + format_number(physical / 1e9, "%.3g") + " GB of memory";
  double budget = physical;
  rlimit lim{};
  if (::getrlimit(RLIMIT_AS, &lim) == 0 && lim.rlim_cur != RLIM_INFINITY) {
    double mapped = 0;
    std::ifstream statm("/proc/self/statm");
    double pages = 0;
    if (statm >> pages) mapped = pages * page;
    const double left = double(lim.rlim_cur) - mapped;
    if (left < budget) {
      budget = left;
      what = "the " + format_number(std::max(left, 0.0) / 1e9, "%.3g") + " GB this process may still map (ulimit -v " +
             std::to_string(lim.rlim_cur / 1024) + ")";
    }
  }
  return budget;
}
}  // namespace

void check_memory(const Config& c, int64_t replicas, const std::string& origin) {
  const double need = estimate_memory_bytes(c, replicas);
  std::string what;
  const double budget = allocatable_bytes(what);
  if (need > budget)
    throw UsageError(origin + ": " + std::to_string(replicas) + (replicas == 1 ? " model needs" : " models side by side need") +
                     " about " + format_number(need / 1e9, "%.3g") + " GB, more than " + what +
                     (replicas > 1 ? "; use fewer" : ""));
}

}  // namespace grokking
