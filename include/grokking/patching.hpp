// Activation and path patching (Wang et al. 2022, "Interpretability in the wild", section 3;
// Goldowsky-Dill et al. 2023), measured by the task's metric of the clean behaviour.
// Activation patching: the model runs on the corrupted inputs with one named activation taken
// from its clean run; the share restored is (patched - corrupted) / (clean - corrupted): 1, all
// of it; 0, none. Path patching, as Wang et al. do it: the model runs on the clean inputs with
// one edge carrying the sender head's corrupted output (to one receiver only: a later head's
// query, key or value input, or the logits directly); the share of the effect that edge carries
// is (clean - patched) / (clean - corrupted).
#pragma once
#include <torch/torch.h>

#include <string>
#include <vector>

#include "grokking/model.hpp"
#include "grokking/task.hpp"

namespace grokking {

struct PatchReport {
  std::string metric_name, corruption;
  double clean = 0, corrupted = 0;  // the metric on each input set, unpatched
  int64_t layers = 0, heads = 0, positions = 0;
  // Each block's residual stream input (blocks.L.hook_resid_pre) at one position, restored:
  // [layer][position], normalised.
  std::vector<std::vector<double>> resid;
  // Each head's output (blocks.L.attn.hook_z, every position) restored: [layer][head].
  std::vector<std::vector<double>> head_out;
  // Edges sender -> receiver: receiver "L1H0.k" (a later head's key input), ".q", ".v", or
  // "logits"; `recovered` is the share of the effect the edge carries.
  struct Edge {
    int64_t layer = 0, head = 0;
    std::string receiver;
    double recovered = 0;
  };
  std::vector<Edge> paths;  // empty where the model has LayerNorm (the paths would not add up)
};

// Patches `model` (one transformer) on the task's clean and corrupted sets. Path patching needs
// a model without LayerNorm; elsewhere `paths` stays empty.
PatchReport patch(const Model& model, const PatchSets& sets);
// An edge: a sender head's output into a receiver: input "q", "k" or "v" of head
// (receiver_layer, receiver_head), receiver_layer > sender_layer; or "logits" (the direct path).
struct PathEdge {
  int64_t sender_layer = 0, sender_head = 0;
  std::string input;
  int64_t receiver_layer = 0, receiver_head = 0;
};
// The share of the effect that a set of edges carries together (a circuit's edges at once).
double patch_paths(const Model& model, const PatchSets& sets, const std::vector<PathEdge>& edges);
// One edge's share of the effect (what `patch` fills `paths` with): the sender's corrupted
// output reaches only the receiver ("q", "k" or "v" of head rh in layer rl > sl; or "logits").
double patch_path(const Model& model, const PatchSets& sets, int64_t sl, int64_t sh, const std::string& input,
                  int64_t rl, int64_t rh);

}  // namespace grokking
