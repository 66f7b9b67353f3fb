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

typedef int32_t vi16 __attribute__((vector_size(64)));
constexpr vi16 kLane = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};

// Vectors go between functions by reference: passed or returned by value, GCC warns that their
// registers differ between instruction sets (an ABI that never applies to these, always inlined).
#define GROKKING_SPLAT(x) (vf16{} + (x))

// exp(x) for x <= 0 (a softmax's shifted scores), lane by lane, to a few ulp: Cephes's expf.
// Below -87 it gives exp(-87), about 1.6e-38.
GROKKING_INLINE void exp_nonpositive(vf16& x) {
  x = x < GROKKING_SPLAT(-87.0f) ? GROKKING_SPLAT(-87.0f) : x;
  // n = x / ln 2 rounded to the nearest integer: adding and taking away 1.5 * 2^23 rounds in the
  // float unit itself.
  const vf16 n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  vf16 r = x - n * 0.693359375f;
  r = r + n * 2.12194440e-4f;
  vf16 p = GROKKING_SPLAT(1.9875691500e-4f);
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const vi16 bits = (__builtin_convertvector(n, vi16) + 127) << 23;
  x = p * (vf16)bits;  // the same bits as floats
}

// The sum and the largest of a vector's lanes, in a fixed order: halves folded onto each other
// (8, 4, 2, 1 lanes), each fold one vector operation.
typedef float vf8 __attribute__((vector_size(32)));
typedef float vf4 __attribute__((vector_size(16)));
GROKKING_INLINE float lanes_sum(const vf16& v) {
  vf8 a, b;
  std::memcpy(&a, &v, sizeof a);
  std::memcpy(&b, reinterpret_cast<const char*>(&v) + sizeof a, sizeof b);
  a += b;
  vf4 c, d;
  std::memcpy(&c, &a, sizeof c);
  std::memcpy(&d, reinterpret_cast<const char*>(&a) + sizeof c, sizeof d);
  c += d;
  return (c[0] + c[2]) + (c[1] + c[3]);
}
GROKKING_INLINE float lanes_max(const vf16& v) {
  vf8 a, b;
  std::memcpy(&a, &v, sizeof a);
  std::memcpy(&b, reinterpret_cast<const char*>(&v) + sizeof a, sizeof b);
  a = b > a ? b : a;
  vf4 c, d;
  std::memcpy(&c, &a, sizeof c);
  std::memcpy(&d, reinterpret_cast<const char*>(&a) + sizeof c, sizeof d);
  c = d > c ? d : c;
  const float x = c[2] > c[0] ? c[2] : c[0], y = c[3] > c[1] ? c[3] : c[1];
  return y > x ? y : x;
}

// Sixteen floats of a row of length len from j0 on, zeros past its end (the row's neighbours in
// memory are not read).
GROKKING_INLINE void load_row(vf16& v, const float* row, int64_t j0, int64_t len) {
  if (j0 + kLanes <= len) {
    GROKKING_LOAD16(v, row + j0);
  } else {
    float a[kLanes] = {};
    std::memcpy(a, row + j0, size_t(std::max<int64_t>(0, len - j0)) * sizeof(float));
    GROKKING_LOAD16(v, a);
  }
}
GROKKING_INLINE void store_row(float* row, int64_t j0, int64_t len, const vf16& v) {
  if (j0 + kLanes <= len) {
    GROKKING_STORE16(row + j0, v);
  } else if (j0 < len) {
    std::memcpy(row + j0, &v, size_t(len - j0) * sizeof(float));
  }
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

// Row i's softmax over its first n scores (s: a padded row, rewritten with exp of the shifted
// scores), written to the pattern row pr [T] (zero past n). A NaN score makes the row NaN, as the
// generic softmax does: it passes the clamp in exp (a comparison with NaN is false) and the sum.
GROKKING_INLINE void softmax_row(float* __restrict__ s, float* __restrict__ pr, int64_t n, int64_t T) {
  const int64_t nb = padded(n);
  const auto count = int32_t(n);
  vf16 top = GROKKING_SPLAT(-INFINITY);
  for (int64_t j0 = 0; j0 < nb; j0 += kLanes) {
    vf16 x;
    GROKKING_LOAD16(x, s + j0);
    const vi16 in = (kLane + int32_t(j0)) < count;
    x = in ? x : GROKKING_SPLAT(-INFINITY);
    top = x > top ? x : top;
  }
  const float m = lanes_max(top);
  vf16 total = {};
  for (int64_t j0 = 0; j0 < nb; j0 += kLanes) {
    vf16 x;
    GROKKING_LOAD16(x, s + j0);
    const vi16 in = (kLane + int32_t(j0)) < count;
    vf16 e = x - m;
    exp_nonpositive(e);
    e = in ? e : vf16{};
    GROKKING_STORE16(s + j0, e);
    total += e;
  }
  const float inv = 1.0f / lanes_sum(total);
  for (int64_t j0 = 0; j0 < nb; j0 += kLanes) {
    vf16 x;
    GROKKING_LOAD16(x, s + j0);
    x *= inv;
    store_row(pr, j0, T, x);
  }
  for (int64_t j = nb; j < T; ++j) pr[j] = 0.0f;
}

// Row pointers of a four-row tile from row i0 of a matrix with row stride rs and `rows` rows: a
// short tile repeats the last row (its results are not stored).
GROKKING_INLINE void tile_rows(const float* base, int64_t i0, int64_t rows, int64_t rs, const float** out) {
  for (int64_t r = 0; r < kRows; ++r) out[r] = base + std::min(i0 + r, rows - 1) * rs;
}

// A tile's rows written to out (row stride os) from row i0, the first `rows` of them, the
// first w = min(16, D - e0) widths each from width e0.
GROKKING_INLINE void store_tile(const vf16* t, float* out, int64_t i0, int64_t rows, int64_t os, int64_t e0, int64_t D) {
  const auto w = size_t(std::min(kLanes, D - e0));
  for (int64_t r = 0; r < rows; ++r) std::memcpy(out + (i0 + r) * os + e0, &t[r], w * sizeof(float));
}

// Four columns jr of m (row stride ms, zero above the diagonal) against rows j0.. of b (row
// stride bs, sixteen widths from b's start): out[r] = sum_{i >= j0} m[i][jr[r]] b[i].
GROKKING_INLINE void columns_4x16(const float* m, int64_t ms, const int64_t* jr, const float* b, int64_t bs,
                                  int64_t j0, int64_t T, vf16* out) {
  vf16 c0 = {}, c1 = {}, c2 = {}, c3 = {};
  for (int64_t i = j0; i < T; ++i) {
    vf16 bi;
    GROKKING_LOAD16(bi, b + i * bs);
    const float* mi = m + i * ms;
    c0 += mi[jr[0]] * bi;
    c1 += mi[jr[1]] * bi;
    c2 += mi[jr[2]] * bi;
    c3 += mi[jr[3]] * bi;
  }
  out[0] = c0, out[1] = c1, out[2] = c2, out[3] = c3;
}

// One (sequence, head) block forward. q, k, v: its rows (stride rs); z: its output rows (stride
// zs); p: its pattern [T, T]; scratch: forward_scratch(T, D) floats, finite (its padding is
// never cleared: a lane past the row or the width is computed and dropped, never mixed into one
// that is kept).
int64_t forward_scratch(int64_t T, int64_t D) { return D * padded(T) + padded(T) * padded(D) + kRows * padded(T); }
GROKKING_INLINE void forward_block_impl(const float* __restrict__ q, const float* __restrict__ k,
                                        const float* __restrict__ v, float* __restrict__ z, float* __restrict__ p,
                                        float* __restrict__ scratch, int64_t T, int64_t D, int64_t rs, int64_t zs,
                                        float scale) {
  const int64_t Tp = padded(T), Dp = padded(D);
  float* __restrict__ kt = scratch;          // [D, Tp]: the keys, scaled, transposed
  float* __restrict__ vp = kt + D * Tp;      // [Tp, Dp]: the values
  float* __restrict__ sc = vp + Tp * Dp;     // [kRows, Tp]: a tile's scores
  const auto row = size_t(D) * sizeof(float);
  for (int64_t j = 0; j < T; ++j) {
    for (int64_t e = 0; e < D; ++e) kt[e * Tp + j] = k[j * rs + e] * scale;
    std::memcpy(vp + j * Dp, v + j * rs, row);
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
      store_tile(t, z, i0, rows, zs, e0, D);
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
  const auto row = size_t(D) * sizeof(float);
  for (int64_t j = 0; j < T; ++j) {
    std::memcpy(kp + j * Dp, k + j * rs, row);
    std::memcpy(qp + j * Dp, q + j * rs, row);
    std::memcpy(gp + j * Dp, gz + j * zs, row);
    for (int64_t e = 0; e < D; ++e) vt[e * Tp + j] = v[j * rs + e];
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
      const int64_t nb = padded(n);
      const auto count = int32_t(n);
      vf16 acc = {};
      for (int64_t j0 = 0; j0 < nb; j0 += kLanes) {
        vf16 dj;
        GROKKING_LOAD16(dj, d + j0);
        const vi16 in = (kLane + int32_t(j0)) < count;
        vf16 pj;
        load_row(pj, pr, j0, T);
        acc += in ? dj * pj : vf16{};
      }
      const float dot = lanes_sum(acc);
      for (int64_t j0 = 0; j0 < nb; j0 += kLanes) {  // d of q_i . k_j
        vf16 dj;
        GROKKING_LOAD16(dj, d + j0);
        const vi16 in = (kLane + int32_t(j0)) < count;
        vf16 pj;
        load_row(pj, pr, j0, T);
        const vf16 g = in ? pj * (dj - dot) * scale : vf16{};
        GROKKING_STORE16(out + j0, g);
      }
      for (int64_t j = nb; j < Tp; ++j) out[j] = 0.0f;
    }
    const float* dr[kRows];
    tile_rows(ds, i0, T, Tp, dr);
    for (int64_t e0 = 0; e0 < D; e0 += kLanes) {  // d q_i = sum_j ds_ij k_j
      tile_4x16(dr, kp + e0, Dp, last, t);
      store_tile(t, dq, i0, rows, rs, e0, D);
    }
  }
  // Four keys a tile: their columns of p and ds against the rows of d z and q from the diagonal on
  // (p and ds are zero above it).
  for (int64_t j0 = 0; j0 < T; j0 += kRows) {
    const int64_t rows = std::min(kRows, T - j0);
    int64_t jr[kRows];
    for (int64_t r = 0; r < kRows; ++r) jr[r] = std::min(j0 + r, T - 1);
    for (int64_t e0 = 0; e0 < D; e0 += kLanes) {
      columns_4x16(p, T, jr, gp + e0, Dp, j0, T, t);  // d v_j = sum_i p_ij dz_i
      store_tile(t, dv, j0, rows, rs, e0, D);
      columns_4x16(ds, Tp, jr, qp + e0, Dp, j0, T, t);  // d k_j = sum_i ds_ij q_i
      store_tile(t, dk, j0, rows, rs, e0, D);
    }
  }
}

GROKKING_SIMD_KERNEL(forward_block, forward_block_impl)
GROKKING_SIMD_KERNEL(backward_block, backward_block_impl)

// Calls fn(bh, qkv offset, z offset, scratch) for each of the B H (sequence, head) blocks across
// the threads, each thread with `scratch` floats of its own.
template <class F>
void for_each_block(int64_t B, int64_t T, int64_t H, int64_t D, int64_t scratch, F fn) {
  const int64_t rs = 3 * H * D, zs = H * D;  // row strides of qkv and z
  at::parallel_for(0, B * H, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> buffer(static_cast<size_t>(scratch));
    for (int64_t bh = begin; bh < end; ++bh) {
      const int64_t b = bh / H, h = bh % H;
      fn(bh, b * T * rs + h * D, b * T * zs + h * D, buffer.data());
    }
  });
}

// Every block's forward: z [B, T, H, D] and the pattern [B, H, T, T] from qkv [B, T, 3, H, D].
void attention_forward(const float* in, float* out, float* pat, int64_t B, int64_t T, int64_t H, int64_t D) {
  const float scale = float(1.0 / std::sqrt(double(D)));
  const int64_t F = H * D;
  for_each_block(B, T, H, D, forward_scratch(T, D), [&](int64_t bh, int64_t at_qkv, int64_t at_z, float* scratch) {
    const float* q = in + at_qkv;
    forward_block(q, q + F, q + 2 * F, out + at_z, pat + bh * T * T, scratch, T, D, 3 * F, F, scale);
  });
}

// Every block's backward: d qkv (each element written once) from qkv, the pattern and d z.
void attention_backward(const float* in, const float* pat, const float* gz, float* gin, int64_t B, int64_t T, int64_t H,
                        int64_t D) {
  const float scale = float(1.0 / std::sqrt(double(D)));
  const int64_t F = H * D;
  for_each_block(B, T, H, D, backward_scratch(T, D), [&](int64_t bh, int64_t at_qkv, int64_t at_z, float* scratch) {
    const float* q = in + at_qkv;
    float* dq = gin + at_qkv;
    backward_block(q, q + F, q + 2 * F, gz + at_z, pat + bh * T * T, dq, dq + F, dq + 2 * F, scratch, T, D, 3 * F, F,
                   scale);
  });
}

// W_Q, W_K, W_V [H, d, dh] side by side as one [d, 3 H dh] matrix (to = true), or the gradient of
// that matrix split back into three (to = false; a null part is skipped).
void pack_qkv(float* const* parts, float* packed, int64_t H, int64_t d, int64_t dh, bool to) {
  const int64_t F = H * dh;
  for (int64_t part = 0; part < 3; ++part) {
    float* w = parts[part];
    if (!w) continue;
    for (int64_t h = 0; h < H; ++h)
      for (int64_t i = 0; i < d; ++i) {
        float* row = packed + i * 3 * F + part * F + h * dh;
        float* src = w + (h * d + i) * dh;
        if (to) std::memcpy(row, src, size_t(dh) * sizeof(float));
        else std::memcpy(src, row, size_t(dh) * sizeof(float));
      }
  }
}

// The attention sublayer as one autograd node: the products through LibTorch (addmm with the
// biases), the core by hand, and nothing else recorded. Replica by replica, each with the shapes
// it has alone, so that side by side = alone bit for bit.
struct AttentionSublayer : public torch::autograd::Function<AttentionSublayer> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& in_, const torch::Tensor& WQ,
                               const torch::Tensor& WK, const torch::Tensor& WV, const torch::Tensor& bQ,
                               const torch::Tensor& bK, const torch::Tensor& bV, const torch::Tensor& WO_,
                               const torch::Tensor& bO_, int64_t T) {
    // The weights as the model holds them: [S, ...] side by side, or without the replica axis
    // alone (so that no view op stands between them and their gradients).
    const auto in = in_.contiguous();
    const int64_t S = in.size(0), M = in.size(1), d = in.size(2), H = WQ.size(-3), dh = WQ.size(-1), F = H * dh;
    const auto WO = WO_.contiguous().view({S, F, d}), bO = bO_.contiguous().view({S, d});
    const auto opts = in.options();
    auto w = torch::empty({S, d, 3 * F}, opts), b = torch::empty({S, 3 * F}, opts);
    {
      const torch::Tensor ws[3] = {WQ.contiguous(), WK.contiguous(), WV.contiguous()};
      const torch::Tensor bs[3] = {bQ.contiguous(), bK.contiguous(), bV.contiguous()};
      float* pw = w.data_ptr<float>();
      float* pb = b.data_ptr<float>();
      for (int64_t s = 0; s < S; ++s) {
        float* parts[3];
        for (int p = 0; p < 3; ++p) {
          parts[p] = ws[p].data_ptr<float>() + s * d * F;
          std::memcpy(pb + (3 * s + p) * F, bs[p].data_ptr<float>() + s * F, size_t(F) * sizeof(float));
        }
        pack_qkv(parts, pw + s * d * 3 * F, H, d, dh, true);
      }
    }
    auto qkv = torch::empty({S, M, 3 * F}, opts), z = torch::empty({S, M, F}, opts);
    auto pattern = torch::empty({S * (M / T), H, T, T}, opts), out = torch::empty({S, M, d}, opts);
    for (int64_t s = 0; s < S; ++s) {
      auto q = qkv[s];
      at::addmm_out(q, b[s], in[s], w[s]);
    }
    attention_forward(qkv.data_ptr<float>(), z.data_ptr<float>(), pattern.data_ptr<float>(), S * (M / T), T, H, dh);
    for (int64_t s = 0; s < S; ++s) {
      auto o = out[s];
      at::addmm_out(o, bO[s], z[s], WO[s]);
    }
    ctx->save_for_backward({in, w, qkv, pattern, z, WO});
    ctx->saved_data["T"] = T;
    ctx->saved_data["H"] = H;
    ctx->saved_data["W_Q"] = WQ.sizes().vec();
    ctx->saved_data["b_Q"] = bQ.sizes().vec();
    ctx->saved_data["W_O"] = WO_.sizes().vec();
    ctx->saved_data["b_O"] = bO_.sizes().vec();
    return out;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const torch::Tensor &in = saved[0], &w = saved[1], &qkv = saved[2], &pattern = saved[3], &z = saved[4],
                        &WO = saved[5];
    const int64_t T = ctx->saved_data["T"].toInt(), H = ctx->saved_data["H"].toInt();
    const int64_t S = in.size(0), M = in.size(1), d = in.size(2), F = WO.size(1), dh = F / H;
    const auto dout = grads[0].contiguous();
    const auto opts = in.options();
    torch::Tensor din, dW[3], db[3], dWO, dbO;
    if (ctx->needs_input_grad(7)) {
      dWO = torch::empty_like(WO);  // [S, F, d], given back in W_O's own shape
      for (int64_t s = 0; s < S; ++s) {
        auto g = dWO[s];
        at::mm_out(g, z[s].t(), dout[s]);
      }
      dWO = dWO.view(ctx->saved_data["W_O"].toIntVector());
    }
    if (ctx->needs_input_grad(8)) {
      dbO = torch::empty({S, d}, opts);
      for (int64_t s = 0; s < S; ++s) {
        auto g = dbO[s];
        at::sum_out(g, dout[s], {0});
      }
      dbO = dbO.view(ctx->saved_data["b_O"].toIntVector());
    }
    auto dz = torch::empty({S, M, F}, opts);
    for (int64_t s = 0; s < S; ++s) {
      auto g = dz[s];
      at::mm_out(g, dout[s], WO[s].t());
    }
    auto dqkv = torch::empty_like(qkv);
    attention_backward(qkv.data_ptr<float>(), pattern.data_ptr<float>(), dz.data_ptr<float>(), dqkv.data_ptr<float>(),
                       S * (M / T), T, H, dh);
    if (ctx->needs_input_grad(1) || ctx->needs_input_grad(2) || ctx->needs_input_grad(3)) {
      auto dw = torch::empty({d, 3 * F}, opts);
      for (int p = 0; p < 3; ++p)
        if (ctx->needs_input_grad(size_t(1 + p))) dW[p] = torch::empty(ctx->saved_data["W_Q"].toIntVector(), opts);
      for (int64_t s = 0; s < S; ++s) {
        at::mm_out(dw, in[s].t(), dqkv[s]);
        float* parts[3];
        for (int p = 0; p < 3; ++p) parts[p] = dW[p].defined() ? dW[p].data_ptr<float>() + s * d * F : nullptr;
        pack_qkv(parts, dw.data_ptr<float>(), H, d, dh, false);
      }
    }
    if (ctx->needs_input_grad(4) || ctx->needs_input_grad(5) || ctx->needs_input_grad(6)) {
      auto sums = torch::empty({S, 3 * F}, opts);
      for (int64_t s = 0; s < S; ++s) {
        auto g = sums[s];
        at::sum_out(g, dqkv[s], {0});
      }
      for (int p = 0; p < 3; ++p)
        if (ctx->needs_input_grad(size_t(4 + p)))
          db[p] = sums.narrow(1, p * F, F).reshape(ctx->saved_data["b_Q"].toIntVector());
    }
    if (ctx->needs_input_grad(0)) {
      din = torch::empty({S, M, d}, opts);
      for (int64_t s = 0; s < S; ++s) {
        auto g = din[s];
        at::mm_out(g, dqkv[s], w[s].t());
      }
    }
    return {din, dW[0], dW[1], dW[2], db[0], db[1], db[2], dWO, dbO, torch::Tensor()};
  }
};

// Rows of logits [C] float32 (row i at x + offsets[i]) with labels cls: each row's
// cross-entropy in float64 (log-sum-exp minus the label's logit), summed into the return value in
// row order, and its gradient row, softmax - one-hot, as float32 into d (row i at d + i * C).
// e: C doubles of scratch.
GROKKING_INLINE double cross_entropy_rows_impl(const float* x, const int64_t* offsets, const int64_t* cls, int64_t rows,
                                               int64_t C, float* d, double* e) {
  double total = 0;
  constexpr int64_t kParts = 8;  // the reductions in eight parts, so that they vectorise
  for (int64_t i = 0; i < rows; ++i) {
    const float* row = x + offsets[i];
    float mp[kParts];
    for (int64_t j = 0; j < kParts; ++j) mp[j] = row[0];
    int64_t c = 0;
    for (; c + kParts <= C; c += kParts)
      for (int64_t j = 0; j < kParts; ++j) mp[j] = row[c + j] > mp[j] ? row[c + j] : mp[j];
    for (; c < C; ++c) mp[0] = row[c] > mp[0] ? row[c] : mp[0];
    float m = mp[0];
    for (int64_t j = 1; j < kParts; ++j) m = mp[j] > m ? mp[j] : m;
    const double md = double(m);
    // The exps eight at a time (one vector of doubles), the last eight padded with the maximum: the
    // compiler's own vectorisation of this loop leaves up to 15 of them to a scalar tail.
    const double8 shift = double8{} + md;
    for (c = 0; c + 8 <= C; c += 8) {
      float8 v;
      std::memcpy(&v, row + c, sizeof v);
      const double8 ev = exp_nonpositive64(__builtin_convertvector(v, double8) - shift);
      std::memcpy(e + c, &ev, sizeof ev);
    }
    if (c < C) {
      float8 v = float8{} + m;
      for (int64_t j = 0; c + j < C; ++j) v[j] = row[c + j];
      const double8 ev = exp_nonpositive64(__builtin_convertvector(v, double8) - shift);
      for (int64_t j = 0; c + j < C; ++j) e[c + j] = ev[j];
    }
    double sp[kParts] = {};
    for (c = 0; c + kParts <= C; c += kParts)
      for (int64_t j = 0; j < kParts; ++j) sp[j] += e[c + j];
    for (; c < C; ++c) sp[0] += e[c];
    const double sum = ((sp[0] + sp[1]) + (sp[2] + sp[3])) + ((sp[4] + sp[5]) + (sp[6] + sp[7]));
    const double inv = 1.0 / sum;
    float* out = d + i * C;
    for (c = 0; c < C; ++c) out[c] = float(e[c] * inv);
    out[cls[i]] = float(e[cls[i]] * inv - 1.0);
    total += (md + std::log(sum)) - double(row[cls[i]]);
  }
  return total;
}
GROKKING_SIMD_KERNEL(cross_entropy_rows, cross_entropy_rows_impl)

// scored_cross_entropy's node: per replica, the scored rows' log-softmax in float64 and their
// gradient rows (softmax - one-hot, float32) in one pass over the logits (cross_entropy_rows);
// the backward scales the saved rows into place.
struct ScoredCrossEntropy : public torch::autograd::Function<ScoredCrossEntropy> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& logits_,
                               const torch::Tensor& labels) {
    const auto logits = logits_.contiguous();
    const int64_t S = logits.size(0), C = logits.size(-1), M = labels.numel();
    TORCH_CHECK(logits.numel() == S * M * C, "scored_cross_entropy: logits ", logits.sizes(), " for ", M, " labels");
    const auto flat = labels.reshape({-1}).to(torch::kInt64).contiguous();
    const int64_t* y = flat.data_ptr<int64_t>();
    std::vector<int64_t> rows, cls;
    for (int64_t i = 0; i < M; ++i)
      if (y[i] >= 0) {
        TORCH_CHECK(y[i] < C, "scored_cross_entropy: label ", y[i], " of ", C, " classes");
        rows.push_back(i), cls.push_back(y[i]);
      }
    const auto K = int64_t(rows.size());
    auto d = torch::empty({S, K, C}, torch::kFloat);
    std::vector<int64_t> offsets(rows.size());
    std::vector<double> scratch(static_cast<size_t>(C));
    double total = 0;
    for (int64_t r = 0; r < S; ++r) {
      for (int64_t k = 0; k < K; ++k) offsets[size_t(k)] = (r * M + rows[size_t(k)]) * C;
      const double sum = cross_entropy_rows(logits.data_ptr<float>(), offsets.data(), cls.data(), K, C,
                                            d.data_ptr<float>() + r * K * C, scratch.data());
      total += sum / double(K);
    }
    ctx->save_for_backward({d, torch::from_blob(rows.data(), {K}, torch::kInt64).clone()});
    ctx->saved_data["shape"] = logits_.sizes().vec();
    ctx->saved_data["M"] = M;
    return torch::tensor(total, torch::kFloat64);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto& d = saved[0];  // [S, K, C]: softmax - one-hot of the scored rows
    const int64_t* rows = saved[1].data_ptr<int64_t>();
    const auto shape = ctx->saved_data["shape"].toIntVector();
    const int64_t S = d.size(0), K = d.size(1), C = d.size(2), M = ctx->saved_data["M"].toInt();
    const double scale = grads[0].item<double>() / double(K);
    auto out = K == M ? torch::empty({S, M, C}, torch::kFloat) : torch::zeros({S, M, C}, torch::kFloat);
    const float* pd = d.data_ptr<float>();
    float* po = out.data_ptr<float>();
    for (int64_t r = 0; r < S; ++r)
      for (int64_t k = 0; k < K; ++k) {
        const float* src = pd + (r * K + k) * C;
        float* dst = po + (r * M + rows[k]) * C;
        for (int64_t c = 0; c < C; ++c) dst[c] = float(double(src[c]) * scale);
      }
    return {out.view(shape), torch::Tensor()};
  }
};

// embed_sequences' node: a row of each table per position, added; the tables' gradients summed
// back row by row.
struct EmbedSequences : public torch::autograd::Function<EmbedSequences> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& WE_,
                               const torch::Tensor& Wpos_, const torch::Tensor& x_) {
    // Tables [S, rows, d] side by side, or [rows, d] alone (no view op before their gradients).
    const auto WE = WE_.contiguous(), Wpos = Wpos_.contiguous(), x = x_.to(torch::kInt64).contiguous();
    const int64_t S = WE.dim() == 3 ? WE.size(0) : 1, V = WE.size(-2), d = WE.size(-1), P = Wpos.size(-2),
                  N = x.size(0), T = x.size(1);
    TORCH_CHECK(T <= P, "embed_sequences: ", T, " positions, ", P, " position embeddings");
    auto out = torch::empty({S, N, T, d}, WE.options());
    const float *we = WE.data_ptr<float>(), *wp = Wpos.data_ptr<float>();
    const int64_t* tok = x.data_ptr<int64_t>();
    float* o = out.data_ptr<float>();
    for (int64_t i = 0; i < N * T; ++i) TORCH_CHECK(tok[i] >= 0 && tok[i] < V, "embed_sequences: token ", tok[i], " of ", V);
    for (int64_t s = 0; s < S; ++s)
      for (int64_t i = 0; i < N; ++i)
        for (int64_t t = 0; t < T; ++t) {
          const float* e = we + (s * V + tok[i * T + t]) * d;
          const float* p = wp + (s * P + t) * d;
          float* r = o + ((s * N + i) * T + t) * d;
          for (int64_t c = 0; c < d; ++c) r[c] = e[c] + p[c];
        }
    ctx->save_for_backward({x});
    ctx->saved_data["W_E"] = WE_.sizes().vec();
    ctx->saved_data["W_pos"] = Wpos_.sizes().vec();
    ctx->saved_data["V"] = V;
    ctx->saved_data["P"] = P;
    return out;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto x = ctx->get_saved_variables()[0];
    const auto g = grads[0].contiguous();
    const int64_t S = g.size(0), N = g.size(1), T = g.size(2), d = g.size(3);
    const int64_t V = ctx->saved_data["V"].toInt(), P = ctx->saved_data["P"].toInt();
    const int64_t* tok = x.data_ptr<int64_t>();
    const float* pg = g.data_ptr<float>();
    torch::Tensor dWE, dWpos;
    if (ctx->needs_input_grad(0)) {
      dWE = torch::zeros(ctx->saved_data["W_E"].toIntVector(), g.options());
      float* o = dWE.data_ptr<float>();
      for (int64_t s = 0; s < S; ++s)
        for (int64_t i = 0; i < N * T; ++i) {
          float* r = o + (s * V + tok[i]) * d;
          const float* src = pg + (s * N * T + i) * d;
          for (int64_t c = 0; c < d; ++c) r[c] += src[c];
        }
    }
    if (ctx->needs_input_grad(1)) {
      dWpos = torch::zeros(ctx->saved_data["W_pos"].toIntVector(), g.options());
      float* o = dWpos.data_ptr<float>();
      for (int64_t s = 0; s < S; ++s)
        for (int64_t i = 0; i < N; ++i)
          for (int64_t t = 0; t < T; ++t) {
            float* r = o + (s * P + t) * d;
            const float* src = pg + ((s * N + i) * T + t) * d;
            for (int64_t c = 0; c < d; ++c) r[c] += src[c];
          }
    }
    return {dWE, dWpos, torch::Tensor()};
  }
};

}  // namespace

torch::Tensor embed_sequences(const torch::Tensor& W_E, const torch::Tensor& W_pos, const torch::Tensor& x) {
  TORCH_CHECK(W_E.dim() == W_pos.dim() && (W_E.dim() == 3 || W_E.dim() == 2) && x.dim() == 2 &&
                  W_E.scalar_type() == torch::kFloat && W_E.device().is_cpu(),
              "embed_sequences: W_E [S, V, d] and W_pos [S, P, d] (or without S) float32 on the CPU, x [N, T]");
  return EmbedSequences::apply(W_E, W_pos, x);
}

double cross_entropy_gradient_rows(const float* logits, const int64_t* offsets, const int64_t* labels, int64_t rows,
                                   int64_t C, float* d, double* scratch) {
  return cross_entropy_rows(logits, offsets, labels, rows, C, d, scratch);
}

torch::Tensor scored_cross_entropy(const torch::Tensor& logits, const torch::Tensor& labels) {
  TORCH_CHECK(logits.dim() >= 3 && logits.scalar_type() == torch::kFloat && logits.device().is_cpu(),
              "scored_cross_entropy: logits must be [S, ..., C] float32 on the CPU");
  return ScoredCrossEntropy::apply(logits, labels);
}

torch::Tensor attention_sublayer(const torch::Tensor& in, int64_t T, const torch::Tensor& W_Q, const torch::Tensor& W_K,
                                 const torch::Tensor& W_V, const torch::Tensor& b_Q, const torch::Tensor& b_K,
                                 const torch::Tensor& b_V, const torch::Tensor& W_O, const torch::Tensor& b_O) {
  TORCH_CHECK(in.dim() == 3 && in.size(1) % T == 0 && in.scalar_type() == torch::kFloat && in.device().is_cpu(),
              "attention_sublayer: in must be [S, N*T, d] float32 on the CPU");
  return AttentionSublayer::apply(in, W_Q, W_K, W_V, b_Q, b_K, b_V, W_O, b_O, T);
}

}  // namespace grokking
