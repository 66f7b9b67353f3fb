// The losses of the model's logits, and the gradients of one step.
#include "grokking/model.hpp"

namespace grokking {

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

torch::Tensor forward_backward(Model& model, const torch::Tensor& x, const torch::Tensor& y, bool fast) {
  model.flat_grad().zero_();
  auto loss = loss_fn(fast ? model.forward_fast(x) : model.forward(x), y);
  loss.backward();
  return loss;
}

}  // namespace grokking
