// The toy model of computation in superposition (model.kind "toy_mlp"; Elhage et al. 2022,
// section "Computation in Superposition"): a hidden layer of ReLU neurons between the features
// and their outputs, h = ReLU(W_in^T x + b_in), x' = ReLU(W_out^T h + b_out), with W_in [n, m]
// (row i: feature i's weights into the m neurons) and W_out [m, n] untied. On the sparse-features
// task with signed values and target "abs" it computes |x|, which a feature needs two neurons
// for (ReLU(x) + ReLU(-x)); fewer neurons than that make it compute in superposition. Generic
// LibTorch path (no hand-written step).
#include <cmath>

#include "grokking/error.hpp"
#include "grokking/kinds.hpp"
#include "grokking/model.hpp"

namespace grokking {

namespace {

class ToyMlp : public Architecture {
 public:
  ToyMlp(const Config& cfg, const TaskShape& shape) : n_(shape.features), m_(cfg.model.integer("d_hidden")) {}

  // Weights: xavier normal over each matrix's two dimensions, as the toy model's W; biases zero.
  std::vector<ParamSpec> params() const override {
    const double std = std::sqrt(2.0 / double(n_ + m_));
    return {{"W_in", {n_, m_}, false, true, {ParamInit::Kind::normal, std}},
            {"b_in", {m_}, true, true, {}},
            {"W_out", {m_, n_}, false, true, {ParamInit::Kind::normal, std}},
            {"b_out", {n_}, true, true, {}}};
  }
  torch::Tensor forward(const Model& m, const torch::Tensor& x, Cache* cache) const override {
    return run(m, x, cache, nullptr);
  }
  // Named activations: hook_hidden (the neurons after their ReLU) [N, m] and hook_out [N, n].
  torch::Tensor forward_hooked(const Model& m, const torch::Tensor& x, ActivationHooks& hooks) const override {
    if (m.replicas() != 1) throw std::logic_error("activations are named for one model");
    return run(m, x.dim() == 2 ? x.unsqueeze(0) : x, nullptr, &hooks);
  }
  double step_flops(int64_t n_examples) const override { return 3 * 2 * 2 * double(n_examples) * double(n_ * m_); }
  // The superposition analysis reads each feature's row of W_in: its direction in neuron space.
  const FeatureReadout* feature_readout() const override { return &readout_; }

 private:
  torch::Tensor run(const Model& m, const torch::Tensor& x, Cache* cache, ActivationHooks* hooks) const {
    auto offer = [&](const char* name, const torch::Tensor& act) {  // [1, N, w] <-> [N, w]
      if (!hooks || !hooks->wants(name)) return act;
      return torch::Tensor(hooks->at(name, act.squeeze(0)).unsqueeze(0));
    };
    const auto W_in = m.batched(0), b_in = m.batched(1), W_out = m.batched(2), b_out = m.batched(3);
    auto h = offer("hook_hidden", torch::relu(x.bmm(W_in) + b_in.unsqueeze(1)));  // [S, N, m]
    auto out = offer("hook_out", torch::relu(h.bmm(W_out) + b_out.unsqueeze(1)));  // [S, N, n]
    if (cache) cache->mlp_post = h.squeeze(0), cache->logits = out.squeeze(0);
    return out;
  }
  FeatureReadout readout_{"W_in", "b_out", "W_in", "W_out", "hook_hidden"};
  int64_t n_, m_;
};

void validate_toy_mlp(const Config& c, const TaskShape& shape, const std::string& origin) {
  if (shape.target != TaskShape::Target::reconstruct)
    throw UsageError(origin + ": /model/kind: toy_mlp maps real-valued features to outputs; task.kind \"" +
                     c.task.kind + "\" is not such a task (use task.kind \"sparse_features\")");
}

}  // namespace

const ModelKind& toy_mlp_model() {
  static const ModelKind kind = [] {
    ModelKind k;
    k.name = "toy_mlp";
    k.doc = "x' = ReLU(W_out^T ReLU(W_in^T x + b_in) + b_out), m ReLU neurons (Elhage et al. 2022, computation in "
            "superposition: |x| with task.values \"signed\", task.target \"abs\"); W_in stored [n, m]";
    k.keys = {integer_key("d_hidden", 4, 1, 100000, "hidden ReLU neurons m")};
    k.validate = validate_toy_mlp;
    k.n_params = [](const Config& c, const TaskShape& s) {
      const auto m = double(c.model.integer("d_hidden"));
      return 2 * double(s.features) * m + m + double(s.features);
    };
    k.activation_floats = [](const Config& c, const TaskShape& s) {
      return double(2 * c.model.integer("d_hidden") + 3 * s.features);
    };
    k.make = [](const Config& c, const TaskShape& shape) -> std::shared_ptr<const Architecture> {
      return std::make_shared<ToyMlp>(c, shape);
    };
    return k;
  }();
  return kind;
}

}  // namespace grokking
