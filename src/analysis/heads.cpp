// The analysis of induction heads (heads.hpp).
#include "grokking/heads.hpp"

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "grokking/error.hpp"

namespace grokking {

void require_sequence_task(const Config& cfg) {
  const Capabilities c = capabilities_of(cfg);
  if (!c.has(Capability::sequence))
    throw UsageError("the head analysis is for sequence tasks; task.kind \"" + cfg.task.kind + "\" is not one");
  if (!c.has(Capability::heads))
    throw UsageError("the head analysis reads attention heads; model.kind \"" + cfg.model.kind + "\" has none");
}

namespace {
// Each head's share of attention on a pattern, per query row: attn [N, H, T, T], mask [N, T, T]
// -> [N, H, T].
torch::Tensor mass_on(const torch::Tensor& attn, const torch::Tensor& mask) {
  return (attn * mask.unsqueeze(1).to(attn.scalar_type())).sum(-1);
}
// Mean over the rows where `rows` ([N, T] bool) holds, per head: [H].
std::vector<double> row_mean(const torch::Tensor& per_row, const torch::Tensor& rows) {
  auto w = rows.unsqueeze(1).to(per_row.scalar_type());  // [N, 1, T]
  const std::vector<int64_t> dims = {0, 2};
  auto mean = (per_row * w).sum(dims) / w.sum(dims).clamp_min(1);
  std::vector<double> out;
  for (int64_t h = 0; h < mean.size(0); ++h) out.push_back(mean[h].item<double>());
  return out;
}
}  // namespace

HeadScores pattern_scores(const torch::Tensor& attn_in, const torch::Tensor& x, int64_t pad) {
  const int64_t T = x.size(1);
  // The patterns over (query i, key j), keys before the query (and the query itself for the
  // shifted one), pads neither queries nor keys.
  const auto real = x.ne(pad);                                                                  // [N, T]
  const auto both = real.unsqueeze(2) & real.unsqueeze(1);
  const auto before = torch::ones({T, T}, torch::kBool).tril(-1);
  const auto duplicate = x.unsqueeze(2).eq(x.unsqueeze(1)) & before & both;                     // [N, T, T]
  auto induction = torch::zeros_like(duplicate);
  induction.narrow(2, 1, T - 1).copy_(duplicate.narrow(2, 0, T - 1));                            // shifted right
  induction = induction & both;
  auto previous = torch::zeros({T, T}, torch::kBool);
  previous.narrow(0, 1, T - 1).narrow(1, 0, T - 1).copy_(torch::eye(T - 1, torch::kBool));
  const auto prev = previous.unsqueeze(0) & both;
  const auto attn = attn_in.to(torch::kFloat64);
  HeadScores s;
  s.previous.push_back(row_mean(mass_on(attn, prev), prev.any(2)));
  s.duplicate.push_back(row_mean(mass_on(attn, duplicate), duplicate.any(2)));
  s.induction.push_back(row_mean(mass_on(attn, induction), induction.any(2)));
  s.induction_tl.push_back(row_mean(mass_on(attn, induction), real));
  return s;
}

HeadScores head_scores(const Model& model, const Batch& eval) {
  require_sequence_task(model.config());
  torch::NoGradGuard no_grad;
  Model cpu = model;
  cpu.to(torch::kCPU);
  const auto x = eval.x.to(torch::kCPU);
  const int64_t L = model.arch().attention_layers();
  std::vector<std::string> names;
  for (int64_t l = 0; l < L; ++l) names.push_back("blocks." + std::to_string(l) + ".attn.hook_pattern");
  ActivationCache cache(names);
  cpu.run_with_cache(x, cache);
  HeadScores s;
  for (const auto& name : names) {  // [N, H, T, T] per layer
    auto one = pattern_scores(cache[name], x, model.shape().vocab - 1);
    s.previous.push_back(one.previous[0]), s.duplicate.push_back(one.duplicate[0]);
    s.induction.push_back(one.induction[0]), s.induction_tl.push_back(one.induction_tl[0]);
  }
  return s;
}

double repeated_half_loss(const torch::Tensor& logits, const Batch& eval) {
  // logits [N, T, V] of one model; eval.y scores the repeated half.
  auto y = eval.y.to(logits.device()).reshape({-1});
  auto idx = y.ge(0).nonzero().squeeze(1);
  auto lp = logits.reshape({-1, logits.size(-1)}).index_select(0, idx).to(torch::kFloat64).log_softmax(-1);
  return -lp.gather(1, y.index_select(0, idx).unsqueeze(1)).mean().item<double>();
}

namespace {
// One head's output (blocks.L.attn.hook_z) replaced: by zero, or by its mean over the batch at
// each position.
class HeadAblationHook : public ActivationHooks {
 public:
  HeadAblationHook(int64_t layer, int64_t head, bool mean)
      : name_("blocks." + std::to_string(layer) + ".attn.hook_z"), head_(head), mean_(mean) {}
  bool wants(const std::string& name) const override { return name == name_; }
  torch::Tensor at(const std::string&, const torch::Tensor& z) override {  // [N, T, H, dh]
    auto out = z.clone();
    auto one = out.select(2, head_);  // [N, T, dh]
    if (mean_) one.copy_(one.mean(0, /*keepdim=*/true).expand_as(one));
    else one.zero_();
    return out;
  }

 private:
  std::string name_;
  int64_t head_;
  bool mean_;
};
}  // namespace

torch::Tensor forward_head_ablated(const Model& model, const torch::Tensor& x, int64_t layer, int64_t head, bool mean) {
  const auto& arch = model.arch();
  if (layer < 0 || layer >= arch.attention_layers() || head < 0 || head >= arch.attention_heads())
    throw std::invalid_argument("forward_head_ablated: no head L" + std::to_string(layer) + "H" + std::to_string(head));
  HeadAblationHook hook(layer, head, mean);
  return model.run_with_hooks(x, hook);
}

std::vector<HeadAblationResult> ablate_heads(const Model& model, const Batch& eval) {
  require_sequence_task(model.config());
  torch::NoGradGuard no_grad;
  std::vector<HeadAblationResult> out;
  const auto& arch = model.arch();
  for (int64_t l = 0; l < arch.attention_layers(); ++l)
    for (int64_t h = 0; h < arch.attention_heads(); ++h) {
      HeadAblationResult r{l, h, 0, 0};
      r.zero_loss = repeated_half_loss(forward_head_ablated(model, eval.x, l, h, false), eval);
      r.mean_loss = repeated_half_loss(forward_head_ablated(model, eval.x, l, h, true), eval);
      out.push_back(r);
    }
  return out;
}

Composition k_composition(const Model& model) {
  require_sequence_task(model.config());
  if (model.arch().attention_layers() < 2)
    throw UsageError("K-composition needs two layers of attention (the model has " +
                     std::to_string(model.arch().attention_layers()) + ")");
  torch::NoGradGuard no_grad;
  auto w = [&](const std::string& name) { return model.param(name).detach().to(torch::kCPU, torch::kFloat64); };
  const auto WQ1 = w("blocks.1.attn.W_Q"), WK1 = w("blocks.1.attn.W_K");  // [H, d, dh]
  const auto WV1 = w("blocks.1.attn.W_V"), WO1 = w("blocks.1.attn.W_O");
  const auto WV0 = w("blocks.0.attn.W_V"), WO0 = w("blocks.0.attn.W_O");  // [H, d, dh], [H, dh, d]
  const int64_t H = WQ1.size(0);
  auto score = [](const torch::Tensor& a, const torch::Tensor& b) {
    return a.matmul(b).norm().item<double>() / (a.norm().item<double>() * b.norm().item<double>());
  };
  Composition c;
  for (int64_t h1 = 0; h1 < H; ++h1) {
    const auto qk = WQ1[h1].matmul(WK1[h1].t());  // [d, d]
    const auto ov1 = WV1[h1].matmul(WO1[h1]);
    std::vector<double> k, q, v;
    for (int64_t h0 = 0; h0 < H; ++h0) {
      const auto ov = WV0[h0].matmul(WO0[h0]);
      k.push_back(score(ov, qk.t())), q.push_back(score(ov, qk)), v.push_back(score(ov, ov1));
    }
    c.k.push_back(k), c.q.push_back(q), c.v.push_back(v);
  }
  // The baseline: matrices of the same low-rank shapes with Gaussian factors.
  auto gen = at::detail::createCPUGenerator(12345);
  const int64_t d = WQ1.size(1), dh = WQ1.size(2), draws = 50;
  double sum = 0;
  for (int64_t i = 0; i < draws; ++i) {
    auto r = [&](int64_t a, int64_t b) { return torch::randn({a, b}, gen, torch::kFloat64); };
    sum += score(r(d, dh).matmul(r(dh, d)), r(d, dh).matmul(r(dh, d)));
  }
  c.baseline = sum / double(draws);
  return c;
}

std::vector<std::vector<double>> copying_scores(const Model& model) {
  require_sequence_task(model.config());
  torch::NoGradGuard no_grad;
  auto w = [&](const std::string& name) { return model.param(name).detach().to(torch::kCPU, torch::kFloat64); };
  const auto WU = w("unembed.W_U");                          // [d, classes]
  const auto WE = w("embed.W_E").narrow(0, 0, WU.size(1));  // the tokens that are classes (not the pad): [classes, d]
  std::vector<std::vector<double>> out;
  for (int64_t l = 0; l < model.arch().attention_layers(); ++l) {
    const std::string b = "blocks." + std::to_string(l) + ".attn.";
    const auto WV = w(b + "W_V"), WO = w(b + "W_O");
    std::vector<double> row;
    for (int64_t h = 0; h < WV.size(0); ++h) {
      // The eigenvalues of W_E W_V W_O W_U are those of the smaller W_V W_O W_U W_E ([dh, dh]
      // after cycling: W_O W_U W_E W_V), apart from zeros, which add nothing to either sum.
      const auto small = WO[h].matmul(WU).matmul(WE).matmul(WV[h]);  // [dh, dh]
      const auto ev = at::linalg_eigvals(small);
      const double total = ev.abs().sum().item<double>();
      row.push_back(total > 0 ? at::real(ev).sum().item<double>() / total : 0.0);
    }
    out.push_back(row);
  }
  return out;
}

std::vector<double> loss_by_position(const Model& model, const Batch& eval) {
  require_sequence_task(model.config());
  torch::NoGradGuard no_grad;
  Model cpu = model;
  cpu.to(torch::kCPU);
  const auto x = eval.x.to(torch::kCPU);
  const int64_t T = x.size(1), pad = model.shape().vocab - 1;
  const auto logits = cpu.outputs(x, false)[0].to(torch::kFloat64);  // [N, T, V]
  const auto next = x.narrow(1, 1, T - 1);                              // [N, T-1]
  const auto lp = logits.narrow(1, 0, T - 1).log_softmax(-1).gather(2, next.clamp_max(logits.size(-1) - 1).unsqueeze(2)).squeeze(2);
  const auto real = next.ne(pad).to(torch::kFloat64);
  const auto sum = (-lp * real).sum(0), count = real.sum(0);
  std::vector<double> out;
  for (int64_t t = 0; t < T - 1; ++t) {
    const double c = count[t].item<double>();
    out.push_back(c > 0 ? sum[t].item<double>() / c : std::numeric_limits<double>::quiet_NaN());
  }
  return out;
}

}  // namespace grokking
