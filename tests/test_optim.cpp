// The interventions of issue "Interventions and fair comparisons": each against a reference
// computed here independently (plain doubles, following the papers' reference code), then
// with resume (bit for bit) and with seeds side by side.
#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include <cmath>
#include <deque>

#include "catch.hpp"
#include "grokking/checkpoint.hpp"
#include "grokking/graph_step.hpp"
#include "grokking/model.hpp"
#include "grokking/optim.hpp"
#include "grokking/train.hpp"
#include "helpers.hpp"

using namespace grokking;
using test::prepare_run;
using test::tiny_config;

namespace {
// A deterministic gradient for step t: varies in sign and size from element to element.
std::vector<double> gradient_at(int t, int64_t n) {
  std::vector<double> g(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) g[size_t(i)] = std::sin(0.37 * double(i + 1) * double(t + 1)) * (1 + double(i % 3));
  return g;
}
torch::Tensor as_tensor(const std::vector<double>& v) { return torch::tensor(v, torch::kFloat64).to(torch::kFloat32); }

}  // namespace

TEST_CASE("Grokfast EMA and MA filter the gradient as the reference code does", "[optim]") {
  const int64_t n = 7;
  for (std::string kind : {"ema", "ma"}) {
    OptimConfig oc;
    oc.grokfast = kind;
    oc.grokfast_alpha = 0.9;
    oc.grokfast_lamb = 2.0;
    oc.grokfast_window = 4;
    auto param = torch::zeros({n}), grad = torch::zeros({n});
    FlatAdamW opt(param, grad, oc);
    // gradfilter_ema: grads = g on the first call, then grads = grads*alpha + g*(1-alpha) on
    // every call; g += grads*lamb. gradfilter_ma (warmup): append; once full, g += mean*lamb.
    std::vector<double> mu;
    std::deque<std::vector<double>> window;
    for (int t = 0; t < 9; ++t) {
      auto g = gradient_at(t, n);
      grad.copy_(as_tensor(g));
      opt.step(0.0);  // lr 0: only the gradient changes
      std::vector<double> want = g;
      if (kind == "ema") {
        if (mu.empty()) mu = g;
        for (int64_t i = 0; i < n; ++i) {
          auto k = size_t(i);
          mu[k] = mu[k] * 0.9 + g[k] * (1 - 0.9);
          want[k] = g[k] + mu[k] * 2.0;
        }
      } else {
        window.push_back(g);
        if (window.size() > 4) window.pop_front();
        if (window.size() == 4)
          for (int64_t i = 0; i < n; ++i) {
            double sum = 0;
            for (auto& w : window) sum += w[size_t(i)];
            want[size_t(i)] = g[size_t(i)] + sum / 4 * 2.0;
          }
      }
      INFO(kind << " step " << t);
      CHECK(test::max_rel_diff(grad, as_tensor(want), "grokfast " + kind + " step " + std::to_string(t)) < 1e-6);
    }
  }
}

TEST_CASE("OrthoGrad removes the gradient's component along each weight tensor and keeps its norm", "[optim]") {
  auto cfg = tiny_config();
  cfg.optim.orthograd = true;
  Model m(cfg, {3, 4});  // two replicas: each tensor of each replica on its own
  auto d = make_dataset(cfg.task);
  FlatAdamW opt(m, cfg.optim);
  forward_backward(m, d.train_x, d.train_y, true);
  auto w = m.flat().detach().clone(), g = m.flat_grad().clone();
  opt.step(0.0);
  auto blocks = m.param_blocks();
  for (size_t i = 0; i < blocks.size(); ++i)
    for (int64_t r = 0; r < 2; ++r) {
      auto off = blocks[i].offset + r * blocks[i].numel;
      auto wv = w.narrow(0, off, blocks[i].numel).to(torch::kFloat64);
      auto gv = g.narrow(0, off, blocks[i].numel).to(torch::kFloat64);
      auto got = m.flat_grad().narrow(0, off, blocks[i].numel);
      // The reference: g_orth = g - (w.g / (w.w + 1e-30)) w; scaled to |g|.
      auto orth = gv - wv * (wv.dot(gv) / (wv.dot(wv) + 1e-30));
      auto want = orth * (gv.norm() / (orth.norm() + 1e-30));
      INFO(m.named_parameters()[i].first << " replica " << r);
      CHECK(test::max_rel_diff(got, want, "orthograd " + m.named_parameters()[i].first, 1e-6) < 1e-4);
      if (gv.norm().item<double>() > 0) CHECK(std::abs(wv.dot(got.to(torch::kFloat64)).item<double>()) <=
                                               1e-5 * wv.norm().item<double>() * gv.norm().item<double>());
    }
}

TEST_CASE("StableMax and the loss precision", "[optim]") {
  auto logits = torch::tensor({{-2.0, 0.0, 1.5, -0.5}, {3.0, -1.0, 0.25, 0.0}}, torch::kFloat32);
  auto labels = torch::tensor({2, 0}, torch::kInt64);
  // s(x) = x + 1 (x >= 0), 1/(1 - x) (x < 0); p = s/sum s; loss = mean -log p(label).
  auto s = [](double x) { return x >= 0 ? x + 1 : 1 / (1 - x); };
  const double row0 = s(-2) + s(0) + s(1.5) + s(-0.5), row1 = s(3) + s(-1) + s(0.25) + s(0);
  const double want = -(std::log(s(1.5) / row0) + std::log(s(3) / row1)) / 2;
  LossSpec stable{true, false, torch::kFloat64};
  CHECK(loss_fn(logits, labels, stable).item<double>() == Approx(want).epsilon(1e-12));
  CHECK(log_probs(logits, stable).exp().sum(-1).sub(1).abs().max().item<double>() < 1e-12);
  // float32 softmax: the same function in the lower precision; a confident pair's loss is exactly 0 there.
  LossSpec f32{false, false, torch::kFloat32};
  CHECK(loss_fn(logits, labels, f32).scalar_type() == torch::kFloat32);
  CHECK(loss_fn(logits, labels, f32).item<double>() == Approx(loss_fn(logits, labels).item<double>()).epsilon(1e-6));
  auto confident = torch::tensor({{20.0, 0.0, 0.0, 0.0}}, torch::kFloat32);  // 3e^-20: below float32's ulp at 20, not float64's
  auto zero = torch::tensor({0}, torch::kInt64);
  CHECK(replica_zero_terms(confident.unsqueeze(0), zero, f32).item<double>() == 1.0);
  CHECK(replica_zero_terms(confident.unsqueeze(0), zero).item<double>() == 0.0);  // float64 still sees it
  // Prieto et al.'s softmax collapse: the sum of exp(logit - max) is exactly 1 in the precision.
  CHECK(replica_softmax_collapse(confident.unsqueeze(0), f32).item<double>() == 1.0);
  CHECK(replica_softmax_collapse(confident.unsqueeze(0)).item<double>() == 0.0);
  CHECK(replica_softmax_collapse(logits.unsqueeze(0), f32).item<double>() == 0.0);
}

TEST_CASE("Omnigrok: init_scale multiplies the initial weights; the fixed norm holds it", "[optim]") {
  auto cfg = tiny_config();
  Model one(cfg);
  cfg.model.init_scale = 4.0;
  Model four(cfg);
  CHECK(torch::equal(four.flat(), one.flat() * 4));  // a power of two: exact
  cfg.optim.weight_norm = "fixed";
  cfg.optim.weight_decay = 0;
  Model m(cfg, {1, 2});
  auto d = make_dataset(cfg.task);
  const auto norms = [&] {
    std::vector<double> v;
    for (int64_t r = 0; r < 2; ++r) v.push_back(m.replica_part(m.flat().detach(), r).to(torch::kFloat64).norm().item<double>());
    return v;
  };
  const auto start = norms();
  FlatAdamW opt(m, cfg.optim);
  for (int i = 0; i < 20; ++i) train_step(m, opt, d.train_x, d.train_y, true, 1e-2);
  CHECK(test::max_rel_diff(norms(), start, "fixed weight norm after 20 steps") < 1e-6);
}

TEST_CASE("each replica's gradient norm and its scaling, by hand on the CPU, as the tensor ops give them", "[optim]") {
  auto cfg = tiny_config();
  Model m(cfg, {1, 2, 3});
  const auto blocks = m.param_blocks();
  torch::Tensor param = m.flat().detach().clone(), grad = torch::randn(param.sizes(), at::detail::createCPUGenerator(9));
  FlatView v{param, grad, blocks, 3};
  const auto sq = v.replica_sq_norms(grad);
  for (int64_t r = 0; r < 3; ++r) {
    const double want = replica_part(grad, blocks, r).to(torch::kFloat64).pow(2).sum().item<double>();
    CHECK(std::abs(sq[r].item<double>() - want) <= 1e-12 * want);
  }
  const auto factor = torch::tensor({0.5, 2.0, 0.25}, torch::kFloat64);
  auto scaled = grad.clone();
  v.scale_replicas(scaled, factor);
  for (int64_t r = 0; r < 3; ++r)
    CHECK(torch::equal(replica_part(scaled, blocks, r), replica_part(grad, blocks, r) * factor[r].item<float>()));
}

TEST_CASE("every intervention resumes bit for bit and trains side by side as alone", "[optim]") {
  auto base = tiny_config();
  base.train.epochs = 60;
  base.train.eval_every = 10;
  base.train.checkpoint_every = 30;
  std::vector<std::pair<std::string, std::function<void(Config&)>>> arms = {
      {"grokfast-ema", [](Config& c) { c.optim.grokfast = "ema"; }},
      {"grokfast-ma", [](Config& c) { c.optim.grokfast = "ma"; c.optim.grokfast_window = 8; }},
      {"orthograd", [](Config& c) { c.optim.orthograd = true; }},
      {"stablemax-f32", [](Config& c) { c.train.loss = "stablemax"; c.train.loss_dtype = "float32"; }},
      {"fixed-norm", [](Config& c) { c.optim.weight_norm = "fixed"; c.model.init_scale = 2.0; }},
      {"grad-clip", [](Config& c) { c.optim.grad_clip = 0.05; }},
  };
  for (auto& [name, set] : arms) {
    INFO(name);
    Config cfg = base;
    set(cfg);
    std::string whole = prepare_run(cfg, name + "-whole");
    train(cfg, whole, false, true);
    auto first = cfg;
    first.train.epochs = 30;
    std::string split = prepare_run(first, name + "-split");
    train(first, split, false, true);
    train(load_run_config(split, {"train.epochs=60"}), split, true, true);
    auto a = load_checkpoint(resume_path(whole)), b = load_checkpoint(resume_path(split));
    CHECK(torch::equal(model_from_checkpoint(a).flat(), model_from_checkpoint(b).flat()));
    CHECK(torch::equal(a.exp_avg_sq, b.exp_avg_sq));
    REQUIRE(a.optimizer_extra.size() == b.optimizer_extra.size());
    for (size_t k = 0; k < a.optimizer_extra.size(); ++k) CHECK(torch::equal(a.optimizer_extra[k].second, b.optimizer_extra[k].second));
    CHECK(read_json_file(whole + "/summary.json")["loss"] == cfg.train.loss);

    // Seeds 2 and 7 side by side write what each writes alone.
    std::string parent = test::temp_dir(name + "-seeds");
    std::vector<std::string> dirs = {parent + "/seed=2", parent + "/seed=7"};
    for (auto& dir : dirs) make_dirs(dir + "/checkpoints");
    train_replicas(cfg, {2, 7}, dirs, false, true);
    auto alone = cfg;
    alone.train.seed = 7;
    std::string single = prepare_run(alone, name + "-alone");
    train(alone, single, false, true);
    auto diff = test::metrics_max_diff(read_metrics(dirs[1] + "/metrics.csv"), read_metrics(single + "/metrics.csv"),
                                       name + " seed 7 side by side vs alone");
    CHECK(diff.loss <= 1e-3);
    CHECK(diff.acc <= 0.02);
    CHECK(diff.sum_sq_weights <= 1e-4);
  }
}

TEST_CASE("per-replica hyperparameters: each replica steps as it would alone, host- or device-scheduled", "[optim]") {
  auto cfg = tiny_config();
  cfg.optim.warmup_steps = 4;
  std::vector<OptimConfig> own(3, cfg.optim);
  own[1].lr = 3e-3, own[1].weight_decay = 0.1;
  own[2].beta1 = 0.8, own[2].beta2 = 0.9, own[2].eps = 1e-5, own[2].lr = 1e-2;
  const std::vector<int64_t> seeds = {5, 6, 7};
  auto d = make_dataset(cfg.task);
  Model host(cfg, seeds), dev(cfg, seeds);
  FlatAdamW host_opt(host, cfg.optim, own), dev_opt(dev, cfg.optim, own);
  std::vector<Model> alone;
  alone.reserve(seeds.size());
  std::vector<std::unique_ptr<FlatAdamW>> alone_opt;
  for (size_t r = 0; r < seeds.size(); ++r) {
    Config c = cfg;
    c.train.seed = seeds[r];
    c.optim = own[r];
    alone.emplace_back(c);
  }
  for (size_t r = 0; r < seeds.size(); ++r)
    alone_opt.push_back(std::make_unique<FlatAdamW>(alone[r], alone[r].config().optim));
  for (int step = 0; step < 12; ++step) {
    train_step(host, host_opt, d.train_x, d.train_y, true, host_opt.scheduled_lr());
    device_scheduled_step(dev, dev_opt, d.train_x, d.train_y, true);
    dev_opt.count_device_step();
    for (size_t r = 0; r < seeds.size(); ++r) {
      train_step(alone[r], *alone_opt[r], d.train_x, d.train_y, true, alone_opt[r]->scheduled_lr());
      CHECK(host_opt.lr_at(int64_t(r), step) == Approx(alone_opt[r]->lr_at(0, step)).epsilon(1e-15));
    }
  }
  for (size_t r = 0; r < seeds.size(); ++r) {
    INFO("replica " << r);
    const auto rr = int64_t(r);
    CHECK(test::max_rel_diff(host.replica_part(host.flat().detach(), rr), alone[r].flat(), "host vs alone") <= 1e-5);
    CHECK(test::max_rel_diff(dev.replica_part(dev.flat().detach(), rr), alone[r].flat(), "device vs alone") <= 1e-5);
    CHECK(test::max_rel_diff(host_opt.state(rr).exp_avg_sq, alone_opt[r]->exp_avg_sq(), "moments") <= 1e-4);
  }
  // A mismatch in count is a programming error, not a silent broadcast.
  CHECK_THROWS_AS(FlatAdamW(host, cfg.optim, std::vector<OptimConfig>(2, cfg.optim)), std::invalid_argument);
}
