// Checkpoints: a pickled dict that Python's torch.load reads (weights_only=False), carrying a
// format version and a checksum over its contents.
#pragma once
#include <torch/torch.h>

#include <string>
#include <utility>
#include <vector>

#include "grokking/config.hpp"
#include "grokking/model.hpp"
#include "grokking/optim.hpp"

namespace grokking {

constexpr int64_t kCheckpointVersion = 1;

struct Checkpoint {
  std::string path;
  int64_t epoch = 0;
  Config config;
  std::vector<std::pair<std::string, torch::Tensor>> weights;  // TransformerLens names, CPU float32
  bool has_optimizer = false;
  torch::Tensor exp_avg, exp_avg_sq;  // flat, in parameter order
  int64_t optimizer_step = 0;
  std::vector<std::pair<std::string, torch::Tensor>> optimizer_extra;  // the interventions' state (OptimState::extra)
};

// Writes atomically. `optimizer` null: weights only (the epoch_N.pt files). One model, not replicas.
void save_checkpoint(const std::string& path, const Model& model, const OptimState* optimizer, int64_t epoch);
// Verifies format, version, checksum and shapes. RunError("PATH: ...") otherwise.
Checkpoint load_checkpoint(const std::string& path);
// A checkpoint file, or a run directory (its latest epoch checkpoint).
std::string resolve_checkpoint(const std::string& path_or_run_dir);
// FNV-1a of the weights (names, shapes, bytes): equal checksums, equal models.
std::string weights_checksum(const Model& model);
// A CPU model holding the checkpoint's weights.
Model model_from_checkpoint(const Checkpoint& ck);

}  // namespace grokking
