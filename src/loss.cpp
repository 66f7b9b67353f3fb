// The losses of the model's logits, and the gradients of one step.
#include "grokking/model.hpp"

namespace grokking {

LossSpec LossSpec::of(const TrainConfig& train) {
  return {train.loss == "stablemax", train.loss_dtype == "float32" ? torch::kFloat32 : torch::kFloat64};
}

torch::Tensor log_probs(const torch::Tensor& logits, const LossSpec& spec) {
  auto x = logits.to(spec.dtype);
  if (!spec.stablemax) return x.log_softmax(-1);
  // Prieto et al.'s reference: 1/(1 - x + 1e-30) below zero (the 1e-30 never matters: 1 - x >= 1).
  auto s = torch::where(x < 0, 1 / (1 - x + 1e-30), x + 1);
  return (s / s.sum(-1, /*keepdim=*/true)).log();
}

namespace {
// -log p(label) of every pair: [N] for logits [N, P], [S, N] for [S, N, P].
torch::Tensor loss_terms(const torch::Tensor& logits, const torch::Tensor& labels, const LossSpec& spec) {
  auto logp = log_probs(logits, spec);
  if (logits.dim() == 2) return -logp.gather(1, labels.unsqueeze(1)).squeeze(1);
  auto idx = labels.view({1, -1, 1}).expand({logits.size(0), labels.size(0), 1});
  return -logp.gather(2, idx).squeeze(2);
}
}  // namespace

torch::Tensor loss_fn(const torch::Tensor& logits, const torch::Tensor& labels, const LossSpec& spec) {
  if (logits.dim() == 3) return replica_losses(logits, labels, spec).sum();
  return loss_terms(logits, labels, spec).mean();
}

double accuracy(const torch::Tensor& logits, const torch::Tensor& labels) {
  return logits.argmax(-1).eq(labels).to(torch::kFloat64).mean().item<double>();
}

torch::Tensor replica_losses(const torch::Tensor& logits, const torch::Tensor& labels, const LossSpec& spec) {
  return loss_terms(logits, labels, spec).mean(1).to(torch::kFloat64);
}

torch::Tensor replica_accuracies(const torch::Tensor& logits, const torch::Tensor& labels) {
  return logits.argmax(-1).eq(labels.unsqueeze(0)).to(torch::kFloat64).mean(1);
}

torch::Tensor replica_collapse(const torch::Tensor& logits, const torch::Tensor& labels, const LossSpec& spec) {
  return loss_terms(logits, labels, spec).eq(0).to(torch::kFloat64).mean(1);
}

torch::Tensor forward_backward(Model& model, const torch::Tensor& x, const torch::Tensor& y, bool fast) {
  model.flat_grad().zero_();
  auto loss = loss_fn(fast ? model.forward_fast(x) : model.forward(x), y, LossSpec::of(model.config().train));
  loss.backward();
  return loss;
}

}  // namespace grokking
