#include "grokking/model.hpp"

#include <ATen/CPUGeneratorImpl.h>

#include <cmath>

#include "grokking/error.hpp"
#include "grokking/text.hpp"

namespace grokking {

// ---------------------------------------------------------------------------------------------
// Model

std::vector<ParamSpec> param_specs(const Config& cfg) {
  const int64_t p = cfg.task.p, d = cfg.model.d_model, h = cfg.model.n_heads, dh = cfg.model.d_head,
                m = cfg.model.d_mlp;
  return {
      {"embed.W_E", {p + 1, d}, false},
      {"pos_embed.W_pos", {3, d}, false},
      {"blocks.0.attn.W_Q", {h, d, dh}, false},
      {"blocks.0.attn.W_K", {h, d, dh}, false},
      {"blocks.0.attn.W_V", {h, d, dh}, false},
      {"blocks.0.attn.W_O", {h, dh, d}, false},
      {"blocks.0.attn.b_Q", {h, dh}, true},
      {"blocks.0.attn.b_K", {h, dh}, true},
      {"blocks.0.attn.b_V", {h, dh}, true},
      {"blocks.0.attn.b_O", {d}, true},
      {"blocks.0.mlp.W_in", {d, m}, false},
      {"blocks.0.mlp.b_in", {m}, true},
      {"blocks.0.mlp.W_out", {m, d}, false},
      {"blocks.0.mlp.b_out", {d}, true},
      {"unembed.W_U", {d, p}, false},
      {"unembed.b_U", {p}, true},
  };
}

namespace {
int64_t numel(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (auto s : shape) n *= s;
  return n;
}
}  // namespace

Model::Model(const Config& cfg, std::vector<int64_t> seeds)
    : cfg_(cfg), seeds_(seeds.empty() ? std::vector<int64_t>{cfg.train.seed} : std::move(seeds)),
      specs_(param_specs(cfg)) {
  int64_t n = 0;
  for (auto& s : specs_) n += numel(s.shape);
  const int64_t S = replicas();
  flat_ = torch::zeros({S * n}, torch::kFloat32);
  flat_grad_ = torch::zeros({S * n}, torch::kFloat32);

  // Initialise on the CPU, parameter by parameter in spec order, from one seeded generator per
  // replica. Layout: parameter-major, each parameter one contiguous [S, ...] block.
  const double d = double(cfg.model.d_model);
  for (int64_t r = 0; r < S; ++r) {
    auto gen = at::detail::createCPUGenerator(static_cast<uint64_t>(seeds_[size_t(r)]));
    int64_t off = 0;
    for (auto& s : specs_) {
      const int64_t k = numel(s.shape);
      if (!s.is_bias) {
        double std = 0.8 / std::sqrt(d);  // TransformerLens: initializer_range = 0.8/sqrt(d_model)
        if (cfg.model.init == "paper")    // progress-measures-paper: randn/sqrt(d_model), W_U randn/sqrt(d_vocab)
          std = (s.name == "unembed.W_U") ? 1.0 / std::sqrt(double(cfg.task.p + 1)) : 1.0 / std::sqrt(d);
        std *= cfg.model.init_scale;     // Omnigrok's alpha (1 by default: the same bits)
        flat_.narrow(0, off + r * k, k).copy_(torch::randn({k}, gen, torch::kFloat32) * std);
      }
      off += S * k;
    }
  }
  bind_views();
}

void Model::bind_views() {
  torch::NoGradGuard no_grad;
  params_.clear();
  const int64_t S = replicas();
  int64_t off = 0;
  for (auto& s : specs_) {
    const int64_t k = S * numel(s.shape);
    std::vector<int64_t> shape = s.shape;
    if (S > 1) shape.insert(shape.begin(), S);
    auto v = flat_.narrow(0, off, k).view(shape);
    if (!s.is_bias || cfg_.model.train_biases) {
      v.requires_grad_(true);
      // Gradients accumulate in place into a view of one flat buffer, so the optimiser
      // updates every parameter with a few kernels.
      v.mutable_grad() = flat_grad_.narrow(0, off, k).view(shape);
    }
    params_.emplace_back(s.name, v);
    off += k;
  }
}

torch::Tensor replica_part(const torch::Tensor& flat, const std::vector<ParamBlock>& blocks, int64_t r) {
  std::vector<torch::Tensor> parts;
  for (auto& b : blocks) parts.push_back(flat.narrow(-1, b.offset + r * b.numel, b.numel));
  return torch::cat(parts, -1);
}

torch::Tensor Model::replica_part(const torch::Tensor& flat, int64_t s) const {
  return replicas() == 1 ? flat : grokking::replica_part(flat, param_blocks(), s);
}

std::vector<ParamBlock> Model::param_blocks() const {
  std::vector<ParamBlock> out;
  int64_t off = 0;
  for (auto& spec : specs_) {
    out.push_back({off, numel(spec.shape)});
    off += replicas() * numel(spec.shape);
  }
  return out;
}

Model Model::replica(int64_t s) const {
  torch::NoGradGuard no_grad;
  Model m = *this;  // no fresh initialisation: only the weights are replaced
  m.cfg_.train.seed = seeds_[size_t(s)];
  m.seeds_ = {seeds_[size_t(s)]};
  m.flat_ = replica_part(flat_.detach(), s).clone();
  m.flat_grad_ = torch::zeros_like(m.flat_);
  m.bind_views();
  return m;
}

void Model::set_config(const Config& cfg) {
  const auto a = config_to_json(cfg), b = config_to_json(cfg_);
  if (a["task"] != b["task"] || a["model"] != b["model"] || replicas() != 1 || cfg.train.seed != seeds_[0])
    throw std::invalid_argument("Model::set_config: another task, model or seed");
  cfg_ = cfg;
}

Model Model::clone() const {
  if (replicas() != 1) throw std::logic_error("clone copies one model; use replica(s)");
  return replica(0);
}

torch::Tensor Model::param(const std::string& name) const {
  for (auto& [n, t] : params_)
    if (n == name) return t;
  throw std::logic_error("no parameter " + name);
}

void Model::to(torch::Device device) {
  if (flat_.device() == device) return;
  flat_ = flat_.to(device);
  flat_grad_ = flat_grad_.to(device);
  bind_views();
}

void Model::load(const std::vector<std::pair<std::string, torch::Tensor>>& weights) {
  torch::NoGradGuard no_grad;
  for (auto& [name, value] : weights) {
    auto dst = param(name);
    if (dst.sizes() != value.sizes())
      throw RunError("parameter " + name + " has shape " + format_shape(value.sizes().vec()) + "; the model's is " +
                     format_shape(dst.sizes().vec()));
    dst.copy_(value);
  }
}

double Model::sum_squared_weights() const {
  torch::NoGradGuard no_grad;
  return flat_.to(torch::kFloat64).pow(2).sum().item<double>();
}

namespace {
torch::Tensor activation(const torch::Tensor& x, const std::string& name) {
  return name == "gelu" ? torch::gelu(x) : torch::relu(x);
}
// [H, d, dh] -> [d, H*dh]: all heads in one matrix product.
torch::Tensor heads_in(const torch::Tensor& w) { return w.permute({1, 0, 2}).reshape({w.size(1), -1}); }
}  // namespace

torch::Tensor Model::forward(const torch::Tensor& x, Cache* cache) const {
  if (replicas() != 1) throw std::logic_error("the plain forward runs one model; use replica(s)");
  const int64_t n = x.size(0), d = cfg_.model.d_model, h = cfg_.model.n_heads, dh = cfg_.model.d_head;

  // Embed: [N, 3, d]
  auto resid = weight(W_E).index_select(0, x.reshape(-1)).view({n, 3, d}) + weight(W_pos);

  // Attention, causal, scores / sqrt(d_head): [N, H, 3, dh] each
  auto project = [&](ParamId w, ParamId b) {
    return (resid.matmul(heads_in(weight(w))) + weight(b).reshape(-1)).view({n, 3, h, dh}).permute({0, 2, 1, 3});
  };
  auto q = project(W_Q, b_Q), k = project(W_K, b_K), v = project(W_V, b_V);
  auto scores = q.matmul(k.transpose(-1, -2)) / std::sqrt(double(dh));  // [N, H, 3, 3]
  auto future = torch::ones({3, 3}, torch::TensorOptions().dtype(torch::kBool).device(x.device())).triu(1);
  auto pattern = scores.masked_fill(future, -std::numeric_limits<float>::infinity()).softmax(-1);
  auto z = pattern.matmul(v).permute({0, 2, 1, 3}).reshape({n, 3, h * dh});  // [N, 3, H*dh]
  auto attn_out = z.matmul(weight(W_O).reshape({h * dh, d})) + weight(b_O);
  auto resid_mid = resid + attn_out;

  // MLP: [N, 3, d_mlp]
  auto post = activation(resid_mid.matmul(weight(W_in)) + weight(b_in), cfg_.model.activation);
  auto resid_post = resid_mid + post.matmul(weight(W_out)) + weight(b_out);

  // Unembed at the "=" position: [N, P]
  auto last = resid_post.select(1, 2);
  if (cache) {
    cache->attn_pattern = pattern.select(2, 2);
    cache->resid_mid = resid_mid.select(1, 2);
    cache->mlp_post = post.select(1, 2);
    cache->resid_post = last;
  }
  auto logits = last.matmul(weight(W_U)) + weight(b_U);
  if (cache) cache->logits = logits;
  return logits;
}

// The same function as forward() at the last position, using the task's structure: the query
// position always holds "=", so its query, key and value are constants; positions 0 and 1 hold
// one of P tokens each, so their keys and values are P-row tables gathered per pair.
torch::Tensor Model::forward_fast(const torch::Tensor& x, Cache* cache) const {
  if (cache && replicas() != 1) throw std::logic_error("forward_fast fills a cache for one model; use replica(s)");
  const int64_t n = x.size(0), p = cfg_.task.p, h = cfg_.model.n_heads, dh = cfg_.model.d_head, S = replicas();
  // Every parameter with a leading replica axis: [S, ...].
  auto batched = [&](ParamId id) { return S == 1 ? weight(id).unsqueeze(0) : weight(id); };
  auto a = x.select(1, 0), b = x.select(1, 1);

  // Embeddings of the three positions: numbers at 0 and 1, "=" at 2.
  auto embed = batched(W_E), pos = batched(W_pos);
  auto numbers = embed.narrow(1, 0, p);                                       // [S, P, d]
  auto tok0 = numbers + pos.narrow(1, 0, 1), tok1 = numbers + pos.narrow(1, 1, 1);
  auto eq = embed.narrow(1, p, 1) + pos.narrow(1, 2, 1);                      // [S, 1, d]
  auto table = [&](const torch::Tensor& e, ParamId w, ParamId bias) {         // [S, rows, H*dh]
    auto Wm = batched(w);                                                     // [S, H, d, dh] -> [S, d, H*dh]
    return e.matmul(Wm.permute({0, 2, 1, 3}).reshape({S, Wm.size(2), h * dh})) + batched(bias).reshape({S, 1, h * dh});
  };

  // Attention of "=" to a, b and itself: [S, N, H, 3]
  auto q = table(eq, W_Q, b_Q).view({S, 1, h, dh});
  auto scale = 1.0 / std::sqrt(double(dh));
  auto s0 = (table(tok0, W_K, b_K).view({S, p, h, dh}) * q).sum(-1) * scale;  // [S, P, H]
  auto s1 = (table(tok1, W_K, b_K).view({S, p, h, dh}) * q).sum(-1) * scale;
  auto s2 = (table(eq, W_K, b_K).view({S, 1, h, dh}) * q).sum(-1) * scale;    // [S, 1, H]
  auto pattern = torch::stack({s0.index_select(1, a), s1.index_select(1, b), s2.expand({S, n, h})}, -1).softmax(-1);

  auto v0 = table(tok0, W_V, b_V).index_select(1, a).view({S, n, h, dh});
  auto v1 = table(tok1, W_V, b_V).index_select(1, b).view({S, n, h, dh});
  auto v2 = table(eq, W_V, b_V).view({S, 1, h, dh});
  auto z = (pattern.select(3, 0).unsqueeze(-1) * v0 + pattern.select(3, 1).unsqueeze(-1) * v1 +
            pattern.select(3, 2).unsqueeze(-1) * v2)
               .reshape({S, n, h * dh});                                      // [S, N, H*dh]
  auto W_O_all = batched(W_O);                                                // [S, H, dh, d]
  auto resid_mid = eq + z.matmul(W_O_all.reshape({S, h * dh, W_O_all.size(3)})) + batched(b_O).unsqueeze(1);  // [S, N, d]

  // MLP and unembed
  auto post = activation(resid_mid.matmul(batched(W_in)) + batched(b_in).unsqueeze(1), cfg_.model.activation);
  auto resid_post = resid_mid + post.matmul(batched(W_out)) + batched(b_out).unsqueeze(1);
  auto logits = resid_post.matmul(batched(W_U)) + batched(b_U).unsqueeze(1);  // [S, N, P]
  if (cache) {
    cache->attn_pattern = pattern.squeeze(0);  // [N, H, 3]
    cache->resid_mid = resid_mid.squeeze(0);
    cache->mlp_post = post.squeeze(0);
    cache->resid_post = resid_post.squeeze(0);
    cache->logits = logits.squeeze(0);
  }
  return S == 1 ? logits.squeeze(0) : logits;
}

torch::Device resolve_device(const std::string& spec) {
  if (spec == "cpu") return torch::kCPU;
  if (spec == "auto") return torch::cuda::is_available() ? torch::Device(torch::kCUDA) : torch::Device(torch::kCPU);
  if (!torch::cuda::is_available())
    throw UsageError("/train/device: '" + spec + "' requested but " +
                     (torch::hasCUDA() ? std::string("no CUDA device is visible")
                                       : std::string("this LibTorch was built without CUDA")) +
                     "; use cpu or auto");
  torch::Device dev(spec);
  if (dev.has_index() && dev.index() >= int(torch::cuda::device_count()))
    throw UsageError("/train/device: '" + spec + "': only " + std::to_string(torch::cuda::device_count()) +
                     " CUDA device(s)");
  return dev;
}

}  // namespace grokking
