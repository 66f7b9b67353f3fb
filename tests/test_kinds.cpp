// Model kinds and the task seam: each kind's forward against a hand computation, every kind
// side by side as alone, resumed bit for bit, checkpointed, and read by the pair analysis.
#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <functional>

#include "catch.hpp"
#include "grokking/analysis.hpp"
#include "grokking/checkpoint.hpp"
#include "grokking/model.hpp"
#include "grokking/optim.hpp"
#include "grokking/train.hpp"
#include "helpers.hpp"

using namespace grokking;
using test::error_of;
using test::max_rel_diff;
using test::tiny_config;

namespace {

Config with(const Config& base, const std::vector<std::string>& sets) {
  return parse_config(config_to_json(base).dump(), "(test)", sets);
}

// The tiny config with another model section.
Config tiny_with_model(const nlohmann::json& model) {
  auto j = config_to_json(tiny_config());
  j["model"] = model;
  return config_from_json(j, "(test)");
}
// Chughtai et al.'s MLP at a small size: embeddings of 8 per operand, one hidden layer of 16.
Config mlp_embed() { return tiny_with_model({{"kind", "mlp"}, {"d_embed", 8}, {"hidden", {16}}}); }
// Gromov's: one-hot inputs, x^2, no biases, mean squared error.
Config mlp_gromov() {
  return with(tiny_with_model({{"kind", "mlp"}, {"encoding", "one_hot"}, {"hidden", {24}}, {"activation", "square"}}),
              {"train.loss=mse"});
}
// Prieto et al.'s: one-hot inputs, two hidden layers, PyTorch's uniform init; here with biases.
Config mlp_two_layers() {
  return tiny_with_model(
      {{"kind", "mlp"}, {"encoding", "one_hot"}, {"hidden", {12, 10}}, {"init", "uniform"}, {"biases", true}});
}
Config two_layer_attn_only() {
  return with(tiny_config(), {"model.n_layers=2", "model.attn_only=true"});
}
Config pre_ln() { return with(tiny_config(), {"model.layer_norm=pre", "model.n_layers=2"}); }
Config post_ln() { return with(tiny_config(), {"model.layer_norm=post", "model.train_biases=true"}); }
// The toy model of computation in superposition on |x| of signed sparse features (fresh batches).
Config toy_mlp_abs() {
  auto j = config_to_json(tiny_config());
  j["task"] = {{"kind", "sparse_features"}, {"n_features", 6}, {"sparsity", 0.7}, {"values", "signed"}, {"target", "abs"}};
  j["model"] = {{"kind", "toy_mlp"}, {"d_hidden", 4}};
  j["train"]["batch_size"] = 32;
  return parse_config(j.dump(), "(test)", {});
}

torch::Tensor f64(const Model& m, const std::string& name) { return m.param(name).detach().to(torch::kFloat64); }

torch::Tensor layer_norm_ref(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b) {
  auto mu = x.mean(-1, true);
  auto var = (x - mu).pow(2).mean(-1, true);
  return (x - mu) / (var + 1e-5).sqrt() * w + b;
}

// A transformer written out for one model in float64, example by example per position:
// TransformerLens's recipe for n_layers blocks, optional MLP, pre or post LayerNorm.
torch::Tensor transformer_ref(const Model& m, const torch::Tensor& x) {
  const auto& mc = m.config().model;
  const int64_t L = mc.integer("n_layers"), h = mc.integer("n_heads"), dh = mc.integer("d_head");
  const std::string ln = mc.text("layer_norm");
  const bool attn_only = mc.flag("attn_only");
  const int64_t n = x.size(0), T = x.size(1);
  auto resid = f64(m, "embed.W_E").index_select(0, x.reshape(-1)).view({n, T, -1}) + f64(m, "pos_embed.W_pos");
  for (int64_t l = 0; l < L; ++l) {
    const std::string b = "blocks." + std::to_string(l) + ".";
    auto in = ln == "pre" ? layer_norm_ref(resid, f64(m, b + "ln1.w"), f64(m, b + "ln1.b")) : resid;
    auto out = torch::zeros_like(resid);
    for (int64_t head = 0; head < h; ++head) {
      auto q = in.matmul(f64(m, b + "attn.W_Q")[head]) + f64(m, b + "attn.b_Q")[head];  // [n, T, dh]
      auto k = in.matmul(f64(m, b + "attn.W_K")[head]) + f64(m, b + "attn.b_K")[head];
      auto v = in.matmul(f64(m, b + "attn.W_V")[head]) + f64(m, b + "attn.b_V")[head];
      auto s = q.matmul(k.transpose(1, 2)) / std::sqrt(double(dh));
      for (int64_t i = 0; i < T; ++i)
        for (int64_t j = i + 1; j < T; ++j) s.select(1, i).select(1, j).fill_(-1e300);
      out = out + s.softmax(-1).matmul(v).matmul(f64(m, b + "attn.W_O")[head]);
    }
    resid = resid + out + f64(m, b + "attn.b_O");
    if (ln == "post") resid = layer_norm_ref(resid, f64(m, b + "ln1.w"), f64(m, b + "ln1.b"));
    if (attn_only) continue;
    auto in2 = ln == "pre" ? layer_norm_ref(resid, f64(m, b + "ln2.w"), f64(m, b + "ln2.b")) : resid;
    auto post = torch::relu(in2.matmul(f64(m, b + "mlp.W_in")) + f64(m, b + "mlp.b_in"));
    resid = resid + post.matmul(f64(m, b + "mlp.W_out")) + f64(m, b + "mlp.b_out");
    if (ln == "post") resid = layer_norm_ref(resid, f64(m, b + "ln2.w"), f64(m, b + "ln2.b"));
  }
  if (ln == "pre") resid = layer_norm_ref(resid, f64(m, "ln_final.w"), f64(m, "ln_final.b"));
  return resid.select(1, T - 1).matmul(f64(m, "unembed.W_U")) + f64(m, "unembed.b_U");
}

// Nonzero biases and LayerNorm weights, so that the references test them too.
void perturb(Model& m) {
  torch::NoGradGuard no_grad;
  auto gen = at::detail::createCPUGenerator(7);
  for (auto& [name, t] : m.named_parameters())
    if (name.find(".b") != std::string::npos || name.find("ln") != std::string::npos)
      t.add_(torch::randn(t.sizes(), gen) * 0.1);
}

// A small induction config: two attention-only layers on repeated sequences, with `sets` applied.
Config induction(const std::vector<std::string>& sets) {
  auto j = config_to_json(tiny_config());
  j["task"] = {{"kind", "repeat"}, {"vocab", 12}, {"context", 16}, {"repeat_min", 3}, {"repeat_max", 6},
               {"eval_sequences", 8}};
  j["model"] = {{"n_layers", 2}, {"attn_only", true}, {"d_model", 16}, {"n_heads", 2}, {"d_head", 8}};
  j["train"]["batch_size"] = 16;
  return parse_config(j.dump(), "(test)", sets);
}

}  // namespace

TEST_CASE("the transformer's fast path with the hand-written attention: the generic forward's outputs and gradients", "[kinds]") {
  // Induction's sequences (every position scored, the context 32 and 16), the [a, b, =] task with
  // two layers and with LayerNorm, and heads of widths that are not a multiple of 8.
  const std::vector<std::pair<std::string, Config>> configs = {
      {"induction, 2 attention-only layers", induction({})},
      {"induction, context 32, 3 heads of 5", induction({"task.context=32", "task.repeat_max=14", "model.d_model=15",
                                                        "model.n_heads=3", "model.d_head=5"})},
      {"induction, pre-LN with MLPs, trained biases",
       induction({"model.attn_only=false", "model.layer_norm=\"pre\"", "model.train_biases=true"})},
      {"[a, b, =], 2 layers attention-only", two_layer_attn_only()},
      {"[a, b, =], pre-LN", pre_ln()},
      {"[a, b, =], post-LN", post_ln()}};
  for (const auto level : simd_levels())
  for (const auto& [what, cfg] : configs) {
    test::ScopedSimd simd(level);
    INFO(what << ", kernels " << simd_name(level));
    Model m(cfg);
    perturb(m);
    auto task = make_task(cfg.task);
    const auto x = task->shape().fresh_batches ? task->train_batch(0, 16).x : make_dataset(cfg.task).all_x;
    auto generic = m.forward(x), fast = m.forward_fast(x);
    CHECK(max_rel_diff(fast, generic, what + " outputs") < 1e-5);
    // Gradients of one scalar of all outputs, each parameter's relative to its largest element.
    const auto weights = torch::randn(generic.sizes(), at::detail::createCPUGenerator(3));
    auto grads = [&](bool fast_path) {
      m.flat_grad().zero_();
      ((fast_path ? m.forward_fast(x) : m.forward(x)) * weights).sum().backward();
      return m.flat_grad().clone();
    };
    const auto g_generic = grads(false), g_fast = grads(true);
    int64_t off = 0;
    for (auto& [name, t] : m.named_parameters()) {
      const auto gg = g_generic.narrow(0, off, t.numel()), gf = g_fast.narrow(0, off, t.numel());
      off += t.numel();
      if (!t.requires_grad() || name.find("attn.b_K") != std::string::npos) continue;  // b_K's true gradient is 0
      CHECK(max_rel_diff(gf, gg, what + " grad " + name) < 1e-5);
    }
  }
  // A NaN in the inputs spreads as it does on the generic path, instead of being rounded away.
  Config cfg = induction({});
  Model m(cfg);
  {
    torch::NoGradGuard no_grad;
    m.param("blocks.0.attn.W_Q")[0][0][0] = std::nanf("");
  }
  const auto x = make_task(cfg.task)->train_batch(0, 4).x;
  CHECK(m.forward(x).isnan().any().item<bool>());
  for (const auto level : simd_levels()) {
    test::ScopedSimd simd(level);
    INFO("kernels " << simd_name(level));
    CHECK(m.forward_fast(x).isnan().any().item<bool>());
  }
}

namespace {
// A step with the kind's fused loss gives the generic step's loss and every replica's gradients.
void check_fused_loss(Model& m, const Batch& batch, const std::string& what) {
  REQUIRE(m.arch().fused_loss(m, batch, LossSpec::of(m.config().train)).defined());
  const double fused = forward_backward(m, batch, true).item<double>();
  const auto g_fused = m.flat_grad().clone();
  const double generic = forward_backward(m, batch, false).item<double>();
  const auto g_generic = m.flat_grad().clone();
  CHECK(std::abs(fused - generic) <= 1e-6 * std::abs(generic));
  for (int64_t r = 0; r < m.replicas(); ++r)
    CHECK(max_rel_diff(m.replica_part(g_fused, r), m.replica_part(g_generic, r), what + " gradients") < 1e-5);
}
}  // namespace

TEST_CASE("the sequence loss fused on the fast path: the generic loss and gradients of a step, alone and packed",
          "[kinds]") {
  for (const auto level : simd_levels())
  for (const auto& sets : std::vector<std::vector<std::string>>{
           {}, {"task.loss_on=\"all\""}, {"model.attn_only=false", "model.layer_norm=\"pre\"", "model.train_biases=true"}})
    for (const std::vector<int64_t>& seeds : {std::vector<int64_t>{0}, std::vector<int64_t>{0, 1, 2}}) {
      test::ScopedSimd simd(level);
      const Config cfg = induction(sets);
      const std::string what = simd_name(level) + ", " + (sets.empty() ? std::string("attention-only") : sets.front()) +
                               ", " + std::to_string(seeds.size()) + " side by side";
      INFO(what);
      Model m(cfg, seeds);
      perturb(m);
      std::vector<TaskConfig> tasks(seeds.size(), cfg.task);
      const auto batch = make_task(tasks)->train_batch(1, 16);
      check_fused_loss(m, batch, what);
    }
  // Other losses take the generic path.
  Config cfg = induction({"train.loss=\"stablemax\""});
  Model m(cfg);
  CHECK_FALSE(m.arch().fused_loss(m, make_task(cfg.task)->train_batch(0, 4), LossSpec::of(cfg.train)).defined());
}

// The [a, b, =] fast path (the attention of "=", bias+ReLU and the loss by hand) and the generic
// forward with the fused loss.
TEST_CASE("a pair task's step on the transformer's fast paths: the generic step's loss and gradients, alone and packed",
          "[kinds]") {
  const std::vector<std::pair<std::string, Config>> configs = {
      {"[a, b, =] fast path, ReLU after trained biases", with(tiny_config(), {"model.train_biases=\"mlp\""})},
      {"[a, b, =] fast path, every bias trained", with(tiny_config(), {"model.train_biases=true"})},
      {"two layers, LayerNorm (the generic forward)",
       with(tiny_config(), {"model.n_layers=2", "model.layer_norm=\"pre\"", "model.train_biases=true"})}};
  for (const auto level : simd_levels())
    for (const auto& [name, cfg] : configs)
      for (const std::vector<int64_t>& seeds : {std::vector<int64_t>{0}, std::vector<int64_t>{0, 1, 2}}) {
        test::ScopedSimd simd(level);
        const std::string what = simd_name(level) + ", " + name + ", " + std::to_string(seeds.size()) + " side by side";
        INFO(what);
        Model m(cfg, seeds);
        perturb(m);
        const auto d = make_dataset(cfg.task);
        check_fused_loss(m, Batch{d.train_x, d.train_y, {}}, what);
      }
}

TEST_CASE("the MLP's loss fused on the fast path: the generic float64 cross-entropy and its gradients, alone and packed",
          "[kinds]") {
  // p = 11: 60 rows, one block of PairMlpLoss; p = 23: 264 rows, a full block and a part.
  for (const auto level : simd_levels())
    for (const int64_t p : {11, 23})
      for (const std::vector<int64_t>& seeds : {std::vector<int64_t>{0}, std::vector<int64_t>{0, 1, 2}}) {
        test::ScopedSimd simd(level);
        const Config cfg = with(mlp_embed(), {"task.p=" + std::to_string(p)});
        const std::string what =
            simd_name(level) + ", p = " + std::to_string(p) + ", " + std::to_string(seeds.size()) + " side by side";
        INFO(what);
        Model m(cfg, seeds);
        perturb(m);
        {  // logits far apart, so that some softmax terms underflow to zero
          torch::NoGradGuard g;
          m.param("unembed.W_U").mul_(40);
        }
        const auto d = make_dataset(cfg.task);
        const Batch batch{d.train_x, d.train_y, {}};
        check_fused_loss(m, batch, what);
        // Without gradients (no backward to come) the same loss.
        const double with_grads = m.arch().fused_loss(m, batch, LossSpec::of(cfg.train)).item<double>();
        torch::NoGradGuard g;
        const auto alone = m.arch().fused_loss(m, batch, LossSpec::of(cfg.train));
        CHECK_FALSE(alone.requires_grad());
        CHECK(alone.item<double>() == with_grads);
      }
  // Two hidden layers (or biases, or another activation) fuse only the loss: the same check.
  {
    const Config cfg = tiny_with_model({{"kind", "mlp"}, {"d_embed", 6}, {"hidden", {12, 10}}});
    Model m(cfg, {0, 1});
    perturb(m);
    const auto d = make_dataset(cfg.task);
    check_fused_loss(m, Batch{d.train_x, d.train_y, {}}, "two hidden layers");
  }
  // Other losses and precisions take the generic path.
  for (const char* set : {"train.loss=\"stablemax\"", "train.loss=\"mse\"", "train.loss_dtype=\"float32\""}) {
    const Config cfg = with(mlp_embed(), {set});
    Model m(cfg);
    const auto d = make_dataset(cfg.task);
    CHECK_FALSE(m.arch().fused_loss(m, Batch{d.train_x, d.train_y, {}}, LossSpec::of(cfg.train)).defined());
  }
}

TEST_CASE("the MLP's fast path (the first layer as two gathered tables): the generic forward's outputs and gradients",
          "[kinds]") {
  const std::vector<std::pair<std::string, Config>> configs = {
      {"embed, one hidden layer", mlp_embed()},
      {"embed, two hidden layers, biases, gelu",
       tiny_with_model({{"kind", "mlp"}, {"d_embed", 6}, {"hidden", {12, 10}}, {"biases", true}, {"activation", "gelu"}})}};
  for (const auto& [what, cfg] : configs) {
    INFO(what);
    for (const std::vector<int64_t>& seeds : {std::vector<int64_t>{0}, std::vector<int64_t>{0, 1, 2}}) {
      Model m(cfg, seeds);
      REQUIRE(m.has_fast_path());
      perturb(m);
      const auto x = make_dataset(cfg.task).all_x;
      const std::string where = what + ", " + std::to_string(seeds.size()) + " side by side";
      CHECK(max_rel_diff(m.forward_fast(x), m.forward(x), where + " outputs") < 1e-5);
      const auto weights = torch::randn(m.forward(x).sizes(), at::detail::createCPUGenerator(5));
      auto grads = [&](bool fast_path) {
        m.flat_grad().zero_();
        ((fast_path ? m.forward_fast(x) : m.forward(x)) * weights).sum().backward();
        return m.flat_grad().clone();
      };
      const auto g_generic = grads(false), g_fast = grads(true);
      for (int64_t r = 0; r < int64_t(seeds.size()); ++r)
        CHECK(max_rel_diff(m.replica_part(g_fast, r), m.replica_part(g_generic, r),
                           where + " gradients of replica " + std::to_string(r)) < 1e-5);
    }
  }
  // One-hot inputs have no fast path: their first layer is a gather already.
  CHECK_FALSE(Model(mlp_two_layers()).has_fast_path());
}

TEST_CASE("the transformer's generic forward: n_layers, attn_only and LayerNorm as TransformerLens has them", "[kinds]") {
  for (auto cfg : {tiny_config(), two_layer_attn_only(), pre_ln(), post_ln()}) {
    Model m(cfg);
    perturb(m);
    const std::string what = "layers " + std::to_string(cfg.model.integer("n_layers")) + " attn_only " +
                             std::to_string(cfg.model.flag("attn_only")) + " ln " + cfg.model.text("layer_norm");
    INFO(what);
    auto x = make_dataset(cfg.task).all_x;
    CHECK(max_rel_diff(m.forward(x), transformer_ref(m, x), what + " vs written out") < 1e-5);
    // The fast path: the specialisation to [a, b, =] inputs where it applies, the hand-written
    // attention core everywhere else; the same function either way.
    CHECK(m.has_fast_path());
    CHECK(max_rel_diff(m.forward_fast(x), m.forward(x), what + " fast vs generic") < 1e-5);
  }
  // TransformerLens's names: per layer, LayerNorms where they are, no MLP in attention-only blocks.
  Model attn(two_layer_attn_only()), pre(pre_ln());
  CHECK(attn.has_param("blocks.1.attn.W_Q"));
  CHECK_FALSE(attn.has_param("blocks.0.mlp.W_in"));
  CHECK(pre.has_param("blocks.1.ln2.w"));
  CHECK(pre.has_param("ln_final.b"));
  CHECK_FALSE(Model(post_ln()).has_param("ln_final.w"));
  CHECK(pre.param("blocks.0.ln1.w").eq(1).all().item<bool>());  // LayerNorm weights start at 1
  // train_biases "mlp": b_in and b_out trained, the attention's and the unembedding's frozen.
  Model omni(with(tiny_config(), {"model.train_biases=\"mlp\""}));
  CHECK(omni.param("blocks.0.mlp.b_in").requires_grad());
  CHECK(omni.param("blocks.0.mlp.b_out").requires_grad());
  CHECK_FALSE(omni.param("blocks.0.attn.b_Q").requires_grad());
  CHECK_FALSE(omni.param("unembed.b_U").requires_grad());
}

TEST_CASE("the MLPs of Chughtai et al., Prieto et al. and Gromov against their forward written out", "[kinds]") {
  const int64_t P = 11;
  {
    Model m(mlp_embed());
    const std::vector<std::pair<std::string, std::vector<int64_t>>> shapes = {
        {"embed.W_x", {P, 8}}, {"embed.W_y", {P, 8}}, {"hidden.0.W", {16, 16}}, {"unembed.W_U", {16, P}}};
    REQUIRE(m.named_parameters().size() == shapes.size());
    for (size_t i = 0; i < shapes.size(); ++i) {
      CHECK(m.named_parameters()[i].first == shapes[i].first);
      CHECK(m.named_parameters()[i].second.sizes().vec() == shapes[i].second);
    }
    // Chughtai et al.'s init: randn/sqrt(fan_in), embeddings randn/sqrt(d_embed).
    CHECK(f64(m, "hidden.0.W").std().item<double>() == Approx(1 / std::sqrt(16.0)).epsilon(0.15));
    auto x = make_dataset(mlp_embed().task).all_x;
    auto a = x.select(1, 0), b = x.select(1, 1);
    auto e = torch::cat({f64(m, "embed.W_x").index_select(0, a), f64(m, "embed.W_y").index_select(0, b)}, 1);
    auto ref = torch::relu(e.matmul(f64(m, "hidden.0.W"))).matmul(f64(m, "unembed.W_U"));
    CHECK(max_rel_diff(m.forward(x), ref, "mlp embed vs written out") < 1e-5);
  }
  for (auto cfg : {mlp_gromov(), mlp_two_layers()}) {
    Model m(cfg);
    perturb(m);
    const auto& mc = cfg.model;
    auto x = make_dataset(cfg.task).all_x;
    // The one-hot vectors of a and b, concatenated: [N, 2P].
    auto onehot = torch::cat({torch::nn::functional::one_hot(x.select(1, 0), P),
                              torch::nn::functional::one_hot(x.select(1, 1), P)}, 1).to(torch::kFloat64);
    auto h = onehot;
    const auto widths = mc.integers("hidden");
    for (size_t i = 0; i < widths.size(); ++i) {
      const std::string l = "hidden." + std::to_string(i) + ".";
      h = h.matmul(f64(m, l + "W"));
      if (mc.flag("biases")) h = h + f64(m, l + "b");
      h = mc.text("activation") == "square" ? h * h : torch::relu(h);
    }
    auto ref = h.matmul(f64(m, "unembed.W_U"));
    if (mc.flag("biases")) ref = ref + f64(m, "unembed.b_U");
    CHECK(max_rel_diff(m.forward(x), ref, "mlp one-hot " + mc.text("activation") + " vs written out") < 1e-5);
    if (mc.text("init") == "uniform")  // PyTorch's nn.Linear: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
      CHECK(Model(cfg).param("hidden.1.W").abs().max().item<double>() <= 1 / std::sqrt(12.0));
  }
  // The mean squared error against the one-hot label, averaged over the classes (torch's MSELoss).
  auto logits = torch::tensor({{0.5, -1.0, 2.0}, {0.0, 1.0, 0.25}}, torch::kFloat64);
  auto labels = torch::tensor({2, 0}, torch::kInt64);
  const double want = ((0.25 + 1.0 + 1.0) + (1.0 + 1.0 + 0.0625)) / 6;
  CHECK(loss_fn(logits, labels, LossSpec{false, true, torch::kFloat64}).item<double>() == Approx(want).epsilon(1e-12));
}

TEST_CASE("every model kind trains side by side as it does alone, and resumes bit for bit", "[kinds]") {
  for (auto base : {mlp_embed(), mlp_gromov(), mlp_two_layers(), two_layer_attn_only(), post_ln(), toy_mlp_abs()}) {
    base.train.epochs = 40;
    base.train.eval_every = 10;
    base.train.checkpoint_every = 20;
    base.optim.lr = 3e-3;
    const std::string kind = base.model.kind + " " + base.model.keys.dump();
    INFO(kind);
    // Side by side.
    const std::vector<int64_t> seeds = {3, 4};
    std::string parent = test::temp_dir("kinds-seeds");
    std::vector<std::string> dirs;
    for (auto s : seeds) dirs.push_back(parent + "/seed=" + std::to_string(s)), make_dirs(dirs.back() + "/checkpoints");
    train_replicas(base, seeds, dirs, false, true);
    for (size_t i = 0; i < seeds.size(); ++i) {
      auto one = base;
      one.train.seed = seeds[i];
      std::string alone = test::prepare_run(one, "kinds-alone");
      train(one, alone, false, true);
      auto d = test::metrics_max_diff(read_metrics(dirs[i] + "/metrics.csv"), read_metrics(alone + "/metrics.csv"),
                                      base.model.kind + " side by side vs alone");
      CHECK(d.loss <= 1e-4);
      CHECK(d.sum_sq_weights <= 1e-5);
    }
    // Resumed from a checkpoint in the middle: the same rows and weights.
    std::string whole = test::prepare_run(base, "kinds-whole");
    train(base, whole, false, true);
    auto first = base;
    first.train.epochs = 20;
    std::string split = test::prepare_run(first, "kinds-split");
    train(first, split, false, true);
    train(load_run_config(split, {"train.epochs=40"}), split, true, true);
    CHECK(test::metric_lines_without_time(whole + "/metrics.csv") == test::metric_lines_without_time(split + "/metrics.csv"));
    auto a = load_checkpoint(resume_path(whole)), b = load_checkpoint(resume_path(split));
    CHECK(torch::equal(model_from_checkpoint(a).flat(), model_from_checkpoint(b).flat()));
    // The checkpoint names every parameter as the kind does and loads into a model of the config.
    CHECK(a.weights.size() == Model(base).named_parameters().size());
    CHECK(a.config.model.kind == base.model.kind);
  }
}

TEST_CASE("an MLP's checkpoint loads in Python with its parameter names", "[kinds]") {
  const char* py = std::getenv("GROKKING_PYTHON") ? std::getenv("GROKKING_PYTHON") : "/usr/bin/python3";
  std::string dir = test::temp_dir("kinds-py");
  Model m(mlp_two_layers());
  save_checkpoint(dir + "/a.pt", m, nullptr, 5);
  std::ofstream(dir + "/load.py") << "import sys, torch\n"
                                     "kw = {'weights_only': False} if 'weights_only' in torch.load.__code__.co_varnames else {}\n"
                                     "ck = torch.load(sys.argv[1], map_location='cpu', **kw)\n"
                                     "print(' '.join(f'{k}:{list(v.shape)}' for k, v in ck['model'].items()))\n";
  const std::string cmd = std::string(py) + " " + dir + "/load.py " + dir + "/a.pt > " + dir + "/out.txt 2>&1";
  const int rc = std::system(cmd.c_str());
  const std::string out = read_file(dir + "/out.txt");
  INFO(out);
  REQUIRE(rc == 0);
  CHECK(out.find("hidden.0.W:[22, 12] hidden.0.b:[12] hidden.1.W:[12, 10] hidden.1.b:[10] unembed.W_U:[10, 11] "
                 "unembed.b_U:[11]") != std::string::npos);
}

TEST_CASE("the pair analysis reads an MLP through its weights on each operand", "[kinds]") {
  // An MLP whose embedding of a is cos/sin of frequency 3 and of b frequency 3 too: the embedding
  // spectrum has all its norm there, and projecting that frequency out of the weights leaves none.
  Config cfg = with(mlp_embed(), {"task.p=23"});
  Model m(cfg);
  const int64_t P = 23, k = 3;
  {
    torch::NoGradGuard no_grad;
    auto a = torch::arange(P, torch::kFloat64);
    for (auto* name : {"embed.W_x", "embed.W_y"}) {
      auto w = torch::zeros({P, 8}, torch::kFloat64);
      w.select(1, 0).copy_(torch::cos(2 * M_PI * k * a / P));
      w.select(1, 1).copy_(torch::sin(2 * M_PI * k * a / P));
      m.param(name).copy_(w);
    }
  }
  auto embeddings = operand_embeddings(m);
  REQUIRE(embeddings.size() == 2);
  const auto norms = frequency_norms(embedding_matrix(m));
  double total = 0;
  for (auto v : norms) total += v * v;
  CHECK(norms[k - 1] * norms[k - 1] / total > 0.999);
  auto r = analyse_fourier(m);
  CHECK(r.key_embed == std::vector<int64_t>{k});
  CHECK(r.embedding_label == "W_x, W_y");
  CHECK(r.attn_key.empty());  // no attention to read
  // The weight-space ablation of that frequency: the embeddings left carry none of it.
  auto data = make_dataset(cfg.task);
  auto rows = ablate(m, data, AblateOptions{{k}, 2, 0});
  bool found = false;
  for (auto& row : rows) found = found || row.name == "remove all key freqs from W_x, W_y";
  CHECK(found);
  // A one-hot MLP is read through the first layer's rows of a and of b.
  Model onehot(with(mlp_gromov(), {"task.p=23"}));
  REQUIRE(operand_embeddings(onehot).size() == 2);
  CHECK(torch::equal(operand_embeddings(onehot)[1],
                     onehot.param("hidden.0.W").detach().narrow(0, P, P).to(torch::kFloat64)));
}

TEST_CASE("an analysis that does not apply is refused in one line", "[kinds]") {
  Model attn(with(tiny_config(), {"model.attn_only=true"}));
  CHECK(error_of([&] { neuron_logit_map(attn); }).find("no hidden neurons") != std::string::npos);
  auto r = analyse_fourier(attn);  // the spectra still apply; no neurons to cluster
  CHECK(r.neuron_freq.empty());
}

TEST_CASE("the hand-written kernels' instruction sets: the CPU's levels, lowered on request, never raised", "[kinds]") {
  const auto levels = simd_levels();
  REQUIRE_FALSE(levels.empty());
  CHECK(levels.front() == Simd::base);
  const Simd before = simd_level(), best = levels.back();
  {
    test::ScopedSimd simd(Simd::base);
    CHECK(simd_level() == Simd::base);
    force_simd_level(Simd::avx512);  // more than some CPUs have: their best instead
    CHECK(simd_level() == best);
  }
  CHECK(simd_level() == before);
  CHECK(simd_name(Simd::avx2) == "avx2");
}
