#include "grokking/optim.hpp"

#include <cmath>

namespace grokking {

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

torch::Tensor train_step(Model& model, FlatAdamW& opt, const torch::Tensor& x, const torch::Tensor& y, bool fast,
                         double lr) {
  auto loss = forward_backward(model, x, y, fast);
  opt.step(lr);
  return loss;
}

}  // namespace grokking
