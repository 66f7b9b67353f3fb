// model.kind "mlp": a multilayer perceptron on the two operands of a pair task, in the
// encodings of the papers that use one. "embed": a learned embedding per operand, concatenated
// (Chughtai et al. 2023: embeddings of 256, one hidden layer of 128, ReLU, no biases); "one_hot":
// the one-hot vectors of a and b concatenated (Prieto et al. 2025: two hidden layers of 200,
// ReLU, no biases; Gromov 2023: one hidden layer, x^2, no biases, trained with mse).
#include <cmath>
#include <map>

#include "grokking/error.hpp"
#include "grokking/model.hpp"
#include "grokking/text.hpp"
#include "attention.hpp"
#include "simd.hpp"

namespace grokking {

namespace {

struct MlpSpec {
  std::string encoding, activation, init;
  int64_t d_embed;
  std::vector<int64_t> hidden;
  bool biases;
  explicit MlpSpec(const ModelConfig& m)
      : encoding(m.text("encoding")), activation(m.text("activation")), init(m.text("init")),
        d_embed(m.integer("d_embed")), hidden(m.integers("hidden")), biases(m.flag("biases")) {}
};

torch::Tensor mlp_activation(const torch::Tensor& x, const std::string& name) {
  if (name == "square") return x * x;
  return name == "gelu" ? torch::gelu(x) : torch::relu(x);
}

// The first layer's loops over a row (PairRowsRelu, PairMlpLoss), on pointers that do not alias,
// so that they vectorise.
GROKKING_INLINE void pair_row_relu(const float* __restrict__ ra, const float* __restrict__ rb, float* __restrict__ o, int64_t h) {
  for (int64_t c = 0; c < h; ++c) {
    const float v = ra[c] + rb[c];
    o[c] = v < 0 ? 0.0f : v;  // NaN stays NaN, as in torch::relu
  }
}
GROKKING_INLINE void pair_row_relu_backward(const float* __restrict__ o, const float* __restrict__ g, float* __restrict__ da,
                                            float* __restrict__ db, int64_t h) {
  for (int64_t c = 0; c < h; ++c) {
    const float gc = g[c], oc = o[c];  // both loaded, so that the select needs no branch
    const float v = oc > 0 ? gc : 0.0f;
    da[c] += v;
    db[c] += v;
  }
}

// Rows of the first hidden layer under ReLU for r pairs (a_i = pairs[i * T], b_i = pairs[i * T + 1]):
// out[i] = relu(top[a_i] + bottom[b_i]), rows of h.
GROKKING_INLINE void gather_relu_rows_impl(const float* top, const float* bottom, const int64_t* pairs, int64_t T,
                                           int64_t r, int64_t h, float* out) {
  for (int64_t i = 0; i < r; ++i) pair_row_relu(top + pairs[i * T] * h, bottom + pairs[i * T + 1] * h, out + i * h, h);
}
// Their backward: row i's gradient g[i], where out[i] > 0, added into the rows a_i of dtop and
// b_i of dbottom, in row order.
GROKKING_INLINE void scatter_relu_rows_impl(const float* out, const float* g, const int64_t* pairs, int64_t T,
                                            int64_t r, int64_t h, float* dtop, float* dbottom) {
  for (int64_t i = 0; i < r; ++i)
    pair_row_relu_backward(out + i * h, g + i * h, dtop + pairs[i * T] * h, dbottom + pairs[i * T + 1] * h, h);
}
GROKKING_SIMD_KERNEL(gather_relu_rows, gather_relu_rows_impl)
GROKKING_SIMD_KERNEL(scatter_relu_rows, scatter_relu_rows_impl)

// Both operands of each of the N pairs (rows of T) in [0, V), or a one-line error naming `who`.
void check_pairs(const int64_t* pairs, int64_t N, int64_t T, int64_t V, const char* who) {
  for (int64_t i = 0; i < N; ++i)
    TORCH_CHECK(pairs[i * T] >= 0 && pairs[i * T] < V && pairs[i * T + 1] >= 0 && pairs[i * T + 1] < V, who,
                ": operand out of range of ", V);
}

// The fast path's first hidden layer under ReLU without biases, as one autograd node:
// out[s, i] = relu(top[s, a_i] + bottom[s, b_i]) for pairs x [N, >= 2] (a_i = x[i, 0], b_i =
// x[i, 1]) and tables top, bottom [S, V, h] float32 on the CPU; the backward adds each row's
// gradient, where the output is positive, into the rows of both tables it came from, in row order
// (the generic path's index_select, add and relu, and their backward, in one pass each).
struct PairRowsRelu : public torch::autograd::Function<PairRowsRelu> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& top_,
                               const torch::Tensor& bottom_, const torch::Tensor& x_) {
    const auto top = top_.contiguous(), bottom = bottom_.contiguous(), x = x_.to(torch::kInt64).contiguous();
    const int64_t S = top.size(0), V = top.size(1), h = top.size(2), N = x.size(0), T = x.size(1);
    const int64_t* pairs = x.data_ptr<int64_t>();
    check_pairs(pairs, N, T, V, "pair_rows_relu");
    auto out = torch::empty({S, N, h}, top.options());
    const float *pt = top.data_ptr<float>(), *pb = bottom.data_ptr<float>();
    float* po = out.data_ptr<float>();
    for (int64_t s = 0; s < S; ++s) gather_relu_rows(pt + s * V * h, pb + s * V * h, pairs, T, N, h, po + s * N * h);
    ctx->save_for_backward({out, x});
    ctx->saved_data["V"] = V;
    return out;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto& out = saved[0];
    const auto& x = saved[1];
    const auto g = grads[0].contiguous();
    const int64_t S = out.size(0), N = out.size(1), h = out.size(2), T = x.size(1), V = ctx->saved_data["V"].toInt();
    auto dtop = torch::zeros({S, V, h}, out.options()), dbottom = torch::zeros({S, V, h}, out.options());
    const int64_t* pairs = x.data_ptr<int64_t>();
    const float *po = out.data_ptr<float>(), *pg = g.data_ptr<float>();
    float *dt = dtop.data_ptr<float>(), *db = dbottom.data_ptr<float>();
    for (int64_t s = 0; s < S; ++s)
      scatter_relu_rows(po + s * N * h, pg + s * N * h, pairs, T, N, h, dt + s * V * h, db + s * V * h);
    return {dtop, dbottom, torch::Tensor()};
  }
};

// The fast path's whole step for one hidden layer under ReLU without biases, on the CPU, as one
// autograd node: the cross-entropy in float64 (each replica's mean over the rows, summed over the
// replicas: scored_cross_entropy's loss) of the logits relu(top[a] + bottom[b]) W_U, taken
// kRows rows at a time, so that a block's hidden rows, logits and their gradients stay in cache
// from the forward to the backward (PairRowsRelu, a product and scored_cross_entropy hold four
// arrays of N rows each and pass over each several times: for Chughtai et al.'s S5 MLP 2.7 to
// 2.9 MB each, and a quarter of the step outside the products). With `grads`, the forward also
// sums, block by block, the gradients of top, bottom and W_U for a loss of the rows' summed
// cross-entropy (softmax - one-hot through the block's products and the ReLU); the backward
// scales them by the incoming gradient over N.
struct PairMlpLoss : public torch::autograd::Function<PairMlpLoss> {
  static constexpr int64_t kRows = 256;
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& top_,
                               const torch::Tensor& bottom_, const torch::Tensor& WU_, const torch::Tensor& x_,
                               const torch::Tensor& y_, bool grads) {
    const auto top = top_.contiguous(), bottom = bottom_.contiguous(), WU = WU_.contiguous();
    const auto x = x_.to(torch::kInt64).contiguous(), y = y_.reshape({-1}).to(torch::kInt64).contiguous();
    const int64_t S = top.size(0), V = top.size(1), h = top.size(2), C = WU.size(2), N = x.size(0), T = x.size(1);
    TORCH_CHECK(bottom.sizes() == top.sizes() && WU.size(0) == S && WU.size(1) == h && y.numel() == N && N > 0 && T >= 2,
                "pair_mlp_loss: top, bottom [S, V, h], W_U [S, h, C], x [N, >= 2], y [N]");
    const int64_t *pairs = x.data_ptr<int64_t>(), *cls = y.data_ptr<int64_t>();
    check_pairs(pairs, N, T, V, "pair_mlp_loss");
    for (int64_t i = 0; i < N; ++i)
      TORCH_CHECK(cls[i] >= 0 && cls[i] < C, "pair_mlp_loss: label ", cls[i], " of ", C, " classes");
    torch::Tensor dtop, dbottom, dWU;
    if (grads) dtop = torch::zeros_like(top), dbottom = torch::zeros_like(bottom), dWU = torch::zeros_like(WU);
    const int64_t R = std::min(kRows, N);
    const auto opts = top.options();
    auto hid = torch::empty({R, h}, opts), logits = torch::empty({R, C}, opts), d = torch::empty({R, C}, opts),
         dhid = torch::empty({R, h}, opts);
    std::vector<int64_t> offsets(static_cast<size_t>(R));
    for (int64_t i = 0; i < R; ++i) offsets[size_t(i)] = i * C;
    std::vector<double> scratch(static_cast<size_t>(C));
    double total = 0;
    for (int64_t s = 0; s < S; ++s) {
      const auto W = WU[s];
      const float *pt = top.data_ptr<float>() + s * V * h, *pb = bottom.data_ptr<float>() + s * V * h;
      double sum = 0;
      for (int64_t first = 0; first < N; first += R) {
        const int64_t r = std::min(R, N - first);
        auto hv = hid.narrow(0, 0, r), lv = logits.narrow(0, 0, r), dv = d.narrow(0, 0, r), dhv = dhid.narrow(0, 0, r);
        gather_relu_rows(pt, pb, pairs + first * T, T, r, h, hid.data_ptr<float>());
        at::mm_out(lv, hv, W);
        sum += cross_entropy_gradient_rows(logits.data_ptr<float>(), offsets.data(), cls + first, r, C,
                                           d.data_ptr<float>(), scratch.data());
        if (!grads) continue;
        dWU[s].addmm_(hv.t(), dv);
        at::mm_out(dhv, dv, W.t());
        scatter_relu_rows(hid.data_ptr<float>(), dhid.data_ptr<float>(), pairs + first * T, T, r, h,
                          dtop.data_ptr<float>() + s * V * h, dbottom.data_ptr<float>() + s * V * h);
      }
      total += sum / double(N);
    }
    if (grads) ctx->save_for_backward({dtop, dbottom, dWU});
    ctx->saved_data["N"] = N;
    return torch::tensor(total, torch::kFloat64);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    TORCH_CHECK(saved.size() == 3, "pair_mlp_loss: its gradients were not taken (grads false)");
    const double scale = grads[0].item<double>() / double(ctx->saved_data["N"].toInt());
    return {saved[0] * scale, saved[1] * scale, saved[2] * scale, torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

class Mlp : public Architecture {
 public:
  Mlp(const Config& cfg, const TaskShape& shape) : s_(cfg.model), shape_(shape) {
    const int64_t n = shape.operand_values, c = shape.classes;
    // normal: N(0, 1/fan_in) (Chughtai et al.'s randn/sqrt(fan_in); embeddings randn/sqrt(d_embed));
    // uniform: U(-1/sqrt(fan_in), 1/sqrt(fan_in)), PyTorch's nn.Linear default (Prieto et al.).
    auto init = [&](double fan_in) {
      return ParamInit{s_.init == "uniform" ? ParamInit::Kind::uniform : ParamInit::Kind::normal, 1.0 / std::sqrt(fan_in)};
    };
    int64_t width = 2 * n;
    if (s_.encoding == "embed") {
      specs_.push_back({"embed.W_x", {n, s_.d_embed}, false, true, init(double(s_.d_embed))});
      specs_.push_back({"embed.W_y", {n, s_.d_embed}, false, true, init(double(s_.d_embed))});
      width = 2 * s_.d_embed;
      readout_.operands = {{"embed.W_x", 0}, {"embed.W_y", 0}};
      readout_.embedding_label = "W_x, W_y";
    } else {
      readout_.operands = {{"hidden.0.W", 0}, {"hidden.0.W", n}};  // the one-hot rows of a, then of b
      readout_.embedding_label = "hidden.0.W";
    }
    for (size_t i = 0; i < s_.hidden.size(); ++i) {
      const std::string l = "hidden." + std::to_string(i) + ".";
      specs_.push_back({l + "W", {width, s_.hidden[i]}, false, true, init(double(width))});
      if (s_.biases) specs_.push_back({l + "b", {s_.hidden[i]}, true, true, {}});
      width = s_.hidden[i];
    }
    specs_.push_back({"unembed.W_U", {width, c}, false, true, init(double(width))});
    if (s_.biases) specs_.push_back({"unembed.b_U", {c}, true, true, {}});
    for (size_t i = 0; i < specs_.size(); ++i) index_[specs_[i].name] = i;
    readout_.unembed = "unembed.W_U";
    readout_.neuron_to_logits = {"unembed.W_U"};
  }

  std::vector<ParamSpec> params() const override { return specs_; }
  const PairReadout* pair_readout() const override { return &readout_; }

  // The products a step cannot avoid: the first layer is a gather of table rows (one-hot inputs)
  // or of two [values, h0] tables made once a step (embed, the fast path's way), so it counts those
  // tables, not a product per example.
  double step_flops(int64_t n) const override {
    double f = 0;
    int64_t width = s_.hidden[0];
    for (size_t i = 1; i < s_.hidden.size(); ++i) f += double(width) * double(s_.hidden[i]), width = s_.hidden[i];
    f += double(width) * double(shape_.classes);
    const double tables =
        s_.encoding == "embed" ? 2.0 * double(shape_.operand_values) * double(s_.d_embed) * double(s_.hidden[0]) : 0.0;
    return 3 * 2 * (double(n) * f + tables);
  }

  torch::Tensor forward(const Model& m, const torch::Tensor& x, Cache* cache) const override {
    return run(m, x, cache, nullptr);
  }
  // The fast path (encoding embed): the first layer of a concatenated embedding is the sum of two
  // tables, W_x W_top and W_y W_bottom ([n, h0] each: W_top, W_bottom the first layer's rows for
  // a's embedding and for b's), so each pair gathers a row of each instead of building its
  // [2 d_embed] input and multiplying it (for Chughtai et al.'s S5 MLP the largest product of the
  // step, 5,760 x 512 x 128, becomes two of 120 x 256 x 128); under ReLU without biases the
  // gathers, their sum and the ReLU are one node (PairRowsRelu). The same function; a cache is
  // filled by the generic forward.
  bool has_fast_path() const override { return s_.encoding == "embed"; }
  torch::Tensor forward_fast(const Model& m, const torch::Tensor& x, Cache* cache) const override {
    if (cache || !has_fast_path()) return run(m, x, cache, nullptr);
    const auto [top, bottom] = tables(m);
    if (!s_.biases && s_.activation == "relu" && x.device().is_cpu() && top.scalar_type() == torch::kFloat)
      return head(m, PairRowsRelu::apply(top, bottom, x), nullptr, nullptr, /*first_activated=*/true);
    return head(m, top.index_select(1, x.select(1, 0)) + bottom.index_select(1, x.select(1, 1)), nullptr, nullptr);
  }
  // The fast path's loss under the default LossSpec on the CPU: cross-entropy in float64, for one
  // hidden layer under ReLU without biases (Chughtai et al.'s MLP) the whole step block by block
  // (PairMlpLoss), otherwise as one autograd node after forward_fast (scored_cross_entropy).
  torch::Tensor fused_loss(const Model& m, const Batch& batch, const LossSpec& spec) const override {
    if (!has_fast_path() || spec.stablemax || spec.mse || spec.dtype != torch::kFloat64 || !batch.x.device().is_cpu() ||
        weight(m, "unembed.W_U").scalar_type() != torch::kFloat)
      return {};
    if (s_.hidden.size() == 1 && !s_.biases && s_.activation == "relu") {
      const auto [top, bottom] = tables(m);
      const auto W_U = weight(m, "unembed.W_U");
      const bool grads = torch::GradMode::is_enabled() && (top.requires_grad() || bottom.requires_grad() || W_U.requires_grad());
      return PairMlpLoss::apply(top, bottom, W_U, batch.x, batch.y, grads);
    }
    return scored_cross_entropy(forward_fast(m, batch.x, nullptr), batch.y);
  }
  // Named activations: hook_embed [N, 2 d_embed] (encoding embed; one_hot: the rows of a and of
  // n + b in the first layer's weight, [N, 2 width], which the layer adds), hidden.L.hook_pre and
  // hidden.L.hook_post [N, width].
  torch::Tensor forward_hooked(const Model& m, const torch::Tensor& x, ActivationHooks& hooks) const override {
    if (m.replicas() != 1) throw std::logic_error("activations are named for one model");
    return run(m, x, nullptr, &hooks);
  }

 private:
  torch::Tensor weight(const Model& m, const std::string& name) const { return m.batched(index_.at(name)); }  // [S, ...]
  // The first layer's tables of the fast path, W_x W_top and W_y W_bottom ([S, n, h0] each).
  std::pair<torch::Tensor, torch::Tensor> tables(const Model& m) const {
    const auto w0 = weight(m, "hidden.0.W");  // [S, 2 d_embed, h0]
    return {weight(m, "embed.W_x").bmm(w0.narrow(1, 0, s_.d_embed)), weight(m, "embed.W_y").bmm(w0.narrow(1, s_.d_embed, s_.d_embed))};
  }
  // An activation handed to the hooks that want it ([1, N, w] <-> [N, w]), or as it is.
  static torch::Tensor offered(ActivationHooks* hooks, const std::string& name, const torch::Tensor& act) {
    if (!hooks || !hooks->wants(name)) return act;
    return torch::Tensor(hooks->at(name, act.squeeze(0)).unsqueeze(0));
  }
  torch::Tensor run(const Model& m, const torch::Tensor& x, Cache* cache, ActivationHooks* hooks) const {
    const int64_t n = shape_.operand_values;
    auto W = [&](const std::string& name) { return weight(m, name); };
    auto offer = [&](const std::string& name, const torch::Tensor& act) { return offered(hooks, name, act); };
    auto a = x.select(1, 0), b = x.select(1, 1);
    // The first hidden layer's input: [S, N, h0]
    torch::Tensor h;
    if (s_.encoding == "embed") {
      auto e = torch::cat({W("embed.W_x").index_select(1, a), W("embed.W_y").index_select(1, b)}, -1);  // [S, N, 2 d_embed]
      h = offer("hook_embed", e).bmm(W("hidden.0.W"));
    } else {  // one-hot [a; b] times W: the row of a plus the row of n + b
      auto w0 = W("hidden.0.W");
      if (hooks && hooks->wants("hook_embed")) {  // the two rows side by side, [S, N, 2 h0], then their sum
        const int64_t h0 = w0.size(2);
        auto e = offer("hook_embed", torch::cat({w0.index_select(1, a), w0.index_select(1, b + n)}, -1));
        h = e.narrow(-1, 0, h0) + e.narrow(-1, h0, h0);
      } else {
        h = w0.index_select(1, a) + w0.index_select(1, b + n);
      }
    }
    return head(m, h, cache, hooks);
  }
  // From the first hidden layer's input h [S, N, h0] (before its bias) to the logits [S, N, C];
  // first_activated: h is that layer's output already (PairRowsRelu).
  torch::Tensor head(const Model& m, torch::Tensor h, Cache* cache, ActivationHooks* hooks,
                     bool first_activated = false) const {
    auto W = [&](const std::string& name) { return weight(m, name); };
    auto offer = [&](const std::string& name, const torch::Tensor& act) { return offered(hooks, name, act); };
    for (size_t i = 0; i < s_.hidden.size(); ++i) {
      const std::string l = "hidden." + std::to_string(i) + ".";
      if (i > 0) h = h.bmm(W(l + "W"));
      if (i == 0 && first_activated) continue;
      if (s_.biases) h = h + W(l + "b").unsqueeze(1);
      h = offer(l + "hook_post", mlp_activation(offer(l + "hook_pre", h), s_.activation));
    }
    auto logits = h.bmm(W("unembed.W_U"));  // [S, N, C]
    if (s_.biases) logits = logits + W("unembed.b_U").unsqueeze(1);
    if (cache) {
      cache->mlp_post = h.squeeze(0);
      cache->logits = logits.squeeze(0);
    }
    return logits;
  }

  MlpSpec s_;
  TaskShape shape_;
  std::vector<ParamSpec> specs_;
  std::map<std::string, size_t> index_;
  PairReadout readout_;
};

void validate_mlp(const Config& c, const TaskShape& shape, const std::string& origin) {
  auto bad = [&](const std::string& ptr, const std::string& what) { throw UsageError(origin + ": " + ptr + ": " + what); };
  const MlpSpec s(c.model);
  if (shape.operand_values == 0)
    bad("/model/kind", "an mlp reads the two operands of a pair task ([a, b, =]); task.kind \"" + c.task.kind +
                           "\" is not one (use model.kind \"transformer\"" +
                           (shape.vocab == 0 ? std::string(" or \"toy_superposition\"") : std::string()) + ")");
  if (s.encoding == "one_hot" && s.d_embed != 256)
    bad("/model/d_embed", "is used only with model.encoding \"embed\" (encoding is \"one_hot\"; got " +
                              std::to_string(s.d_embed) + ")");
}

double mlp_params(const Config& c, const TaskShape& shape) {
  double n = 0;
  for (auto& p : Mlp(c, shape).params()) {
    double k = 1;
    for (auto dim : p.shape) k *= double(dim);
    n += k;
  }
  return n;
}

}  // namespace

const ModelKind& mlp_model() {
  static const ModelKind kind = [] {
    ModelKind k;
    k.name = "mlp";
    k.doc = "an MLP on the pair's two operands: embed (Chughtai et al. 2023) or one-hot (Prieto et al. 2025, Gromov 2023) inputs";
    k.keys = {
        integer_list_key("hidden", {128}, 1, 1 << 16, 16, "hidden layer widths, first to last"),
        choice_key("encoding", "embed", {"embed", "one_hot"},
                   "embed: a learned embedding per operand, concatenated (Chughtai et al.); one_hot: the one-hot vectors of a and b concatenated (Prieto et al., Gromov)"),
        integer_key("d_embed", 256, 1, 65536, "width of each operand's embedding (encoding embed)"),
        choice_key("activation", "relu", {"relu", "gelu", "square"}, "hidden activation; square: x^2 (Gromov 2023)"),
        bool_key("biases", false, "hidden and output biases (zero at initialisation, trained); false: none, as in the three papers"),
        choice_key("init", "normal", {"normal", "uniform"},
                   "normal: N(0, 1/fan_in), embeddings N(0, 1/d_embed) (Chughtai et al.); uniform: U(+-1/sqrt(fan_in)), PyTorch's nn.Linear default (Prieto et al.)"),
    };
    k.validate = validate_mlp;
    k.n_params = mlp_params;
    k.activation_floats = [](const Config& c, const TaskShape& shape) {
      const MlpSpec s(c.model);
      double f = double(2 * s.d_embed);
      for (auto h : s.hidden) f += 2.0 * double(h);
      return f + 3.0 * double(shape.classes);
    };
    k.has_fast_path = [](const Config& c, const TaskShape&) { return c.model.text("encoding") == "embed"; };
    k.fast_path_needs = "model.encoding \"embed\"; one_hot inputs are gathered rows already";
    k.make = [](const Config& c, const TaskShape& shape) -> std::shared_ptr<const Architecture> {
      return std::make_shared<Mlp>(c, shape);
    };
    return k;
  }();
  return kind;
}

}  // namespace grokking
