// The causal attention core of the transformer's fast path (attention.hpp). Per (sequence, head)
// block: the scores of the causal half, the softmax and the weighted values in one pass over
// the queries, with that head's keys and values transposed into small buffers; the backward the
// same way, from the saved pattern, its key and value gradients four queries a pass. Every inner
// loop runs over keys, on contiguous floats, so that the compiler vectorises it (reductions in
// eight parts, exp a polynomial, max and NaN tests on the floats' bits).
#include "attention.hpp"
#include "clones.hpp"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <climits>
#include <cstdint>
#include <cstring>
#include <vector>

namespace grokking {

namespace {

// exp(x) for x <= 0 (a softmax's shifted scores), to a few ulp: Cephes's expf, written so that
// a loop over it vectorises. Below -87 it gives exp(-87), about 1.6e-38.
inline float exp_nonpositive(float x) {
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
inline float sum_of(const float* __restrict__ x, int64_t n) {
  float part[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t j = 0;
  for (; j + 8 <= n; j += 8)
    for (int u = 0; u < 8; ++u) part[u] += x[j + u];
  float tail = 0;
  for (; j < n; ++j) tail += x[j];
  return ((part[0] + part[4]) + (part[1] + part[5])) + ((part[2] + part[6]) + (part[3] + part[7])) + tail;
}
inline float dot_of(const float* __restrict__ x, const float* __restrict__ y, int64_t n) {
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
inline float max_of(const float* x, int64_t n) {
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
inline bool any_nan(const float* x, int64_t n) {
  int32_t any = 0;
  for (int64_t j = 0; j < n; ++j) {
    int32_t b;
    std::memcpy(&b, x + j, sizeof b);
    any |= (b & 0x7FFFFFFF) > 0x7F800000;
  }
  return any != 0;
}

// One (sequence, head) block forward. q, k, v: its rows (stride rs); z: its output rows (stride
// zs); p: its pattern [T, T]; kt, vt: [D, T] buffers for its keys (scaled) and values; s: T floats.
GROKKING_CLONES void forward_block(const float* __restrict__ q, const float* __restrict__ k, const float* __restrict__ v,
                   float* __restrict__ z, float* __restrict__ p, float* __restrict__ kt, float* __restrict__ vt,
                   float* __restrict__ s, int64_t T, int64_t D, int64_t rs, int64_t zs, float scale) {
  for (int64_t j = 0; j < T; ++j)
    for (int64_t e = 0; e < D; ++e) {
      kt[e * T + j] = k[j * rs + e] * scale;
      vt[e * T + j] = v[j * rs + e];
    }
  for (int64_t i = 0; i < T; ++i) {
    const int64_t n = i + 1;
    std::fill(s, s + n, 0.0f);
    int64_t w = 0;
    for (; w + 4 <= D; w += 4) {  // four widths a pass over the scores
      const float q0 = q[i * rs + w], q1 = q[i * rs + w + 1], q2 = q[i * rs + w + 2], q3 = q[i * rs + w + 3];
      const float *k0 = kt + w * T, *k1 = k0 + T, *k2 = k1 + T, *k3 = k2 + T;
      for (int64_t j = 0; j < n; ++j) s[j] += (q0 * k0[j] + q1 * k1[j]) + (q2 * k2[j] + q3 * k3[j]);
    }
    for (; w < D; ++w) {
      const float qw = q[i * rs + w];
      const float* kr = kt + w * T;
      for (int64_t j = 0; j < n; ++j) s[j] += qw * kr[j];
    }
    const float m = max_of(s, n);
    const bool nan = any_nan(s, n);
    for (int64_t j = 0; j < n; ++j) s[j] = exp_nonpositive(s[j] - m);
    const float sum = sum_of(s, n);
    const float inv = nan ? std::nanf("") : 1.0f / sum;  // a NaN score spreads as the generic softmax spreads it
    float* pr = p + i * T;
    for (int64_t j = 0; j < n; ++j) pr[j] = s[j] * inv;
    std::fill(pr + n, pr + T, 0.0f);
    float* zr = z + i * zs;
    for (int64_t e = 0; e < D; ++e) zr[e] = dot_of(pr, vt + e * T, n);
  }
}

// One (sequence, head) block backward: d q, d k, d v (rows of stride rs, each written once) from d z
// (stride zs) and the saved pattern p. Every inner loop runs over the keys j <= i, on transposed
// [D, T] buffers: kt, vt (the block's keys and values), dkt, dvt (their gradients, written to d k
// and d v at the end); ds: [T, T] floats, the gradient at the scores.
GROKKING_CLONES void backward_block(const float* __restrict__ q, const float* __restrict__ k, const float* __restrict__ v,
                    const float* __restrict__ gz, const float* __restrict__ p, float* __restrict__ dq,
                    float* __restrict__ dk, float* __restrict__ dv, float* __restrict__ kt, float* __restrict__ vt,
                    float* __restrict__ dkt, float* __restrict__ dvt, float* __restrict__ ds, int64_t T, int64_t D,
                    int64_t rs, int64_t zs, float scale) {
  for (int64_t j = 0; j < T; ++j)
    for (int64_t e = 0; e < D; ++e) {
      kt[e * T + j] = k[j * rs + e];
      vt[e * T + j] = v[j * rs + e];
    }
  // Row by row: the gradient at the scores, ds_i = p_i * (dz_i . v - p_i . (dz_i . v)) * scale
  // (zero past the diagonal), and d q_i = sum_j ds_ij k_j.
  for (int64_t i = 0; i < T; ++i) {
    const int64_t n = i + 1;
    const float* pr = p + i * T;
    const float* gr = gz + i * zs;
    float* d = ds + i * T;
    std::fill(d, d + T, 0.0f);
    int64_t w = 0;
    for (; w + 4 <= D; w += 4) {  // d pattern = dz_i . v_j, four widths a pass
      const float g0 = gr[w], g1 = gr[w + 1], g2 = gr[w + 2], g3 = gr[w + 3];
      const float *v0 = vt + w * T, *v1 = v0 + T, *v2 = v1 + T, *v3 = v2 + T;
      for (int64_t j = 0; j < n; ++j) d[j] += (g0 * v0[j] + g1 * v1[j]) + (g2 * v2[j] + g3 * v3[j]);
    }
    for (; w < D; ++w) {
      const float g = gr[w];
      const float* vr = vt + w * T;
      for (int64_t j = 0; j < n; ++j) d[j] += g * vr[j];
    }
    const float dot = dot_of(d, pr, n);
    for (int64_t j = 0; j < n; ++j) d[j] = pr[j] * (d[j] - dot) * scale;  // d of q_i . k_j
    float* dqr = dq + i * rs;
    for (int64_t e = 0; e < D; ++e) dqr[e] = dot_of(d, kt + e * T, n);
  }
  // Then per width e: d v_j += sum_i p_ij dz_ie and d k_j += sum_i ds_ij q_ie, four query rows a
  // pass (rows of p and ds are zero past the diagonal), so that each row of dvt and dkt is loaded
  // and stored once per four rows instead of once per row.
  for (int64_t e = 0; e < D; ++e) {
    float* dvr = dvt + e * T;
    float* dkr = dkt + e * T;
    std::fill(dvr, dvr + T, 0.0f);
    std::fill(dkr, dkr + T, 0.0f);
    int64_t i = 0;
    for (; i + 4 <= T; i += 4) {
      const int64_t n = i + 4;
      const float g0 = gz[i * zs + e], g1 = gz[(i + 1) * zs + e], g2 = gz[(i + 2) * zs + e], g3 = gz[(i + 3) * zs + e];
      const float q0 = q[i * rs + e], q1 = q[(i + 1) * rs + e], q2 = q[(i + 2) * rs + e], q3 = q[(i + 3) * rs + e];
      const float *p0 = p + i * T, *p1 = p0 + T, *p2 = p1 + T, *p3 = p2 + T;
      const float *s0 = ds + i * T, *s1 = s0 + T, *s2 = s1 + T, *s3 = s2 + T;
      for (int64_t j = 0; j < n; ++j) {
        dvr[j] += (p0[j] * g0 + p1[j] * g1) + (p2[j] * g2 + p3[j] * g3);
        dkr[j] += (s0[j] * q0 + s1[j] * q1) + (s2[j] * q2 + s3[j] * q3);
      }
    }
    for (; i < T; ++i) {
      const float g = gz[i * zs + e], qe = q[i * rs + e];
      const float *pr = p + i * T, *sr = ds + i * T;
      for (int64_t j = 0; j <= i; ++j) dvr[j] += pr[j] * g, dkr[j] += sr[j] * qe;
    }
  }
  for (int64_t j = 0; j < T; ++j)
    for (int64_t e = 0; e < D; ++e) {
      dk[j * rs + e] = dkt[e * T + j];
      dv[j * rs + e] = dvt[e * T + j];
    }
}

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
      std::vector<float> kt(static_cast<size_t>(D * T)), vt(kt.size()), s(static_cast<size_t>(T));
      for (int64_t bh = begin; bh < end; ++bh) {
        const int64_t b = bh / H, h = bh % H;
        const float* q = in + b * T * rs + h * D;
        forward_block(q, q + H * D, q + 2 * H * D, out + b * T * zs + h * D, pat + bh * T * T, kt.data(),
                      vt.data(), s.data(), T, D, rs, zs, scale);
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
      const auto DT = static_cast<size_t>(D * T);
      std::vector<float> kt(DT), vt(DT), dkt(DT), dvt(DT), ds(static_cast<size_t>(T * T));
      for (int64_t bh = begin; bh < end; ++bh) {
        const int64_t b = bh / H, h = bh % H;
        const float* q = in + b * T * rs + h * D;
        float* dq = gin + b * T * rs + h * D;
        backward_block(q, q + H * D, q + 2 * H * D, gz + b * T * zs + h * D, pat + bh * T * T, dq, dq + H * D,
                       dq + 2 * H * D, kt.data(), vt.data(), dkt.data(), dvt.data(), ds.data(), T, D, rs, zs, scale);
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
