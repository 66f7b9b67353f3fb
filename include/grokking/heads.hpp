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

// Composition (Elhage et al. 2021; ARENA 1.2's get_comp_score) of a layer-0 head's OV circuit
// W_OV = W_V W_O into a layer-1 head: score(A, B) = ||A B||_F / (||A||_F ||B||_F) with, for
// K-composition, A = W_OV, B = W_QK^T (W_QK = W_Q W_K^T); Q-composition, B = W_QK; V-composition,
// B = the layer-1 head's W_OV. [layer-1 head][layer-0 head]; and the score's mean for random
// Gaussian factors of those shapes (the baseline the paper subtracts).
struct Composition {
  std::vector<std::vector<double>> k, q, v;  // [h1][h0]
  double baseline = 0;
};
Composition k_composition(const Model& model);

// Elhage et al.'s copying score of each head: the eigenvalues of its full OV circuit
// W_E W_V W_O W_U ([classes, classes]: the pad token's row of W_E left out), Re(sum of them) / sum of their moduli: near 1 for a head
// whose output raises the logits of the tokens it attends to, near -1 for one that lowers them.
// [layer][head].
std::vector<std::vector<double>> copying_scores(const Model& model);

// The next-token loss at each position of the context (Olsson et al.'s loss by token index),
// averaged over the evaluation sequences where that position predicts a real token: [T - 1]
// (NaN where none does), over every next token (trained or not: the first half's tokens are
// unpredictable).
std::vector<double> loss_by_position(const Model& model, const Batch& eval);

}  // namespace grokking
