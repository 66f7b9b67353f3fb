// The interventions on the AdamW update, each as its reference code does it, behind one
// interface (optim.hpp): Grokfast's slow-gradient filters, ⊥Grad, gradient clipping and
// Omnigrok's fixed weight norm.
#include <algorithm>
#include <vector>

#include "grokking/error.hpp"
#include "grokking/optim.hpp"
#include "grokking/text.hpp"

namespace grokking {

namespace {
// Where the flat buffer's loops below run by hand: float32 on the CPU, one pass instead of a few
// tensor ops per parameter block (a small model's step spent more on those ops than on its norm).
bool by_hand(const torch::Tensor& t) { return t.device().is_cpu() && t.scalar_type() == torch::kFloat && t.is_contiguous(); }
}  // namespace

torch::Tensor FlatView::replica_sq_norms(const torch::Tensor& t) const {
  if (by_hand(t)) {
    // Per replica, block by block in order, each block's squares summed in float64 in four
    // running parts: a replica's norm does not depend on the replicas beside it.
    std::vector<double> sq(size_t(replicas), 0.0);
    const float* p = t.data_ptr<float>();
    for (auto& b : blocks)
      for (int64_t r = 0; r < replicas; ++r) {
        const float* x = p + b.offset + r * b.numel;
        double part[4] = {0, 0, 0, 0};
        int64_t i = 0;
        for (; i + 4 <= b.numel; i += 4)
          for (int u = 0; u < 4; ++u) part[u] += double(x[i + u]) * double(x[i + u]);
        for (; i < b.numel; ++i) part[0] += double(x[i]) * double(x[i]);
        sq[size_t(r)] += (part[0] + part[1]) + (part[2] + part[3]);
      }
    return torch::tensor(sq, torch::TensorOptions().dtype(torch::kFloat64));
  }
  auto sq = torch::zeros({replicas}, t.options().dtype(torch::kFloat64));
  for (auto& b : blocks)
    sq += t.narrow(0, b.offset, replicas * b.numel).view({replicas, b.numel}).to(torch::kFloat64).pow(2).sum(1);
  return sq;
}

void FlatView::scale_replicas(torch::Tensor& t, const torch::Tensor& factor) const {
  if (by_hand(t)) {
    const auto f = factor.to(torch::kCPU, torch::kFloat).contiguous();
    const float* pf = f.data_ptr<float>();
    float* p = t.data_ptr<float>();
    for (auto& b : blocks)
      for (int64_t r = 0; r < replicas; ++r) {
        float* x = p + b.offset + r * b.numel;
        const float c = pf[r];
        for (int64_t i = 0; i < b.numel; ++i) x[i] *= c;
      }
    return;
  }
  auto f = factor.to(t.scalar_type()).unsqueeze(1);  // [S, 1]
  for (auto& b : blocks) t.narrow(0, b.offset, replicas * b.numel).view({replicas, b.numel}).mul_(f);
}

namespace {

torch::Tensor part(const FlatView& v, const torch::Tensor& t, int64_t r) {
  return r < 0 || v.replicas == 1 ? t : replica_part(t, v.blocks, r);
}

// An intervention's state in a checkpoint: RunError when it is missing or has the wrong shape.
torch::Tensor state_tensor(const OptimState& st, const std::string& name, const std::vector<int64_t>& shape,
                           const std::string& key) {
  for (auto& [n, t] : st.extra)
    if (n == name) {
      if (t.sizes().vec() != shape)
        throw RunError("optimizer state " + name + " has shape " + format_shape(t.sizes().vec()) + ", expected " +
                       format_shape(shape));
      return t;
    }
  throw RunError("optimizer state has no " + name + " (written without " + key + "?)");
}

// Grokfast's gradfilter_ema, step for step: the EMA starts at the first gradient (their first
// call sets mu = g, then mu = mu*alpha + g*(1 - alpha)); g <- g + lamb*mu.
class GrokfastEma : public Intervention {
 public:
  GrokfastEma(double alpha, double lamb) : alpha_(alpha), lamb_(lamb) {}
  void before_update(FlatView& v) override {
    if (!ema_.defined()) ema_ = v.grad.clone();
    ema_.mul_(alpha_).add_(v.grad * (1 - alpha_));
    v.grad.add_(ema_ * lamb_);
  }
  void save(std::vector<std::pair<std::string, torch::Tensor>>& extra, const FlatView& v, int64_t r) const override {
    if (ema_.defined()) extra.emplace_back("grokfast_ema", part(v, ema_, r));
  }
  void load(const OptimState& st, const FlatView& v) override {
    if (st.step > 0) ema_ = state_tensor(st, "grokfast_ema", {v.param.numel()}, "optim.grokfast").to(v.param.device()).clone();
  }

 private:
  double alpha_, lamb_;
  torch::Tensor ema_;
};

// Grokfast's gradfilter_ma with warmup=True: the last `window` gradients are kept and, once the
// window is full (not before), g <- g + lamb * their mean. One deviation: the window is summed by
// a tensor reduction, not in arrival order (float rounding only).
class GrokfastMa : public Intervention {
 public:
  GrokfastMa(int64_t window, double lamb, const FlatView& v)
      : window_(window), lamb_(lamb), ring_(torch::zeros({window, v.param.numel()}, v.param.options())) {}
  void before_update(FlatView& v) override {
    ring_[next_].copy_(v.grad);
    next_ = (next_ + 1) % window_;
    count_ = std::min(count_ + 1, window_);
    if (count_ == window_) v.grad.add_(ring_.sum(0) / double(window_) * lamb_);
  }
  void save(std::vector<std::pair<std::string, torch::Tensor>>& extra, const FlatView& v, int64_t r) const override {
    extra.emplace_back("grokfast_ma", part(v, ring_, r));
    extra.emplace_back("grokfast_ma_next", torch::scalar_tensor(next_, torch::kInt64));
    extra.emplace_back("grokfast_ma_count", torch::scalar_tensor(count_, torch::kInt64));
  }
  void load(const OptimState& st, const FlatView& v) override {
    ring_.copy_(state_tensor(st, "grokfast_ma", {window_, v.param.numel()}, "optim.grokfast"));
    next_ = state_tensor(st, "grokfast_ma_next", {}, "optim.grokfast").item<int64_t>();
    count_ = state_tensor(st, "grokfast_ma_count", {}, "optim.grokfast").item<int64_t>();
  }

 private:
  int64_t window_;
  double lamb_;
  torch::Tensor ring_;
  int64_t next_ = 0, count_ = 0;
};

// Prieto et al.'s OrthoGrad, per parameter tensor (and per replica): w = p.view(-1), g likewise;
// g_orth = g - (w.g / (w.w + 1e-30)) w; g <- g_orth * |g| / (|g_orth| + 1e-30).
class OrthoGrad : public Intervention {
 public:
  void before_update(FlatView& v) override {
    const int64_t S = v.replicas;
    for (auto& b : v.blocks) {
      auto w = v.param.narrow(0, b.offset, S * b.numel).view({S, b.numel});
      auto g = v.grad.narrow(0, b.offset, S * b.numel).view({S, b.numel});
      auto proj = (w * g).sum(1, true) / ((w * w).sum(1, true) + 1e-30);
      auto g_orth = g - w * proj;
      auto scale = g.norm(2, {1}, true) / (g_orth.norm(2, {1}, true) + 1e-30);
      g.copy_(g_orth * scale);
    }
  }
};

// torch.nn.utils.clip_grad_norm_, per replica: its gradient's total L2 norm over every parameter
// scaled down to at most max_norm (clip_coef = max_norm / (norm + 1e-6), clamped at 1).
class GradClip : public Intervention {
 public:
  explicit GradClip(double max_norm) : max_norm_(max_norm) {}
  void before_update(FlatView& v) override {
    auto norm = v.replica_sq_norms(v.grad).sqrt();
    v.scale_replicas(v.grad, (max_norm_ / (norm + 1e-6)).clamp_max(1.0));
  }

 private:
  double max_norm_;
};

// Omnigrok's constrained training: after the update, every replica's weights together are
// rescaled to their total norm at initialisation (the weights the optimiser starts from; a
// resumed run gets its target back from the checkpoint).
class FixedNorm : public Intervention {
 public:
  explicit FixedNorm(const FlatView& v) : target_(v.replica_sq_norms(v.param).sqrt()) {}
  void after_update(FlatView& v) override { v.scale_replicas(v.param, target_ / v.replica_sq_norms(v.param).sqrt()); }
  void save(std::vector<std::pair<std::string, torch::Tensor>>& extra, const FlatView& v, int64_t r) const override {
    (void)v;
    extra.emplace_back("weight_norm_target", r < 0 ? target_ : target_.narrow(0, r, 1));
  }
  void load(const OptimState& st, const FlatView& v) override {
    target_.copy_(state_tensor(st, "weight_norm_target", {v.replicas}, "optim.weight_norm"));
  }

 private:
  torch::Tensor target_;
};

}  // namespace

std::vector<std::unique_ptr<Intervention>> make_interventions(const OptimConfig& opt, const FlatView& view) {
  torch::NoGradGuard no_grad;
  std::vector<std::unique_ptr<Intervention>> out;
  if (opt.grokfast == "ema") out.push_back(std::make_unique<GrokfastEma>(opt.grokfast_alpha, opt.grokfast_amplification()));
  if (opt.grokfast == "ma") out.push_back(std::make_unique<GrokfastMa>(opt.grokfast_window, opt.grokfast_amplification(), view));
  if (opt.orthograd) out.push_back(std::make_unique<OrthoGrad>());
  if (opt.grad_clip > 0) out.push_back(std::make_unique<GradClip>(opt.grad_clip));
  if (opt.weight_norm == "fixed") out.push_back(std::make_unique<FixedNorm>(view));
  return out;
}

}  // namespace grokking
