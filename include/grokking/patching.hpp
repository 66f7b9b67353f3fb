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
  // Activation patching: every named activation of the model (patch_sites), restored one slice
  // at a time along its axis ("position", "head", "operand", "unit"; "all": the whole of it).
  struct Site {
    std::string activation, axis;
    int64_t index = 0;
    double recovered = 0;
  };
  std::vector<Site> sites;
  // The transformer's two views of them, what the figure draws: each block's residual stream
  // input (blocks.L.hook_resid_pre) at one position, [layer][position]; each head's output
  // (blocks.L.attn.hook_z, every position), [layer][head]. Empty without attention.
  std::vector<std::vector<double>> resid;
  std::vector<std::vector<double>> head_out;
  // Edges sender -> receiver: receiver "L1H0.k" (a later head's key input), ".q", ".v", or
  // "logits"; `recovered` is the share of the effect the edge carries.
  struct Edge {
    int64_t layer = 0, head = 0;
    std::string receiver;
    double recovered = 0;
  };
  std::vector<Edge> paths;  // empty without heads, or where the model has LayerNorm (the paths would not add up)
  // Subspace patching (a cycle's or a group's runs): the corrupted operand's embedding with its
  // component in a set of frequencies' (irreps') directions taken from the clean operand's.
  // `what`: "key frequencies", "other frequencies" (as many, drawn at random; the mean of the
  // draws, low and high their range), "every frequency" (or "... irreps", "every irrep"); `freqs`
  // the units (irreps numbered from 1); `dims` the subspace's dimension.
  struct Subspace {
    std::string what;
    std::vector<int64_t> freqs;
    int64_t dims = 0, draws = 1;
    double recovered = 0, low = 0, high = 0;
  };
  std::vector<Subspace> subspaces;
};

// The named activations patching restores (those a model offered to `clean`), with the axis each is sliced along:
// a transformer's hook_embed and blocks.L.hook_resid_pre and hook_mlp_out by position, its
// heads' hook_q, hook_k, hook_v and hook_z by head; an MLP's hook_embed by operand and each
// hidden layer's hook_post whole; a toy model's hook_hidden by unit.
struct PatchSite {
  std::string activation, axis;
  int64_t dim = -1;  // the axis' dimension in the activation; -1: the whole activation
};
std::vector<PatchSite> patch_sites(const ActivationCache& clean);

// Patches `model` (one model of any kind) on the task's clean and corrupted sets. Path patching
// needs heads and no LayerNorm; elsewhere `paths` stays empty. `key_freqs`: a cycle's key
// frequencies or a group's key irreps (from 1), for subspace patching (empty: none), with
// `draws` random control sets.
PatchReport patch(const Model& model, const PatchSets& sets, const std::vector<int64_t>& key_freqs = {},
                  int64_t draws = 5, uint64_t seed = 0);
// The share restored when the corrupted run's operand embeddings (hook_embed) take the clean
// run's component in the span of these frequencies' directions of each operand's embedding (a
// group's: these irreps', numbered from 1); `dims` gets the subspace's dimension. UsageError
// where the model has no embedding hook or the task no cycle and no group.
double patch_frequencies(const Model& model, const PatchSets& sets, const std::vector<int64_t>& freqs,
                         int64_t* dims = nullptr);
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
