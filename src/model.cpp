#include "grokking/model.hpp"

#include <ATen/CPUGeneratorImpl.h>

#include <cmath>

#include "grokking/error.hpp"

namespace grokking {

// ---------------------------------------------------------------------------------------------
// Data

Dataset make_dataset(const TaskConfig& task) {
  const int64_t p = task.p;
  std::vector<int64_t> tokens, labels;
  tokens.reserve(size_t(p * p * 3));
  for (int64_t a = 0; a < p; ++a)
    for (int64_t b = 0; b < p; ++b) {
      int64_t y = apply_operation(task.operation, a, b, p);
      if (y < 0) continue;  // x/0 is not in the dataset
      tokens.insert(tokens.end(), {a, b, p});
      labels.push_back(y);
    }
  const auto n = int64_t(labels.size());
  Dataset d;
  d.all_x = torch::tensor(tokens, torch::kInt64).view({n, 3});
  d.all_y = torch::tensor(labels, torch::kInt64);
  auto gen = at::detail::createCPUGenerator(static_cast<uint64_t>(task.seed));
  auto perm = torch::randperm(n, gen, torch::kInt64);
  const auto n_train = static_cast<int64_t>(std::floor(task.frac_train * double(n)));
  auto train_idx = perm.slice(0, 0, n_train), test_idx = perm.slice(0, n_train);
  d.train_x = d.all_x.index_select(0, train_idx);
  d.train_y = d.all_y.index_select(0, train_idx);
  d.test_x = d.all_x.index_select(0, test_idx);
  d.test_y = d.all_y.index_select(0, test_idx);
  d.train_mask = torch::zeros({n}, torch::kBool);
  d.train_mask.index_fill_(0, train_idx, true);
  return d;
}

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

torch::Tensor Model::replica_part(const torch::Tensor& flat, int64_t s) const {
  if (replicas() == 1) return flat;
  std::vector<torch::Tensor> parts;
  int64_t off = 0;
  for (auto& spec : specs_) {
    const int64_t k = numel(spec.shape);
    parts.push_back(flat.narrow(0, off + s * k, k));
    off += replicas() * k;
  }
  return torch::cat(parts);
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
    if (dst.sizes() != value.sizes()) throw RunError("parameter " + name + " has the wrong shape");
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
  const auto& W_E = params_[0].second;
  const auto& W_pos = params_[1].second;

  // Embed: [N, 3, d]
  auto resid = W_E.index_select(0, x.reshape(-1)).view({n, 3, d}) + W_pos;

  // Attention, causal, scores / sqrt(d_head): [N, H, 3, dh] each
  auto project = [&](int w, int b) {
    return (resid.matmul(heads_in(params_[w].second)) + params_[b].second.reshape(-1))
        .view({n, 3, h, dh})
        .permute({0, 2, 1, 3});
  };
  auto q = project(2, 6), k = project(3, 7), v = project(4, 8);
  auto scores = q.matmul(k.transpose(-1, -2)) / std::sqrt(double(dh));  // [N, H, 3, 3]
  auto future = torch::ones({3, 3}, torch::TensorOptions().dtype(torch::kBool).device(x.device())).triu(1);
  auto pattern = scores.masked_fill(future, -std::numeric_limits<float>::infinity()).softmax(-1);
  auto z = pattern.matmul(v).permute({0, 2, 1, 3}).reshape({n, 3, h * dh});  // [N, 3, H*dh]
  auto attn_out = z.matmul(params_[5].second.reshape({h * dh, d})) + params_[9].second;
  auto resid_mid = resid + attn_out;

  // MLP: [N, 3, d_mlp]
  auto post = activation(resid_mid.matmul(params_[10].second) + params_[11].second, cfg_.model.activation);
  auto resid_post = resid_mid + post.matmul(params_[12].second) + params_[13].second;

  // Unembed at the "=" position: [N, P]
  auto last = resid_post.select(1, 2);
  if (cache) {
    cache->attn_pattern = pattern.select(2, 2);
    cache->resid_mid = resid_mid.select(1, 2);
    cache->mlp_post = post.select(1, 2);
    cache->resid_post = last;
  }
  auto logits = last.matmul(params_[14].second) + params_[15].second;
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
  auto W = [&](int i) { return S == 1 ? params_[size_t(i)].second.unsqueeze(0) : params_[size_t(i)].second; };
  auto a = x.select(1, 0), b = x.select(1, 1);

  auto W_E = W(0), W_pos = W(1);
  auto numbers = W_E.narrow(1, 0, p);                                    // [S, P, d]
  auto tok0 = numbers + W_pos.narrow(1, 0, 1), tok1 = numbers + W_pos.narrow(1, 1, 1);
  auto eq = (W_E.narrow(1, p, 1) + W_pos.narrow(1, 2, 1));               // [S, 1, d]
  auto table = [&](const torch::Tensor& e, int w, int bias) {            // [S, rows, H*dh]
    auto Wm = W(w);                                                      // [S, H, d, dh] -> [S, d, H*dh]
    return e.matmul(Wm.permute({0, 2, 1, 3}).reshape({S, Wm.size(2), h * dh})) + W(bias).reshape({S, 1, h * dh});
  };
  auto q = table(eq, 2, 6).view({S, 1, h, dh});
  auto scale = 1.0 / std::sqrt(double(dh));
  auto s0 = (table(tok0, 3, 7).view({S, p, h, dh}) * q).sum(-1) * scale;  // [S, P, H]
  auto s1 = (table(tok1, 3, 7).view({S, p, h, dh}) * q).sum(-1) * scale;
  auto s2 = (table(eq, 3, 7).view({S, 1, h, dh}) * q).sum(-1) * scale;    // [S, 1, H]
  auto w = torch::stack({s0.index_select(1, a), s1.index_select(1, b), s2.expand({S, n, h})}, -1).softmax(-1);

  auto v0 = table(tok0, 4, 8).index_select(1, a).view({S, n, h, dh});
  auto v1 = table(tok1, 4, 8).index_select(1, b).view({S, n, h, dh});
  auto v2 = table(eq, 4, 8).view({S, 1, h, dh});
  auto z = (w.select(3, 0).unsqueeze(-1) * v0 + w.select(3, 1).unsqueeze(-1) * v1 +
            w.select(3, 2).unsqueeze(-1) * v2)
               .reshape({S, n, h * dh});                                 // [S, N, H*dh]
  auto W_O = W(5);
  auto resid_mid = eq + z.matmul(W_O.reshape({S, h * dh, W_O.size(3)})) + W(9).unsqueeze(1);  // [S, N, d]
  auto post = activation(resid_mid.matmul(W(10)) + W(11).unsqueeze(1), cfg_.model.activation);
  auto resid_post = resid_mid + post.matmul(W(12)) + W(13).unsqueeze(1);
  auto logits = resid_post.matmul(W(14)) + W(15).unsqueeze(1);           // [S, N, P]
  if (cache) {
    cache->attn_pattern = w.squeeze(0);  // [N, H, 3]
    cache->resid_mid = resid_mid.squeeze(0);
    cache->mlp_post = post.squeeze(0);
    cache->resid_post = resid_post.squeeze(0);
    cache->logits = logits.squeeze(0);
  }
  return S == 1 ? logits.squeeze(0) : logits;
}

torch::Tensor loss_fn(const torch::Tensor& logits, const torch::Tensor& labels) {
  if (logits.dim() == 3) return replica_losses(logits, labels).sum();
  auto logp = logits.to(torch::kFloat64).log_softmax(-1);
  return -logp.gather(1, labels.unsqueeze(1)).mean();
}

double accuracy(const torch::Tensor& logits, const torch::Tensor& labels) {
  return logits.argmax(-1).eq(labels).to(torch::kFloat64).mean().item<double>();
}

torch::Tensor replica_losses(const torch::Tensor& logits, const torch::Tensor& labels) {
  auto logp = logits.to(torch::kFloat64).log_softmax(-1);  // [S, N, P]
  auto idx = labels.view({1, -1, 1}).expand({logits.size(0), labels.size(0), 1});
  return -logp.gather(2, idx).squeeze(2).mean(1);
}

torch::Tensor replica_accuracies(const torch::Tensor& logits, const torch::Tensor& labels) {
  return logits.argmax(-1).eq(labels.unsqueeze(0)).to(torch::kFloat64).mean(1);
}

// ---------------------------------------------------------------------------------------------
// Optimiser

FlatAdamW::FlatAdamW(torch::Tensor param, torch::Tensor grad, const OptimConfig& opt)
    : param_(std::move(param)), grad_(std::move(grad)), opt_(opt) {
  exp_avg_ = torch::zeros_like(param_);
  exp_avg_sq_ = torch::zeros_like(param_);
}

double FlatAdamW::scheduled_lr() const {
  if (opt_.warmup_steps <= 0) return opt_.lr;
  return opt_.lr * std::min(double(step_) / double(opt_.warmup_steps), 1.0);
}

void FlatAdamW::step(double lr) {
  torch::NoGradGuard no_grad;
  ++step_;
  // step_on_device() goes on from the host's count, in place: a captured graph keeps its address.
  if (device_step_.defined()) device_step_.fill_(double(step_));
  // The arithmetic and order of torch::optim::AdamW (tested to be bit-identical).
  const double bias_correction1 = 1 - std::pow(opt_.beta1, double(step_));
  const double bias_correction2 = 1 - std::pow(opt_.beta2, double(step_));
  param_.mul_(1 - lr * opt_.weight_decay);
  exp_avg_.mul_(opt_.beta1).add_(grad_, 1 - opt_.beta1);
  exp_avg_sq_.mul_(opt_.beta2).addcmul_(grad_, grad_, 1 - opt_.beta2);
  auto denom = (exp_avg_sq_.sqrt() / std::sqrt(bias_correction2)).add_(opt_.eps);
  param_.addcdiv_(exp_avg_, denom, -lr / bias_correction1);
}

void FlatAdamW::step_on_device() {
  torch::NoGradGuard no_grad;
  if (!device_step_.defined())  // first use; step() and set_state() keep it in line afterwards
    device_step_ = torch::full({}, double(step_), torch::TensorOptions().dtype(torch::kFloat64).device(param_.device()));
  // step()'s arithmetic, with the host's double scalars as float64 device scalars.
  auto lr = opt_.warmup_steps <= 0 ? torch::full_like(device_step_, opt_.lr)
                                   : (device_step_ / double(opt_.warmup_steps)).clamp_max(1.0) * opt_.lr;
  device_step_.add_(1);
  auto bias_correction1 = 1 - torch::pow(opt_.beta1, device_step_);
  auto bias_correction2 = 1 - torch::pow(opt_.beta2, device_step_);
  param_.mul_(1 - lr * opt_.weight_decay);
  exp_avg_.mul_(opt_.beta1).add_(grad_, 1 - opt_.beta1);
  exp_avg_sq_.mul_(opt_.beta2).addcmul_(grad_, grad_, 1 - opt_.beta2);
  auto denom = (exp_avg_sq_.sqrt() / bias_correction2.sqrt()).add_(opt_.eps);
  // addcdiv's order: param + (value * exp_avg) / denom.
  param_.add_(exp_avg_.mul(-lr / bias_correction1).div_(denom));
}

void FlatAdamW::set_state(torch::Tensor exp_avg, torch::Tensor exp_avg_sq, int64_t step) {
  torch::NoGradGuard no_grad;
  if (device_step_.defined()) device_step_.fill_(double(step));
  exp_avg_.copy_(exp_avg);
  exp_avg_sq_.copy_(exp_avg_sq);
  step_ = step;
}

OptimState FlatAdamW::state() const { return {exp_avg_, exp_avg_sq_, step_}; }

torch::Tensor forward_backward(Model& model, const torch::Tensor& x, const torch::Tensor& y, bool fast) {
  model.flat_grad().zero_();
  auto loss = loss_fn(fast ? model.forward_fast(x) : model.forward(x), y);
  loss.backward();
  return loss;
}

torch::Tensor train_step(Model& model, FlatAdamW& opt, const torch::Tensor& x, const torch::Tensor& y, bool fast,
                         double lr) {
  auto loss = forward_backward(model, x, y, fast);
  opt.step(lr);
  return loss;
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
