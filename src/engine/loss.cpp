// The losses of the model's outputs, and the gradients of one step.
#include "grokking/model.hpp"

#include <algorithm>
#include <limits>
#include <vector>

#include "grokking/threads.hpp"

namespace grokking {

LossSpec LossSpec::of(const TrainConfig& train) {
  return {train.loss == "stablemax", train.loss == "mse", train.loss_dtype == "float32" ? torch::kFloat32 : torch::kFloat64};
}

torch::Tensor log_probs(const torch::Tensor& logits, const LossSpec& spec) {
  auto x = logits.to(spec.dtype);
  if (!spec.stablemax) return x.log_softmax(-1);
  // Prieto et al.'s reference: 1/(1 - x + 1e-30) below zero (the 1e-30 never matters: 1 - x >= 1).
  auto s = torch::where(x < 0, 1 / (1 - x + 1e-30), x + 1);
  return (s / s.sum(-1, /*keepdim=*/true)).log();
}

namespace {
// The loss of every example: [N] for logits [N, C], [S, N] for [S, N, C]. Cross-entropy, or for
// mse the squared error against the one-hot label averaged over the classes (torch's MSELoss).
torch::Tensor loss_terms(const torch::Tensor& logits, const torch::Tensor& labels, const LossSpec& spec) {
  if (spec.mse) {
    auto x = logits.to(spec.dtype);
    auto target = torch::nn::functional::one_hot(labels, logits.size(-1)).to(spec.dtype);
    return (x - target).pow(2).mean(-1);
  }
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

torch::Tensor replica_zero_terms(const torch::Tensor& logits, const torch::Tensor& labels, const LossSpec& spec) {
  return loss_terms(logits, labels, spec).eq(0).to(torch::kFloat64).mean(1);
}

torch::Tensor replica_softmax_collapse(const torch::Tensor& logits, const LossSpec& spec) {
  auto x = logits.to(spec.dtype);
  auto sum = (x - std::get<0>(x.max(-1, /*keepdim=*/true))).exp().sum(-1);  // [S, N]
  return sum.eq(1).to(torch::kFloat64).mean(1);
}

namespace {
// A sequence's scored positions as examples: outputs [S, N, T, C], labels [N, T] (-1: not
// scored) -> [S, M, C] and [M].
std::pair<torch::Tensor, torch::Tensor> scored(const torch::Tensor& outputs, const torch::Tensor& labels) {
  auto flat_labels = labels.reshape({-1});
  auto idx = (flat_labels >= 0).nonzero().squeeze(1);
  auto out = outputs.reshape({outputs.size(0), -1, outputs.size(-1)}).index_select(1, idx);
  return {out, flat_labels.index_select(0, idx)};
}

// Reconstruction: per replica, the batch mean of sum_i I_i (x_i - x'_i)^2 (Elhage et al. 2022), [S].
torch::Tensor reconstruction_losses(const torch::Tensor& outputs, const Batch& b) {
  return ((b.y - outputs).pow(2) * b.weight.unsqueeze(1)).sum(-1).mean(1).to(torch::kFloat64);
}
// A reconstruction has a loss only: accuracy NaN, no zero terms, no collapse.
ReplicaMeasures reconstruction_measures(const torch::Tensor& losses) {
  ReplicaMeasures m;
  m.loss = losses;
  m.acc = torch::full_like(m.loss, std::numeric_limits<double>::quiet_NaN());
  m.zero_terms = m.collapse = torch::zeros_like(m.loss);
  return m;
}
}  // namespace

torch::Tensor batch_loss(const torch::Tensor& outputs, const Batch& batch, const TaskShape& shape, const LossSpec& spec) {
  switch (shape.target) {
    case TaskShape::Target::last:
      // One model: the loss as it always was computed (2-D logits), bit for bit.
      if (outputs.size(0) == 1) return loss_fn(outputs.squeeze(0), batch.y, spec);
      return loss_fn(outputs, batch.y, spec);
    case TaskShape::Target::sequence: {
      auto [out, labels] = scored(outputs, batch.y);
      return replica_losses(out, labels, spec).sum();
    }
    case TaskShape::Target::reconstruct:
      return reconstruction_losses(outputs, batch).sum();
  }
  throw std::logic_error("batch_loss: unknown target");
}

ReplicaMeasures batch_measures(const torch::Tensor& outputs, const Batch& batch, const TaskShape& shape,
                               const LossSpec& spec) {
  ReplicaMeasures m;
  if (shape.target == TaskShape::Target::reconstruct) return reconstruction_measures(reconstruction_losses(outputs, batch));
  torch::Tensor out = outputs, labels = batch.y;
  if (shape.target == TaskShape::Target::sequence) std::tie(out, labels) = scored(outputs, batch.y);
  m.loss = replica_losses(out, labels, spec);
  m.acc = replica_accuracies(out, labels);
  m.zero_terms = replica_zero_terms(out, labels, spec);
  m.collapse = replica_softmax_collapse(out, spec);
  return m;
}

ReplicaMeasures model_measures(const Model& model, const Batch& batch, bool fast) {
  if (fast && model.has_fast_path() && model.shape().target == TaskShape::Target::reconstruct)
    if (auto losses = model.arch().fused_losses(model, batch); losses.defined()) return reconstruction_measures(losses);
  return batch_measures(model.outputs(batch.x, fast), batch, model.shape(), LossSpec::of(model.config().train));
}

namespace {
torch::Tensor step_loss(Model& model, const Batch& batch, bool fast, const LossSpec& spec) {
  // The fast path: the kind's fused step where it has one (the same loss and gradients).
  torch::Tensor loss;
  if (fast && model.has_fast_path()) loss = model.arch().fused_loss(model, batch, spec);
  if (!loss.defined()) loss = batch_loss(model.outputs(batch.x, fast), batch, model.shape(), spec);
  return loss;
}

// A shard has at least this many rows of a pair task, or tokens of sequences: below it the
// threads cost more than they save.
constexpr int64_t kMinShardRows = 256, kMinShardTokens = 512;

// How many shards of consecutive rows this step splits into: on the CPU, where each replica's
// loss is a mean over the rows (one label a row) or over a sequence's scored positions, with
// step_shards() threads and enough work for each.
int shards_for(const Model& model, const Batch& batch) {
  if (!batch.x.device().is_cpu() || step_shards() <= 1) return 1;
  int64_t k = 1;
  if (model.shape().target == TaskShape::Target::last) k = batch.size() / kMinShardRows;
  else if (model.shape().target == TaskShape::Target::sequence)
    k = std::min(batch.size(), batch.x.numel() / kMinShardTokens);
  return int(std::max<int64_t>(1, std::min<int64_t>(step_shards(), k)));
}

// What rows first..last-1 weigh in the loss: their number (one label a row), or their scored
// positions.
int64_t scored_in(const Model& model, const Batch& batch, int64_t first, int64_t last) {
  if (model.shape().target != TaskShape::Target::sequence) return last - first;
  return batch.y.slice(0, first, last).ge(0).sum().item<int64_t>();
}

// The step on `k` shards of consecutive rows at once, each on its own thread: shard i's loss
// weighted by its share of what is scored (each replica's loss is a mean over it), its gradients
// taken apart (autograd::grad) and summed in shard order into flat_grad, so that a step is the
// same bits for the same shard count. The loss returned is the weighted sum. A shard with
// nothing scored is skipped.
torch::Tensor sharded_forward_backward(Model& model, const Batch& batch, bool fast, const LossSpec& spec, int k) {
  std::vector<torch::Tensor> inputs;
  for (auto& [name, p] : model.named_parameters())
    if (p.requires_grad()) inputs.push_back(p);
  const int64_t n = batch.size();
  std::vector<int64_t> bounds, scored;
  int64_t total = 0;
  for (int i = 0; i <= k; ++i) bounds.push_back(n * i / k);
  for (int i = 0; i < k; ++i) {
    scored.push_back(scored_in(model, batch, bounds[size_t(i)], bounds[size_t(i) + 1]));
    total += scored.back();
  }
  std::vector<std::vector<torch::Tensor>> grads(static_cast<size_t>(k));
  std::vector<torch::Tensor> losses(static_cast<size_t>(k));
  run_sharded(k, [&](int i) {
    if (scored[size_t(i)] == 0) return;
    auto loss = step_loss(model, batch.slice(bounds[size_t(i)], bounds[size_t(i) + 1]), fast, spec) *
                (double(scored[size_t(i)]) / double(total));
    grads[size_t(i)] = torch::autograd::grad({loss}, inputs, {}, /*retain_graph=*/false, /*create_graph=*/false,
                                             /*allow_unused=*/true);
    losses[size_t(i)] = loss.detach();
  });
  torch::NoGradGuard no_grad;
  for (size_t j = 0; j < inputs.size(); ++j) {
    auto g = inputs[j].grad();  // a view of flat_grad, zeroed
    for (auto& shard : grads)
      if (!shard.empty() && shard[j].defined()) g.add_(shard[j]);
  }
  torch::Tensor loss;
  for (auto& l : losses)
    if (l.defined()) loss = loss.defined() ? loss + l : l;
  return loss.defined() ? loss : step_loss(model, batch, fast, spec).detach();
}
}  // namespace

torch::Tensor forward_backward(Model& model, const Batch& batch, bool fast) {
  model.flat_grad().zero_();
  const auto spec = LossSpec::of(model.config().train);
  if (const int k = shards_for(model, batch); k > 1) return sharded_forward_backward(model, batch, fast, spec, k);
  auto loss = step_loss(model, batch, fast, spec);
  loss.backward();
  return loss;
}

torch::Tensor forward_backward(Model& model, const torch::Tensor& x, const torch::Tensor& y, bool fast) {
  return forward_backward(model, Batch{x, y, {}}, fast);
}

}  // namespace grokking
