#include "grokking/optim.hpp"

#include <algorithm>
#include <cmath>

#include "grokking/error.hpp"
#include "grokking/text.hpp"
#include "grokking/threads.hpp"

namespace grokking {

FlatAdamW::FlatAdamW(torch::Tensor param, torch::Tensor grad, const OptimConfig& opt)
    : param_(std::move(param)), grad_(std::move(grad)), opt_(opt) {
  exp_avg_ = torch::zeros_like(param_);
  exp_avg_sq_ = torch::zeros_like(param_);
  set_layout({{0, param_.numel()}}, 1);
}

FlatAdamW::FlatAdamW(Model& model, const OptimConfig& opt) : FlatAdamW(model.flat(), model.flat_grad(), opt) {
  set_layout(model.param_blocks(), model.replicas());
}

FlatAdamW::~FlatAdamW() = default;

void FlatAdamW::set_layout(std::vector<ParamBlock> blocks, int64_t replicas) {
  blocks_ = std::move(blocks);
  replicas_ = replicas;
  auto v = view();
  interventions_ = make_interventions(opt_, v);
}

FlatView FlatAdamW::view() const { return FlatView{param_, grad_, blocks_, replicas_}; }

FlatAdamW::FlatAdamW(Model& model, const OptimConfig& opt, const std::vector<OptimConfig>& per_replica)
    : FlatAdamW(model, opt) {
  if (per_replica.empty()) return;
  if (int64_t(per_replica.size()) != replicas_)
    throw std::invalid_argument("FlatAdamW: " + std::to_string(per_replica.size()) + " replica configs for " +
                                std::to_string(replicas_) + " replicas");
  bool same = true;
  for (auto& o : per_replica)
    same = same && o.lr == opt.lr && o.weight_decay == opt.weight_decay && o.beta1 == opt.beta1 &&
           o.beta2 == opt.beta2 && o.eps == opt.eps;
  if (same) return;
  per_replica_ = per_replica;
  const auto f64 = torch::TensorOptions().dtype(torch::kFloat64);
  auto column = [&](auto field) {
    std::vector<double> v;
    for (auto& o : per_replica_) v.push_back(field(o));
    return torch::tensor(v, f64).to(param_.device());
  };
  lr_s_ = column([](const OptimConfig& o) { return o.lr; });
  lrwd_s_ = column([](const OptimConfig& o) { return o.lr * o.weight_decay; });
  beta1_s_ = column([](const OptimConfig& o) { return o.beta1; });
  beta2_s_ = column([](const OptimConfig& o) { return o.beta2; });
  std::vector<torch::Tensor> owners;
  for (auto& b : blocks_) owners.push_back(torch::arange(replicas_, torch::kInt64).repeat_interleave(b.numel));
  replica_of_ = torch::cat(owners).to(param_.device());
  if (replica_of_.numel() != param_.numel()) throw std::logic_error("FlatAdamW: blocks do not cover the buffer");
  beta1_e_ = spread(beta1_s_);
  one_minus_beta1_e_ = spread(1 - beta1_s_);
  beta2_e_ = spread(beta2_s_);
  one_minus_beta2_e_ = spread(1 - beta2_s_);
  eps_e_ = spread(column([](const OptimConfig& o) { return o.eps; }));
}

torch::Tensor FlatAdamW::spread(const torch::Tensor& per_replica) const {
  return per_replica.to(param_.scalar_type()).index_select(0, replica_of_);
}




double FlatAdamW::scheduled_lr() const { return lr_at(0, step_); }

double FlatAdamW::lr_at(int64_t r, int64_t step) const {
  const double lr = per_replica_.empty() ? opt_.lr : per_replica_[size_t(r)].lr;
  if (opt_.warmup_steps <= 0) return lr;
  return lr * std::min(double(step) / double(opt_.warmup_steps), 1.0);
}

// step()'s update for every replica with its own hyperparameters, from the warm-up factor of
// the learning rate and the bias corrections ([S] float64, on the parameters' device): host and
// device scheduling differ only in where those come from.
void FlatAdamW::update_per_replica(const torch::Tensor& factor, const torch::Tensor& bias_correction1,
                                   const torch::Tensor& bias_correction2) {
  param_.mul_(spread(1 - factor * lrwd_s_));
  exp_avg_.mul_(beta1_e_).addcmul_(grad_, one_minus_beta1_e_);
  exp_avg_sq_.mul_(beta2_e_).addcmul_(grad_ * one_minus_beta2_e_, grad_);
  auto denom = (exp_avg_sq_.sqrt() / spread(bias_correction2.sqrt())).add_(eps_e_);
  param_.add_(exp_avg_.mul(spread(-(factor * lr_s_) / bias_correction1)).div_(denom));
}

void FlatAdamW::update_each_replica(double lr) {
  // lr is replica 0's scheduled rate (or a multiple of it, applied to every replica's own).
  const double scheduled = scheduled_lr();
  const double scale = lr == scheduled ? 1.0 : (scheduled > 0 ? lr / scheduled : 0.0);
  for (int64_t r = 0; r < replicas_; ++r) {
    const OptimConfig& o = per_replica_.empty() ? opt_ : per_replica_[size_t(r)];
    const int64_t before = steps(r);
    const double lr_r = scale == 1.0 ? lr_at(r, before) : lr_at(r, before) * scale;
    const double bias_correction1 = 1 - std::pow(o.beta1, double(before + 1));
    const double bias_correction2 = 1 - std::pow(o.beta2, double(before + 1));
    for (auto& b : blocks_) {
      const int64_t off = b.offset + r * b.numel;
      auto p = param_.narrow(0, off, b.numel), g = grad_.narrow(0, off, b.numel);
      auto m = exp_avg_.narrow(0, off, b.numel), v = exp_avg_sq_.narrow(0, off, b.numel);
      // step()'s single-model arithmetic, in its order.
      p.mul_(1 - lr_r * o.weight_decay);
      m.mul_(o.beta1).add_(g, 1 - o.beta1);
      v.mul_(o.beta2).addcmul_(g, g, 1 - o.beta2);
      auto denom = (v.sqrt() / std::sqrt(bias_correction2)).add_(o.eps);
      p.addcdiv_(m, denom, -lr_r / bias_correction1);
    }
  }
  if (own_steps_.empty()) {
    ++step_;
  } else {
    for (auto& n : own_steps_) ++n;
    step_ = own_steps_[0];
  }
  if (device_step_.defined()) device_step_.fill_(double(step_));
}

void FlatAdamW::step(double lr) {
  torch::NoGradGuard no_grad;
  auto v = view();
  for (auto& i : interventions_) i->before_update(v);
  if (!own_steps_.empty() || (!per_replica_.empty() && param_.is_cpu())) {
    update_each_replica(lr);
    for (auto& i : interventions_) i->after_update(v);
    return;
  }
  ++step_;
  // step_on_device() goes on from the host's count, in place: a captured graph keeps its address.
  if (device_step_.defined()) device_step_.fill_(double(step_));
  if (!per_replica_.empty()) {
    // lr is replica 0's scheduled rate; the schedule's factor applies to every replica's own.
    const double factor = per_replica_[0].lr > 0 ? lr / per_replica_[0].lr : 0.0;
    update_per_replica(torch::full({}, factor, lr_s_.options()), 1 - torch::pow(beta1_s_, double(step_)),
                       1 - torch::pow(beta2_s_, double(step_)));
    for (auto& i : interventions_) i->after_update(v);
    return;
  }
  // The arithmetic and order of torch::optim::AdamW (tested to be bit-identical).
  const double bias_correction1 = 1 - std::pow(opt_.beta1, double(step_));
  const double bias_correction2 = 1 - std::pow(opt_.beta2, double(step_));
  auto update = [&](torch::Tensor p, const torch::Tensor& g, torch::Tensor m, torch::Tensor s) {
    p.mul_(1 - lr * opt_.weight_decay);
    m.mul_(opt_.beta1).add_(g, 1 - opt_.beta1);
    s.mul_(opt_.beta2).addcmul_(g, g, 1 - opt_.beta2);
    auto denom = (s.sqrt() / std::sqrt(bias_correction2)).add_(opt_.eps);
    p.addcdiv_(m, denom, -lr / bias_correction1);
  };
  // On several threads (step_shards), each updates a part of the buffer: elementwise, so the
  // same bits as one thread where each part but the last is a whole number of 64 floats (no
  // vectorised loop of LibTorch's then ends in a scalar tail that one thread would not have).
  const int64_t n = param_.numel();
  const int k = param_.is_cpu() ? int(std::min<int64_t>(step_shards(), n / (1 << 15))) : 1;
  if (k > 1) {
    run_sharded(k, [&](int t) {
      torch::NoGradGuard no_grad_here;
      const int64_t first = n * t / k / 64 * 64, last = t + 1 == k ? n : n * (t + 1) / k / 64 * 64;
      auto part = [&](const torch::Tensor& x) { return x.narrow(0, first, last - first); };
      update(part(param_), part(grad_), part(exp_avg_), part(exp_avg_sq_));
    });
  } else {
    update(param_, grad_, exp_avg_, exp_avg_sq_);
  }
  for (auto& i : interventions_) i->after_update(v);
}

void FlatAdamW::step_on_device() {
  torch::NoGradGuard no_grad;
  if (has_interventions()) throw std::logic_error("step_on_device runs plain AdamW; interventions need step()");
  if (!own_steps_.empty()) throw std::logic_error("step_on_device: the replicas' step counts differ");
  if (!device_step_.defined())  // first use; step() and set_state() keep it in line afterwards
    device_step_ = torch::full({}, double(step_), torch::TensorOptions().dtype(torch::kFloat64).device(param_.device()));
  // step()'s arithmetic, with the host's double scalars as float64 device scalars.
  const auto factor = opt_.warmup_steps <= 0 ? torch::ones_like(device_step_)
                                             : (device_step_ / double(opt_.warmup_steps)).clamp_max(1.0);
  device_step_.add_(1);
  if (!per_replica_.empty())
    return update_per_replica(factor, 1 - torch::pow(beta1_s_, device_step_), 1 - torch::pow(beta2_s_, device_step_));
  auto lr = factor * opt_.lr;
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
  own_steps_.clear();
}

void FlatAdamW::set_state(const OptimState& st) {
  torch::NoGradGuard no_grad;
  set_state(st.exp_avg, st.exp_avg_sq, st.step);
  auto v = view();
  for (auto& i : interventions_) i->load(st, v);
}

void FlatAdamW::set_state(const OptimState& st, const std::vector<int64_t>& steps) {
  if (int64_t(steps.size()) != replicas_)
    throw std::invalid_argument("FlatAdamW::set_state: " + std::to_string(steps.size()) + " step counts for " +
                                std::to_string(replicas_) + " replicas");
  set_state(st);
  step_ = steps[0];
  if (std::any_of(steps.begin(), steps.end(), [&](int64_t n) { return n != steps[0]; })) own_steps_ = steps;
  if (device_step_.defined()) device_step_.fill_(double(step_));
}

OptimState FlatAdamW::state() const { return state(-1); }

OptimState FlatAdamW::state(int64_t r) const {
  auto part = [&](const torch::Tensor& t) { return r < 0 || replicas_ == 1 ? t : replica_part(t, blocks_, r); };
  OptimState st{part(exp_avg_), part(exp_avg_sq_), r < 0 ? step_ : steps(r), {}};
  const auto v = view();
  for (auto& i : interventions_) i->save(st.extra, v, r);
  return st;
}

OptimState pack_states(const std::vector<OptimState>& states, const std::vector<ParamBlock>& blocks) {
  if (states.empty()) throw std::invalid_argument("pack_states: no states");
  auto cpu = [](const torch::Tensor& t) { return t.to(torch::kCPU); };
  std::vector<torch::Tensor> m, v;
  for (auto& s : states) m.push_back(cpu(s.exp_avg)), v.push_back(cpu(s.exp_avg_sq));
  OptimState out{pack_replica_parts(m, blocks), pack_replica_parts(v, blocks), states[0].step, {}};
  const int64_t n = states[0].exp_avg.numel();
  for (size_t k = 0; k < states[0].extra.size(); ++k) {
    const auto& [name, first] = states[0].extra[k];
    std::vector<torch::Tensor> parts;
    for (auto& s : states) {
      if (s.extra.size() != states[0].extra.size() || s.extra[k].first != name)
        throw std::invalid_argument("pack_states: the replicas' optimisers keep different state");
      parts.push_back(cpu(s.extra[k].second));
    }
    if (first.dim() >= 1 && first.size(-1) == n) {
      out.extra.emplace_back(name, pack_replica_parts(parts, blocks));
    } else if (first.dim() == 1 && first.size(0) == 1) {
      out.extra.emplace_back(name, torch::cat(parts));
    } else {
      for (auto& p : parts)
        if (!torch::equal(p, parts[0])) throw std::invalid_argument("pack_states: " + name + " differs between replicas");
      out.extra.emplace_back(name, parts[0]);
    }
  }
  return out;
}

torch::Tensor train_step(Model& model, FlatAdamW& opt, const Batch& batch, bool fast, double lr) {
  auto loss = forward_backward(model, batch, fast);
  opt.step(lr);
  return loss;
}

torch::Tensor train_step(Model& model, FlatAdamW& opt, const torch::Tensor& x, const torch::Tensor& y, bool fast,
                         double lr) {
  return train_step(model, opt, Batch{x, y, {}}, fast, lr);
}

}  // namespace grokking
