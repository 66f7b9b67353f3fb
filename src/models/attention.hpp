// Causal self-attention's sublayer written by hand for the CPU: what the generic transformer's
// projections, scores, mask, softmax, pattern-weighted values and output projection compute, for
// every head at once, touching only the causal half, keeping each head's pattern in cache, and
// recorded as one autograd node. The transformer's fast path (any n_layers, attention-only or
// not, any LayerNorm) runs its attention through it.
#pragma once
#include <torch/torch.h>

namespace grokking {

// in [S, N*T, d] float32 on the CPU (S replicas, N sequences of T positions, contiguous rows),
// the weights as the model stores them (W_Q, W_K, W_V [S, H, d, dh], b_Q, b_K, b_V [S, H, dh],
// W_O [S, H, dh, d], b_O [S, d]; for one model without the S axis, so that no view op stands
// between a parameter and its gradient). Returns attn_out [S, N*T, d]: at
// position i, sum over heads of (sum over j <= i of softmax_j(q_i . k_j / sqrt(dh)) v_j) W_O + b_O,
// with q, k, v = in W + b. Differentiable: its backward is written out too, each gradient only
// where an input wants one.
torch::Tensor attention_sublayer(const torch::Tensor& in, int64_t T, const torch::Tensor& W_Q, const torch::Tensor& W_K,
                                 const torch::Tensor& W_V, const torch::Tensor& b_Q, const torch::Tensor& b_K,
                                 const torch::Tensor& b_V, const torch::Tensor& W_O, const torch::Tensor& b_O);

// Token and position embeddings of sequences x [N, T] (int64, each < V) for S replicas: W_E [S, V, d]
// and W_pos [S, P, d] (P >= T; [V, d] and [P, d] for one model) float32 on the CPU ->
// [S, N, T, d] = W_E[x] + W_pos[:T], as one autograd node (the generic forward's index_select,
// narrow and add, and their backward).
torch::Tensor embed_sequences(const torch::Tensor& W_E, const torch::Tensor& W_pos, const torch::Tensor& x);

// The training loss of the fast paths: the mean over the rows whose label is >= 0 of the
// cross-entropy of logits [S, ..., C] (float32, CPU) against labels of the shape between (logits
// [S, N, T, C] and labels [N, T] for sequences; [S, N, C] and [N] for pairs, every row scored),
// computed in float64, summed over the replicas (what batch_loss gives under the default
// LossSpec), as one autograd node whose backward writes (softmax - one-hot) / count into the
// scored rows. Returns a float64 scalar.
torch::Tensor scored_cross_entropy(const torch::Tensor& logits, const torch::Tensor& labels);

// scored_cross_entropy's rows, for a kind that takes its logits a block at a time: row i of
// logits [C] float32 at logits + offsets[i], label labels[i] in [0, C); each row's cross-entropy
// in float64 summed in row order into the return value, and its gradient row softmax - one-hot
// as float32 into d + i * C. scratch: C doubles.
double cross_entropy_gradient_rows(const float* logits, const int64_t* offsets, const int64_t* labels, int64_t rows,
                                   int64_t C, float* d, double* scratch);

// The transformer fast path's attention of "=" (position 2 of [a, b, =]) to a, b and itself, for
// pairs x [N, >= 2] (int64, each < P), from per-token tables: k0, k1 [S, P, H] the scaled scores
// of "=" against each token at position 0 and 1, k2 [S, 1, H] against itself; v0, v1 [S, P, H D]
// the values of each token at position 0 and 1, v2 [S, 1, H D] of "=". Returns z [S, N, H D]:
// per head, softmax(k0[a], k1[b], k2) weighting v0[a], v1[b], v2. Float32 on the CPU, as one
// autograd node (the forward's index_select, stack, softmax, mul and add, and their backward).
torch::Tensor pair_attention(const torch::Tensor& k0, const torch::Tensor& k1, const torch::Tensor& k2,
                             const torch::Tensor& v0, const torch::Tensor& v1, const torch::Tensor& v2,
                             const torch::Tensor& x);

// relu(x + b) for x [S, N, M] and a bias b [S, M] float32 on the CPU, as one autograd node.
torch::Tensor bias_relu(const torch::Tensor& x, const torch::Tensor& b);

}  // namespace grokking
