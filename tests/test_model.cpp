#include <torch/torch.h>

#include <cmath>
#include <set>

#include "catch.hpp"
#include "grokking/model.hpp"
#include "grokking/optim.hpp"
#include "grokking/graph_step.hpp"
#include "grokking/threads.hpp"
#include "helpers.hpp"

using namespace grokking;
using test::tiny_config;

TEST_CASE("parameters carry TransformerLens names and the shapes of the paper's model", "[model]") {
  Config cfg;  // P=113, d_model 128, 4 heads of 32, d_mlp 512
  Model m(cfg);
  std::vector<std::pair<std::string, std::vector<int64_t>>> expected = {
      {"embed.W_E", {114, 128}},         {"pos_embed.W_pos", {3, 128}},
      {"blocks.0.attn.W_Q", {4, 128, 32}}, {"blocks.0.attn.W_K", {4, 128, 32}},
      {"blocks.0.attn.W_V", {4, 128, 32}}, {"blocks.0.attn.W_O", {4, 32, 128}},
      {"blocks.0.attn.b_Q", {4, 32}},     {"blocks.0.attn.b_K", {4, 32}},
      {"blocks.0.attn.b_V", {4, 32}},     {"blocks.0.attn.b_O", {128}},
      {"blocks.0.mlp.W_in", {128, 512}},  {"blocks.0.mlp.b_in", {512}},
      {"blocks.0.mlp.W_out", {512, 128}}, {"blocks.0.mlp.b_out", {128}},
      {"unembed.W_U", {128, 113}},        {"unembed.b_U", {113}},
  };
  auto& params = m.named_parameters();
  REQUIRE(params.size() == expected.size());
  for (size_t i = 0; i < params.size(); ++i) {
    CHECK(params[i].first == expected[i].first);
    CHECK(params[i].second.sizes().vec() == expected[i].second);
  }
  // TL demo: biases zero and frozen; weights ~ N(0, (0.8/sqrt(128))^2).
  CHECK(m.param("blocks.0.mlp.b_in").abs().sum().item<double>() == 0.0);
  CHECK_FALSE(m.param("blocks.0.mlp.b_in").requires_grad());
  CHECK(m.param("blocks.0.mlp.W_in").requires_grad());
  double sd = m.param("blocks.0.mlp.W_in").std().item<double>();
  CHECK(sd == Approx(0.8 / std::sqrt(128.0)).epsilon(0.02));
}

TEST_CASE("parameters are reached by name and by their index in the kind's table", "[model]") {
  Model m(tiny_config());
  const std::vector<std::string> names = {
      "embed.W_E",         "pos_embed.W_pos",   "blocks.0.attn.W_Q",  "blocks.0.attn.W_K",
      "blocks.0.attn.W_V", "blocks.0.attn.W_O", "blocks.0.attn.b_Q",  "blocks.0.attn.b_K",
      "blocks.0.attn.b_V", "blocks.0.attn.b_O", "blocks.0.mlp.W_in",  "blocks.0.mlp.b_in",
      "blocks.0.mlp.W_out", "blocks.0.mlp.b_out", "unembed.W_U",      "unembed.b_U",
  };
  REQUIRE(m.named_parameters().size() == names.size());
  for (size_t i = 0; i < names.size(); ++i) {
    INFO(names[i]);
    CHECK(m.named_parameters()[i].first == names[i]);
    CHECK(m.specs()[i].name == names[i]);
    CHECK(m.weight(i).data_ptr() == m.param(names[i]).data_ptr());
  }
}

TEST_CASE("loading weights of the wrong shape names both shapes", "[model]") {
  Model m(tiny_config());
  auto bad = torch::zeros({3, 4});
  CHECK_THROWS_WITH(m.load({{"unembed.W_U", bad}}), "parameter unembed.W_U has shape [3, 4]; the model's is [16, 11]");
}

TEST_CASE("the same seed gives the same model; another seed another", "[model]") {
  auto cfg = tiny_config();
  Model a(cfg), b(cfg);
  CHECK(torch::equal(a.flat(), b.flat()));
  cfg.train.seed += 1;
  Model c(cfg);
  CHECK_FALSE(torch::equal(a.flat(), c.flat()));
}

TEST_CASE("the data split has the paper's sizes and is determined by its seed", "[model]") {
  Config cfg;
  cfg.task.seed = 598;
  auto d = make_dataset(cfg.task);
  CHECK(d.all_x.size(0) == 12769);
  CHECK(d.train_x.size(0) == 3830);
  CHECK(d.test_x.size(0) == 8939);
  CHECK(d.train_mask.sum().item<int64_t>() == 3830);
  // Inputs are [a, b, =] and labels (a+b) mod P.
  CHECK((d.train_x.select(1, 2) == 113).all().item<bool>());
  auto sum = (d.train_x.select(1, 0) + d.train_x.select(1, 1)).remainder(113);
  CHECK(torch::equal(sum, d.train_y));
  // Train and test are disjoint and cover all pairs.
  std::set<int64_t> seen;
  for (auto* x : {&d.train_x, &d.test_x}) {
    auto acc = x->accessor<int64_t, 2>();
    for (int64_t i = 0; i < x->size(0); ++i) seen.insert(acc[i][0] * 113 + acc[i][1]);
  }
  CHECK(seen.size() == 12769);
  auto again = make_dataset(cfg.task);
  CHECK(torch::equal(again.train_x, d.train_x));
  cfg.task.seed = 0;
  CHECK_FALSE(torch::equal(make_dataset(cfg.task).train_x, d.train_x));
}

TEST_CASE("division leaves out y = 0", "[model]") {
  TaskConfig t;
  t.set("operation", "div").set("p", 7).set("frac_train", 0.5);
  auto d = make_dataset(t);
  CHECK(d.all_x.size(0) == 42);
  CHECK((d.all_x.select(1, 1) != 0).all().item<bool>());
}

TEST_CASE("the loss is the float64 cross-entropy at the last position", "[model]") {
  auto logits = torch::tensor({{1.0f, 2.0f, 3.0f}, {0.5f, -1.0f, 0.0f}});
  auto labels = torch::tensor({2, 0}, torch::kInt64);
  auto loss = loss_fn(logits, labels);
  CHECK(loss.scalar_type() == torch::kFloat64);
  double l0 = -3.0 + std::log(std::exp(1.0) + std::exp(2.0) + std::exp(3.0));
  double l1 = -0.5 + std::log(std::exp(0.5) + std::exp(-1.0) + std::exp(0.0));
  CHECK(loss.item<double>() == Approx((l0 + l1) / 2).epsilon(1e-12));
  CHECK(accuracy(logits, labels) == 1.0);
  CHECK(accuracy(logits, torch::tensor({0, 0}, torch::kInt64)) == 0.5);
}

TEST_CASE("the forward pass matches a per-example hand computation", "[model]") {
  auto cfg = tiny_config(5);
  cfg.model.set("train_biases", true);
  Model m(cfg);
  {
    torch::NoGradGuard g;  // non-zero biases so that every term is exercised
    for (auto& [n, t] : m.named_parameters())
      if (n.find(".b_") != std::string::npos) t.normal_(0, 0.1);
  }
  auto x = torch::tensor({{3, 1, 5}}, torch::kInt64);
  auto out = m.forward(x).squeeze(0);
  // Naive loops over positions and heads.
  torch::NoGradGuard g;
  auto P = [&](const char* n) { return m.param(n).to(torch::kFloat64); };
  std::vector<torch::Tensor> resid;
  for (int i = 0; i < 3; ++i) resid.push_back(P("embed.W_E")[x[0][i].item<int64_t>()] + P("pos_embed.W_pos")[i]);
  auto attn = torch::zeros({16}, torch::kFloat64);
  for (int h = 0; h < 2; ++h) {
    auto q = resid[2].matmul(P("blocks.0.attn.W_Q")[h]) + P("blocks.0.attn.b_Q")[h];
    std::vector<double> s;
    for (int j = 0; j < 3; ++j)
      s.push_back((q * (resid[j].matmul(P("blocks.0.attn.W_K")[h]) + P("blocks.0.attn.b_K")[h])).sum().item<double>() /
                  std::sqrt(8.0));
    double mx = std::max({s[0], s[1], s[2]}), den = 0;
    for (double v : s) den += std::exp(v - mx);
    auto z = torch::zeros({8}, torch::kFloat64);
    for (int j = 0; j < 3; ++j)
      z += std::exp(s[j] - mx) / den * (resid[j].matmul(P("blocks.0.attn.W_V")[h]) + P("blocks.0.attn.b_V")[h]);
    attn += z.matmul(P("blocks.0.attn.W_O")[h]);
  }
  auto mid = resid[2] + attn + P("blocks.0.attn.b_O");
  auto post = torch::relu(mid.matmul(P("blocks.0.mlp.W_in")) + P("blocks.0.mlp.b_in"));
  auto fin = mid + post.matmul(P("blocks.0.mlp.W_out")) + P("blocks.0.mlp.b_out");
  auto expect = fin.matmul(P("unembed.W_U")) + P("unembed.b_U");
  CHECK(test::max_rel_diff(out, expect, "forward vs hand-computed logits", 1.0) < 1e-5);
}

namespace {
// Loss and flat gradient of one full-batch step through either path: the plain forward and
// loss_fn, or the step training takes on the fast path (its fused loss included), unsplit.
std::pair<double, torch::Tensor> loss_and_grad(Model& m, const Dataset& d, bool fast) {
  m.flat_grad().zero_();
  torch::Tensor loss;
  if (fast) {
    test::ScopedShards one(1);
    loss = forward_backward(m, Batch{d.train_x, d.train_y, {}}, true);
  } else {
    loss = loss_fn(m.forward(d.train_x), d.train_y);
    loss.backward();
  }
  return {loss.item<double>(), m.flat_grad().clone()};
}
}  // namespace

TEST_CASE("the fast path computes the plain path's loss and gradients", "[model]") {
  torch::manual_seed(1);
  std::vector<Config> configs;
  configs.push_back(tiny_config(11));
  {
    auto c = tiny_config(19);  // ReLU after a trained bias: the fast path's bias_relu node
    c.model.set("train_biases", "mlp");
    configs.push_back(c);
  }
  {
    auto c = tiny_config(13);
    c.model.set("activation", "gelu");
    c.model.set("train_biases", true);
    configs.push_back(c);
  }
  {
    auto c = tiny_config(17);
    c.model.set("n_heads", 4);
    c.model.set("d_head", 4);
    c.model.set("init", "paper");
    c.task.set("operation", "x^2+xy+y^2");
    configs.push_back(c);
  }
  {
    Config c;  // the paper's size, P = 113
    c.train.seed = 5;
    configs.push_back(c);
  }
  for (auto& cfg : configs)
    for (const auto level : simd_levels()) {
      test::ScopedSimd simd(level);
      INFO("P=" << cfg.task.integer("p") << " act=" << cfg.model.text("activation") << ", kernels " << simd_name(level));
      Model m(cfg);
      if (cfg.model.keys.at("train_biases") != false) {
        torch::NoGradGuard g;
        for (auto& [n, t] : m.named_parameters())
          if (n.find(".b_") != std::string::npos) t.normal_(0, 0.1);
      }
      auto d = make_dataset(cfg.task);
      REQUIRE(m.arch().fused_loss(m, Batch{d.train_x, d.train_y, {}}, LossSpec::of(cfg.train)).defined());
      auto [l_plain, g_plain] = loss_and_grad(m, d, false);
      auto [l_fast, g_fast] = loss_and_grad(m, d, true);
      const std::string where = "P=" + std::to_string(cfg.task.integer("p")) + " " + simd_name(level) + " fast vs plain ";
      const auto f64 = torch::kFloat64;
      CHECK(test::max_rel_diff(torch::tensor(l_fast, f64), torch::tensor(l_plain, f64), where + "loss") <= 1e-5);
      // Every parameter's gradient, relative to its largest element.
      int64_t off = 0;
      for (auto& [name, t] : m.named_parameters()) {
        auto gp = g_plain.narrow(0, off, t.numel()), gf = g_fast.narrow(0, off, t.numel());
        off += t.numel();
        INFO(name);
        if (name == "blocks.0.attn.b_K") {
          // Its true gradient is zero (softmax ignores a shift shared by every key): both paths
          // must give rounding noise only.
          const double total = g_plain.norm().item<double>();
          CHECK(gp.norm().item<double>() <= 1e-5 * total);
          CHECK(gf.norm().item<double>() <= 1e-5 * total);
          continue;
        }
        CHECK(test::max_rel_diff(gf, gp, where + "grad " + name) <= 1e-5);
      }
    }
}

namespace {
std::pair<double, torch::Tensor> step_grads(Model& m, const Batch& b, bool fast, int shards) {
  test::ScopedShards s(shards);
  auto loss = forward_backward(m, b, fast);
  return {loss.item<double>(), m.flat_grad().clone()};
}

// A split step against the whole one on a model and the batch, both paths, 2 and 3 shards; and
// side by side (pair: two replicas, the first = m) as alone.
void check_split_step(Model& pair, const Batch& b) {
  Model m = pair.replica(0);
  for (bool fast : {true, false}) {
    INFO((fast ? "fast" : "plain") << " path");
    const auto [loss1, grad1] = step_grads(m, b, fast, 1);
    for (int k : {2, 3}) {
      INFO(k << " shards");
      const auto [loss, grad] = step_grads(m, b, fast, k);
      CHECK(std::abs(loss - loss1) <= 1e-6 * std::abs(loss1));
      CHECK_FALSE(torch::equal(grad, grad1));  // split: the sums' order changed
      int64_t off = 0;
      for (auto& [name, t] : m.named_parameters()) {
        auto g = grad.narrow(0, off, t.numel()), g1 = grad1.narrow(0, off, t.numel());
        off += t.numel();
        if (name.find("attn.b_K") != std::string::npos) continue;  // a true gradient of zero: rounding noise alone
        CHECK(test::max_rel_diff(g, g1, name) <= 1e-5);
      }
      const auto [again_loss, again] = step_grads(m, b, fast, k);
      CHECK(again_loss == loss);
      CHECK(torch::equal(again, grad));
    }
  }
  const auto [alone_loss, alone] = step_grads(m, b, true, 2);
  const auto [pair_loss, both] = step_grads(pair, b, true, 2);
  CHECK(torch::equal(pair.replica_part(both, 0), alone));
}
}  // namespace

TEST_CASE("a step split into row shards on threads gives the whole step's loss and gradients, the same bits each time and packed as alone",
          "[model]") {
  std::vector<Config> configs;
  configs.push_back(Config{});  // the paper's P = 113: 3,830 training pairs
  {
    Config c;
    c.task.set("p", 59);
    c.model.set("train_biases", true);
    c.model.set("activation", "gelu");
    configs.push_back(c);
  }
  configs.push_back(load_config(test::source_dir() + "/configs/groups/chughtai-s5-mlp.json"));
  for (auto& cfg : configs) {
    cfg.train.device = "cpu";
    const auto d = make_dataset(cfg.task);
    const Batch b{d.train_x, d.train_y, {}};
    INFO(cfg.model.kind << " " << describe_task(cfg.task) << ", " << b.size() << " rows");
    Model pair(cfg, {cfg.train.seed, cfg.train.seed + 1});
    if (cfg.model.keys.count("train_biases") && cfg.model.keys.at("train_biases") == true) {
      torch::NoGradGuard g;
      for (auto& [n, t] : pair.named_parameters())
        if (n.find(".b_") != std::string::npos) t.normal_(0, 0.1);
    }
    check_split_step(pair, b);
  }
  // Sequences: each shard weighs by its scored positions (the repeated half, or all).
  for (const char* loss_on : {"repeat", "all"}) {
    INFO("induction/small.json, loss on " << loss_on);
    const Config cfg =
        load_config(test::source_dir() + "/configs/induction/small.json", {std::string("task.loss_on=\"") + loss_on + "\""});
    Model pair(cfg, {0, 1});
    check_split_step(pair, make_task(cfg.task)->train_batch(0, 32));
  }
  // Too little work for two shards: the step is not split, the same bits as one shard.
  auto cfg = tiny_config(23);
  Model m(cfg);
  const auto d = make_dataset(cfg.task);
  const Batch b{d.train_x, d.train_y, {}};
  CHECK(torch::equal(step_grads(m, b, true, 2).second, step_grads(m, b, true, 1).second));
}

TEST_CASE("the fast path fills the plain path's activation cache", "[model]") {
  for (auto act : {"relu", "gelu"}) {
    auto cfg = tiny_config(13);
    cfg.model.set("activation", act);
    Model m(cfg);
    auto x = make_dataset(cfg.task).all_x;
    torch::NoGradGuard g;
    Cache plain, fast;
    auto lp = m.forward(x, &plain);
    auto lf = m.forward_fast(x, &fast);
    INFO(act);
    const std::string a = std::string(act) + ": fast vs plain ";
    CHECK(test::max_rel_diff(fast.logits, plain.logits, a + "cached logits") <= 1e-5);
    CHECK(test::max_rel_diff(lf, lp, a + "logits") <= 1e-5);
    CHECK(test::max_rel_diff(fast.attn_pattern, plain.attn_pattern, a + "attn_pattern") <= 1e-5);
    CHECK(test::max_rel_diff(fast.resid_mid, plain.resid_mid, a + "resid_mid") <= 1e-5);
    CHECK(test::max_rel_diff(fast.mlp_post, plain.mlp_post, a + "mlp_post") <= 1e-5);
    CHECK(test::max_rel_diff(fast.resid_post, plain.resid_post, a + "resid_post") <= 1e-5);
  }
}

TEST_CASE("clone and replica copy the weights, not share them", "[model]") {
  auto cfg = tiny_config(11);
  Model m(cfg, {3, 4});
  Model r1 = m.replica(1);
  CHECK(r1.config().train.seed == 4);
  CHECK(r1.replicas() == 1);
  // Replica 1 has the weights a single model with seed 4 gets.
  auto single_cfg = cfg;
  single_cfg.train.seed = 4;
  CHECK(torch::equal(r1.flat(), Model(single_cfg).flat()));
  Model c = r1.clone();
  {
    torch::NoGradGuard g;
    c.param("embed.W_E").fill_(0.5);
  }
  CHECK_FALSE(torch::equal(c.flat(), r1.flat()));
  CHECK(r1.param("embed.W_E").abs().max().item<double>() != 0.5);
  CHECK_THROWS(m.clone());
}

TEST_CASE("FlatAdamW is bit-identical to torch::optim::AdamW with warmup", "[model]") {
  auto cfg = tiny_config();
  cfg.model.set("train_biases", true);
  Model ours(cfg), ref(cfg);
  auto d = make_dataset(cfg.task);
  FlatAdamW opt(ours.flat(), ours.flat_grad(), cfg.optim);
  std::vector<torch::Tensor> ref_params;
  for (auto& [n, t] : ref.named_parameters()) ref_params.push_back(t);
  torch::optim::AdamW adamw(ref_params, torch::optim::AdamWOptions(cfg.optim.lr)
                                            .betas({cfg.optim.beta1, cfg.optim.beta2})
                                            .eps(cfg.optim.eps)
                                            .weight_decay(cfg.optim.weight_decay));
  for (int step = 0; step < 15; ++step) {
    // ours
    double lr = opt.scheduled_lr();
    CHECK(lr == Approx(cfg.optim.lr * std::min(step / 10.0, 1.0)));
    ours.flat_grad().zero_();
    loss_fn(ours.forward(d.train_x), d.train_y).backward();
    opt.step(lr);
    // reference, lr set per step as LambdaLR does
    for (auto& g : adamw.param_groups()) static_cast<torch::optim::AdamWOptions&>(g.options()).lr(lr);
    ref.flat_grad().zero_();  // the grads are views into it (Optimizer::zero_grad would detach them)
    loss_fn(ref.forward(d.train_x), d.train_y).backward();
    adamw.step();
  }
  CHECK(torch::equal(ours.flat(), ref.flat()));
}

TEST_CASE("FlatAdamW on two and three threads: the bits of one", "[model]") {
  // A buffer long enough to share, of no whole number of vectors, with values that make every
  // op round: random parameters and gradients over several steps.
  const int64_t n = 3 * (1 << 15) + 37;
  auto gen = at::detail::createCPUGenerator(11);
  OptimConfig o;
  o.weight_decay = 0.3;
  auto run = [&](int threads) {
    test::ScopedShards shards(threads);
    auto p = torch::randn({n}, gen), g = torch::zeros({n});
    auto start = p.clone();
    FlatAdamW opt(p, g, o);
    auto grads = at::detail::createCPUGenerator(12);
    for (int step = 0; step < 5; ++step) {
      g.copy_(torch::randn({n}, grads) * 1e-2);
      opt.step(1e-3);
    }
    return std::make_pair(start, p);
  };
  gen = at::detail::createCPUGenerator(11);
  const auto [start1, one] = run(1);
  for (int threads : {2, 3}) {
    gen = at::detail::createCPUGenerator(11);
    const auto [start, many] = run(threads);
    REQUIRE(torch::equal(start, start1));
    CHECK(torch::equal(many, one));
  }
}

TEST_CASE("the graph-capturable step equals the host-scheduled one", "[model]") {
  auto cfg = tiny_config();
  cfg.optim.warmup_steps = 10;
  Model host(cfg), dev(cfg);
  auto d = make_dataset(cfg.task);
  FlatAdamW host_opt(host.flat(), host.flat_grad(), cfg.optim), dev_opt(dev.flat(), dev.flat_grad(), cfg.optim);
  for (int step = 0; step < 25; ++step) {
    auto lh = train_step(host, host_opt, d.train_x, d.train_y, true, host_opt.scheduled_lr());
    // Mostly device-scheduled steps; a host step in between must hand the count back and forth.
    torch::Tensor ld;
    if (step == 12) {
      ld = train_step(dev, dev_opt, d.train_x, d.train_y, true, dev_opt.scheduled_lr());
    } else {
      ld = device_scheduled_step(dev, dev_opt, d.train_x, d.train_y, true);
      CHECK(dev_opt.steps() == step);  // the host's count moves only when told
      dev_opt.count_device_step();
      CHECK(dev_opt.device_step().item<double>() == double(step + 1));
    }
    REQUIRE(dev_opt.steps() == host_opt.steps());
    CHECK(ld.item<double>() == lh.item<double>());
  }
  CHECK(torch::equal(dev.flat(), host.flat()));
  CHECK(torch::equal(dev_opt.exp_avg_sq(), host_opt.exp_avg_sq()));
  // Resuming (set_state) restarts the device count from the host's.
  dev_opt.set_state(host_opt.exp_avg(), host_opt.exp_avg_sq(), 3);
  device_scheduled_step(dev, dev_opt, d.train_x, d.train_y, true);
  CHECK(dev_opt.device_step().item<double>() == 4.0);
}
