// Causal self-attention's core written by hand for the CPU: what the generic transformer's
// scores, mask, softmax and pattern-weighted values compute, for every head at once, touching
// only the causal half and keeping each head's pattern in cache. The transformer's fast path
// (any n_layers, attention-only or not, any LayerNorm) runs its attention through it.
#pragma once
#include <torch/torch.h>

namespace grokking {

// qkv [B, T, 3, H, dh], float32, contiguous on the CPU: each position's query, key and value for
// every head, as one projection gives them. Returns z [B, T, H, dh]: position i's head h is
// sum over j <= i of softmax_j(q_i . k_j / sqrt(dh)) v_j. Differentiable: its backward is
// written out too (d qkv from d z and the saved pattern).
torch::Tensor causal_attention(const torch::Tensor& qkv);

}  // namespace grokking
