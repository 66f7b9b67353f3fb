// The causal attention core of the transformer's fast path (attention.hpp). Per (sequence, head)
// block, in tiles of four rows: the scores of the causal half (four queries by sixteen keys a
// tile, summed over the head's width in registers), the softmax, and the pattern-weighted values
// (four queries by sixteen widths a tile); the backward the same way from the saved pattern, its
// key and value gradients four keys a tile. The tiles are GCC's vectors of sixteen floats (one
// AVX-512 register, two AVX2, four SSE), the buffers zero-padded to whole tiles, and the code is
// compiled for each instruction set (simd.hpp). The softmax's loops run over keys on contiguous
// floats so that the compiler vectorises them (reductions in eight parts, exp a polynomial, max
// and NaN tests on the floats' bits).
#include "attention.hpp"
#include "simd.hpp"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <climits>
#include <cstdint>
#include <cstring>
#include <vector>

namespace grokking {

namespace {

// A tile's row of sixteen floats.
typedef float vf16 __attribute__((vector_size(64)));
constexpr int64_t kLanes = 16;
constexpr int64_t kRows = 4;  // rows of a tile
constexpr int64_t padded(int64_t n) { return (n + kLanes - 1) / kLanes * kLanes; }

#define GROKKING_LOAD16(v, p) std::memcpy(&(v), (p), sizeof(vf16))
#define GROKKING_STORE16(p, v) std::memcpy((p), &(v), sizeof(vf16))

// exp(x) for x <= 0 (a softmax's shifted scores), to a few ulp: Cephes's expf, written so that
// a loop over it vectorises. Below -87 it gives exp(-87), about 1.6e-38.
GROKKING_INLINE float exp_nonpositive(float x) {
  // x = max(x, -87) on the bits (for x <= 0 a larger pattern is a more negative float): a float
  // comparison's select is not vectorised where comparisons may trap, an integer one is.
  uint32_t u;
  std::memcpy(&u, &x, sizeof u);
  u = u > 0xC2AE0000u ? 0xC2AE0000u : u;  // -87.0f
  std::memcpy(&x, &u, sizeof x);
  // n = x / ln 2 rounded to the nearest integer: adding and taking away 1.5 * 2^23 rounds in the
  // float unit itself (floor has no SSE2 instruction, so a loop calling it would not vectorise).
  const float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  float r = x - n * 0.693359375f;
  r = r + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t bits = (int32_t(n) + 127) << 23;
  float two_n;
  std::memcpy(&two_n, &bits, sizeof two_n);
  return p * two_n;
}

// Sum and dot product in eight running parts: a float reduction in one accumulator cannot be
// reordered, so the compiler would not vectorise it.
GROKKING_INLINE float sum_of(const float* __restrict__ x, int64_t n) {
  float part[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t j = 0;
  for (; j + 8 <= n; j += 8)
    for (int u = 0; u < 8; ++u) part[u] += x[j + u];
  float tail = 0;
  for (; j < n; ++j) tail += x[j];
  return ((part[0] + part[4]) + (part[1] + part[5])) + ((part[2] + part[6]) + (part[3] + part[7])) + tail;
}
GROKKING_INLINE float dot_of(const float* __restrict__ x, const float* __restrict__ y, int64_t n) {
  float part[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t j = 0;
  for (; j + 8 <= n; j += 8)
    for (int u = 0; u < 8; ++u) part[u] += x[j + u] * y[j + u];
  float tail = 0;
  for (; j < n; ++j) tail += x[j] * y[j];
  return ((part[0] + part[4]) + (part[1] + part[5])) + ((part[2] + part[6]) + (part[3] + part[7])) + tail;
}

// The largest of x[0..n), through the floats' bits mapped to integers in the same order (a
// float max is not vectorised where comparisons may trap; an integer one is). NaN aside.
GROKKING_INLINE float max_of(const float* x, int64_t n) {
  int32_t best = INT32_MIN;
  for (int64_t j = 0; j < n; ++j) {
    int32_t b;
    std::memcpy(&b, x + j, sizeof b);
    const int32_t key = b ^ ((b >> 31) & 0x7FFFFFFF);
    best = key > best ? key : best;
  }
  const int32_t b = best ^ ((best >> 31) & 0x7FFFFFFF);
  float out;
  std::memcpy(&out, &b, sizeof out);
  return out;
}
GROKKING_INLINE bool any_nan(const float* x, int64_t n) {
  int32_t any = 0;
  for (int64_t j = 0; j < n; ++j) {
    int32_t b;
    std::memcpy(&b, x + j, sizeof b);
    any |= (b & 0x7FFFFFFF) > 0x7F800000;
  }
  return any != 0;
}

// Rows r0..r3 of a [rows, K] matrix a (row stride as) times the [K, 16] tile b (row stride bs):
// out[r] = sum_k a[r][k] b[k]. `a` holds four row pointers (a short tile repeats its last row).
GROKKING_INLINE void tile_4x16(const float* const* a, const float* b, int64_t bs, int64_t K, vf16* out) {
  vf16 c0 = {}, c1 = {}, c2 = {}, c3 = {};
  for (int64_t k = 0; k < K; ++k) {
    vf16 bk;
    GROKKING_LOAD16(bk, b + k * bs);
    c0 += a[0][k] * bk;
    c1 += a[1][k] * bk;
    c2 += a[2][k] * bk;
    c3 += a[3][k] * bk;
  }
  out[0] = c0, out[1] = c1, out[2] = c2, out[3] = c3;
}

// Row i's softmax over its first n scores (s: a padded row; its entries past n are overwritten),
// written to the pattern row pr [T] (zero past n). A NaN score makes the row NaN, as the generic
// softmax does.
GROKKING_INLINE void softmax_row(float* __restrict__ s, float* __restrict__ pr, int64_t n, int64_t T) {
  const int64_t nb = padded(n);
  for (int64_t j = n; j < nb; ++j) s[j] = -INFINITY;
  const float m = max_of(s, nb);
  const bool nan = any_nan(s, n);
  for (int64_t j = 0; j < nb; ++j) s[j] = exp_nonpositive(s[j] - m);
  for (int64_t j = n; j < nb; ++j) s[j] = 0.0f;
  const float inv = nan ? std::nanf("") : 1.0f / sum_of(s, nb);
  const int64_t w = std::min(nb, T);
  for (int64_t j = 0; j < w; ++j) pr[j] = s[j] * inv;
  for (int64_t j = w; j < T; ++j) pr[j] = 0.0f;
}

// Row pointers of a four-row tile from row i0 of a matrix with row stride rs and `rows` rows: a
// short tile repeats the last row (its results are not stored).
GROKKING_INLINE void tile_rows(const float* base, int64_t i0, int64_t rows, int64_t rs, const float** out) {
  for (int64_t r = 0; r < kRows; ++r) out[r] = base + std::min(i0 + r, rows - 1) * rs;
}

// One (sequence, head) block forward. q, k, v: its rows (stride rs); z: its output rows (stride
// zs); p: its pattern [T, T]; scratch: forward_scratch(T, D) floats.
int64_t forward_scratch(int64_t T, int64_t D) { return D * padded(T) + padded(T) * padded(D) + kRows * padded(T); }
GROKKING_INLINE void forward_block_impl(const float* __restrict__ q, const float* __restrict__ k,
                                        const float* __restrict__ v, float* __restrict__ z, float* __restrict__ p,
                                        float* __restrict__ scratch, int64_t T, int64_t D, int64_t rs, int64_t zs,
                                        float scale) {
  const int64_t Tp = padded(T), Dp = padded(D);
  float* __restrict__ kt = scratch;          // [D, Tp]: the keys, scaled, transposed
  float* __restrict__ vp = kt + D * Tp;      // [Tp, Dp]: the values
  float* __restrict__ sc = vp + Tp * Dp;     // [kRows, Tp]: a tile's scores
  std::fill(scratch, sc, 0.0f);
  for (int64_t j = 0; j < T; ++j)
    for (int64_t e = 0; e < D; ++e) {
      kt[e * Tp + j] = k[j * rs + e] * scale;
      vp[j * Dp + e] = v[j * rs + e];
    }
  for (int64_t i0 = 0; i0 < T; i0 += kRows) {
    const int64_t rows = std::min(kRows, T - i0), last = i0 + rows;  // keys 0..last-1 reach these rows
    const float* qr[kRows];
    tile_rows(q, i0, T, rs, qr);
    vf16 t[kRows];
    for (int64_t j0 = 0; j0 < last; j0 += kLanes) {
      tile_4x16(qr, kt + j0, Tp, D, t);
      for (int64_t r = 0; r < kRows; ++r) GROKKING_STORE16(sc + r * Tp + j0, t[r]);
    }
    for (int64_t r = 0; r < rows; ++r) softmax_row(sc + r * Tp, p + (i0 + r) * T, i0 + r + 1, T);
    const float* pr[kRows];
    tile_rows(p, i0, T, T, pr);
    for (int64_t e0 = 0; e0 < D; e0 += kLanes) {
      tile_4x16(pr, vp + e0, Dp, last, t);
      const int64_t w = std::min(kLanes, D - e0);
      for (int64_t r = 0; r < rows; ++r) std::memcpy(z + (i0 + r) * zs + e0, &t[r], size_t(w) * sizeof(float));
    }
  }
}

// One (sequence, head) block backward: d q, d k, d v (rows of stride rs, each written once) from d z
// (stride zs) and the saved pattern p; scratch: backward_scratch(T, D) floats. Row by row the
// gradient at the scores, ds_i = p_i * (dz_i . v - p_i . (dz_i . v)) * scale (zero past the
// diagonal), and d q_i = sum_j ds_ij k_j; then d v_j = sum_i p_ij dz_i and d k_j = sum_i ds_ij q_i.
int64_t backward_scratch(int64_t T, int64_t D) {
  return 3 * padded(T) * padded(D) + D * padded(T) + T * padded(T) + kRows * padded(T);
}
GROKKING_INLINE void backward_block_impl(const float* __restrict__ q, const float* __restrict__ k,
                                         const float* __restrict__ v, const float* __restrict__ gz,
                                         const float* __restrict__ p, float* __restrict__ dq, float* __restrict__ dk,
                                         float* __restrict__ dv, float* __restrict__ scratch, int64_t T, int64_t D,
                                         int64_t rs, int64_t zs, float scale) {
  const int64_t Tp = padded(T), Dp = padded(D);
  float* __restrict__ kp = scratch;        // [Tp, Dp]: the keys
  float* __restrict__ qp = kp + Tp * Dp;   // [Tp, Dp]: the queries
  float* __restrict__ gp = qp + Tp * Dp;   // [Tp, Dp]: d z
  float* __restrict__ vt = gp + Tp * Dp;   // [D, Tp]: the values, transposed
  float* __restrict__ ds = vt + D * Tp;    // [T, Tp]: the gradient at the scores
  float* __restrict__ sc = ds + T * Tp;    // [kRows, Tp]: a tile's d pattern
  std::fill(scratch, ds, 0.0f);
  for (int64_t j = 0; j < T; ++j)
    for (int64_t e = 0; e < D; ++e) {
      kp[j * Dp + e] = k[j * rs + e];
      qp[j * Dp + e] = q[j * rs + e];
      gp[j * Dp + e] = gz[j * zs + e];
      vt[e * Tp + j] = v[j * rs + e];
    }
  vf16 t[kRows];
  for (int64_t i0 = 0; i0 < T; i0 += kRows) {
    const int64_t rows = std::min(kRows, T - i0), last = i0 + rows;
    const float* gr[kRows];
    tile_rows(gp, i0, T, Dp, gr);
    for (int64_t j0 = 0; j0 < last; j0 += kLanes) {  // d pattern = dz_i . v_j
      tile_4x16(gr, vt + j0, Tp, D, t);
      for (int64_t r = 0; r < kRows; ++r) GROKKING_STORE16(sc + r * Tp + j0, t[r]);
    }
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t i = i0 + r, n = i + 1;
      const float* pr = p + i * T;
      const float* d = sc + r * Tp;
      float* out = ds + i * Tp;
      const float dot = dot_of(d, pr, n);
      for (int64_t j = 0; j < n; ++j) out[j] = pr[j] * (d[j] - dot) * scale;  // d of q_i . k_j
      for (int64_t j = n; j < Tp; ++j) out[j] = 0.0f;
    }
    const float* dr[kRows];
    tile_rows(ds, i0, T, Tp, dr);
    for (int64_t e0 = 0; e0 < D; e0 += kLanes) {  // d q_i = sum_j ds_ij k_j
      tile_4x16(dr, kp + e0, Dp, last, t);
      const int64_t w = std::min(kLanes, D - e0);
      for (int64_t r = 0; r < rows; ++r) std::memcpy(dq + (i0 + r) * rs + e0, &t[r], size_t(w) * sizeof(float));
    }
  }
  // Four keys a tile: their columns of p and ds against the rows of d z and q from the diagonal on
  // (p and ds are zero above it).
  for (int64_t j0 = 0; j0 < T; j0 += kRows) {
    const int64_t rows = std::min(kRows, T - j0);
    int64_t jr[kRows];
    for (int64_t r = 0; r < kRows; ++r) jr[r] = std::min(j0 + r, T - 1);
    for (int64_t e0 = 0; e0 < D; e0 += kLanes) {
      const int64_t w = std::min(kLanes, D - e0);
      vf16 c0 = {}, c1 = {}, c2 = {}, c3 = {};
      for (int64_t i = j0; i < T; ++i) {
        vf16 g;
        GROKKING_LOAD16(g, gp + i * Dp + e0);
        const float* pi = p + i * T;
        c0 += pi[jr[0]] * g;
        c1 += pi[jr[1]] * g;
        c2 += pi[jr[2]] * g;
        c3 += pi[jr[3]] * g;
      }
      t[0] = c0, t[1] = c1, t[2] = c2, t[3] = c3;
      for (int64_t r = 0; r < rows; ++r) std::memcpy(dv + (j0 + r) * rs + e0, &t[r], size_t(w) * sizeof(float));
      c0 = vf16{}, c1 = vf16{}, c2 = vf16{}, c3 = vf16{};
      for (int64_t i = j0; i < T; ++i) {
        vf16 qv;
        GROKKING_LOAD16(qv, qp + i * Dp + e0);
        const float* si = ds + i * Tp;
        c0 += si[jr[0]] * qv;
        c1 += si[jr[1]] * qv;
        c2 += si[jr[2]] * qv;
        c3 += si[jr[3]] * qv;
      }
      t[0] = c0, t[1] = c1, t[2] = c2, t[3] = c3;
      for (int64_t r = 0; r < rows; ++r) std::memcpy(dk + (j0 + r) * rs + e0, &t[r], size_t(w) * sizeof(float));
    }
  }
}

GROKKING_SIMD_KERNEL(forward_block, forward_block_impl)
GROKKING_SIMD_KERNEL(backward_block, backward_block_impl)

struct CausalAttention : public torch::autograd::Function<CausalAttention> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& qkv) {
    const int64_t B = qkv.size(0), T = qkv.size(1), H = qkv.size(3), D = qkv.size(4);
    auto z = torch::empty({B, T, H, D}, qkv.options());
    auto pattern = torch::empty({B, H, T, T}, qkv.options());
    const float* in = qkv.data_ptr<float>();
    float* out = z.data_ptr<float>();
    float* pat = pattern.data_ptr<float>();
    const float scale = float(1.0 / std::sqrt(double(D)));
    const int64_t rs = 3 * H * D, zs = H * D;  // row strides of qkv and z
    at::parallel_for(0, B * H, 1, [&](int64_t begin, int64_t end) {
      std::vector<float> scratch(static_cast<size_t>(forward_scratch(T, D)));
      for (int64_t bh = begin; bh < end; ++bh) {
        const int64_t b = bh / H, h = bh % H;
        const float* q = in + b * T * rs + h * D;
        forward_block(q, q + H * D, q + 2 * H * D, out + b * T * zs + h * D, pat + bh * T * T, scratch.data(), T, D,
                      rs, zs, scale);
      }
    });
    ctx->save_for_backward({qkv, pattern});
    return z;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const torch::Tensor& qkv = saved[0];
    const torch::Tensor& pattern = saved[1];
    const auto dz = grads[0].contiguous();
    const int64_t B = qkv.size(0), T = qkv.size(1), H = qkv.size(3), D = qkv.size(4);
    auto dqkv = torch::empty_like(qkv);  // every element written once by its block
    const float* in = qkv.data_ptr<float>();
    const float* pat = pattern.data_ptr<float>();
    const float* gz = dz.data_ptr<float>();
    float* gin = dqkv.data_ptr<float>();
    const float scale = float(1.0 / std::sqrt(double(D)));
    const int64_t rs = 3 * H * D, zs = H * D;
    at::parallel_for(0, B * H, 1, [&](int64_t begin, int64_t end) {
      std::vector<float> scratch(static_cast<size_t>(backward_scratch(T, D)));
      for (int64_t bh = begin; bh < end; ++bh) {
        const int64_t b = bh / H, h = bh % H;
        const float* q = in + b * T * rs + h * D;
        float* dq = gin + b * T * rs + h * D;
        backward_block(q, q + H * D, q + 2 * H * D, gz + b * T * zs + h * D, pat + bh * T * T, dq, dq + H * D,
                       dq + 2 * H * D, scratch.data(), T, D, rs, zs, scale);
      }
    });
    return {dqkv};
  }
};

}  // namespace

torch::Tensor causal_attention(const torch::Tensor& qkv) {
  TORCH_CHECK(qkv.dim() == 5 && qkv.size(2) == 3 && qkv.scalar_type() == torch::kFloat && qkv.device().is_cpu(),
              "causal_attention: qkv must be [B, T, 3, H, dh] float32 on the CPU");
  return CausalAttention::apply(qkv.contiguous());
}

}  // namespace grokking
