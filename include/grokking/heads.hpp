// The analysis of induction heads (Elhage et al. 2021; Olsson et al. 2022) on the repeat task:
// per-head attention scores, the transition in the training curves, head ablations and the
// K-composition of the previous-token and induction heads.
#pragma once
#include <torch/torch.h>

#include <optional>
#include <string>
#include <vector>

#include "grokking/model.hpp"
#include "grokking/rundir.hpp"
#include "grokking/task.hpp"

namespace grokking {

// A head counts as an induction head (a previous-token head) above this score (ARENA's 0.4).
constexpr double kHeadScoreThreshold = 0.4;

// Per layer and head, on the evaluation sequences, each the share of a head's attention on the
// positions of a pattern (TransformerLens's head detector, "mul"), among the query positions
// that have one: previous token (the position before); duplicate token (earlier positions
// holding the same token); induction (the positions after those: the duplicate pattern shifted
// one to the right). induction_tl is TransformerLens's own normalisation: over every query
// position of the sequences (a perfect induction head scores about one half there, since the
// first half has nothing to attend to).
struct HeadScores {
  std::vector<std::vector<double>> previous, duplicate, induction, induction_tl;  // [layer][head]
};
// UsageError in one line for a run that is not the repeat task or a model without attention.
void require_sequence_task(const Config& cfg);
HeadScores head_scores(const Model& model, const Batch& eval);
// The scores of one layer's attention patterns attn [N, H, T, T] on tokens x [N, T] (pad: the
// padding token, neither query nor key): what head_scores computes per layer.
HeadScores pattern_scores(const torch::Tensor& attn, const torch::Tensor& x, int64_t pad);

// Transition and find_transition (the repeated half's loss drop): rundir.hpp.

// The repeated half's loss with each head ablated, by zero and by its mean over the batch.
struct HeadAblationResult {
  int64_t layer = 0, head = 0;
  double zero_loss = 0, mean_loss = 0;
};
std::vector<HeadAblationResult> ablate_heads(const Model& model, const Batch& eval);
// One model's outputs with one head's output (blocks.L.attn.hook_z) zeroed, or replaced by its
// mean over the batch at each position.
torch::Tensor forward_head_ablated(const Model& model, const torch::Tensor& x, int64_t layer, int64_t head, bool mean);
double repeated_half_loss(const torch::Tensor& logits, const Batch& eval);

// K-composition (Elhage et al. 2021) of a layer-0 head's OV circuit into a layer-1 head's keys:
// ||W_QK W_OV^T||_F / (||W_QK||_F ||W_OV||_F) with W_QK = W_Q W_K^T and W_OV = W_V W_O, [layer-1
// head][layer-0 head]; and the same score's mean for random Gaussian matrices of those shapes
// (the baseline the paper subtracts).
struct Composition {
  std::vector<std::vector<double>> k;  // [h1][h0]
  double baseline = 0;
};
Composition k_composition(const Model& model);

}  // namespace grokking
