// `grokking bench`: steps per second of the plain and fast training paths against the machine's
// measured GEMM peak and the FLOPs a step cannot avoid.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <sstream>

#include "grokking/commands.hpp"
#include "grokking/compat.hpp"
#include "grokking/config.hpp"
#include "grokking/graph_step.hpp"
#include "grokking/model.hpp"
#include "grokking/optim.hpp"
#include "grokking/limits.hpp"
#include "grokking/rundir.hpp"
#include "grokking/task.hpp"
#include "grokking/error.hpp"
#include "grokking/threads.hpp"
#include "grokking/train.hpp"

namespace grokking {

namespace {
using Clock = std::chrono::steady_clock;

// Seconds of `reps` calls of f after `warmup` calls, sorted.
template <class F>
std::vector<double> sorted_seconds(F&& f, int warmup, int reps) {
  for (int i = 0; i < warmup; ++i) f();
  std::vector<double> t;
  for (int i = 0; i < reps; ++i) {
    auto t0 = Clock::now();
    f();
    t.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
  }
  std::sort(t.begin(), t.end());
  return t;
}
template <class F>
double median_seconds(F&& f, int warmup, int reps) {
  const auto t = sorted_seconds(f, warmup, reps);
  return t[t.size() / 2];
}

double gemm_peak_gflops(torch::Device dev) {
  const int64_t n = 1024;
  auto a = torch::randn({n, n}, torch::TensorOptions().device(dev)), b = torch::randn({n, n}, torch::TensorOptions().device(dev));
  // The fastest of 15: what the machine can do (a shared machine's speed moves from one second to
  // the next, and a median taken in a slow moment would overstate every share of it).
  const double s = sorted_seconds([&] {
    auto c = torch::mm(a, b);
    if (dev.is_cuda()) c.cpu();
  }, 3, 15).front();
  return 2.0 * double(n * n * n) / s / 1e9;
}
// "add mod 113 (3830 training pairs)", "repeat (vocab 64, L 8-32)": what is benchmarked, in a few words.
std::string describe_bench_task(const Config& cfg, const TaskShape& shape) {
  const std::string what = describe_task(cfg.task);
  if (shape.fresh_batches) return what;
  return what + " (" + std::to_string(shape.train_examples) + " training " + (shape.operand_values > 0 ? "pairs" : "examples") + ")";
}
struct PathResult {
  std::string name;
  double seconds;
};
// What bench measured, for its table or its JSON.
struct BenchReport {
  std::string what;
  Config cfg;
  int64_t n_examples;
  std::string device;
  int threads;
  double peak, flops, limit;  // GFLOP/s of a 1024^3 sgemm; FLOPs a step cannot avoid; their time at the peak
  std::vector<PathResult> results, interventions;
  size_t best;  // the path training takes
  bool graphed, has_fast;
  double batched, single;  // seeds side by side: the batched step, and one model's on its path
  int64_t seeds;
};

void print_bench_json(const BenchReport& r) {
  nlohmann::json j = {{"task", r.what}, {"task_kind", r.cfg.task.kind}, {"model_kind", r.cfg.model.kind},
                      {"examples_per_step", r.n_examples}, {"device", r.device},
                      {"threads", r.threads},        {"blas", blas_description()}, {"blas_advice", blas_advice()}, {"libtorch", compat::torch_version()},
                      {"gemm_peak_gflops", r.peak},  {"step_gflop", r.flops / 1e9}, {"limit_ms", r.limit * 1e3},
                      {"paths", nlohmann::json::object()}};
  for (auto& p : r.results)
    j["paths"][p.name] = {{"ms_per_step", p.seconds * 1e3}, {"steps_per_s", 1 / p.seconds},
                          {"gflops", r.flops / p.seconds / 1e9}, {"fraction_of_limit", r.limit / p.seconds}};
  for (auto& p : r.interventions)
    j["interventions"][p.name] = {{"ms_per_step", p.seconds * 1e3}, {"overhead", p.seconds / r.results[r.best].seconds - 1}};
  if (r.batched > 0)
    j["seeds_side_by_side"] = {{"seeds", r.seeds}, {"ms_per_step", r.batched * 1e3},
                               {"path", r.graphed ? "graph" : r.results[r.best].name},
                               {"throughput_vs_sequential", double(r.seeds) * r.single / r.batched}};
  std::printf("%s\n", j.dump(2).c_str());
}

void print_bench_text(const BenchReport& r) {
  std::printf("%s, model %s, %lld examples a step, device %s, %d thread%s, %s, LibTorch %s\n", r.what.c_str(),
              r.cfg.model.kind.c_str(), (long long)r.n_examples, r.device.c_str(), r.threads, r.threads == 1 ? "" : "s",
              blas_description().c_str(), compat::torch_version().c_str());
  if (const std::string advice = blas_advice(); !advice.empty() && r.device == "cpu") std::printf("note: %s\n", advice.c_str());
  if (r.flops > 0)
    std::printf("GEMM peak (1024^3 sgemm): %.1f GFLOP/s; unavoidable work: %.3f GFLOP/step; limit %.2f ms/step\n\n",
                r.peak, r.flops / 1e9, r.limit * 1e3);
  else
    std::printf("GEMM peak (1024^3 sgemm): %.1f GFLOP/s\n\n", r.peak);
  std::printf("%-11s %12s %10s %10s %14s\n", "path", "ms/step", "steps/s", "GFLOP/s", "of the limit");
  for (auto& p : r.results)
    std::printf("%-11s %12.2f %10.1f %10.1f %13.0f%%\n", p.name.c_str(), p.seconds * 1e3, 1 / p.seconds,
                r.flops / p.seconds / 1e9, 100 * r.limit / p.seconds);
  if (r.has_fast) std::printf("\nfast path speed-up over plain: %.2fx\n", r.results[0].seconds / r.results[1].seconds);
  std::printf("\n%-14s %10s %10s  (%s path, one intervention at a time)\n", "intervention", "ms/step", "overhead",
              r.results[r.best].name.c_str());
  for (auto& p : r.interventions)
    std::printf("%-14s %10.2f %+9.0f%%\n", p.name.c_str(), p.seconds * 1e3, 100 * (p.seconds / r.results[r.best].seconds - 1));
  if (r.graphed)
    std::printf("CUDA graph speed-up over the %s path: %.2fx\n", r.results[r.best].name.c_str(),
                r.results[r.best].seconds / r.results[r.best + 1].seconds);
  if (r.batched > 0)
    std::printf("%lld seeds side by side (%s): %.2f ms/step for all, %.2fx the throughput of one seed at a time\n",
                (long long)r.seeds, r.graphed ? "graph" : r.results[r.best].name.c_str(), r.batched * 1e3,
                double(r.seeds) * r.single / r.batched);
}
}  // namespace

namespace {
// The batch one training step sees, on dev: the full training set (or a minibatch of it), or the
// first of a task's fresh batches.
Batch step_batch(const Task& task, const Config& cfg, torch::Device dev) {
  Batch batch;
  if (task.shape().fresh_batches) {
    batch = task.train_batch(0, cfg.train.batch_size);
  } else {
    const auto& data = task.dataset();
    batch = Batch{data.train_x, data.train_y, {}};
    if (cfg.train.batch_size > 0) batch = batch.slice(0, cfg.train.batch_size);
  }
  return batch.to(dev);
}

// One line of `bench --families`: a shipped config, trained `models` side by side (1: alone).
struct Family {
  std::string family, config;  // config: a path under the working directory; empty: the defaults
  std::vector<std::string> sets;
  int64_t models;
  bool plain;  // the plain path, where the family has a fast one
  // Its plain PyTorch peer: the script and its arguments (without --threads), and the key of
  // the rate in the JSON line the script prints last (optimiser steps of all its models a second).
  std::vector<std::string> peer;
  std::string peer_rate;
  // How many steps it runs at bench's default --steps 20 (a few seconds; scaled with --steps).
  std::string peer_steps_flag;
  int peer_steps;
};

std::string shell_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

// The Python that runs the peers: the one asked for, else python3 on PATH where it imports
// torch, else Debian's /usr/bin/python3 (python3-torch).
std::string peer_python(const std::string& asked) {
  auto has_torch = [](const std::string& py) {
    return std::system((shell_quote(py) + " -c 'import torch' >/dev/null 2>&1").c_str()) == 0;
  };
  if (!asked.empty()) {
    if (!has_torch(asked)) throw UsageError("bench --python: " + asked + " cannot import torch");
    return asked;
  }
  for (const char* py : {"python3", "/usr/bin/python3"})
    if (has_torch(py)) return py;
  throw UsageError("bench --vs-peer: neither python3 nor /usr/bin/python3 imports torch (apt install python3-torch, or --python PATH)");
}

// Runs a peer with `threads` threads and returns its seconds per optimiser step: the rate its
// loop measured itself (the Python start and `import torch` excluded), read from its last JSON line.
double time_peer(const std::string& python, const Family& f, int threads, int bench_steps) {
  std::string cmd = shell_quote(python);
  for (const auto& a : f.peer) cmd += " " + shell_quote(a);
  cmd += " " + f.peer_steps_flag + " " + std::to_string(std::max(2, int(int64_t(f.peer_steps) * bench_steps / 20)));
  cmd += " --threads " + std::to_string(threads) + " 2>&1";
  FILE* pipe = ::popen(cmd.c_str(), "r");
  if (!pipe) throw std::runtime_error("bench --vs-peer: cannot run " + cmd);
  std::string out, last_json, last_line;
  char buf[4096];
  while (std::fgets(buf, sizeof buf, pipe)) out += buf;
  const int status = ::pclose(pipe);
  std::istringstream lines(out);
  for (std::string line; std::getline(lines, line);) {
    if (line.empty()) continue;
    last_line = line;
    if (line.front() == '{') last_json = line;
  }
  if (status != 0 || last_json.empty())
    throw std::runtime_error("bench --vs-peer: " + f.peer.front() + " failed" +
                             (last_line.empty() ? std::string() : ": " + last_line));
  const auto j = nlohmann::json::parse(last_json, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object() || !j.contains(f.peer_rate) || !j[f.peer_rate].is_number() || j[f.peer_rate].get<double>() <= 0)
    throw std::runtime_error("bench --vs-peer: " + f.peer.front() + " printed no " + f.peer_rate);
  return 1 / j[f.peer_rate].get<double>();
}

int run_bench_families(const BenchOptions& opts) {
  // The peers (scripts/peers/README.md has the pairs): the same model at the same settings,
  // run long enough (a few seconds) that their loop's mean rate is steady; evaluation off.
  const std::string paper_step = "scripts/paper_step.py";
  const std::vector<std::string> induction = {"scripts/peers/induction_peer.py", "--eval-every", "0", "--config"};
  const std::vector<std::string> toy = {"scripts/peers/superposition_peer.py", "--init", "per_model", "--importance-decay"};
  auto with = [](std::vector<std::string> a, std::initializer_list<std::string> more) {
    a.insert(a.end(), more);
    return a;
  };
  const std::vector<Family> families = {
      {"modular, fast", "", {}, 1, false, {paper_step}, "steps_per_s", "--steps", 10},
      {"modular, plain", "", {}, 1, true, {paper_step}, "steps_per_s", "--steps", 10},
      {"transformer (2 layers, attn-only)", "configs/induction/minimal.json", {}, 1, false,
       with(induction, {"configs/induction/minimal.json"}), "steps_per_s", "--steps", 40},
      {"transformer (small induction)", "configs/induction/small.json", {}, 1, false,
       with(induction, {"configs/induction/small.json"}), "steps_per_s", "--steps", 400},
      {"MLP (S5, Chughtai et al.)", "configs/groups/chughtai-s5-mlp.json", {}, 1, false,
       {"scripts/peers/group_mlp_peer.py", "--config", "configs/groups/chughtai-s5-mlp.json", "--metrics-every", "0"},
       "epochs_per_s", "--epochs", 40},
      {"toy model 5 -> 2, 30 packed", "configs/superposition/pentagon.json", {}, 30, false,
       with(toy, {"0.9", "--instances", "30", "--features", "5", "--hidden", "2", "--sparsity", "0.95"}), "steps_per_s", "--steps", 2000},
      {"toy model 200 -> 20, 20 packed", "configs/sweeps/superposition-200-20-base.json", {"task.sparsity=0.9"}, 20,
       false,
       with(toy, {"1.0", "--instances", "20", "--features", "200", "--hidden", "20", "--sparsity", "0.9"}), "steps_per_s", "--steps", 100},
  };
  const std::string python = opts.vs_peer ? peer_python(opts.python) : "";
  struct Line {
    std::string family, config, path;
    int64_t models;
    double seconds, flops, peer_seconds;  // peer_seconds: 0 without --vs-peer
  };
  std::vector<Line> lines;
  double peak = 0;
  int threads = 0;
  std::string device;
  for (const auto& f : families) {
    std::vector<std::string> sets = f.sets;
    sets.insert(sets.end(), opts.sets.begin(), opts.sets.end());
    if (!f.config.empty() && !exists(f.config))
      throw UsageError("bench --families: " + f.config + " not found: run it from the repository root");
    const Config cfg = f.config.empty() ? parse_config("{}", "(defaults)", sets) : load_config(f.config, sets);
    std::vector<int64_t> seeds;
    for (int64_t i = 0; f.models > 1 && i < f.models; ++i) seeds.push_back(i);
    check_memory(cfg, std::max<int64_t>(1, f.models), f.config.empty() ? "(defaults)" : f.config);
    threads = configure_threads(cfg.train.threads);
    const torch::Device dev = resolve_device(cfg.train.device);
    device = dev.str();
    if (opts.vs_peer && !dev.is_cpu())
      throw UsageError("bench --vs-peer: the peers run on the CPU; time them with train.device=cpu (got " + device + ")");
    if (dev.is_cpu()) at::globalContext().setFlushDenormal(cfg.train.flush_denormal);
    if (peak == 0) peak = gemm_peak_gflops(dev);
    if (dev.is_cpu()) give_blas_threads_to_shards();  // the steps run as train runs them
    auto task = f.models > 1 ? make_task(std::vector<TaskConfig>(size_t(f.models), cfg.task)) : make_task(cfg.task);
    const Batch batch = step_batch(*task, cfg, dev);
    const auto arch = make_architecture(cfg);
    const bool fast = arch->has_fast_path() && !f.plain;
    Model model(cfg, seeds);
    model.to(dev);
    FlatAdamW opt(model, cfg.optim);
    const double s = median_seconds([&] {
      auto loss = train_step(model, opt, batch, fast, cfg.optim.lr);
      if (dev.is_cuda()) loss.item<double>();
    }, std::min(3, opts.steps), opts.steps);
    // The modular peer is the paper's step, which has no fast path: both modular lines compare with it.
    const double peer = opts.vs_peer ? time_peer(python, f, threads, opts.steps) : 0.0;
    lines.push_back({f.family, f.config.empty() ? "(defaults: P = 113)" : f.config, fast ? "fast" : "plain",
                     std::max<int64_t>(1, f.models), s, arch->step_flops(batch.size()) * double(std::max<int64_t>(1, f.models)),
                     peer});
  }
  if (opts.json) {
    nlohmann::json j = {{"device", device}, {"threads", threads}, {"blas", blas_description()},
                        {"libtorch", compat::torch_version()}, {"gemm_peak_gflops", peak},
                        {"families", nlohmann::json::array()}};
    for (auto& l : lines)
      j["families"].push_back({{"family", l.family}, {"config", l.config}, {"path", l.path}, {"models", l.models},
                               {"ms_per_step", l.seconds * 1e3}, {"step_gflop", l.flops / 1e9},
                               {"gflops", l.flops / l.seconds / 1e9},
                               {"fraction_of_peak", l.flops / l.seconds / 1e9 / peak},
                               {"model_steps_per_s", double(l.models) / l.seconds}});
    if (opts.vs_peer) {
      j["peer_python"] = python;
      for (size_t i = 0; i < lines.size(); ++i)
        j["families"][i]["peer"] = {{"script", families[i].peer.front()},
                                    {"ms_per_step", lines[i].peer_seconds * 1e3},
                                    {"peer_over_ours", lines[i].peer_seconds / lines[i].seconds}};
    }
    std::printf("%s\n", j.dump(2).c_str());
    return 0;
  }
  std::printf("device %s, %d thread%s, %s, LibTorch %s; GEMM peak (1024^3 sgemm) %.1f GFLOP/s\n", device.c_str(), threads,
              threads == 1 ? "" : "s", blas_description().c_str(), compat::torch_version().c_str(), peak);
  if (const std::string advice = blas_advice(); !advice.empty() && device == "cpu") std::printf("note: %s\n", advice.c_str());
  std::printf("\n%-34s %-5s %6s %10s %11s %9s %8s %14s", "family", "path", "models", "ms/step", "GFLOP/step",
              "GFLOP/s", "of peak", "model-steps/s");
  if (opts.vs_peer) std::printf(" %13s %10s", "peer ms/step", "peer/ours");
  std::printf("  %s\n", "config");
  for (auto& l : lines) {
    std::printf("%-34s %-5s %6lld %10.2f %11.4f %9.1f %7.0f%% %14.1f", l.family.c_str(), l.path.c_str(),
                (long long)l.models, l.seconds * 1e3, l.flops / 1e9, l.flops / l.seconds / 1e9,
                100 * l.flops / l.seconds / 1e9 / peak, double(l.models) / l.seconds);
    if (opts.vs_peer) std::printf(" %13.2f %9.2fx", l.peer_seconds * 1e3, l.peer_seconds / l.seconds);
    std::printf("  %s\n", l.config.c_str());
  }
  std::printf("(GFLOP/step: the matrix products a step cannot avoid, from the model's shapes, for all models of the "
              "line; a step is one optimiser step of every model; the median of %d)\n",
              opts.steps);
  if (opts.vs_peer)
    std::printf("(peer: the same model and settings in plain PyTorch run by %s, as many threads; modular: "
                "scripts/paper_step.py, the median of its steps; the others: scripts/peers/, the mean of its loop, "
                "evaluation off, the start and import excluded; each draws its batches, ours time a fixed one)\n",
                python.c_str());
  return 0;
}
}  // namespace

int run_bench_command(const BenchOptions& opts) {
  if (opts.families) return run_bench_families(opts);
  Config cfg = opts.config_path.empty() ? parse_config("{}", "(defaults)", opts.sets) : load_config(opts.config_path, opts.sets);
  // The limits train has, before anything is allocated.
  std::vector<int64_t> seeds;
  for (int64_t i = 0; i < opts.seeds; ++i) seeds.push_back(i);
  if (opts.seeds > 1) {
    check_seeds(seeds);
    check_memory(cfg, opts.seeds, "--seeds " + std::to_string(opts.seeds));
  } else {
    check_memory(cfg, 1, opts.config_path.empty() ? "(defaults)" : opts.config_path);
  }
  const int threads = configure_threads(cfg.train.threads);
  torch::Device dev = resolve_device(cfg.train.device);
  if (dev.is_cpu()) at::globalContext().setFlushDenormal(cfg.train.flush_denormal);
  auto task = make_task(cfg.task);
  const TaskShape shape = task->shape();
  const Batch batch = step_batch(*task, cfg, dev);
  const int64_t n_examples = batch.size();
  const double flops = make_architecture(cfg)->step_flops(n_examples);
  const double peak = gemm_peak_gflops(dev);
  if (dev.is_cpu()) give_blas_threads_to_shards();  // the steps run as train runs them

  std::vector<PathResult> results;
  // Median seconds of one step of a fresh model on dev (several seeds: side by side);
  // make_step(model, opt) gives the step to time, which returns the loss. A task whose inputs
  // are per replica (sparse features) gets its batch drawn for as many replicas.
  auto time_steps = [&](const std::vector<int64_t>& replica_seeds, int warmup, auto make_step, const Config* variant = nullptr) {
    Model model(variant ? *variant : cfg, replica_seeds);
    model.to(dev);
    FlatAdamW opt(model, (variant ? *variant : cfg).optim);
    auto step = make_step(model, opt);
    return median_seconds([&] {
      auto loss = step();
      if (dev.is_cuda()) loss.template item<double>();
    }, warmup, opts.steps);
  };
  auto batch_for = [&](int64_t replicas) {
    if (!shape.fresh_batches || batch.x.scalar_type() == torch::kInt64 || replicas == 1) return batch;
    return make_task(std::vector<TaskConfig>(size_t(replicas), cfg.task))->train_batch(0, cfg.train.batch_size).to(dev);
  };
  const bool has_fast = make_architecture(cfg)->has_fast_path();
  std::vector<bool> paths = {false};
  if (has_fast) paths.push_back(true);
  for (bool fast : paths)
    results.push_back({fast ? "fast" : "plain", time_steps({}, 3, [&](Model& m, FlatAdamW& o) {
                         return [&, pm = &m, po = &o, fast] { return train_step(*pm, *po, batch, fast, cfg.optim.lr); };
                       })});
  const size_t best = results.size() - 1;  // the path training takes
  // On CUDA: the step captured in a CUDA graph and replayed (the training loop's default for a
  // fixed split's full batch); its first 4 calls are the eager warm-up and the capture.
  const bool graphed = dev.is_cuda() && GraphedStep::built() && !shape.fresh_batches;
  if (graphed) {
    results.push_back({"graph", time_steps({}, 5, [&](Model& m, FlatAdamW& o) {
                         auto graph = std::make_shared<GraphedStep>(m, o, batch.x, batch.y, has_fast);
                         return [graph] { return graph->run(); };
                       })});
    if (has_fast)  // the plain path captured too: on a GPU the eager plain step was the faster one (H200)
      results.push_back({"graph_plain", time_steps({}, 5, [&](Model& m, FlatAdamW& o) {
                           auto graph = std::make_shared<GraphedStep>(m, o, batch.x, batch.y, false);
                           return [graph] { return graph->run(); };
                         })});
  }
  // Several seeds side by side: one batched step against as many single steps.
  double batched = 0;
  if (opts.seeds > 1) {
    const Batch many = batch_for(opts.seeds);
    if (graphed)  // as training runs them on CUDA: the batched step replayed from a graph
      batched = time_steps(seeds, 5, [&](Model& m, FlatAdamW& o) {
        auto graph = std::make_shared<GraphedStep>(m, o, many.x, many.y, has_fast);
        return [graph] { return graph->run(); };
      });
    else
      batched = time_steps(seeds, 3, [&](Model& m, FlatAdamW& o) {
        return [&, pm = &m, po = &o] { return train_step(*pm, *po, many, true, cfg.optim.lr); };
      });
  }
  // One model on the same path as the batched step: the sequential throughput it is compared to.
  const double single = results[graphed ? best + 1 : best].seconds;
  // Each intervention on the training path, one at a time: its overhead over the plain AdamW step.
  std::vector<PathResult> interventions;
  std::vector<std::pair<std::string, std::vector<std::string>>> variants = {
      {"grokfast ema", {"optim.grokfast=\"ema\""}},
      {"grokfast ma", {"optim.grokfast=\"ma\""}},
      {"orthograd", {"optim.orthograd=true"}},
      {"grad clip", {"optim.grad_clip=1"}},
      {"fixed norm", {"optim.weight_norm=\"fixed\""}},
  };
  if (shape.has_accuracy()) {
    variants.push_back({"stablemax", {"train.loss=\"stablemax\""}});
    variants.push_back({"float32 loss", {"train.loss_dtype=\"float32\""}});
  }
  for (auto& [name, sets] : variants) {
    Config v = parse_config(config_to_json(cfg).dump(), "(bench)", sets);
    interventions.push_back({name, time_steps({}, 3, [&](Model& m, FlatAdamW& o) {
                               return [&, pm = &m, po = &o] { return train_step(*pm, *po, batch, has_fast, cfg.optim.lr); };
                             }, &v)});
  }
  BenchReport r{describe_bench_task(cfg, shape), cfg, n_examples, dev.str(), threads, peak, flops,
                flops > 0 ? flops / (peak * 1e9) : 0.0, results, interventions, best, graphed, has_fast,
                batched, single, opts.seeds};
  if (opts.json) print_bench_json(r);
  else print_bench_text(r);
  return 0;
}

}  // namespace grokking
