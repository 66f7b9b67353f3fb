// Limits on what outside input may ask for, checked before anything is read in full, allocated
// or created. Torch-free.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace grokking {

// nlohmann's DOM and our own walks over it recurse once per level: bound the nesting so that a
// hostile file is an error, not a stack overflow. Our formats nest 3 levels deep.
constexpr int kMaxJsonDepth = 64;
// Configs and sweep files are a few hundred bytes; a file this large is the wrong file (or
// /dev/zero), and it may come through a pipe, whose size is not known beforehand.
constexpr size_t kMaxConfigBytes = size_t(16) << 20;
// --seeds trains side by side in one process: each seed is a model replica, a run directory
// and an open lock file.
constexpr size_t kMaxSeeds = 256;
// A sweep is one directory and one training process per run.
constexpr size_t kMaxSweepRuns = 10000;
// Any other number list (--freqs): frequencies are at most P/2 <= 2048.
constexpr size_t kMaxListValues = 4096;

// UsageError("ORIGIN: /: JSON nested deeper than 64 levels ...") when `text` nests deeper than
// kMaxJsonDepth; brackets inside strings do not count. Linear, no allocation.
void check_json_depth(const std::string& text, const std::string& origin);
// The same, as a RunError, for files that grokking itself wrote (run and sweep directories).
void check_json_depth_run(const std::string& text, const std::string& origin);

// --seeds: at most kMaxSeeds, each a valid seed (>= 0), none twice (two runs would share a
// directory). UsageError naming --seeds, the limit and the reason.
void check_seeds(const std::vector<int64_t>& seeds);

struct Config;
struct TaskShape;
// Examples an evaluation chunk holds: at most 16384; for a task scored at its last position
// (pairs) about 2^21 logits (at least 256); for sequences about 2^18 / T logits or attention
// weights a head (T x max(classes, T) a sequence; at least 16): larger temporaries would be mapped
// afresh from the system for every chunk (glibc keeps blocks up to 32 MiB on its heap), whose page
// faults cost more than the arithmetic (at large P; for the minimal induction config's 512
// evaluation sequences at once, about 160 MB of fresh pages an evaluation). The same for every
// replica count, so that runs packed side by side evaluate as each alone does.
int64_t evaluation_chunk(const TaskShape& shape);
// The memory `replicas` models of this config need side by side (weights, gradients, Adam's
// moments and the interventions' state; a training step's and an evaluation's activations), in
// bytes: an estimate, before anything is allocated.
double estimate_memory_bytes(const Config& c, int64_t replicas);
// UsageError("ORIGIN: ... needs about X GB ..., more than the Y GB this process may use") when
// that estimate exceeds what the process may allocate: its address-space limit (ulimit -v) less
// what it already maps, or the machine's memory.
void check_memory(const Config& c, int64_t replicas, const std::string& origin);

}  // namespace grokking
