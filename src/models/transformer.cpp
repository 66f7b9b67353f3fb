// model.kind "transformer" (the default): Nanda et al.'s one-layer transformer with
// TransformerLens names and shapes, generalised as TransformerLens's config is: n_layers,
// attn_only, LayerNorm (none, pre, post), learned positions, causal attention scaled by
// 1/sqrt(d_head), untied embeddings. The fast path is its specialisation to one layer without
// LayerNorm on [a, b, =] inputs, chosen where it applies and checked against the generic forward
// (on the CPU its attention of "=", its bias+ReLU and its loss are nodes written by hand:
// pair_attention.cpp); everywhere else the fast path is the generic forward with one projection
// for Q, K and V and the attention core written by hand (attention.hpp), on the CPU.
#include <cmath>
#include <limits>
#include <map>

#include "attention.hpp"
#include "grokking/error.hpp"
#include "grokking/model.hpp"
#include "grokking/text.hpp"

namespace grokking {

namespace {

struct TransformerSpec {
  int64_t d_model, n_heads, d_head, d_mlp, n_layers;
  std::string activation, init, layer_norm;  // layer_norm: none | pre | post
  nlohmann::json train_biases;               // false | true | "mlp"
  bool attn_only;
  explicit TransformerSpec(const ModelConfig& m)
      : d_model(m.integer("d_model")), n_heads(m.integer("n_heads")), d_head(m.integer("d_head")),
        d_mlp(m.integer("d_mlp")), n_layers(m.integer("n_layers")), activation(m.text("activation")),
        init(m.text("init")), layer_norm(m.text("layer_norm")), train_biases(m.keys.at("train_biases")),
        attn_only(m.flag("attn_only")) {}
  bool trains_bias(const std::string& name) const {
    if (train_biases.is_boolean()) return train_biases.get<bool>();
    return name.size() > 5 && (name.compare(name.size() - 5, 5, ".b_in") == 0 || name.compare(name.size() - 6, 6, ".b_out") == 0);
  }
};

// The fast path's task structure: one layer, no LayerNorm, an MLP, and [a, b, =] inputs.
bool fast_applies(const TransformerSpec& s, const TaskShape& shape) {
  return s.n_layers == 1 && s.layer_norm == "none" && !s.attn_only && shape.operand_values > 0 &&
         shape.seq_len == 3 && shape.target == TaskShape::Target::last;
}

torch::Tensor activation(const torch::Tensor& x, const std::string& name) {
  return name == "gelu" ? torch::gelu(x) : torch::relu(x);
}

// TransformerLens's LayerNorm over the last axis, with per-replica weights w, b [S, d] for x
// [S, ..., d].
torch::Tensor layer_norm(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b) {
  auto centred = x - x.mean(-1, /*keepdim=*/true);
  auto scaled = centred / (centred.pow(2).mean(-1, /*keepdim=*/true) + 1e-5).sqrt();
  std::vector<int64_t> shape(size_t(x.dim()), 1);
  shape.front() = w.size(0), shape.back() = w.size(1);
  return scaled * w.view(shape) + b.view(shape);
}

class Transformer : public Architecture {
 public:
  Transformer(const Config& cfg, const TaskShape& shape) : s_(cfg.model), shape_(shape), fast_(fast_applies(s_, shape)) {
    specs_ = make_specs();
    for (size_t i = 0; i < specs_.size(); ++i) index_[specs_[i].name] = i;
    readout_.operands = {{"embed.W_E", 0}, {"embed.W_E", 0}};
    readout_.unembed = "unembed.W_U";
    if (!s_.attn_only)
      readout_.neuron_to_logits = {block(s_.n_layers - 1) + "mlp.W_out", "unembed.W_U"};
    readout_.attention = true;
    readout_.embedding_label = "W_E";
  }

  std::vector<ParamSpec> params() const override { return specs_; }
  bool has_fast_path() const override { return true; }
  const PairReadout* pair_readout() const override { return shape_.operand_values > 0 ? &readout_ : nullptr; }

  double step_flops(int64_t n) const override {
    const double d = double(s_.d_model), m = double(s_.d_mlp), hd = double(s_.n_heads * s_.d_head),
                 c = double(shape_.classes), t = double(shape_.seq_len), N = double(n);
    if (fast_)  // the MLP, W_O and the unembedding at the last position: what the fast path cannot avoid
      return 3 * 2 * N * (d * m + m * d + hd * d + d * c);
    // Attention's two products over the causal half: (t + 1) / 2 keys a query on average.
    const double per_layer = 3 * d * hd + hd * d + (t + 1) * hd + (s_.attn_only ? 0 : 2 * d * m);
    const double scored = shape_.target == TaskShape::Target::last ? 1 : t;
    return 3 * 2 * N * (t * double(s_.n_layers) * per_layer + scored * d * c);
  }

  torch::Tensor forward(const Model& m, const torch::Tensor& x, Cache* cache) const override {
    return run(m, x, cache, nullptr, false);
  }
  torch::Tensor forward_hooked(const Model& m, const torch::Tensor& x, ActivationHooks& hooks) const override {
    return run(m, x, nullptr, &hooks, false);
  }
  int64_t attention_layers() const override { return s_.n_layers; }
  int64_t attention_heads() const override { return s_.n_heads; }
  torch::Tensor forward_fast(const Model& m, const torch::Tensor& x, Cache* cache) const override;
  // On the CPU under the default loss (cross-entropy in float64): the loss of the last position
  // (the fast path's pairs) or of a sequence's scored positions as one autograd node
  // (scored_cross_entropy) after the fast forward.
  torch::Tensor fused_loss(const Model& m, const Batch& batch, const LossSpec& spec) const override {
    if (spec.stablemax || spec.mse || spec.dtype != torch::kFloat64 || !batch.x.device().is_cpu() ||
        m.weight(at("embed.W_E")).scalar_type() != torch::kFloat)
      return {};
    return scored_cross_entropy(forward_fast(m, batch.x, nullptr), batch.y);
  }

 private:
  static std::string block(int64_t l) { return "blocks." + std::to_string(l) + "."; }
  // The generic forward, offering its activations to hooks where given (one model). fused: the
  // attention through attention_sublayer (no hooks, no cache: it keeps no pattern to show).
  torch::Tensor run(const Model& m, const torch::Tensor& x, Cache* cache, ActivationHooks* hooks, bool fused) const;
  size_t at(const std::string& name) const { return index_.at(name); }

  std::vector<ParamSpec> make_specs() const {
    const int64_t d = s_.d_model, h = s_.n_heads, dh = s_.d_head, mlp = s_.d_mlp;
    // TransformerLens: initializer_range = 0.8/sqrt(d_model); the paper's code: randn/sqrt(d_model),
    // W_U randn/sqrt(d_vocab).
    const double std_w = s_.init == "paper" ? 1.0 / std::sqrt(double(d)) : 0.8 / std::sqrt(double(d));
    const double std_u = s_.init == "paper" ? 1.0 / std::sqrt(double(shape_.vocab)) : std_w;
    auto weight = [&](const std::string& name, std::vector<int64_t> shp, double sd = -1) {
      return ParamSpec{name, std::move(shp), false, true, {ParamInit::Kind::normal, sd < 0 ? std_w : sd}};
    };
    auto bias = [&](const std::string& name, std::vector<int64_t> shp) {
      return ParamSpec{name, std::move(shp), true, s_.trains_bias(name), {}};
    };
    auto norm = [&](const std::string& name) {
      return std::vector<ParamSpec>{{name + ".w", {d}, false, true, {ParamInit::Kind::ones, 1}},
                                    {name + ".b", {d}, true, true, {}}};
    };
    const bool ln = s_.layer_norm != "none";
    std::vector<ParamSpec> out = {weight("embed.W_E", {shape_.vocab, d}), weight("pos_embed.W_pos", {shape_.seq_len, d})};
    for (int64_t l = 0; l < s_.n_layers; ++l) {
      const std::string b = block(l);
      if (ln) for (auto& p : norm(b + "ln1")) out.push_back(p);
      for (auto* w : {"W_Q", "W_K", "W_V"}) out.push_back(weight(b + "attn." + w, {h, d, dh}));
      out.push_back(weight(b + "attn.W_O", {h, dh, d}));
      for (auto* bq : {"b_Q", "b_K", "b_V"}) out.push_back(bias(b + "attn." + bq, {h, dh}));
      out.push_back(bias(b + "attn.b_O", {d}));
      if (s_.attn_only) continue;
      if (ln) for (auto& p : norm(b + "ln2")) out.push_back(p);
      out.push_back(weight(b + "mlp.W_in", {d, mlp}));
      out.push_back(bias(b + "mlp.b_in", {mlp}));
      out.push_back(weight(b + "mlp.W_out", {mlp, d}));
      out.push_back(bias(b + "mlp.b_out", {d}));
    }
    if (s_.layer_norm == "pre")
      for (auto& p : norm("ln_final")) out.push_back(p);
    out.push_back(weight("unembed.W_U", {d, shape_.classes}, std_u));
    out.push_back(bias("unembed.b_U", {shape_.classes}));
    return out;
  }

  TransformerSpec s_;
  TaskShape shape_;
  bool fast_;
  std::vector<ParamSpec> specs_;
  std::map<std::string, size_t> index_;
  PairReadout readout_;
};

// a [S, M, K] times b [S, K, N], replica by replica. One model takes the plain 2-D product, so
// that the generic forward of one model computes what the one-model forward always did, bit for bit.
torch::Tensor replica_mm(const torch::Tensor& a, const torch::Tensor& b) {
  if (a.size(0) == 1) return a.squeeze(0).mm(b.squeeze(0)).unsqueeze(0);
  return a.bmm(b);
}

// [S, H, d, dh] -> [S, d, H*dh]: all heads in one matrix product.
torch::Tensor heads_in(const torch::Tensor& w) {
  return w.permute({0, 2, 1, 3}).reshape({w.size(0), w.size(2), w.size(1) * w.size(3)});
}

torch::Tensor Transformer::run(const Model& m, const torch::Tensor& x, Cache* cache, ActivationHooks* hooks, bool fused) const {
  const int64_t S = m.replicas(), n = x.size(0), T = x.size(1), d = s_.d_model, h = s_.n_heads, dh = s_.d_head;
  auto W = [&](const std::string& name) { return m.batched(at(name)); };  // [S, ...]
  // As the model holds it: [S, ...] side by side, without the S axis alone (the fused nodes take
  // either, and a view op between a parameter and its gradient costs a node a step).
  auto P = [&](const std::string& name) { return m.weight(at(name)); };
  const bool pre = s_.layer_norm == "pre", post = s_.layer_norm == "post";
  if (hooks && S != 1) throw std::logic_error("activations are named for one model");
  // Offers an activation to the hooks in TransformerLens's layout (to_tl) and goes on with what
  // they return, brought back (from_tl). Without hooks, nothing.
  const auto same = [](const torch::Tensor& t) { return t; };
  auto offer = [&](const std::string& prefix, const char* suffix, const torch::Tensor& act, auto to_tl, auto from_tl) {
    if (!hooks) return act;
    const std::string name = prefix + suffix;
    if (!hooks->wants(name)) return act;
    return torch::Tensor(from_tl(hooks->at(name, to_tl(act))));
  };
  auto squeezed = [](const torch::Tensor& t) { return t.squeeze(0); };
  auto unsqueezed = [](const torch::Tensor& t) { return t.unsqueeze(0); };
  // [1, N, H, T, dh] <-> [N, T, H, dh]
  auto heads_to_tl = [](const torch::Tensor& t) { return t.squeeze(0).permute({0, 2, 1, 3}); };
  auto heads_from_tl = [](const torch::Tensor& t) { return t.permute({0, 2, 1, 3}).unsqueeze(0); };

  // Embed: [S, N, T, d] (one model: its 2-D tables, as the one-model forward always gathered them)
  torch::Tensor resid;
  if (hooks) {
    auto tok = offer("", "hook_embed", m.weight(at("embed.W_E")).index_select(0, x.reshape(-1)).view({n, T, d}), same, same);
    auto pos = offer("", "hook_pos_embed", m.weight(at("pos_embed.W_pos")).narrow(0, 0, T).unsqueeze(0).expand({n, T, d}),
                     same, same);
    resid = (tok + pos).unsqueeze(0);
  } else if (fused) {
    resid = embed_sequences(P("embed.W_E"), P("pos_embed.W_pos"), x);
  } else {
    resid = S == 1 ? (m.weight(at("embed.W_E")).index_select(0, x.reshape(-1)).view({n, T, d}) +
                      m.weight(at("pos_embed.W_pos")).narrow(0, 0, T))
                         .unsqueeze(0)
                   : W("embed.W_E").index_select(1, x.reshape(-1)).view({S, n, T, d}) +
                         W("pos_embed.W_pos").narrow(1, 0, T).unsqueeze(1);
  }
  torch::Tensor future;  // the causal mask of the generic attention (the hand-written core needs none)
  if (!fused) future = torch::ones({T, T}, torch::TensorOptions().dtype(torch::kBool).device(x.device())).triu(1);
  torch::Tensor pattern, resid_mid, post_act;
  for (int64_t l = 0; l < s_.n_layers; ++l) {
    const std::string b = block(l);
    resid = offer(b, "hook_resid_pre", resid, squeezed, unsqueezed);
    // Attention, causal, scores / sqrt(d_head): [S, N, H, T, dh] each
    auto in = pre ? layer_norm(resid, W(b + "ln1.w"), W(b + "ln1.b")) : resid;
    torch::Tensor attn_out;  // [S, N*T, d]
    if (fused) {  // one product for Q, K and V of every head, the hand-written core, one autograd node
      attn_out = attention_sublayer(in.reshape({S, n * T, d}), T, P(b + "attn.W_Q"), P(b + "attn.W_K"),
                                    P(b + "attn.W_V"), P(b + "attn.b_Q"), P(b + "attn.b_K"), P(b + "attn.b_V"),
                                    P(b + "attn.W_O"), P(b + "attn.b_O"));
    } else {
      // Each projection reshapes the stream itself: its gradient then sums in the order the
      // one-model forward always summed it (bit for bit).
      auto project = [&](const char* w, const char* bias) {
        return (replica_mm(in.reshape({S, n * T, d}), heads_in(W(b + "attn." + w))) + W(b + "attn." + bias).reshape({S, 1, h * dh}))
            .view({S, n, T, h, dh})
            .permute({0, 1, 3, 2, 4});
      };
      auto q = offer(b, "attn.hook_q", project("W_Q", "b_Q"), heads_to_tl, heads_from_tl);
      auto k = offer(b, "attn.hook_k", project("W_K", "b_K"), heads_to_tl, heads_from_tl);
      auto v = offer(b, "attn.hook_v", project("W_V", "b_V"), heads_to_tl, heads_from_tl);
      auto scores = q.matmul(k.transpose(-1, -2)) / std::sqrt(double(dh));  // [S, N, H, T, T]
      pattern = scores.masked_fill(future, -std::numeric_limits<float>::infinity()).softmax(-1);
      pattern = offer(b, "attn.hook_pattern", pattern, squeezed, unsqueezed);
      auto heads = offer(b, "attn.hook_z", pattern.matmul(v), heads_to_tl, heads_from_tl);  // [S, N, H, T, dh]
      auto z = heads.permute({0, 1, 3, 2, 4}).reshape({S, n * T, h * dh});  // every head's output side by side
      attn_out = replica_mm(z, W(b + "attn.W_O").reshape({S, h * dh, d})) + W(b + "attn.b_O").unsqueeze(1);
    }
    resid = resid + offer(b, "hook_attn_out", attn_out.view({S, n, T, d}), squeezed, unsqueezed);
    if (post) resid = layer_norm(resid, W(b + "ln1.w"), W(b + "ln1.b"));
    resid = offer(b, "hook_resid_mid", resid, squeezed, unsqueezed);
    resid_mid = resid;
    if (s_.attn_only) {
      resid = offer(b, "hook_resid_post", resid, squeezed, unsqueezed);
      continue;
    }
    // MLP: [S, N*T, d_mlp]
    auto mlp_tl = [&](const torch::Tensor& t) { return t.view({n, T, s_.d_mlp}); };
    auto mlp_back = [&](const torch::Tensor& t) { return t.reshape({1, n * T, s_.d_mlp}); };
    auto in2 = (pre ? layer_norm(resid, W(b + "ln2.w"), W(b + "ln2.b")) : resid).reshape({S, n * T, d});
    auto pre_act = offer(b, "mlp.hook_pre", replica_mm(in2, W(b + "mlp.W_in")) + W(b + "mlp.b_in").unsqueeze(1), mlp_tl, mlp_back);
    post_act = offer(b, "mlp.hook_post", activation(pre_act, s_.activation), mlp_tl, mlp_back);
    if (hooks && hooks->wants(b + "hook_mlp_out")) {
      auto mlp_out = replica_mm(post_act, W(b + "mlp.W_out")).view({S, n, T, d}) + W(b + "mlp.b_out").view({S, 1, 1, d});
      resid = resid + offer(b, "hook_mlp_out", mlp_out, squeezed, unsqueezed);
    } else {
      // (resid + out) + b_out, in the order the one-layer model always summed them.
      resid = resid + replica_mm(post_act, W(b + "mlp.W_out")).view({S, n, T, d}) + W(b + "mlp.b_out").view({S, 1, 1, d});
    }
    if (post) resid = layer_norm(resid, W(b + "ln2.w"), W(b + "ln2.b"));
    resid = offer(b, "hook_resid_post", resid, squeezed, unsqueezed);
  }
  if (pre) resid = layer_norm(resid, W("ln_final.w"), W("ln_final.b"));

  // Unembed: at the last position [S, N, C], or at every position [S, N, T, C].
  torch::Tensor logits;
  if (shape_.target == TaskShape::Target::last)
    logits = replica_mm(resid.select(2, T - 1), W("unembed.W_U")) + W("unembed.b_U").unsqueeze(1);
  else if (fused) {  // one addmm with the bias a replica, each with the shapes it has alone
    const auto W_U = P("unembed.W_U"), b_U = P("unembed.b_U");
    if (S == 1) {
      logits = at::addmm(b_U, resid.reshape({n * T, d}), W_U).view({1, n, T, shape_.classes});
    } else {
      std::vector<torch::Tensor> per;
      for (int64_t r = 0; r < S; ++r) per.push_back(at::addmm(b_U[r], resid[r].reshape({n * T, d}), W_U[r]));
      logits = torch::stack(per).view({S, n, T, shape_.classes});
    }
  } else
    logits = (replica_mm(resid.reshape({S, n * T, d}), W("unembed.W_U")) + W("unembed.b_U").unsqueeze(1))
                 .view({S, n, T, shape_.classes});
  if (cache) {
    cache->attn_pattern = pattern.select(3, T - 1).squeeze(0);  // [N, H, T]: the last query position
    cache->resid_mid = resid_mid.select(2, T - 1).squeeze(0);
    if (post_act.defined()) cache->mlp_post = post_act.view({S, n, T, s_.d_mlp}).select(2, T - 1).squeeze(0);
    cache->resid_post = resid.select(2, T - 1).squeeze(0);
    cache->logits = logits.squeeze(0);
  }
  return logits;
}

// The same function as forward() at the last position, using the task's structure: the query
// position always holds "=", so its query, key and value are constants; positions 0 and 1 hold
// one of P tokens each, so their keys and values are P-row tables gathered per pair.
torch::Tensor Transformer::forward_fast(const Model& m, const torch::Tensor& x, Cache* cache) const {
  if (!fast_) {  // the generic forward with the hand-written attention core where it can run
    const bool fused = cache == nullptr && x.device().is_cpu() && m.weight(at("embed.W_E")).scalar_type() == torch::kFloat;
    return run(m, x, cache, nullptr, fused);
  }
  const int64_t n = x.size(0), p = shape_.operand_values, h = s_.n_heads, dh = s_.d_head, S = m.replicas();
  // Every parameter with a leading replica axis: [S, ...].
  auto batched = [&](const char* name) { return m.batched(at(name)); };

  // Embeddings of the three positions: numbers at 0 and 1, "=" at 2.
  auto embed = batched("embed.W_E"), pos = batched("pos_embed.W_pos");
  auto numbers = embed.narrow(1, 0, p);                                       // [S, P, d]
  auto tok0 = numbers + pos.narrow(1, 0, 1), tok1 = numbers + pos.narrow(1, 1, 1);
  auto eq = embed.narrow(1, p, 1) + pos.narrow(1, 2, 1);                      // [S, 1, d]
  auto table = [&](const torch::Tensor& e, const char* w, const char* bias) {  // [S, rows, H*dh]
    auto Wm = batched(w);                                                     // [S, H, d, dh] -> [S, d, H*dh]
    return e.matmul(Wm.permute({0, 2, 1, 3}).reshape({S, Wm.size(2), h * dh})) + batched(bias).reshape({S, 1, h * dh});
  };

  // Attention of "=" to a, b and itself. Its scores against each token at positions 0 and 1, and
  // against itself, as tables: [S, P, H] and [S, 1, H].
  auto q = table(eq, "blocks.0.attn.W_Q", "blocks.0.attn.b_Q").view({S, 1, h, dh});
  auto scale = 1.0 / std::sqrt(double(dh));
  auto s0 = (table(tok0, "blocks.0.attn.W_K", "blocks.0.attn.b_K").view({S, p, h, dh}) * q).sum(-1) * scale;
  auto s1 = (table(tok1, "blocks.0.attn.W_K", "blocks.0.attn.b_K").view({S, p, h, dh}) * q).sum(-1) * scale;
  auto s2 = (table(eq, "blocks.0.attn.W_K", "blocks.0.attn.b_K").view({S, 1, h, dh}) * q).sum(-1) * scale;
  auto v0 = table(tok0, "blocks.0.attn.W_V", "blocks.0.attn.b_V");             // [S, P, H*dh]
  auto v1 = table(tok1, "blocks.0.attn.W_V", "blocks.0.attn.b_V");
  auto v2 = table(eq, "blocks.0.attn.W_V", "blocks.0.attn.b_V");               // [S, 1, H*dh]
  // On the CPU in float32 without a cache: the pattern and its weighted values as one node.
  const bool by_hand = !cache && x.device().is_cpu() && embed.scalar_type() == torch::kFloat;
  torch::Tensor pattern, z;                                                   // [S, N, H, 3], [S, N, H*dh]
  if (by_hand) {
    z = pair_attention(s0, s1, s2, v0, v1, v2, x);
  } else {
    auto a = x.select(1, 0), b = x.select(1, 1);
    pattern = torch::stack({s0.index_select(1, a), s1.index_select(1, b), s2.expand({S, n, h})}, -1).softmax(-1);
    z = (pattern.select(3, 0).unsqueeze(-1) * v0.index_select(1, a).view({S, n, h, dh}) +
         pattern.select(3, 1).unsqueeze(-1) * v1.index_select(1, b).view({S, n, h, dh}) +
         pattern.select(3, 2).unsqueeze(-1) * v2.view({S, 1, h, dh}))
            .reshape({S, n, h * dh});
  }
  auto W_O_all = batched("blocks.0.attn.W_O");                                // [S, H, dh, d]
  auto resid_mid = eq + z.matmul(W_O_all.reshape({S, h * dh, W_O_all.size(3)})) +
                   batched("blocks.0.attn.b_O").unsqueeze(1);                 // [S, N, d]

  // MLP and unembed
  auto pre = resid_mid.matmul(batched("blocks.0.mlp.W_in"));
  auto post = by_hand && s_.activation == "relu"
                  ? bias_relu(pre, batched("blocks.0.mlp.b_in"))
                  : activation(pre + batched("blocks.0.mlp.b_in").unsqueeze(1), s_.activation);
  auto resid_post = resid_mid + post.matmul(batched("blocks.0.mlp.W_out")) + batched("blocks.0.mlp.b_out").unsqueeze(1);
  auto logits = resid_post.matmul(batched("unembed.W_U")) + batched("unembed.b_U").unsqueeze(1);  // [S, N, P]
  if (cache) {
    cache->attn_pattern = pattern.squeeze(0);  // [N, H, 3]
    cache->resid_mid = resid_mid.squeeze(0);
    cache->mlp_post = post.squeeze(0);
    cache->resid_post = resid_post.squeeze(0);
    cache->logits = logits.squeeze(0);
  }
  return logits;
}

// train_biases: false (every bias zero and frozen, the TL demo), true (every bias trained), or
// "mlp" (b_in and b_out trained, the others frozen: the paper's code and Omnigrok's).
KindKey train_biases_key() {
  return {"train_biases", false,
          "false: every b_* stays zero and frozen (TL demo); true: every bias trained; \"mlp\": only b_in and b_out (the paper's code, Omnigrok)",
          [](const nlohmann::json& v, const std::string& where) {
            if (v.is_boolean() || (v.is_string() && v.get<std::string>() == "mlp")) return v;
            fail_got(where, "must be true, false or \"mlp\"", v);
          }};
}

void validate_transformer(const Config& c, const TaskShape& shape, const std::string& origin) {
  auto bad = [&](const std::string& ptr, const std::string& what) { throw UsageError(origin + ": " + ptr + ": " + what); };
  const TransformerSpec s(c.model);
  if (s.n_heads * s.d_head != s.d_model)
    bad("/model/d_model", "must equal n_heads*d_head = " + std::to_string(s.n_heads) + "*" + std::to_string(s.d_head) +
                              " (got " + std::to_string(s.d_model) + ")");
  if (shape.vocab == 0)
    bad("/model/kind", "a transformer reads tokens; task.kind \"" + c.task.kind +
                           "\" has real-valued inputs (use model.kind \"toy_superposition\")");
}

double transformer_params(const Config& c, const TaskShape& shape) {
  double n = 0;
  for (auto& p : Transformer(c, shape).params()) {
    double k = 1;
    for (auto dim : p.shape) k *= double(dim);
    n += k;
  }
  return n;
}

}  // namespace

const ModelKind& transformer_model() {
  static const ModelKind kind = [] {
    ModelKind k;
    k.name = "transformer";
    k.doc = "Nanda et al.'s transformer, TransformerLens names and shapes; n_layers, attn_only and LayerNorm as TransformerLens has them";
    k.keys = {
        integer_key("d_model", 128, 1, 65536, "residual width"),
        integer_key("n_heads", 4, 1, 1024, "attention heads"),
        integer_key("d_head", 32, 1, 65536, "width of each head; n_heads*d_head must equal d_model"),
        integer_key("d_mlp", 512, 1, 1 << 20, "MLP hidden width"),
        choice_key("activation", "relu", {"relu", "gelu"}, "MLP activation"),
        train_biases_key(),
        choice_key("init", "tl", {"tl", "paper"},
                   "tl: every W_* ~ N(0, (0.8/sqrt(d_model))^2); paper: randn/sqrt(d_model), W_U randn/sqrt(d_vocab)"),
        integer_key("n_layers", 1, 1, 64, "transformer blocks"),
        bool_key("attn_only", false, "blocks of attention only, no MLP (the induction-head models); d_mlp is then unused"),
        choice_key("layer_norm", "none", {"none", "pre", "post"},
                   "none (Nanda et al.); pre: before attention and MLP and before the unembedding (TransformerLens's LN); post: after each residual addition"),
    };
    k.validate = validate_transformer;
    k.n_params = transformer_params;
    k.activation_floats = [](const Config& c, const TaskShape& shape) {
      const TransformerSpec s(c.model);
      if (fast_applies(s, shape))  // the evaluation holds [pairs, max(d_mlp, P)] floats a few times
        return double(std::max(s.d_mlp, shape.classes)) * 3.0;
      const double t = double(shape.seq_len);
      const double per_layer = t * double(4 * s.d_model + 3 * s.n_heads * s.d_head + (s.attn_only ? 0 : 2 * s.d_mlp)) +
                               double(s.n_heads) * t * t * 2;
      const double scored = shape.target == TaskShape::Target::last ? 1 : t;
      return double(s.n_layers) * per_layer + scored * double(shape.classes) * 3;
    };
    k.has_fast_path = [](const Config&, const TaskShape&) { return true; };
    k.make = [](const Config& c, const TaskShape& shape) -> std::shared_ptr<const Architecture> {
      return std::make_shared<Transformer>(c, shape);
    };
    return k;
  }();
  return kind;
}

}  // namespace grokking
