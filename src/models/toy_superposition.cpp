// model.kind "toy_superposition" (Elhage et al. 2022): x' = ReLU(W^T W x + b), W of m hidden
// dimensions by n features, stored as the notebook stores it, one row per feature: W [n, m], so
// that row i is feature i's direction W_i; and the linear variant (no ReLU) as the control.
#include <algorithm>
#include <cmath>
#include <functional>
#include <vector>

#include "grokking/error.hpp"
#include "grokking/model.hpp"
#include "grokking/threads.hpp"
#include "simd.hpp"

namespace grokking {

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Whether the fused loops below apply: float32 on the CPU, contiguous (elsewhere: tensor ops).
bool fusable(const torch::Tensor& t) { return t.device().is_cpu() && t.scalar_type() == torch::kFloat32 && t.is_contiguous(); }

// Sums over the examples run in float over blocks of this many rows, each block's sums then added
// in float64 (in example order, whatever the threads: a replica's sums do not depend on others).
constexpr int64_t kBlockRows = 32;

// The masked gradient of one row: G = grad where out > 0 (torch's threshold_backward: out <= 0
// passes nothing), summed into gsum. Written for the vectoriser: no aliasing, no branches.
void masked_row(const float* __restrict__ grad, const float* __restrict__ out, float* __restrict__ G,
                float* __restrict__ gsum, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float g = grad[i];  // loaded and computed whatever the mask: a select the vectoriser can make
    const float v = out[i] <= 0 ? 0.0f : g;
    G[i] = v;
    gsum[i] += v;
  }
}
void sum_row(const float* __restrict__ grad, float* __restrict__ gsum, int64_t n) {
  for (int64_t i = 0; i < n; ++i) gsum[i] += grad[i];
}

// One row of the fused step: z <- the gradient at the pre-activation of the output
// o = act(z + bias) under the loss I (o - t)^2 / N (c = 2 I / N): c (o - t) where the ReLU passes
// (torch's threshold_backward: o <= 0 passes nothing); (o - t)^2 summed into sq and the gradient
// into gsum. o_row: n floats of scratch. Written for the vectoriser (GCC 12 -O3): no aliasing,
// each loop a single select between values already computed.
void step_row_relu(float* __restrict__ z, const float* __restrict__ t, const float* __restrict__ bias,
                   const float* __restrict__ c, float* __restrict__ sq, float* __restrict__ gsum,
                   float* __restrict__ o_row, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float v = z[i] + bias[i];
    const float o = v < 0 ? 0.0f : v;  // torch::relu (NaN stays NaN)
    o_row[i] = o;
    const float d = o - t[i];
    sq[i] += d * d;
    z[i] = c[i] * d;
  }
  for (int64_t i = 0; i < n; ++i) {
    const float cd = z[i];
    const float g = o_row[i] <= 0 ? 0.0f : cd;
    z[i] = g;
    gsum[i] += g;
  }
}
void step_row_linear(float* __restrict__ z, const float* __restrict__ t, const float* __restrict__ bias,
                     const float* __restrict__ c, float* __restrict__ sq, float* __restrict__ gsum, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float d = (z[i] + bias[i]) - t[i];
    sq[i] += d * d;
    const float g = c[i] * d;
    z[i] = g;
    gsum[i] += g;
  }
}

// acc += block (in float64), block <- 0.
void flush_block(std::vector<float>& block, std::vector<double>& acc) {
  for (size_t i = 0; i < block.size(); ++i) acc[i] += double(block[i]);
  std::fill(block.begin(), block.end(), 0.0f);
}

// out <- act(out + b) in place, out [S, N, n], b [S, n]: the bias and the ReLU in one pass (the
// same float operations as the generic forward's add and relu, so the same values).
void bias_act_(torch::Tensor& out, const torch::Tensor& b, bool relu) {
  const auto bc = b.contiguous();
  if (!fusable(out) || !fusable(bc)) {
    out.add_(bc.unsqueeze(1));
    if (relu) out.relu_();
    return;
  }
  const int64_t N = out.size(1), n = out.size(2);
  float* o = out.data_ptr<float>();
  const float* pb = bc.data_ptr<float>();
  at::parallel_for(0, out.size(0) * N, 64, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      float* r = o + row * n;
      const float* bias = pb + (row / N) * n;
      if (relu) {
        for (int64_t i = 0; i < n; ++i) {
          const float v = r[i] + bias[i];
          r[i] = v < 0 ? 0.0f : v;  // NaN stays NaN, as torch::relu keeps it
        }
      } else {
        for (int64_t i = 0; i < n; ++i) r[i] += bias[i];
      }
    }
  });
}

// The gradient at the pre-activation, G = grad * (out > 0) (ReLU; grad itself when linear), and
// db = sum over the examples of G, [S, n], summed per replica in example order (kBlockRows: so a
// replica's gradient does not depend on the others beside it).
std::pair<torch::Tensor, torch::Tensor> masked_grad(const torch::Tensor& grad_in, const torch::Tensor& out, bool relu) {
  const auto grad = grad_in.contiguous();
  if (!fusable(grad) || !fusable(out)) {
    auto G = relu ? grad * out.gt(0).to(grad.scalar_type()) : grad;
    return {G, G.sum(1)};
  }
  const int64_t S = out.size(0), N = out.size(1), n = out.size(2);
  auto G = relu ? torch::empty_like(grad) : grad;
  auto db = torch::empty({S, n}, grad.options());
  const float* pg = grad.data_ptr<float>();
  const float* po = out.data_ptr<float>();
  float* pG = G.data_ptr<float>();
  float* pdb = db.data_ptr<float>();
  at::parallel_for(0, S, 1, [&](int64_t begin, int64_t end) {
    std::vector<double> acc(static_cast<size_t>(n));
    std::vector<float> block(static_cast<size_t>(n));
    for (int64_t s = begin; s < end; ++s) {
      std::fill(acc.begin(), acc.end(), 0.0);
      std::fill(block.begin(), block.end(), 0.0f);
      for (int64_t k = 0; k < N; ++k) {
        const int64_t off = (s * N + k) * n;
        if (relu) masked_row(pg + off, po + off, pG + off, block.data(), n);
        else sum_row(pg + off, block.data(), n);
        if ((k + 1) % kBlockRows == 0 || k + 1 == N) flush_block(block, acc);
      }
      for (int64_t i = 0; i < n; ++i) pdb[s * n + i] = float(acc[size_t(i)]);
    }
  });
  return {G, db};
}

// out = act(x W W^T + b) batched over replicas: x [S, N, n], W [S, n, m], b [S, n] -> [S, N, n].
// Forward: two bmm's, then the bias and the ReLU in one pass over the output, which is kept (its
// sign is the ReLU's mask) with h = x W. Backward, from G = grad * mask: db = sum_N G,
// dW = G^T h + x^T (G W), dx = (G W) W^T where x needs one.
class ToyForward : public torch::autograd::Function<ToyForward> {
 public:
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x, const torch::Tensor& W, const torch::Tensor& b,
                               bool relu) {
    auto h = torch::bmm(x, W);                     // [S, N, m]
    auto out = torch::bmm(h, W.transpose(1, 2));  // [S, N, n], a fresh contiguous tensor
    bias_act_(out, b, relu);
    ctx->saved_data["relu"] = relu;
    ctx->save_for_backward({x, W, h, out});
    return out;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto &x = saved[0], &W = saved[1], &h = saved[2], &out = saved[3];
    const bool relu = ctx->saved_data["relu"].toBool();
    auto [G, db] = masked_grad(grads[0], out, relu);
    torch::Tensor dx, dW;
    const bool need_dh = ctx->needs_input_grad(0) || ctx->needs_input_grad(1);
    const auto dh = need_dh ? torch::bmm(G, W) : torch::Tensor();  // [S, N, m]
    if (ctx->needs_input_grad(1)) dW = torch::bmm(G.transpose(1, 2), h).baddbmm_(x.transpose(1, 2), dh);
    if (ctx->needs_input_grad(0)) dx = torch::bmm(dh, W.transpose(1, 2));
    if (!ctx->needs_input_grad(2)) db = torch::Tensor();
    return {dx, dW, db, torch::Tensor()};
  }
};

// Eight running sums of e[0..32), added pairwise: a fixed order of float additions that the
// vectoriser keeps (a plain running sum may not be reordered).
GROKKING_INLINE float sum32(const float* __restrict__ e) {
  float p[8];
  for (int l = 0; l < 8; ++l) p[l] = ((e[l] + e[l + 8]) + e[l + 16]) + e[l + 24];
  return ((p[0] + p[1]) + (p[2] + p[3])) + ((p[4] + p[5]) + (p[6] + p[7]));
}

// out = in W over a block of kBlockRows examples, feature-major: in [n][B], W [n, m], out [m][B].
GROKKING_INLINE void times_w(const float* __restrict__ in, const float* __restrict__ W, float* __restrict__ out, int64_t n,
                    int64_t m) {
  constexpr int64_t B = kBlockRows;
  for (int64_t j = 0; j < m; ++j) {
    float* oj = out + j * B;
    for (int64_t r = 0; r < B; ++r) oj[r] = 0.0f;
    for (int64_t i = 0; i < n; ++i) {
      const float w = W[i * m + j];
      const float* ii = in + i * B;
      for (int64_t r = 0; r < B; ++r) oj[r] += ii[r] * w;
    }
  }
}

// One replica's whole step by hand, for models too small for a matrix product to pay its set-up
// (n m <= kSmallModel: 5 -> 2, 20 -> 5). The examples go in blocks of kBlockRows, each block
// transposed to [feature][example] so that every loop runs over the block's examples on
// contiguous floats: h = x W, the output, its loss, the gradient at the pre-activation G, W^T G,
// and the block's sums of (o - t)^2, G and G h^T + x (W^T G)^T (sum32), added in float64 block by
// block, in example order. x, y [N, n], W [n, m] row-major, I [n]. Returns the loss; dW, db (or
// null) receive the gradients. Compiled for each instruction set as the attention core is
// (simd.hpp).
constexpr int64_t kSmallModel = 256;
static_assert(kBlockRows == 32, "sum32 sums one block");
GROKKING_INLINE double small_step_impl(const float* __restrict__ x, const float* __restrict__ y,
                                       const float* __restrict__ W, const float* __restrict__ bias,
                                       const float* __restrict__ I, int64_t N, int64_t n, int64_t m, bool relu,
                                       float* __restrict__ dW, float* __restrict__ db) {
  constexpr int64_t B = kBlockRows;
  std::vector<float> buf(static_cast<size_t>((3 * n + 2 * m + 3) * B));
  float* __restrict__ xT = buf.data();  // [n][B]
  float* __restrict__ tT = xT + n * B;  // [n][B]
  float* __restrict__ G = tT + n * B;   // [n][B]
  float* __restrict__ h = G + n * B;    // [m][B]
  float* __restrict__ gh = h + m * B;   // [m][B]
  float* __restrict__ e = gh + m * B;   // [B]
  float* __restrict__ mask = e + B;     // [B]: 1 for the block's examples, 0 past the last
  float* __restrict__ ob = mask + B;    // [B]: the outputs of one feature
  std::vector<double> acc(static_cast<size_t>(n)), dacc(static_cast<size_t>(n)), dWacc(static_cast<size_t>(n * m));
  std::vector<float> c(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) c[size_t(i)] = float(2.0 * double(I[i]) / double(N));
  for (int64_t k0 = 0; k0 < N; k0 += B) {
    const int64_t rows = std::min(B, N - k0);
    for (int64_t r = 0; r < B; ++r) mask[r] = r < rows ? 1.0f : 0.0f;
    for (int64_t i = 0; i < n; ++i)
      for (int64_t r = 0; r < B; ++r) {
        xT[i * B + r] = r < rows ? x[(k0 + r) * n + i] : 0.0f;
        tT[i * B + r] = r < rows ? y[(k0 + r) * n + i] : 0.0f;
      }
    times_w(xT, W, h, n, m);  // h = x W
    for (int64_t i = 0; i < n; ++i) {
      float* Gi = G + i * B;
      const float* ti = tT + i * B;
      for (int64_t r = 0; r < B; ++r) Gi[r] = 0.0f;  // z = h W_i^T, accumulated here first
      for (int64_t j = 0; j < m; ++j) {
        const float w = W[i * m + j];
        const float* hj = h + j * B;
        for (int64_t r = 0; r < B; ++r) Gi[r] += hj[r] * w;
      }
      const float bi = bias[i], ci = c[size_t(i)];
      if (relu) {  // each loop one select between values already computed, which the vectoriser makes
        for (int64_t r = 0; r < B; ++r) {
          const float v = Gi[r] + bi;
          const float o = v < 0 ? 0.0f : v;  // torch::relu (NaN stays NaN)
          ob[r] = o;
          const float d = (o - ti[r]) * mask[r];
          e[r] = d * d;
          Gi[r] = ci * d;
        }
        for (int64_t r = 0; r < B; ++r) {
          const float g = Gi[r];
          Gi[r] = ob[r] <= 0 ? 0.0f : g;  // threshold_backward: o <= 0 passes nothing
        }
      } else {
        for (int64_t r = 0; r < B; ++r) {
          const float d = ((Gi[r] + bi) - ti[r]) * mask[r];
          e[r] = d * d;
          Gi[r] = ci * d;
        }
      }
      acc[size_t(i)] += double(sum32(e));
      dacc[size_t(i)] += double(sum32(Gi));
    }
    if (!dW) continue;
    times_w(G, W, gh, n, m);  // W^T G
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < m; ++j) {
        const float *Gi = G + i * B, *xi = xT + i * B, *hj = h + j * B, *gj = gh + j * B;
        for (int64_t r = 0; r < B; ++r) e[r] = Gi[r] * hj[r] + xi[r] * gj[r];
        dWacc[size_t(i * m + j)] += double(sum32(e));
      }
  }
  double loss = 0;
  for (int64_t i = 0; i < n; ++i) loss += double(I[i]) * acc[size_t(i)];
  if (dW) {
    for (int64_t i = 0; i < n * m; ++i) dW[i] = float(dWacc[size_t(i)]);
    for (int64_t i = 0; i < n; ++i) db[i] = float(dacc[size_t(i)]);
  }
  return loss / double(N);
}
GROKKING_SIMD_KERNEL(small_step, small_step_impl)

// Whether toy_losses takes this batch and these weights: float32 on the CPU, contiguous, the
// replica axes matching, and no gradient wanted for the batch.
bool fusable_batch(const Batch& batch, const torch::Tensor& W, const torch::Tensor& b) {
  const auto& x = batch.x;
  return fusable(x) && fusable(batch.y) && batch.weight.defined() && fusable(batch.weight) && fusable(W) && fusable(b) &&
         x.dim() == 3 && x.size(0) == W.size(0) && batch.y.sizes() == x.sizes() && batch.weight.sizes() == b.sizes() &&
         !x.requires_grad() && !batch.y.requires_grad() && !batch.weight.requires_grad();
}

// Each replica's loss of a reconstruction, batch_loss's terms (the batch mean of
// sum_i I_i (x_i - x'_i)^2 over the outputs x' = act(x W W^T + b)), with the gradients dW, db
// where they are defined ([S, n, m], [S, n]), without holding the outputs. Small models go through
// small_step replica by replica; larger ones replica group by group so that a group's outputs stay
// in cache: h = x W and z = h W^T by bmm; one pass over z that adds the bias, applies the ReLU,
// accumulates the loss and turns z into the gradient G at the pre-activation
// (2 I (x' - x) / N where the ReLU passes) while summing db; then dW = G^T h + x^T (G W) by bmm.
// Sums run per replica in example order (kBlockRows) and the bmm's are per replica, so a
// replica's loss and gradients do not depend on the replicas beside it. x, y [S, N, n], W [S, n, m],
// b, I [S, n] float32 on the CPU, contiguous.
std::vector<double> toy_losses(const torch::Tensor& x, const torch::Tensor& W, const torch::Tensor& b, const torch::Tensor& y,
                               const torch::Tensor& importance, bool relu, torch::Tensor dW, torch::Tensor db) {
  const int64_t S = x.size(0), N = x.size(1), n = x.size(2), m = W.size(2);
  const bool grads = dW.defined();
  std::vector<double> losses(static_cast<size_t>(S));
  const float* pW = W.data_ptr<float>();
  const float* px = x.data_ptr<float>();
  const float* pb = b.data_ptr<float>();
  const float* pI = importance.data_ptr<float>();
  const float* py = y.data_ptr<float>();
  // Replicas are independent: on step_shards() threads, each takes a share of them (or of their
  // groups) where there is enough work to share, with BLAS on one thread whether shared or not, so
  // that a replica gets the bits it gets on one thread, alone or packed.
  const int threads = int(std::min<int64_t>(step_shards(), S));
  const bool share = threads > 1 && double(S) * double(N) * double(n) * double(m) >= double(1 << 20);
  auto in_parts = [&](int64_t count, const std::function<void(int64_t, int64_t)>& body) {
    if (step_shards() <= 1) return body(0, count);
    const int k = share ? threads : 1;
    run_sharded(k, [&](int t) {
      torch::NoGradGuard no_grad;  // as in the caller (an autograd op's forward, or an evaluation)
      body(count * t / k, count * (t + 1) / k);
    });
  };
  if (n * m <= kSmallModel) {
    auto replicas = [&](int64_t begin, int64_t end) {
      for (int64_t s = begin; s < end; ++s)
        losses[size_t(s)] = small_step(px + s * N * n, py + s * N * n, pW + s * n * m, pb + s * n, pI + s * n, N, n, m, relu,
                                       grads ? dW.data_ptr<float>() + s * n * m : nullptr,
                                       grads ? db.data_ptr<float>() + s * n : nullptr);
    };
    if (step_shards() > 1) in_parts(S, replicas);
    else at::parallel_for(0, S, 1, replicas);  // LibTorch's threads where OpenBLAS shares them (OpenMP)
    return losses;
  }
  // Replicas per group: their [N, n] outputs within about 1 MiB (at least one replica).
  const int64_t group = std::max<int64_t>(1, std::min<int64_t>(S, (int64_t(1) << 18) / std::max<int64_t>(1, N * n)));
  const int64_t groups = (S + group - 1) / group;
  in_parts(groups, [&](int64_t first, int64_t last) {
    auto z = torch::empty({group, N, n}, x.options());
    std::vector<double> acc(static_cast<size_t>(n)), dacc(static_cast<size_t>(n));
    std::vector<float> c(static_cast<size_t>(n)), sq(static_cast<size_t>(n)), gsum(static_cast<size_t>(n)),
        o_row(static_cast<size_t>(n));
    for (int64_t s0 = first * group; s0 < std::min(S, last * group); s0 += group) {
      const int64_t g = std::min(group, S - s0);
      const auto xs = x.narrow(0, s0, g), Ws = W.narrow(0, s0, g);
      const auto h = torch::bmm(xs, Ws);  // [g, N, m]
      auto zs = z.narrow(0, 0, g);
      torch::bmm_out(zs, h, Ws.transpose(1, 2));
      float* pz = zs.data_ptr<float>();
      for (int64_t r = 0; r < g; ++r) {
        const int64_t s = s0 + r;
        std::fill(acc.begin(), acc.end(), 0.0);
        std::fill(dacc.begin(), dacc.end(), 0.0);
        std::fill(sq.begin(), sq.end(), 0.0f);
        std::fill(gsum.begin(), gsum.end(), 0.0f);
        for (int64_t i = 0; i < n; ++i) c[size_t(i)] = float(2.0 * double(pI[s * n + i]) / double(N));
        const float* bias = pb + s * n;
        for (int64_t k = 0; k < N; ++k) {
          float* zr = pz + (r * N + k) * n;
          const float* t = py + (s * N + k) * n;
          if (relu) step_row_relu(zr, t, bias, c.data(), sq.data(), gsum.data(), o_row.data(), n);
          else step_row_linear(zr, t, bias, c.data(), sq.data(), gsum.data(), n);
          if ((k + 1) % kBlockRows == 0 || k + 1 == N) flush_block(sq, acc), flush_block(gsum, dacc);
        }
        double loss = 0;
        for (int64_t i = 0; i < n; ++i) loss += double(pI[s * n + i]) * acc[size_t(i)];
        losses[size_t(s)] = loss / double(N);
        if (grads) {
          float* pdb = db.data_ptr<float>() + s * n;
          for (int64_t i = 0; i < n; ++i) pdb[i] = float(dacc[size_t(i)]);
        }
      }
      if (!grads) continue;
      const auto dh = torch::bmm(zs, Ws);  // [g, N, m]
      auto dWs = dW.narrow(0, s0, g);
      torch::bmm_out(dWs, zs.transpose(1, 2), h);
      dWs.baddbmm_(xs.transpose(1, 2), dh);
    }
  });
  return losses;
}

// The training loss (toy_losses summed over the replicas) as an autograd op: its backward hands on
// the dW and db computed with it (scaled by the incoming gradient unless it is 1).
class ToyStep : public torch::autograd::Function<ToyStep> {
 public:
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x, const torch::Tensor& W, const torch::Tensor& b,
                               const torch::Tensor& y, const torch::Tensor& importance, bool relu) {
    const int64_t S = x.size(0), n = x.size(2), m = W.size(2);
    const bool grads = W.requires_grad() || b.requires_grad();
    auto dW = grads ? torch::empty({S, n, m}, x.options()) : torch::Tensor();
    auto db = grads ? torch::empty({S, n}, x.options()) : torch::Tensor();
    double total = 0;
    for (double l : toy_losses(x, W, b.contiguous(), y, importance, relu, dW, db)) total += l;
    ctx->saved_data["dW"] = dW;
    ctx->saved_data["db"] = db;
    return torch::tensor(total, torch::kFloat64);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto dW = ctx->saved_data["dW"].toTensor(), db = ctx->saved_data["db"].toTensor();
    ctx->saved_data.erase("dW");
    ctx->saved_data.erase("db");
    const double g = grads[0].item<double>();
    if (g != 1.0) dW = dW * g, db = db * g;
    return {torch::Tensor(), ctx->needs_input_grad(1) ? dW : torch::Tensor(), ctx->needs_input_grad(2) ? db : torch::Tensor(),
            torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

class ToySuperposition : public Architecture {
 public:
  ToySuperposition(const Config& cfg, const TaskShape& shape)
      : n_(shape.features), m_(cfg.model.integer("d_hidden")), relu_(cfg.model.text("activation") == "relu") {}

  // W: xavier_normal over its two dimensions (the notebook draws it over a 3-D tensor of all its
  // instances, which scales it by their number; here each model is drawn alone); b_final zero.
  std::vector<ParamSpec> params() const override {
    const double std = std::sqrt(2.0 / double(n_ + m_));
    return {{"W", {n_, m_}, false, true, {ParamInit::Kind::normal, std}}, {"b_final", {n_}, true, true, {}}};
  }

  torch::Tensor forward(const Model& m, const torch::Tensor& x, Cache* cache) const override {
    return run(m, x, cache, nullptr);
  }
  // The same function through ToyForward (its own backward, the elementwise work fused); a cache
  // is filled by the generic forward.
  bool has_fast_path() const override { return true; }
  torch::Tensor forward_fast(const Model& m, const torch::Tensor& x, Cache* cache) const override {
    if (cache) return run(m, x, cache, nullptr);
    return ToyForward::apply(x, m.batched(0), m.batched(1), relu_);
  }
  // The training step's loss through ToyStep where its tensors allow (float32 on the CPU).
  torch::Tensor fused_loss(const Model& m, const Batch& batch, const LossSpec& spec) const override {
    (void)spec;  // a reconstruction's loss has no variants
    const auto W = m.batched(0), b = m.batched(1);
    if (!fusable_batch(batch, W, b)) return {};
    return ToyStep::apply(batch.x, W, b, batch.y, batch.weight, relu_);
  }
  // Each replica's loss through toy_losses, without the outputs (an evaluation of 10,000 examples
  // of 20 models of 200 features would hold 160 MB of them, and as much for each temporary).
  torch::Tensor fused_losses(const Model& m, const Batch& batch) const override {
    const auto W = m.batched(0).detach(), b = m.batched(1).detach();
    if (!fusable_batch(batch, W, b)) return {};
    return torch::tensor(toy_losses(batch.x, W, b, batch.y, batch.weight, relu_, {}, {}), torch::kFloat64);
  }
  // Named activations: hook_hidden h = W^T x [N, m] and hook_out x' [N, n].
  torch::Tensor forward_hooked(const Model& m, const torch::Tensor& x, ActivationHooks& hooks) const override {
    if (m.replicas() != 1) throw std::logic_error("activations are named for one model");
    return run(m, x.dim() == 2 ? x.unsqueeze(0) : x, nullptr, &hooks);
  }
  torch::Tensor run(const Model& m, const torch::Tensor& x, Cache* cache, ActivationHooks* hooks) const {
    auto offer = [&](const char* name, const torch::Tensor& act) {  // [1, N, w] <-> [N, w]
      if (!hooks || !hooks->wants(name)) return act;
      return torch::Tensor(hooks->at(name, act.squeeze(0)).unsqueeze(0));
    };
    auto W = m.batched(0), b = m.batched(1);  // [S, n, m], [S, n]
    auto h = offer("hook_hidden", x.bmm(W));  // [S, N, m]
    auto out = h.bmm(W.transpose(1, 2)) + b.unsqueeze(1);
    if (relu_) out = torch::relu(out);
    out = offer("hook_out", out);
    if (cache) cache->mlp_post = h.squeeze(0), cache->logits = out.squeeze(0);
    return out;  // [S, N, n]
  }

  double step_flops(int64_t n_examples) const override { return 3 * 2 * 2 * double(n_examples) * double(n_ * m_); }
  const FeatureReadout* feature_readout() const override { return &readout_; }

 private:
  FeatureReadout readout_{"W", "b_final", "", "", ""};
  int64_t n_, m_;
  bool relu_;
};

void validate_toy(const Config& c, const TaskShape& shape, const std::string& origin) {
  if (shape.target != TaskShape::Target::reconstruct)
    throw UsageError(origin + ": /model/kind: a toy model of superposition reproduces real-valued features; task.kind \"" +
                     c.task.kind + "\" is not such a task (use task.kind \"sparse_features\")");
}

}  // namespace

const ModelKind& toy_superposition_model() {
  static const ModelKind kind = [] {
    ModelKind k;
    k.name = "toy_superposition";
    k.doc = "x' = ReLU(W^T W x + b) with W m x n (Elhage et al. 2022), or linear; W stored [n, m], row i feature i's direction";
    k.keys = {
        integer_key("d_hidden", 2, 1, 100000, "hidden dimensions m"),
        choice_key("activation", "relu", {"relu", "linear"}, "relu: the toy model; linear: the control without ReLU"),
    };
    k.validate = validate_toy;
    k.n_params = [](const Config& c, const TaskShape& s) { return double(s.features * c.model.integer("d_hidden") + s.features); };
    k.activation_floats = [](const Config& c, const TaskShape& s) {
      return double(c.model.integer("d_hidden") + 3 * s.features);
    };
    k.has_fast_path = [](const Config&, const TaskShape&) { return true; };
    k.note = [](const Config& c, const TaskShape& s) {
      const int64_t m = c.model.integer("d_hidden");
      return m >= s.features ? std::to_string(m) + " hidden dimensions for " + std::to_string(s.features) +
                                   " features: every feature can have a dimension of its own; there is nothing to superpose"
                             : std::string();
    };
    k.make = [](const Config& c, const TaskShape& shape) -> std::shared_ptr<const Architecture> {
      return std::make_shared<ToySuperposition>(c, shape);
    };
    return k;
  }();
  return kind;
}

}  // namespace grokking
