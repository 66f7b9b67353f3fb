#include "grokking/train.hpp"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <dirent.h>
#include <dlfcn.h>
#include <sched.h>
#include <signal.h>
#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <fstream>
#include <thread>

#include "grokking/checkpoint.hpp"
#include "grokking/compat.hpp"
#include "grokking/error.hpp"
#include "grokking/graph_step.hpp"
#include "grokking/model.hpp"

namespace grokking {

namespace {

std::atomic<int> g_signal{0};

extern "C" void on_signal(int sig) {
  if (g_signal.load() != 0) ::_exit(128 + sig);  // a second Ctrl-C: stop now (checkpoints are atomic)
  g_signal.store(sig);
}

// Installs SIGINT/SIGTERM handlers for the lifetime of a training loop.
struct SignalScope {
  struct sigaction old_int {}, old_term {};
  SignalScope() {
    g_signal.store(0);
    struct sigaction sa {};
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
  }
  ~SignalScope() {
    sigaction(SIGINT, &old_int, nullptr);
    sigaction(SIGTERM, &old_term, nullptr);
  }
};

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

struct Eval {
  std::vector<double> loss, acc;  // per replica
};

// Loss and accuracy over a whole split for every replica, in chunks that bound memory.
Eval evaluate(const Model& model, const torch::Tensor& x, const torch::Tensor& y, bool fast) {
  torch::NoGradGuard no_grad;
  const int64_t n = x.size(0), chunk = 16384, S = model.replicas();
  auto loss_sum = torch::zeros({S}, torch::kFloat64), correct = torch::zeros({S}, torch::kFloat64);
  for (int64_t i = 0; i < n; i += chunk) {
    auto xs = x.slice(0, i, i + chunk), ys = y.slice(0, i, i + chunk);
    auto logits = fast ? model.forward_fast(xs) : model.forward(xs);
    if (logits.dim() == 2) logits = logits.unsqueeze(0);
    loss_sum += replica_losses(logits, ys).cpu() * double(xs.size(0));
    correct += replica_accuracies(logits, ys).cpu() * double(xs.size(0));
  }
  Eval e;
  for (int64_t r = 0; r < S; ++r) {
    e.loss.push_back(loss_sum[r].item<double>() / double(n));
    e.acc.push_back(correct[r].item<double>() / double(n));
  }
  return e;
}

std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

std::shared_ptr<spdlog::logger> make_logger(const std::vector<std::string>& run_dirs, bool quiet) {
  auto err = std::make_shared<spdlog::sinks::stderr_sink_mt>();
  err->set_pattern("%v");
  err->set_level(quiet ? spdlog::level::warn : spdlog::level::info);
  std::vector<spdlog::sink_ptr> sinks = {err};
  for (auto& dir : run_dirs) {
    auto file = std::make_shared<spdlog::sinks::basic_file_sink_mt>(dir + "/train.log");
    file->set_pattern("[%Y-%m-%d %H:%M:%S] %v");
    sinks.push_back(file);
  }
  auto log = std::make_shared<spdlog::logger>("train", sinks.begin(), sinks.end());
  log->set_level(spdlog::level::info);
  log->flush_on(spdlog::level::info);
  return log;
}

// A one-line live bar, only when stderr is a terminal.
class ProgressBar {
 public:
  explicit ProgressBar(bool enabled) : enabled_(enabled) {}
  void update(int64_t epoch, int64_t total, double eps) {
    if (!enabled_ || seconds_since(last_) < 0.2) return;
    last_ = Clock::now();
    const int width = 30;
    int filled = int(double(width) * double(epoch) / double(total));
    std::string bar(size_t(filled), '#');
    bar.resize(size_t(width), '.');
    std::fprintf(stderr, "\r[%s] %lld/%lld  %.0f ep/s  eta %s\033[K", bar.c_str(), (long long)epoch,
                 (long long)total, eps, format_duration(double(total - epoch) / std::max(eps, 1e-9)).c_str());
    std::fflush(stderr);
    shown_ = true;
  }
  void clear() {
    if (shown_) std::fprintf(stderr, "\r\033[K"), std::fflush(stderr);
    shown_ = false;
  }

 private:
  bool enabled_, shown_ = false;
  Clock::time_point last_ = Clock::now();
};

nlohmann::json optional_json(const std::optional<int64_t>& v) { return v ? nlohmann::json(*v) : nlohmann::json(); }

// Temporary files of writes that a kill interrupted (atomic_write's *.tmp.PID).
void remove_temporaries(const std::string& dir) {
  for (auto sub : {"", "/checkpoints"}) {
    const std::string d = dir + sub;
    if (DIR* h = ::opendir(d.c_str())) {
      while (auto* e = ::readdir(h))
        if (std::string(e->d_name).find(".tmp.") != std::string::npos) std::remove((d + "/" + e->d_name).c_str());
      ::closedir(h);
    }
  }
}

// OpenBLAS's threading model as loaded: 0 sequential, 1 its own pthreads, 2 OpenMP; -1 not OpenBLAS.
int openblas_parallel() {
  if (auto get = reinterpret_cast<int (*)()>(::dlsym(RTLD_DEFAULT, "openblas_get_parallel"))) return get();
  return -1;
}
}  // namespace

int usable_cpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  const int allowed = ::sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : 0;
  const int online = int(std::thread::hardware_concurrency());
  return std::max(1, allowed > 0 && online > 0 ? std::min(allowed, online) : std::max(allowed, online));
}

int configure_threads(int64_t requested) {
  int n = requested > 0 ? int(requested) : usable_cpus();
  auto set_blas = reinterpret_cast<void (*)(int)>(::dlsym(RTLD_DEFAULT, "openblas_set_num_threads"));
  const int parallel = openblas_parallel();
  if (set_blas && parallel != 0 && parallel != 2) {
    // OpenBLAS with its own pthreads (or of unknown kind): two pools on the same cores stall each other (measured:
    // 2 OpenMP + 2 OpenBLAS threads ran a P=23 step 3x slower than either alone). The matrix
    // products carry the FLOPs, so the cores go to OpenBLAS and LibTorch's kernels get one.
    at::set_num_threads(1);
    set_blas(n);
  } else {
    // OpenBLAS on OpenMP (Debian's libopenblas0-openmp) shares LibTorch's OpenMP pool, so both
    // can have every core (P=113 step about 10 % faster than the pthreads split); a sequential
    // OpenBLAS or another BLAS gets LibTorch's setting. An OpenBLAS that cannot say which it is
    // (openblas_get_parallel is missing) gets the pthreads split above, the safe choice.
    at::set_num_threads(n);
    if (set_blas) set_blas(n);
  }
  return n;
}

std::string blas_description() {
  if (auto cfg = reinterpret_cast<char* (*)()>(::dlsym(RTLD_DEFAULT, "openblas_get_config"))) {
    std::string s = cfg();
    if (auto sp = s.find(' ', 9); sp != std::string::npos) s.resize(sp);  // "OpenBLAS 0.3.21"
    const int parallel = openblas_parallel();
    return s + (parallel == 2 ? " (OpenMP)" : parallel == 1 ? " (pthreads)" : parallel == 0 ? " (sequential)" : "");
  }
  std::ifstream maps("/proc/self/maps");
  std::string line;
  while (std::getline(maps, line)) {
    auto slash = line.find('/');
    if (slash != std::string::npos && (line.find("blas") != std::string::npos || line.find("mkl") != std::string::npos))
      return line.substr(slash);
  }
  return "unknown";
}

Config load_run_config(const std::string& run_dir, const std::vector<std::string>& sets) {
  // Only what does not change the computation may differ on resume.
  static const std::vector<std::string> allowed = {"train.epochs", "train.log_every", "train.threads",
                                                   "train.early_stop_acc", "train.early_stop_hold", "train.cuda_graph",
                                                   "train.checkpoint_every", "train.eval_every"};
  for (auto& s : sets) {
    auto key = s.substr(0, s.find('='));
    if (std::find(allowed.begin(), allowed.end(), key) == allowed.end())
      throw UsageError("--set " + s + ": cannot change " + key +
                       " when resuming (it changes the computation); allowed: train.epochs, train.eval_every, "
                       "train.checkpoint_every, train.log_every, train.threads, train.early_stop_acc, "
                       "train.early_stop_hold");
  }
  const std::string path = run_dir + "/config.json";
  if (!exists(path)) throw UsageError(run_dir + ": not a run directory (no config.json)");
  return parse_config(read_text_file(path), path, sets);
}

TrainReport train(const Config& cfg, const std::string& run_dir, bool resume, bool quiet) {
  return train_replicas(cfg, {cfg.train.seed}, {run_dir}, resume, quiet)[0];
}

std::vector<TrainReport> train_replicas(const Config& cfg, const std::vector<int64_t>& seeds,
                                        const std::vector<std::string>& dirs, bool resume, bool quiet) {
  const auto t0 = Clock::now();
  const auto& tc = cfg.train;
  const auto S = int64_t(seeds.size());
  if (resume && S != 1) throw UsageError("--resume continues one run; resume the seeds of a batched run one by one");
  auto log = make_logger(dirs, quiet);
  auto metrics_path = [&](int64_t r) { return dirs[size_t(r)] + "/metrics.csv"; };

  // ---- environment: threads, denormals, device ----
  const int threads = configure_threads(tc.threads);
  torch::Device device = resolve_device(tc.device);
  if (device.is_cpu()) at::globalContext().setFlushDenormal(tc.flush_denormal);
  const bool fast = tc.path != "plain" || S > 1;  // replicas train through the batched fast path

  // ---- data and model(s), initialised on the CPU then moved ----
  Dataset data = make_dataset(cfg.task);
  Model model(cfg, seeds);
  int64_t start_epoch = 0;
  std::vector<std::vector<MetricsRow>> rows(static_cast<size_t>(S));
  Checkpoint ck;
  if (resume) {
    ck = load_checkpoint(resume_path(dirs[0]));
    if (!ck.has_optimizer) throw RunError(ck.path + ": has no optimizer state; cannot resume from it");
    if (config_to_json(ck.config)["model"] != config_to_json(cfg)["model"] ||
        config_to_json(ck.config)["task"] != config_to_json(cfg)["task"])
      throw RunError(ck.path + ": was written by a different task/model config than " + dirs[0] + "/config.json");
    model.load(ck.weights);
    start_epoch = ck.epoch;
  }
  model.to(device);
  FlatAdamW opt(model.flat(), model.flat_grad(), cfg.optim);
  if (resume) {
    opt.set_state(ck.exp_avg.to(device), ck.exp_avg_sq.to(device), ck.optimizer_step);
    for (auto& r : read_metrics(metrics_path(0)))
      if (r.epoch <= start_epoch) rows[0].push_back(r);
    write_metrics(metrics_path(0), rows[0]);  // drop rows written after the checkpoint
  }
  auto train_x = data.train_x.to(device), train_y = data.train_y.to(device);
  auto test_x = data.test_x.to(device), test_y = data.test_y.to(device);
  const int64_t n_train = train_x.size(0);
  const int64_t batch = tc.batch_size > 0 ? tc.batch_size : n_train;

  // CUDA graphs: full batch only (a minibatch is a new tensor every step).
  std::string graph_note = "off";
  std::unique_ptr<GraphedStep> graph;
  if (device.is_cuda()) {
    if (!tc.cuda_graph) graph_note = "off (train.cuda_graph false)";
    else if (!GraphedStep::built()) graph_note = "off (not built)";
    else if (batch < n_train) graph_note = "off (minibatches)";
    else {
      graph = std::make_unique<GraphedStep>(model, opt, train_x, train_y, fast);
      graph_note = "on";
    }
  }
  log->info("grokking {} | LibTorch {} | device {} | BLAS {} | {} threads | flush_denormal {} | {} path{}",
            GROKKING_VERSION, compat::torch_version(), device.str(), blas_description(), threads,
            device.is_cpu() && tc.flush_denormal ? "on" : "off", fast ? "fast" : "plain",
            device.is_cuda() ? " | CUDA graph " + graph_note : "");
  log->info("{} (mod {}): {} train / {} test pairs | {} parameters | {} epochs{}{}", cfg.task.operation, cfg.task.p,
            n_train, test_x.size(0), model.flat().numel() / S, tc.epochs,
            S > 1 ? " | " + std::to_string(S) + " seeds side by side" : "",
            resume ? " | resuming at epoch " + std::to_string(start_epoch) : "");

  // ---- evaluation: a metrics.csv row per replica ----
  const double elapsed_before = rows[0].empty() ? 0.0 : rows[0].back().elapsed_s;
  auto evaluate_rows = [&](int64_t epoch, double lr) {
    auto tr = evaluate(model, train_x, train_y, fast), te = evaluate(model, test_x, test_y, fast);
    std::vector<double> sq;
    for (int64_t r = 0; r < S; ++r)
      sq.push_back(model.replica_part(model.flat().detach(), r).to(torch::kFloat64).pow(2).sum().item<double>());
    const double elapsed = elapsed_before + seconds_since(t0);
    for (int64_t r = 0; r < S; ++r) {
      MetricsRow row{epoch, tr.loss[size_t(r)], te.loss[size_t(r)], tr.acc[size_t(r)], te.acc[size_t(r)], sq[size_t(r)], lr, elapsed};
      append_line(metrics_path(r), format_row(row));
      rows[size_t(r)].push_back(row);
    }
  };
  if (!resume) {
    for (int64_t r = 0; r < S; ++r) atomic_write(metrics_path(r), metrics_header() + "\n");
    evaluate_rows(0, 0.0);
  }

  // ---- checkpoints: weights-only history plus the full state to resume from ----
  int64_t last_ckpt = resume ? start_epoch : -1;
  auto checkpoint = [&](int64_t epoch) {
    if (epoch == last_ckpt) return;
    const auto full = opt.state();
    for (int64_t r = 0; r < S; ++r) {
      Model one = S == 1 ? model : model.replica(r);
      OptimState st{model.replica_part(full.exp_avg, r), model.replica_part(full.exp_avg_sq, r), full.step};
      save_checkpoint(checkpoint_path(dirs[size_t(r)], epoch), one, nullptr, epoch);
      save_checkpoint(resume_path(dirs[size_t(r)]), one, &st, epoch);
    }
    last_ckpt = epoch;
  };
  if (!resume) checkpoint(0);

  // ---- the training loop ----
  SignalScope signals;
  ProgressBar bar(!quiet && ::isatty(2));
  std::string status = "completed";
  int signal = 0;
  // Early stop: every replica's test accuracy has held the threshold since held_since[r].
  std::vector<int64_t> held_since(size_t(S), int64_t(-1));
  auto update_hold = [&](int64_t r, const MetricsRow& row) {
    auto& h = held_since[size_t(r)];
    h = (tc.early_stop_acc > 0 && row.test_acc >= tc.early_stop_acc) ? (h < 0 ? row.epoch : h) : -1;
  };
  for (int64_t r = 0; r < S; ++r)
    for (auto& row : rows[size_t(r)]) update_hold(r, row);
  int64_t last_logged = start_epoch;
  const auto loop_start = Clock::now();
  int64_t epoch = start_epoch;
  while (epoch < tc.epochs) {
    // One epoch: full batch, or minibatches in an order drawn from (seed, epoch) so that a
    // resumed run draws the same order without saved generator state.
    double lr = 0;
    double step_loss = 0;
    torch::Tensor xs = train_x, ys = train_y;
    if (batch < n_train) {
      auto gen = at::detail::createCPUGenerator(uint64_t(tc.seed) * 1000003u + uint64_t(epoch));
      auto perm = torch::randperm(n_train, gen, torch::kInt64).to(device);
      xs = train_x.index_select(0, perm), ys = train_y.index_select(0, perm);
    }
    for (int64_t i = 0; i < n_train; i += batch) {
      auto xb = batch < n_train ? xs.slice(0, i, i + batch) : xs, yb = batch < n_train ? ys.slice(0, i, i + batch) : ys;
      lr = opt.scheduled_lr();
      auto loss = graph ? graph->run() : train_step(model, opt, xb, yb, fast, lr);
      if (device.is_cpu()) step_loss = loss.item<double>();  // free on the CPU; a sync on a GPU
    }
    ++epoch;

    if (device.is_cpu() && !std::isfinite(step_loss)) {
      status = "diverged";
      break;
    }
    if (epoch % tc.eval_every == 0 || epoch == tc.epochs) {
      evaluate_rows(epoch, lr);
      bool finite = true, all_held = tc.early_stop_acc > 0;
      for (int64_t r = 0; r < S; ++r) {
        auto& row = rows[size_t(r)].back();
        finite = finite && std::isfinite(row.train_loss) && std::isfinite(row.sum_sq_weights);
        update_hold(r, row);
        all_held = all_held && held_since[size_t(r)] >= 0 && epoch - held_since[size_t(r)] >= tc.early_stop_hold;
      }
      if (!finite) {
        status = "diverged";
        break;
      }
      const double eps = double(epoch - start_epoch) / std::max(seconds_since(loop_start), 1e-9);
      if (epoch - last_logged >= std::max<int64_t>(tc.log_every, 1) || epoch == tc.epochs) {
        bar.clear();
        const auto& r0 = rows[0].back();
        std::string figures;
        if (S == 1) {
          figures = "train " + fmt("%.2e", r0.train_loss) + " | test " + fmt("%.2e", r0.test_loss) + " | acc " +
                    fmt("%.3f", r0.train_acc) + "/" + fmt("%.3f", r0.test_acc);
        } else {
          double lo = 1, hi = 0, mean = 0;
          for (auto& rr : rows) lo = std::min(lo, rr.back().test_acc), hi = std::max(hi, rr.back().test_acc),
                                mean += rr.back().test_acc / double(S);
          figures = "test acc over " + std::to_string(S) + " seeds min " + fmt("%.3f", lo) + " mean " +
                    fmt("%.3f", mean) + " max " + fmt("%.3f", hi);
        }
        log->info("epoch {}/{} | {} | {} ep/s | eta {}", epoch, tc.epochs, figures, fmt("%.0f", eps),
                  format_duration(double(tc.epochs - epoch) / std::max(eps, 1e-9)));
        last_logged = epoch;
      }
      if (all_held) {
        status = "early_stopped";
        checkpoint(epoch);
        break;
      }
    }
    if (epoch % tc.checkpoint_every == 0 || epoch == tc.epochs) checkpoint(epoch);
    if (g_signal.load() != 0) {
      status = "interrupted";
      signal = g_signal.load();
      checkpoint(epoch);
      break;
    }
    bar.update(epoch, tc.epochs, double(epoch - start_epoch) / std::max(seconds_since(loop_start), 1e-9));
  }
  bar.clear();

  // ---- summary.json per run ----
  std::vector<TrainReport> reports;
  const double wall = seconds_since(t0);
  const double eps = double(epoch - start_epoch) / std::max(seconds_since(loop_start), 1e-9);
  for (int64_t r = 0; r < S; ++r) {
    TrainReport rep;
    rep.status = status;
    rep.signal = signal;
    rep.run_dir = dirs[size_t(r)];
    rep.epochs_done = epoch;
    rep.wall_s = wall;
    rep.milestones = find_milestones(rows[size_t(r)]);
    if (!rows[size_t(r)].empty()) rep.final = rows[size_t(r)].back();
    nlohmann::json s;
    s["status"] = status;
    s["epochs"] = epoch;
    s["epochs_planned"] = tc.epochs;
    s["final"] = {{"epoch", rep.final.epoch},         {"train_loss", rep.final.train_loss},
                  {"test_loss", rep.final.test_loss}, {"train_acc", rep.final.train_acc},
                  {"test_acc", rep.final.test_acc},   {"sum_sq_weights", rep.final.sum_sq_weights}};
    s["memorised_epoch"] = optional_json(rep.milestones.memorised);
    s["grokked_epoch"] = optional_json(rep.milestones.grokked);
    s["grokking_delay"] = (rep.milestones.memorised && rep.milestones.grokked)
                              ? nlohmann::json(*rep.milestones.grokked - *rep.milestones.memorised)
                              : nlohmann::json();
    s["milestone_resolution_epochs"] = tc.eval_every;
    s["wall_time_s"] = elapsed_before + wall;
    s["epochs_per_s"] = eps;
    s["n_train"] = n_train;
    s["n_test"] = test_x.size(0);
    s["n_params"] = model.flat().numel() / S;
    s["weights_checksum"] = weights_checksum(S == 1 ? model : model.replica(r));
    s["seed"] = seeds[size_t(r)];
    s["seeds_side_by_side"] = S;
    s["device"] = device.str();
    s["threads"] = threads;
    s["blas"] = blas_description();
    s["flush_denormal"] = device.is_cpu() && tc.flush_denormal;
    s["path"] = fast ? "fast" : "plain";
    s["cuda_graph"] = graph != nullptr;
    s["libtorch"] = compat::torch_version();
    s["grokking_version"] = GROKKING_VERSION;
    atomic_write(dirs[size_t(r)] + "/summary.json", s.dump(2) + "\n");
    reports.push_back(rep);
  }

  // ---- how it ended ----
  auto epoch_text = [](const std::optional<int64_t>& e) { return e ? std::to_string(*e) : std::string("never"); };
  if (status == "diverged") {
    auto list = list_checkpoints(dirs[0]);
    throw RunError("training diverged at epoch " + std::to_string(epoch) +
                   ": the loss is not finite (lr too high?); the last finite checkpoint is " +
                   (list.empty() ? std::string("none") : list.back().second));
  }
  if (status == "interrupted") {
    std::string how = S == 1 ? "grokking train --resume " + dirs[0] : "grokking train --resume DIR for each of " + dirs[0] + " ...";
    log->warn("interrupted by {} at epoch {}; checkpoint written. Resume with: {}",
              signal == SIGINT ? "Ctrl-C" : "SIGTERM", epoch, how);
  } else {
    for (auto& rep : reports)
      log->info("{}{} after {} epochs in {}: memorised at epoch {}, grokked at epoch {} | final train {} test {} acc {}/{}",
                S > 1 ? rep.run_dir + ": " : "", status == "completed" ? "done" : "early stop", epoch,
                format_duration(rep.wall_s), epoch_text(rep.milestones.memorised), epoch_text(rep.milestones.grokked),
                fmt("%.2e", rep.final.train_loss), fmt("%.2e", rep.final.test_loss), fmt("%.3f", rep.final.train_acc),
                fmt("%.3f", rep.final.test_acc));
  }
  return reports;
}

TrainReport run_train(const TrainOptions& opts) {
  // ---- resume: the run directory holds the config ----
  if (!opts.resume_dir.empty()) {
    const std::string dir = opts.resume_dir;
    Config cfg = load_run_config(dir, opts.sets);
    resolve_device(cfg.train.device);
    RunLock lock(dir);
    remove_temporaries(dir);
    if (!exists(resume_path(dir))) {
      // Killed before its first checkpoint: nothing to lose, start the run over.
      spdlog::warn("{}: no checkpoint yet; starting the run from epoch 0", dir);
      atomic_write(dir + "/config.json", config_to_json(cfg).dump(2) + "\n");
      return train(cfg, dir, false, opts.quiet);
    }
    if (!opts.sets.empty()) atomic_write(dir + "/config.json", config_to_json(cfg).dump(2) + "\n");
    if (exists(dir + "/summary.json")) {
      auto s = read_json_file(dir + "/summary.json");
      if (s.value("status", "") != "interrupted" && s.value("status", "") != "diverged" &&
          s.value("epochs", int64_t(-1)) >= cfg.train.epochs) {
        TrainReport rep;
        rep.status = "completed";
        rep.run_dir = dir;
        rep.epochs_done = s.value("epochs", int64_t(0));
        spdlog::info("{}: already complete ({} epochs); nothing to do", dir, rep.epochs_done);
        return rep;
      }
    }
    return train(cfg, dir, true, opts.quiet);
  }

  // ---- new run: validate everything before writing anything ----
  if (opts.config_path.empty()) throw UsageError("train: give a CONFIG.json, or --resume RUN_DIR");
  Config cfg = load_config(opts.config_path, opts.sets);
  if (!opts.out_dir.empty()) cfg.output.dir = opts.out_dir;
  resolve_device(cfg.train.device);
  std::vector<int64_t> seeds = opts.seeds.empty() ? std::vector<int64_t>{cfg.train.seed} : opts.seeds;
  if (!opts.seeds.empty() && cfg.train.batch_size != 0)
    throw UsageError("--seeds trains full-batch runs side by side; /train/batch_size must be 0 (got " +
                     std::to_string(cfg.train.batch_size) + ")");
  std::vector<std::string> dirs;
  for (auto seed : seeds)
    dirs.push_back(opts.seeds.empty() ? cfg.output.dir : cfg.output.dir + "/seed=" + std::to_string(seed));
  for (auto& dir : dirs) {
    if (exists(dir) && !is_dir(dir)) throw UsageError(dir + ": run directory path exists and is not a directory");
    // Work to protect: a config, metrics or a checkpoint. A run killed while it was creating its
    // directory leaves only an empty checkpoints/ folder (and a lock file): start over there.
    const bool nonempty = exists(dir + "/config.json") || exists(dir + "/metrics.csv") ||
                          exists(resume_path(dir)) || !list_checkpoints(dir).empty();
    if (nonempty && !opts.force)
      throw UsageError(dir + ": run directory is not empty; use --resume " + dir + " to continue it or --force to start over");
  }
  std::vector<std::unique_ptr<RunLock>> locks;
  for (size_t i = 0; i < dirs.size(); ++i) {
    const auto& dir = dirs[i];
    try {
      make_dirs(dir + "/checkpoints");
    } catch (const RunError& e) {
      throw UsageError(std::string(e.what()) + " (output.dir / --out)");
    }
    locks.push_back(std::make_unique<RunLock>(dir));
    if (opts.force) {
      for (auto& [e, path] : list_checkpoints(dir)) std::remove(path.c_str());
      for (auto name : {"/checkpoints/resume.pt", "/metrics.csv", "/summary.json", "/train.log", "/progress.csv",
                        "/fourier.csv", "/ablate.csv", "/report.html"})
        std::remove((dir + name).c_str());
    }
    Config one = cfg;
    one.train.seed = seeds[i];
    one.output.dir = dir;
    atomic_write(dir + "/config.json", config_to_json(one).dump(2) + "\n");
  }
  return train_replicas(cfg, seeds, dirs, false, opts.quiet)[0];
}

}  // namespace grokking
