// Two nodes of the transformer's fast path for pair tasks ([a, b, =] inputs, the loss at "="),
// written by hand for float32 on the CPU: the attention of "=" to a, b and itself read from
// per-token tables, and the MLP's bias and ReLU. Each does in one pass each way what a chain of
// LibTorch ops did (index_select, stack, softmax, select, mul and add; add and relu) with their
// backward, whose per-op work was a quarter of the step beside its products. The loops are
// compiled for each instruction set (simd.hpp); every level equals the generic forward to 1e-5.
#include "attention.hpp"
#include "simd.hpp"

#include <vector>

namespace grokking {

namespace {

// Each (row, head)'s softmax over its three scores, given planar (t0, t1, t2: n each), into the
// planar pattern p0, p1, p2: in float64 (exp_nonpositive64), rounded to float32. As torch's
// softmax: a NaN or a +inf score makes its row NaN, a -inf score weighs 0 (all three -inf: NaN).
GROKKING_INLINE void softmax3(const float* __restrict__ t0, const float* __restrict__ t1, const float* __restrict__ t2,
                              float* __restrict__ p0, float* __restrict__ p1, float* __restrict__ p2, int64_t n) {
  for (int64_t k = 0; k < n; ++k) {
    const float a = t0[k], b = t1[k], c = t2[k];
    float m = a > b ? a : b;
    m = c > m ? c : m;
    const double md = double(m);
    const double e0 = exp_nonpositive64(double(a) - md), e1 = exp_nonpositive64(double(b) - md),
                 e2 = exp_nonpositive64(double(c) - md);
    const double inv = 1.0 / ((e0 + e1) + e2);
    p0[k] = float(e0 * inv);
    p1[k] = float(e1 * inv);
    p2[k] = float(e2 * inv);
  }
}

// x . y over n floats, in eight partial sums so that it vectorises.
GROKKING_INLINE float dot(const float* __restrict__ x, const float* __restrict__ y, int64_t n) {
  constexpr int64_t kParts = 8;
  float part[kParts] = {};
  int64_t c = 0;
  for (; c + kParts <= n; c += kParts)
    for (int64_t j = 0; j < kParts; ++j) part[j] += x[c + j] * y[c + j];
  for (; c < n; ++c) part[0] += x[c] * y[c];
  return ((part[0] + part[1]) + (part[2] + part[3])) + ((part[4] + part[5]) + (part[6] + part[7]));
}

GROKKING_INLINE void mix3(const float* __restrict__ r0, const float* __restrict__ r1, const float* __restrict__ r2,
                          float p0, float p1, float p2, float* __restrict__ z, int64_t n) {
  for (int64_t c = 0; c < n; ++c) z[c] = (p0 * r0[c] + p1 * r1[c]) + p2 * r2[c];
}

GROKKING_INLINE void spread3(const float* __restrict__ g, float p0, float p1, float p2, float* __restrict__ w0,
                             float* __restrict__ w1, double* __restrict__ w2, int64_t n) {
  for (int64_t c = 0; c < n; ++c) {
    w0[c] += p0 * g[c];
    w1[c] += p1 * g[c];
    w2[c] += double(p2 * g[c]);
  }
}

// One replica's forward. Tables: k0, k1 [P, H] (the scaled scores of "=" against each token at
// positions 0 and 1), k2 [H] (against itself), v0, v1 [P, H D] (the values), v2 [H D]; pairs
// x [N, T] (a = x[i][0], b = x[i][1]). Writes the pattern [3][N H] (planar) and z [N, H D];
// scratch: 3 N H floats.
GROKKING_INLINE void pair_attention_forward_impl(const float* k0, const float* k1, const float* k2, const float* v0,
                                                 const float* v1, const float* v2, const int64_t* x, int64_t T,
                                                 int64_t N, int64_t H, int64_t D, float* pat, float* scratch, float* z) {
  const int64_t NH = N * H, HD = H * D;
  float *t0 = scratch, *t1 = scratch + NH, *t2 = scratch + 2 * NH;
  for (int64_t i = 0; i < N; ++i) {
    const float *r0 = k0 + x[i * T] * H, *r1 = k1 + x[i * T + 1] * H;
    for (int64_t h = 0; h < H; ++h) t0[i * H + h] = r0[h], t1[i * H + h] = r1[h], t2[i * H + h] = k2[h];
  }
  float *p0 = pat, *p1 = pat + NH, *p2 = pat + 2 * NH;
  softmax3(t0, t1, t2, p0, p1, p2, NH);
  for (int64_t i = 0; i < N; ++i) {
    const float *r0 = v0 + x[i * T] * HD, *r1 = v1 + x[i * T + 1] * HD;
    for (int64_t h = 0; h < H; ++h) {
      const int64_t k = i * H + h;
      mix3(r0 + h * D, r1 + h * D, v2 + h * D, p0[k], p1[k], p2[k], z + i * HD + h * D, D);
    }
  }
}

// One replica's backward from dz [N, H D] and the saved pattern: the scores' gradient through
// the softmax (ds_j = p_j (dp_j - sum_k p_k dp_k), dp_j = dz . v_j), added into gk0, gk1 [P, H]
// at the row's tokens and into gk2 [H] (float64), and p_j dz into gv0, gv1 [P, H D] and gv2
// [H D] (float64), in row order.
GROKKING_INLINE void pair_attention_backward_impl(const float* dz, const float* pat, const float* v0, const float* v1,
                                                  const float* v2, const int64_t* x, int64_t T, int64_t N, int64_t H,
                                                  int64_t D, float* gk0, float* gk1, double* gk2, float* gv0,
                                                  float* gv1, double* gv2) {
  const int64_t NH = N * H, HD = H * D;
  const float *p0 = pat, *p1 = pat + NH, *p2 = pat + 2 * NH;
  for (int64_t i = 0; i < N; ++i) {
    const int64_t a = x[i * T], b = x[i * T + 1];
    for (int64_t h = 0; h < H; ++h) {
      const int64_t k = i * H + h;
      const float* g = dz + i * HD + h * D;
      const float d0 = dot(g, v0 + a * HD + h * D, D), d1 = dot(g, v1 + b * HD + h * D, D), d2 = dot(g, v2 + h * D, D);
      const float mean = (p0[k] * d0 + p1[k] * d1) + p2[k] * d2;
      gk0[a * H + h] += p0[k] * (d0 - mean);
      gk1[b * H + h] += p1[k] * (d1 - mean);
      gk2[h] += double(p2[k] * (d2 - mean));
      spread3(g, p0[k], p1[k], p2[k], gv0 + a * HD + h * D, gv1 + b * HD + h * D, gv2 + h * D, D);
    }
  }
}

GROKKING_SIMD_KERNEL(pair_attention_forward, pair_attention_forward_impl)
GROKKING_SIMD_KERNEL(pair_attention_backward, pair_attention_backward_impl)

struct PairAttention : public torch::autograd::Function<PairAttention> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& k0_, const torch::Tensor& k1_,
                               const torch::Tensor& k2_, const torch::Tensor& v0_, const torch::Tensor& v1_,
                               const torch::Tensor& v2_, const torch::Tensor& x_) {
    const auto k0 = k0_.contiguous(), k1 = k1_.contiguous(), k2 = k2_.contiguous();
    const auto v0 = v0_.contiguous(), v1 = v1_.contiguous(), v2 = v2_.contiguous();
    const auto x = x_.to(torch::kInt64).contiguous();
    const int64_t S = k0.size(0), P = k0.size(1), H = k0.size(2), HD = v0.size(2), N = x.size(0), T = x.size(1);
    const int64_t* pairs = x.data_ptr<int64_t>();
    for (int64_t i = 0; i < N; ++i)
      TORCH_CHECK(pairs[i * T] >= 0 && pairs[i * T] < P && pairs[i * T + 1] >= 0 && pairs[i * T + 1] < P,
                  "pair_attention: operand out of range of ", P);
    auto z = torch::empty({S, N, HD}, v0.options()), pat = torch::empty({S, 3, N * H}, v0.options());
    std::vector<float> scratch(static_cast<size_t>(3 * N * H));
    for (int64_t s = 0; s < S; ++s)
      pair_attention_forward(k0.data_ptr<float>() + s * P * H, k1.data_ptr<float>() + s * P * H,
                             k2.data_ptr<float>() + s * H, v0.data_ptr<float>() + s * P * HD,
                             v1.data_ptr<float>() + s * P * HD, v2.data_ptr<float>() + s * HD, pairs, T, N, H, HD / H,
                             pat.data_ptr<float>() + s * 3 * N * H, scratch.data(), z.data_ptr<float>() + s * N * HD);
    ctx->save_for_backward({pat, v0, v1, v2, x});
    ctx->saved_data["H"] = H;
    return z;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto &pat = saved[0], &v0 = saved[1], &v1 = saved[2], &v2 = saved[3], &x = saved[4];
    const auto dz = grads[0].contiguous();
    const int64_t S = v0.size(0), P = v0.size(1), HD = v0.size(2), H = ctx->saved_data["H"].toInt(), N = x.size(0),
                  T = x.size(1);
    const auto f = v0.options();
    auto gk0 = torch::zeros({S, P, H}, f), gk1 = torch::zeros({S, P, H}, f);
    auto gv0 = torch::zeros({S, P, HD}, f), gv1 = torch::zeros({S, P, HD}, f);
    auto gk2 = torch::zeros({S, 1, H}, torch::kFloat64), gv2 = torch::zeros({S, 1, HD}, torch::kFloat64);
    for (int64_t s = 0; s < S; ++s)
      pair_attention_backward(dz.data_ptr<float>() + s * N * HD, pat.data_ptr<float>() + s * 3 * N * H,
                              v0.data_ptr<float>() + s * P * HD, v1.data_ptr<float>() + s * P * HD,
                              v2.data_ptr<float>() + s * HD, x.data_ptr<int64_t>(), T, N, H, HD / H,
                              gk0.data_ptr<float>() + s * P * H, gk1.data_ptr<float>() + s * P * H,
                              gk2.data_ptr<double>() + s * H, gv0.data_ptr<float>() + s * P * HD,
                              gv1.data_ptr<float>() + s * P * HD, gv2.data_ptr<double>() + s * HD);
    return {gk0, gk1, gk2.to(torch::kFloat), gv0, gv1, gv2.to(torch::kFloat), torch::Tensor()};
  }
};

// relu(x + b) row by row, and its backward: the gradient where the output is positive (as
// torch's threshold_backward: where it is not <= 0), and the bias's gradient, its column sums
// in float64 in row order.
GROKKING_INLINE void bias_relu_rows_impl(const float* x, const float* b, float* out, int64_t rows, int64_t M) {
  for (int64_t i = 0; i < rows; ++i) {
    const float* __restrict__ r = x + i * M;
    float* __restrict__ o = out + i * M;
    for (int64_t c = 0; c < M; ++c) {
      const float v = r[c] + b[c];
      o[c] = v < 0 ? 0.0f : v;  // NaN stays NaN, as in torch::relu
    }
  }
}
GROKKING_INLINE void bias_relu_backward_impl(const float* out, const float* g, float* dx, double* db, int64_t rows,
                                             int64_t M) {
  for (int64_t i = 0; i < rows; ++i) {
    const float* __restrict__ o = out + i * M;
    const float* __restrict__ gr = g + i * M;
    float* __restrict__ d = dx + i * M;
    for (int64_t c = 0; c < M; ++c) {
      const float gc = gr[c], oc = o[c];  // both loaded, so that the select needs no branch
      d[c] = oc <= 0 ? 0.0f : gc;
    }
    if (db)
      for (int64_t c = 0; c < M; ++c) db[c] += double(d[c]);
  }
}
GROKKING_SIMD_KERNEL(bias_relu_rows, bias_relu_rows_impl)
GROKKING_SIMD_KERNEL(bias_relu_backward, bias_relu_backward_impl)

struct BiasRelu : public torch::autograd::Function<BiasRelu> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x_, const torch::Tensor& b_) {
    const auto x = x_.contiguous(), b = b_.contiguous();
    const int64_t S = x.size(0), N = x.size(1), M = x.size(2);
    auto out = torch::empty_like(x);
    for (int64_t s = 0; s < S; ++s)
      bias_relu_rows(x.data_ptr<float>() + s * N * M, b.data_ptr<float>() + s * M, out.data_ptr<float>() + s * N * M, N,
                     M);
    ctx->save_for_backward({out});
    return out;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto out = ctx->get_saved_variables()[0];
    const auto g = grads[0].contiguous();
    const int64_t S = out.size(0), N = out.size(1), M = out.size(2);
    auto dx = torch::empty_like(out);
    torch::Tensor db;
    if (ctx->needs_input_grad(1)) db = torch::zeros({S, M}, torch::kFloat64);
    for (int64_t s = 0; s < S; ++s)
      bias_relu_backward(out.data_ptr<float>() + s * N * M, g.data_ptr<float>() + s * N * M,
                         dx.data_ptr<float>() + s * N * M, db.defined() ? db.data_ptr<double>() + s * M : nullptr, N,
                         M);
    return {dx, db.defined() ? db.to(torch::kFloat) : torch::Tensor()};
  }
};

}  // namespace

torch::Tensor pair_attention(const torch::Tensor& k0, const torch::Tensor& k1, const torch::Tensor& k2,
                             const torch::Tensor& v0, const torch::Tensor& v1, const torch::Tensor& v2,
                             const torch::Tensor& x) {
  const bool ok = k0.dim() == 3 && k1.sizes() == k0.sizes() && k2.dim() == 3 && k2.size(1) == 1 &&
                  k2.size(2) == k0.size(2) && v0.dim() == 3 && v1.sizes() == v0.sizes() && v2.dim() == 3 &&
                  v2.size(1) == 1 && v2.size(2) == v0.size(2) && v0.size(1) == k0.size(1) &&
                  v0.size(2) % k0.size(2) == 0 && x.dim() == 2 && x.size(1) >= 2;
  TORCH_CHECK(ok && k2.size(0) == k0.size(0) && v0.size(0) == k0.size(0) && v2.size(0) == k0.size(0),
              "pair_attention: k0, k1 [S, P, H], k2 [S, 1, H], v0, v1 [S, P, H D], v2 [S, 1, H D], x [N, >= 2]");
  for (auto* t : {&k0, &k1, &k2, &v0, &v1, &v2})
    TORCH_CHECK(t->scalar_type() == torch::kFloat && t->device().is_cpu(), "pair_attention: float32 on the CPU");
  TORCH_CHECK(x.device().is_cpu() && !x.is_floating_point() && !x.is_complex(), "pair_attention: x integer on the CPU");
  return PairAttention::apply(k0, k1, k2, v0, v1, v2, x);
}

torch::Tensor bias_relu(const torch::Tensor& x, const torch::Tensor& b) {
  TORCH_CHECK(x.dim() == 3 && b.dim() == 2 && b.size(0) == x.size(0) && b.size(1) == x.size(2) &&
                  x.scalar_type() == torch::kFloat && b.scalar_type() == torch::kFloat && x.device().is_cpu() &&
                  b.device().is_cpu(),
              "bias_relu: x [S, N, M] and b [S, M] float32 on the CPU");
  return BiasRelu::apply(x, b);
}

}  // namespace grokking
