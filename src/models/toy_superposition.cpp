// model.kind "toy_superposition" (Elhage et al. 2022): x' = ReLU(W^T W x + b), W of m hidden
// dimensions by n features, stored as the notebook stores it, one row per feature: W [n, m], so
// that row i is feature i's direction W_i; and the linear variant (no ReLU) as the control.
#include <cmath>

#include "grokking/error.hpp"
#include "grokking/model.hpp"

namespace grokking {

namespace {

class ToySuperposition : public Architecture {
 public:
  ToySuperposition(const Config& cfg, const TaskShape& shape)
      : n_(shape.features), m_(cfg.model.integer("d_hidden")), relu_(cfg.model.text("activation") == "relu") {}

  // W: xavier_normal over its two dimensions (the notebook draws it over a 3-D tensor of all its
  // instances, which scales it by their number; here each model is drawn alone); b_final zero.
  std::vector<ParamSpec> params() const override {
    const double std = std::sqrt(2.0 / double(n_ + m_));
    return {{"W", {n_, m_}, false, true, {ParamInit::Kind::normal, std}}, {"b_final", {n_}, true, true, {}}};
  }

  torch::Tensor forward(const Model& m, const torch::Tensor& x, Cache* cache) const override {
    return run(m, x, cache, nullptr);
  }
  // Named activations: hook_hidden h = W^T x [N, m] and hook_out x' [N, n].
  torch::Tensor forward_hooked(const Model& m, const torch::Tensor& x, ActivationHooks& hooks) const override {
    if (m.replicas() != 1) throw std::logic_error("activations are named for one model");
    return run(m, x.dim() == 2 ? x.unsqueeze(0) : x, nullptr, &hooks);
  }
  torch::Tensor run(const Model& m, const torch::Tensor& x, Cache* cache, ActivationHooks* hooks) const {
    auto offer = [&](const char* name, const torch::Tensor& act) {  // [1, N, w] <-> [N, w]
      if (!hooks || !hooks->wants(name)) return act;
      return torch::Tensor(hooks->at(name, act.squeeze(0)).unsqueeze(0));
    };
    auto W = m.batched(0), b = m.batched(1);  // [S, n, m], [S, n]
    auto h = offer("hook_hidden", x.bmm(W));  // [S, N, m]
    auto out = h.bmm(W.transpose(1, 2)) + b.unsqueeze(1);
    if (relu_) out = torch::relu(out);
    out = offer("hook_out", out);
    if (cache) cache->mlp_post = h.squeeze(0), cache->logits = out.squeeze(0);
    return out;  // [S, N, n]
  }

  double step_flops(int64_t n_examples) const override { return 3 * 2 * 2 * double(n_examples) * double(n_ * m_); }
  const FeatureReadout* feature_readout() const override { return &readout_; }

 private:
  FeatureReadout readout_{"W", "b_final"};
  int64_t n_, m_;
  bool relu_;
};

void validate_toy(const Config& c, const TaskShape& shape, const std::string& origin) {
  if (shape.target != TaskShape::Target::reconstruct)
    throw UsageError(origin + ": /model/kind: a toy model of superposition reproduces real-valued features; task.kind \"" +
                     c.task.kind + "\" is not such a task (use task.kind \"sparse_features\")");
}

}  // namespace

const ModelKind& toy_superposition_model() {
  static const ModelKind kind = [] {
    ModelKind k;
    k.name = "toy_superposition";
    k.doc = "x' = ReLU(W^T W x + b) with W m x n (Elhage et al. 2022), or linear; W stored [n, m], row i feature i's direction";
    k.keys = {
        integer_key("d_hidden", 2, 1, 100000, "hidden dimensions m"),
        choice_key("activation", "relu", {"relu", "linear"}, "relu: the toy model; linear: the control without ReLU"),
    };
    k.validate = validate_toy;
    k.n_params = [](const Config& c, const TaskShape& s) { return double(s.features * c.model.integer("d_hidden") + s.features); };
    k.activation_floats = [](const Config& c, const TaskShape& s) {
      return double(c.model.integer("d_hidden") + 3 * s.features);
    };
    k.has_fast_path = [](const Config&, const TaskShape&) { return false; };
    k.note = [](const Config& c, const TaskShape& s) {
      const int64_t m = c.model.integer("d_hidden");
      return m >= s.features ? std::to_string(m) + " hidden dimensions for " + std::to_string(s.features) +
                                   " features: every feature can have a dimension of its own; there is nothing to superpose"
                             : std::string();
    };
    k.make = [](const Config& c, const TaskShape& shape) -> std::shared_ptr<const Architecture> {
      return std::make_shared<ToySuperposition>(c, shape);
    };
    return k;
  }();
  return kind;
}

}  // namespace grokking
