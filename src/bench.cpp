// `grokking bench`: steps per second of the plain and fast training paths against the machine's
// measured GEMM peak and the FLOPs a step cannot avoid.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>

#include "grokking/commands.hpp"
#include "grokking/compat.hpp"
#include "grokking/config.hpp"
#include "grokking/graph_step.hpp"
#include "grokking/model.hpp"
#include "grokking/optim.hpp"
#include "grokking/threads.hpp"
#include "grokking/train.hpp"

namespace grokking {

namespace {
using Clock = std::chrono::steady_clock;

// Median seconds of `reps` calls of f after `warmup` calls.
template <class F>
double median_seconds(F&& f, int warmup, int reps) {
  for (int i = 0; i < warmup; ++i) f();
  std::vector<double> t;
  for (int i = 0; i < reps; ++i) {
    auto t0 = Clock::now();
    f();
    t.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

double gemm_peak_gflops(torch::Device dev) {
  const int64_t n = 1024;
  auto a = torch::randn({n, n}, torch::TensorOptions().device(dev)), b = torch::randn({n, n}, torch::TensorOptions().device(dev));
  double s = median_seconds([&] {
    auto c = torch::mm(a, b);
    if (dev.is_cuda()) c.cpu();
  }, 3, 15);
  return 2.0 * double(n * n * n) / s / 1e9;
}
}  // namespace

// FLOPs a full-batch step cannot avoid: the MLP, W_O and the unembedding over the training
// pairs at the last position, forward (1x) and backward (2x).
double step_flops(const Config& c, int64_t n_train) {
  const double n = double(n_train), d = double(c.model.d_model), m = double(c.model.d_mlp),
               hd = double(c.model.n_heads * c.model.d_head), p = double(c.task.p);
  const double forward = 2 * n * (d * m + m * d + hd * d + d * p);
  return 3 * forward;
}

int run_bench_command(const BenchOptions& opts) {
  Config cfg = opts.config_path.empty() ? parse_config("{}", "(defaults)", opts.sets) : load_config(opts.config_path, opts.sets);
  const int threads = configure_threads(cfg.train.threads);
  torch::Device dev = resolve_device(cfg.train.device);
  if (dev.is_cpu()) at::globalContext().setFlushDenormal(cfg.train.flush_denormal);
  Dataset data = make_dataset(cfg.task);
  auto x = data.train_x.to(dev), y = data.train_y.to(dev);
  const double flops = step_flops(cfg, x.size(0));
  const double peak = gemm_peak_gflops(dev);

  struct PathResult {
    std::string name;
    double seconds;
  };
  std::vector<PathResult> results;
  // Median seconds of one step of a fresh model on dev (several seeds: side by side);
  // make_step(model, opt) gives the step to time, which returns the loss.
  auto time_steps = [&](const std::vector<int64_t>& seeds, int warmup, auto make_step, const Config* variant = nullptr) {
    Model model(variant ? *variant : cfg, seeds);
    model.to(dev);
    FlatAdamW opt(model, (variant ? *variant : cfg).optim);
    auto step = make_step(model, opt);
    return median_seconds([&] {
      auto loss = step();
      if (dev.is_cuda()) loss.template item<double>();
    }, warmup, opts.steps);
  };
  for (bool fast : {false, true})
    results.push_back({fast ? "fast" : "plain", time_steps({}, 3, [&](Model& m, FlatAdamW& o) {
                         return [&, pm = &m, po = &o, fast] { return train_step(*pm, *po, x, y, fast, cfg.optim.lr); };
                       })});
  // On CUDA: the fast step captured in a CUDA graph and replayed (the training loop's default);
  // its first 4 calls are the eager warm-up and the capture.
  const bool graphed = dev.is_cuda() && GraphedStep::built();
  if (graphed) {
    results.push_back({"graph", time_steps({}, 5, [&](Model& m, FlatAdamW& o) {
                         auto graph = std::make_shared<GraphedStep>(m, o, x, y, true);
                         return [graph] { return graph->run(); };
                       })});
    // The plain path captured too: on a GPU the eager plain step was the faster one (H200).
    results.push_back({"graph_plain", time_steps({}, 5, [&](Model& m, FlatAdamW& o) {
                         auto graph = std::make_shared<GraphedStep>(m, o, x, y, false);
                         return [graph] { return graph->run(); };
                       })});
  }
  // Several seeds side by side: one batched step against as many single steps.
  double batched = 0;
  if (opts.seeds > 1) {
    std::vector<int64_t> seeds;
    for (int64_t i = 0; i < opts.seeds; ++i) seeds.push_back(i);
    if (graphed)  // as training runs them on CUDA: the batched step replayed from a graph
      batched = time_steps(seeds, 5, [&](Model& m, FlatAdamW& o) {
        auto graph = std::make_shared<GraphedStep>(m, o, x, y, true);
        return [graph] { return graph->run(); };
      });
    else
      batched = time_steps(seeds, 3, [&](Model& m, FlatAdamW& o) {
        return [&, pm = &m, po = &o] { return train_step(*pm, *po, x, y, true, cfg.optim.lr); };
      });
  }
  // One model on the same path as the batched step: the sequential throughput it is compared to.
  const double single = results[graphed ? 2 : 1].seconds;
  // Each intervention on the fast step, one at a time: its overhead over the plain AdamW step.
  std::vector<PathResult> interventions;
  const std::vector<std::pair<std::string, std::vector<std::string>>> variants = {
      {"grokfast ema", {"optim.grokfast=\"ema\""}},
      {"grokfast ma", {"optim.grokfast=\"ma\""}},
      {"orthograd", {"optim.orthograd=true"}},
      {"stablemax", {"train.loss=\"stablemax\""}},
      {"float32 loss", {"train.loss_dtype=\"float32\""}},
      {"fixed norm", {"optim.weight_norm=\"fixed\""}},
  };
  for (auto& [name, sets] : variants) {
    Config v = parse_config(config_to_json(cfg).dump(), "(bench)", sets);
    interventions.push_back({name, time_steps({}, 3, [&](Model& m, FlatAdamW& o) {
                               return [&, pm = &m, po = &o] { return train_step(*pm, *po, x, y, true, cfg.optim.lr); };
                             }, &v)});
  }
  const double limit = flops / (peak * 1e9);
  if (opts.json) {
    nlohmann::json j = {{"p", cfg.task.p},          {"n_train", x.size(0)},     {"device", dev.str()},
                        {"threads", threads},        {"blas", blas_description()}, {"libtorch", compat::torch_version()},
                        {"gemm_peak_gflops", peak},  {"step_gflop", flops / 1e9}, {"limit_ms", limit * 1e3},
                        {"paths", nlohmann::json::object()}};
    for (auto& r : results)
      j["paths"][r.name] = {{"ms_per_step", r.seconds * 1e3}, {"steps_per_s", 1 / r.seconds},
                            {"gflops", flops / r.seconds / 1e9}, {"fraction_of_limit", limit / r.seconds}};
    for (auto& r : interventions)
      j["interventions"][r.name] = {{"ms_per_step", r.seconds * 1e3}, {"overhead_vs_fast", r.seconds / results[1].seconds - 1}};
    if (batched > 0)
      j["seeds_side_by_side"] = {{"seeds", opts.seeds}, {"ms_per_step", batched * 1e3},
                                 {"path", graphed ? "graph" : "fast"},
                                 {"throughput_vs_sequential", double(opts.seeds) * single / batched}};
    std::printf("%s\n", j.dump(2).c_str());
    return 0;
  }
  std::printf("P=%lld, %lld training pairs, device %s, %d threads, %s, LibTorch %s\n", (long long)cfg.task.p,
              (long long)x.size(0), dev.str().c_str(), threads, blas_description().c_str(), compat::torch_version().c_str());
  std::printf("GEMM peak (1024^3 sgemm): %.1f GFLOP/s; unavoidable work: %.3f GFLOP/step; limit %.2f ms/step\n\n",
              peak, flops / 1e9, limit * 1e3);
  std::printf("%-6s %12s %10s %10s %14s\n", "path", "ms/step", "steps/s", "GFLOP/s", "of the limit");
  for (auto& r : results)
    std::printf("%-6s %12.2f %10.1f %10.1f %13.0f%%\n", r.name.c_str(), r.seconds * 1e3, 1 / r.seconds,
                flops / r.seconds / 1e9, 100 * limit / r.seconds);
  std::printf("\nfast path speed-up over plain: %.2fx\n", results[0].seconds / results[1].seconds);
  std::printf("\n%-14s %10s %10s  (fast path, one intervention at a time)\n", "intervention", "ms/step", "overhead");
  for (auto& r : interventions)
    std::printf("%-14s %10.2f %+9.0f%%\n", r.name.c_str(), r.seconds * 1e3, 100 * (r.seconds / results[1].seconds - 1));
  if (results.size() > 2) std::printf("CUDA graph speed-up over the fast path: %.2fx\n", results[1].seconds / results[2].seconds);
  if (batched > 0)
    std::printf("%lld seeds side by side (%s): %.2f ms/step for all, %.2fx the throughput of one seed at a time\n",
                (long long)opts.seeds, graphed ? "graph" : "fast", batched * 1e3, double(opts.seeds) * single / batched);
  return 0;
}

}  // namespace grokking
