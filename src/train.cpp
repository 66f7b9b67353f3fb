#include "grokking/train.hpp"

#include <ATen/CPUGeneratorImpl.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <chrono>
#include <cmath>

#include "grokking/checkpoint.hpp"
#include "grokking/compat.hpp"
#include "grokking/error.hpp"
#include "grokking/graph_step.hpp"
#include "grokking/limits.hpp"
#include "grokking/model.hpp"
#include "grokking/optim.hpp"
#include "grokking/run_output.hpp"
#include "grokking/signals.hpp"
#include "grokking/threads.hpp"

namespace grokking {

namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

struct Eval {
  std::vector<double> loss, acc, collapse;  // per replica
};

// Loss and accuracy over a whole split for every replica, in chunks that bound memory.
Eval evaluate(const Model& model, const torch::Tensor& x, const torch::Tensor& y, bool fast) {
  torch::NoGradGuard no_grad;
  const int64_t n = x.size(0), chunk = 16384, S = model.replicas();
  const LossSpec spec = LossSpec::of(model.config().train);
  auto loss_sum = torch::zeros({S}, torch::kFloat64), correct = torch::zeros({S}, torch::kFloat64);
  auto collapsed = torch::zeros({S}, torch::kFloat64);
  for (int64_t i = 0; i < n; i += chunk) {
    auto xs = x.slice(0, i, i + chunk), ys = y.slice(0, i, i + chunk);
    auto logits = fast ? model.forward_fast(xs) : model.forward(xs);
    if (logits.dim() == 2) logits = logits.unsqueeze(0);
    loss_sum += replica_losses(logits, ys, spec).cpu() * double(xs.size(0));
    correct += replica_accuracies(logits, ys).cpu() * double(xs.size(0));
    collapsed += replica_collapse(logits, ys, spec).cpu() * double(xs.size(0));
  }
  Eval e;
  for (int64_t r = 0; r < S; ++r) {
    e.loss.push_back(loss_sum[r].item<double>() / double(n));
    e.acc.push_back(correct[r].item<double>() / double(n));
    e.collapse.push_back(collapsed[r].item<double>() / double(n));
  }
  return e;
}

std::vector<int64_t> seeds_of(const std::vector<Config>& cfgs) {
  std::vector<int64_t> out;
  for (auto& c : cfgs) out.push_back(c.train.seed);
  return out;
}

// One training run of S replicas side by side (S = 1: a plain run), each with its own config
// (seed and, packed, the optimiser's numbers) and writing its own run directory. Each replica
// ends on its own (early stop, divergence) while the others go on. run() is the recipe; each
// step below it does one thing.
class TrainingRun {
 public:
  TrainingRun(const std::vector<Config>& cfgs, const std::vector<std::string>& dirs, bool resume, bool quiet)
      : cfgs_(cfgs), cfg_(cfgs.at(0)), tc_(cfg_.train), seeds_(seeds_of(cfgs)), dirs_(dirs),
        S_(int64_t(cfgs.size())), resume_(resume), quiet_(quiet), rows_(cfgs.size()), held_since_(cfgs.size(), -1),
        status_(cfgs.size()), epochs_done_(cfgs.size(), 0), last_checkpoint_(cfgs.size(), -1) {}

  std::vector<TrainReport> run() {
    set_up_run();
    if (!resume_) {
      start_metrics();
      evaluate_rows(0);
      checkpoint_running(0);
    }
    SignalScope signals;
    ProgressBar bar(!quiet_ && ::isatty(2));
    loop_start_ = Clock::now();
    while (epoch_ < tc_.epochs && active() > 0) {
      train_epoch();
      ++epoch_;
      // One model: a loss that is not finite ends the run at once. Replicas are checked at
      // evaluations (and before every checkpoint), each on its own.
      if (S_ == 1 && !std::isfinite(last_loss_)) {
        end(0, "diverged");
        break;
      }
      if (epoch_ % tc_.eval_every == 0 || epoch_ == tc_.epochs) {
        evaluate_rows(epoch_);
        if (active() == 0) break;
        if (epoch_ - last_logged_ >= std::max<int64_t>(tc_.log_every, 1) || epoch_ == tc_.epochs) {
          bar.clear();
          log_->info(progress_line(epoch_, tc_.epochs, latest_rows(), epochs_per_s()));
          last_logged_ = epoch_;
        }
        for (int64_t r = 0; r < S_; ++r)
          if (running(r) && early_stop_reached(r)) {
            checkpoint(epoch_, r);
            end(r, "early_stopped");
          }
        if (active() == 0) break;
      }
      if (epoch_ % tc_.checkpoint_every == 0 || epoch_ == tc_.epochs) checkpoint_running(epoch_);
      if (signals.received() != 0) {
        signal_ = signals.received();
        checkpoint_running(epoch_);
        for (int64_t r = 0; r < S_; ++r)
          if (running(r)) end(r, "interrupted");
        break;
      }
      bar.update(epoch_, tc_.epochs, epochs_per_s());
    }
    for (int64_t r = 0; r < S_; ++r)
      if (running(r)) end(r, "completed");
    bar.clear();
    auto reports = write_summaries();
    report_end(reports);
    return reports;
  }

 private:
  // Threads, denormals and device; data and model(s), initialised on the CPU then moved; the
  // optimiser; on resume, the checkpoint's state and the metrics up to it; the CUDA graph.
  void set_up_run() {
    threads_ = configure_threads(tc_.threads);
    device_ = resolve_device(tc_.device);
    if (device_.is_cpu()) at::globalContext().setFlushDenormal(tc_.flush_denormal);
    fast_ = tc_.path != "plain" || S_ > 1;  // replicas train through the batched fast path
    log_ = make_run_logger(dirs_, quiet_);

    Dataset data = make_dataset(cfg_.task);
    model_ = std::make_unique<Model>(cfg_, seeds_);
    Checkpoint ck;
    if (resume_) {
      ck = load_checkpoint(resume_path(dirs_[0]));
      if (!ck.has_optimizer) throw RunError(ck.path + ": has no optimizer state; cannot resume from it");
      if (config_to_json(ck.config)["model"] != config_to_json(cfg_)["model"] ||
          config_to_json(ck.config)["task"] != config_to_json(cfg_)["task"])
        throw RunError(ck.path + ": was written by a different task/model config than " + dirs_[0] + "/config.json");
      model_->load(ck.weights);
      epoch_ = start_epoch_ = last_logged_ = last_checkpoint_[0] = ck.epoch;
    }
    model_->to(device_);
    std::vector<OptimConfig> optims;
    for (auto& c : cfgs_) optims.push_back(c.optim);
    opt_ = std::make_unique<FlatAdamW>(*model_, cfg_.optim, optims);
    if (resume_) {
      OptimState st{ck.exp_avg.to(device_), ck.exp_avg_sq.to(device_), ck.optimizer_step, {}};
      for (auto& [name, t] : ck.optimizer_extra) st.extra.emplace_back(name, t.to(device_));
      try {
        opt_->set_state(st);
      } catch (const RunError& e) {
        throw RunError(ck.path + ": " + e.what());
      }
      for (auto& r : read_metrics(metrics_path(0)))
        if (r.epoch <= start_epoch_) rows_[0].push_back(r);
      write_metrics(metrics_path(0), rows_[0]);  // drop rows written after the checkpoint
      elapsed_before_ = rows_[0].empty() ? 0.0 : rows_[0].back().elapsed_s;
      for (auto& row : rows_[0]) update_hold(0, row);
      // Changes given with --set (the allowed ones) reach config.json only now, once the state
      // they continue has been read back whole: a damaged run is left exactly as it was.
      const std::string cfg_text = config_file_text(cfg_);
      if (read_text_file(dirs_[0] + "/config.json") != cfg_text) atomic_write(dirs_[0] + "/config.json", cfg_text);
    }
    train_x_ = data.train_x.to(device_), train_y_ = data.train_y.to(device_);
    test_x_ = data.test_x.to(device_), test_y_ = data.test_y.to(device_);
    n_train_ = train_x_.size(0);
    batch_ = tc_.batch_size > 0 ? tc_.batch_size : n_train_;

    // CUDA graphs: full batch only (a minibatch is a new tensor every step).
    std::string graph_note = "off";
    if (device_.is_cuda()) {
      if (!tc_.cuda_graph) graph_note = "off (train.cuda_graph false)";
      else if (!GraphedStep::built()) graph_note = "off (not built)";
      else if (batch_ < n_train_) graph_note = "off (minibatches)";
      else if (opt_->has_interventions()) graph_note = "off (optim interventions run eagerly)";
      else {
        graph_ = std::make_unique<GraphedStep>(*model_, *opt_, train_x_, train_y_, fast_);
        graph_note = "on";
      }
    }
    log_->info("grokking {} | LibTorch {} | device {} | BLAS {} | {} threads | flush_denormal {} | {} path{}",
               GROKKING_VERSION, compat::torch_version(), device_.str(), blas_description(), threads_,
               device_.is_cpu() && tc_.flush_denormal ? "on" : "off", fast_ ? "fast" : "plain",
               device_.is_cuda() ? " | CUDA graph " + graph_note : "");
    log_->info("{} (mod {}): {} train / {} test pairs | {} parameters | {} epochs{}{}", cfg_.task.operation,
               cfg_.task.p, n_train_, test_x_.size(0), model_->flat().numel() / S_, tc_.epochs,
               S_ > 1 ? " | " + std::to_string(S_) + " models side by side" : "",
               resume_ ? " | resuming at epoch " + std::to_string(start_epoch_) : "");
  }

  std::string metrics_path(int64_t r) const { return dirs_[size_t(r)] + "/metrics.csv"; }

  // A fresh metrics.csv, header only, per replica.
  void start_metrics() {
    for (int64_t r = 0; r < S_; ++r) atomic_write(metrics_path(r), metrics_header() + "\n");
  }

  // One pass over the training pairs: full batch, or minibatches in an order drawn from (seed,
  // epoch) so that a resumed run draws the same order without saved generator state.
  // last_step_ is the step count before its last step; last_loss_ is that step's loss (on the
  // CPU only: reading it on a GPU would synchronise every step).
  void train_epoch() {
    torch::Tensor xs = train_x_, ys = train_y_;
    if (batch_ < n_train_) {
      auto gen = at::detail::createCPUGenerator(uint64_t(tc_.seed) * 1000003u + uint64_t(epoch_));
      auto perm = torch::randperm(n_train_, gen, torch::kInt64).to(device_);
      xs = train_x_.index_select(0, perm), ys = train_y_.index_select(0, perm);
    }
    for (int64_t i = 0; i < n_train_; i += batch_) {
      auto xb = batch_ < n_train_ ? xs.slice(0, i, i + batch_) : xs;
      auto yb = batch_ < n_train_ ? ys.slice(0, i, i + batch_) : ys;
      last_step_ = opt_->steps();
      auto loss = graph_ ? graph_->run() : train_step(*model_, *opt_, xb, yb, fast_, opt_->scheduled_lr());
      if (device_.is_cpu()) last_loss_ = loss.item<double>();
    }
  }

  // Per replica: the cosine between the negative full-batch gradient of the training loss at the
  // current weights and the weights, over every trained parameter (frozen ones are zero in both).
  // It overwrites the gradient buffer, which the next step recomputes from scratch.
  std::vector<double> grad_weight_cos() {
    forward_backward(*model_, train_x_, train_y_, fast_);
    torch::NoGradGuard no_grad;
    std::vector<double> out;
    for (int64_t r = 0; r < S_; ++r) {
      auto g = model_->replica_part(model_->flat_grad(), r).to(torch::kFloat64);
      auto w = model_->replica_part(model_->flat().detach(), r).to(torch::kFloat64);
      const double denom = g.norm().item<double>() * w.norm().item<double>();
      out.push_back(denom > 0 ? -g.dot(w).item<double>() / denom : 0.0);
    }
    return out;
  }

  // Evaluates every replica on both splits and appends a metrics.csv row to each that is still
  // running (the lr column: the rate of the epoch's last step).
  void evaluate_rows(int64_t epoch) {
    auto tr = evaluate(*model_, train_x_, train_y_, fast_), te = evaluate(*model_, test_x_, test_y_, fast_);
    const auto cos = grad_weight_cos();
    const double elapsed = elapsed_before_ + seconds_since(t0_);
    for (int64_t r = 0; r < S_; ++r) {
      if (!running(r)) continue;
      const auto i = size_t(r);
      const double sq =
          model_->replica_part(model_->flat().detach(), r).to(torch::kFloat64).pow(2).sum().item<double>();
      const double lr = epoch == 0 ? 0.0 : opt_->lr_at(r, last_step_);
      MetricsRow row{epoch, tr.loss[i], te.loss[i], tr.acc[i], te.acc[i], sq, lr, elapsed, tr.collapse[i], cos[i]};
      if (!finite(row)) {  // diverged since the last evaluation: no row of it, the run ends here
        end(r, "diverged");
        continue;
      }
      append_line(metrics_path(r), format_row(row));
      rows_[i].push_back(row);
      update_hold(r, row);
    }
  }

  // The latest rows of the replicas still running.
  std::vector<MetricsRow> latest_rows() const {
    std::vector<MetricsRow> out;
    for (int64_t r = 0; r < S_; ++r)
      if (running(r)) out.push_back(rows_[size_t(r)].back());
    return out;
  }

  static bool finite(const MetricsRow& row) { return std::isfinite(row.train_loss) && std::isfinite(row.sum_sq_weights); }

  bool running(int64_t r) const { return status_[size_t(r)].empty(); }
  int64_t active() const {
    int64_t n = 0;
    for (int64_t r = 0; r < S_; ++r) n += running(r) ? 1 : 0;
    return n;
  }
  // Replica r is done: its status, at the current epoch. The others go on; its weights keep
  // being updated in the batched tensors (contained: no operation mixes replicas) but nothing
  // of it is written any more.
  void end(int64_t r, const std::string& status) {
    status_[size_t(r)] = status;
    epochs_done_[size_t(r)] = epoch_;
    // What its summary reports: the weights and the time at its end, not the pack's.
    checksum_[size_t(r)] = weights_checksum(S_ == 1 ? *model_ : model_->replica(r));
    wall_at_end_[size_t(r)] = seconds_since(t0_);
    epochs_per_s_at_end_[size_t(r)] = epochs_per_s();
  }

  // held_since_[r]: the first epoch of replica r's current stretch at or above the early-stop accuracy.
  void update_hold(int64_t r, const MetricsRow& row) {
    auto& h = held_since_[size_t(r)];
    h = (tc_.early_stop_acc > 0 && row.test_acc >= tc_.early_stop_acc) ? (h < 0 ? row.epoch : h) : -1;
  }

  // Replica r has held the early-stop accuracy for early_stop_hold epochs.
  bool early_stop_reached(int64_t r) const {
    const auto h = held_since_[size_t(r)];
    return tc_.early_stop_acc > 0 && h >= 0 && epoch_ - h >= tc_.early_stop_hold;
  }

  // Replica r's weights-only epoch_N.pt of the history, and resume.pt with the optimiser; a
  // replica whose weights are no longer finite has diverged instead (its last checkpoint stays
  // the last finite one).
  void checkpoint(int64_t epoch, int64_t r) {
    if (epoch == last_checkpoint_[size_t(r)]) return;
    Model one = S_ == 1 ? *model_ : model_->replica(r);
    if (S_ > 1) one.set_config(cfgs_[size_t(r)]);
    if (!torch::isfinite(one.flat()).all().item<bool>()) return end(r, "diverged");
    const OptimState st = opt_->state(S_ == 1 ? -1 : r);
    save_checkpoint(checkpoint_path(dirs_[size_t(r)], epoch), one, nullptr, epoch);
    save_checkpoint(resume_path(dirs_[size_t(r)]), one, &st, epoch);
    last_checkpoint_[size_t(r)] = epoch;
  }
  void checkpoint_running(int64_t epoch) {
    for (int64_t r = 0; r < S_; ++r)
      if (running(r)) checkpoint(epoch, r);
  }

  double epochs_per_s() const {
    return double(epoch_ - start_epoch_) / std::max(seconds_since(loop_start_), 1e-9);
  }

  // summary.json per replica; the reports the caller gets.
  std::vector<TrainReport> write_summaries() {
    RunFacts facts;
    facts.epochs_planned = tc_.epochs;
    facts.eval_every = tc_.eval_every;
    facts.n_train = n_train_;
    facts.n_test = test_x_.size(0);
    facts.n_params = model_->flat().numel() / S_;
    facts.seeds_side_by_side = S_;  // models side by side: seeds or packed runs
    facts.threads = threads_;
    facts.device = device_.str();
    facts.blas = blas_description();
    facts.path = fast_ ? "fast" : "plain";
    facts.loss = tc_.loss;
    facts.loss_dtype = tc_.loss_dtype;
    facts.flush_denormal = device_.is_cpu() && tc_.flush_denormal;
    facts.cuda_graph = graph_ != nullptr;
    std::vector<TrainReport> reports;
    for (int64_t r = 0; r < S_; ++r) {
      TrainReport rep;
      rep.status = status_[size_t(r)];
      rep.signal = rep.status == "interrupted" ? signal_ : 0;
      rep.run_dir = dirs_[size_t(r)];
      rep.epochs_done = epochs_done_[size_t(r)];
      rep.wall_s = wall_at_end_[size_t(r)];
      rep.milestones = find_milestones(rows_[size_t(r)]);
      if (!rows_[size_t(r)].empty()) rep.final = rows_[size_t(r)].back();
      write_summary(rep, facts, seeds_[size_t(r)], checksum_[size_t(r)], elapsed_before_ + rep.wall_s,
                    epochs_per_s_at_end_[size_t(r)]);
      reports.push_back(rep);
    }
    return reports;
  }

  // How it ended: the milestones of the runs that finished, a warning with the resume command
  // for a signal; then an error naming every run that diverged (after all are written).
  void report_end(const std::vector<TrainReport>& reports) const {
    std::string diverged, interrupted;
    for (auto& rep : reports) {
      auto divergence = [&] {
        auto list = list_checkpoints(rep.run_dir);
        return (S_ > 1 ? rep.run_dir + ": " : std::string()) + "training diverged at epoch " +
               std::to_string(rep.epochs_done) + ": the loss is not finite (lr too high?); the last finite checkpoint is " +
               (list.empty() ? std::string("none") : list.back().second);
      };
      if (rep.status == "diverged") {
        if (S_ > 1) log_->error(divergence());
        diverged = diverged.empty() ? divergence() : diverged;
      } else if (rep.status == "interrupted") {
        interrupted += (interrupted.empty() ? "" : " ") + rep.run_dir;
      } else {
        log_->info("{}{}", S_ > 1 ? rep.run_dir + ": " : "", final_line(rep));
      }
    }
    if (!interrupted.empty())
      log_->warn("interrupted by {} at epoch {}; checkpoint written. Resume with: {}",
                 signal_ == SIGINT ? "Ctrl-C" : "SIGTERM", epoch_,
                 S_ == 1 ? "grokking train --resume " + dirs_[0]
                         : "grokking train --resume DIR for each of " + interrupted);
    size_t n_diverged = 0;
    for (auto& rep : reports) n_diverged += rep.status == "diverged" ? 1 : 0;
    if (n_diverged == 1) throw RunError(diverged);
    if (n_diverged > 1)
      throw RunError(std::to_string(n_diverged) + " of " + std::to_string(S_) + " runs diverged; first: " + diverged);
  }

  const std::vector<Config>& cfgs_;
  const Config& cfg_;  // what the replicas share (replica 0's config)
  const TrainConfig& tc_;
  const std::vector<int64_t> seeds_;
  const std::vector<std::string>& dirs_;
  const int64_t S_;
  const bool resume_, quiet_;
  const Clock::time_point t0_ = Clock::now();
  Clock::time_point loop_start_ = Clock::now();

  int threads_ = 0;
  torch::Device device_ = torch::kCPU;
  bool fast_ = true;
  std::shared_ptr<spdlog::logger> log_;
  std::unique_ptr<Model> model_;
  std::unique_ptr<FlatAdamW> opt_;
  std::unique_ptr<GraphedStep> graph_;
  torch::Tensor train_x_, train_y_, test_x_, test_y_;
  int64_t n_train_ = 0, batch_ = 0;

  int64_t epoch_ = 0, start_epoch_ = 0, last_logged_ = 0, last_step_ = 0;
  double elapsed_before_ = 0, last_loss_ = 0;
  std::vector<std::vector<MetricsRow>> rows_;  // per replica, every evaluation so far
  std::vector<int64_t> held_since_;
  std::vector<std::string> status_;  // per replica: empty while it runs, then how it ended
  std::vector<int64_t> epochs_done_, last_checkpoint_;
  std::vector<std::string> checksum_ = std::vector<std::string>(size_t(S_));
  std::vector<double> wall_at_end_ = std::vector<double>(size_t(S_)), epochs_per_s_at_end_ = wall_at_end_;
  int signal_ = 0;
};

// The keys `--set` may change on resume: none of them changes the computation.
const std::vector<std::string>& resumable_keys() {
  static const std::vector<std::string> keys = {"train.epochs",         "train.eval_every",      "train.checkpoint_every",
                                                "train.log_every",      "train.threads",         "train.early_stop_acc",
                                                "train.early_stop_hold", "train.cuda_graph"};
  return keys;
}

}  // namespace

Config load_run_config(const std::string& run_dir, const std::vector<std::string>& sets) {
  for (auto& s : sets) {
    auto key = s.substr(0, s.find('='));
    const auto& allowed = resumable_keys();
    if (std::find(allowed.begin(), allowed.end(), key) == allowed.end()) {
      std::string list;
      for (auto& k : allowed) list += (list.empty() ? "" : ", ") + k;
      throw UsageError("--set " + s + ": cannot change " + key +
                       " when resuming (it changes the computation); allowed: " + list);
    }
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
  std::vector<Config> cfgs;
  for (size_t i = 0; i < seeds.size(); ++i) {
    cfgs.push_back(cfg);
    cfgs.back().train.seed = seeds[i];
    // Seeds side by side record their own directory (as their config.json does); a single run
    // (resumed ones too) records its config exactly as given.
    if (seeds.size() > 1) cfgs.back().output.dir = dirs.at(i);
  }
  return train_packed(cfgs, dirs, resume, quiet);
}

std::vector<TrainReport> train_packed(const std::vector<Config>& cfgs, const std::vector<std::string>& dirs,
                                      bool resume, bool quiet) {
  if (cfgs.empty() || cfgs.size() != dirs.size()) throw std::invalid_argument("train_packed: one config per directory");
  if (resume && cfgs.size() != 1)
    throw UsageError("--resume continues one run; resume the runs of a batched run one by one");
  for (size_t i = 1; i < cfgs.size(); ++i)
    if (pack_key(cfgs[i]) != pack_key(cfgs[0]))
      throw UsageError(dirs[i] + ": its config differs from " + dirs[0] +
                       "'s in more than the keys runs trained side by side may differ in");
  return TrainingRun(cfgs, dirs, resume, quiet).run();
}

namespace {

// --resume: the run directory holds the config; a finished run is left alone.
TrainReport resume_run(const TrainOptions& opts) {
  const std::string dir = opts.resume_dir;
  Config cfg = load_run_config(dir, opts.sets);
  resolve_device(cfg.train.device);
  RunLock lock(dir);
  remove_temporaries(dir);
  if (!exists(resume_path(dir))) {
    // Killed before its first checkpoint: nothing to lose, start the run over.
    spdlog::warn("{}: no checkpoint yet; starting the run from epoch 0", dir);
    atomic_write(dir + "/config.json", config_file_text(cfg));
    return train(cfg, dir, false, opts.quiet);
  }
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

// A new run (or several seeds side by side): everything is validated before anything is written.
TrainReport new_run(const TrainOptions& opts) {
  if (opts.config_path.empty()) throw UsageError("train: give a CONFIG.json, or --resume RUN_DIR");
  check_seeds(opts.seeds);  // the CLI checked already; library callers get the same limits
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
    atomic_write(dir + "/config.json", config_file_text(one));
  }
  return train_replicas(cfg, seeds, dirs, false, opts.quiet)[0];
}

}  // namespace

std::vector<TrainReport> run_packed(const std::vector<std::string>& dirs, bool quiet) {
  if (dirs.empty()) throw UsageError("--packed: give the run directories to train side by side");
  if (dirs.size() > kMaxSeeds)
    throw UsageError("--packed: " + std::to_string(dirs.size()) + " runs, at most " + std::to_string(kMaxSeeds) +
                     " side by side (the limit of --seeds)");
  for (size_t i = 0; i < dirs.size(); ++i)
    for (size_t j = 0; j < i; ++j)
      if (dirs[i] == dirs[j]) throw UsageError("--packed: " + dirs[i] + " is listed twice");
  std::vector<Config> cfgs;
  std::vector<std::unique_ptr<RunLock>> locks;
  for (auto& dir : dirs) {
    cfgs.push_back(load_run_config(dir));
    if (exists(dir + "/metrics.csv") || exists(resume_path(dir)) || !list_checkpoints(dir).empty())
      throw UsageError(dir + ": --packed starts fresh runs; this one has started (continue it with --resume " + dir + ")");
    if (cfgs.back().train.batch_size != 0)
      throw UsageError(dir + "/config.json: /train/batch_size: runs side by side train full-batch (got " +
                       std::to_string(cfgs.back().train.batch_size) + ")");
    resolve_device(cfgs.back().train.device);
    make_dirs(dir + "/checkpoints");
    locks.push_back(std::make_unique<RunLock>(dir));
  }
  return train_packed(cfgs, dirs, false, quiet);
}

TrainReport run_train(const TrainOptions& opts) { return opts.resume_dir.empty() ? new_run(opts) : resume_run(opts); }

}  // namespace grokking
