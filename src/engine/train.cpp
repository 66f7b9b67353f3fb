#include "grokking/train.hpp"

#include <ATen/CPUGeneratorImpl.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <chrono>
#include <functional>
#include <cmath>
#include <cstdio>
#include <limits>

#include "grokking/checkpoint.hpp"
#include "grokking/compat.hpp"
#include "grokking/error.hpp"
#include "grokking/graph_step.hpp"
#include "grokking/limits.hpp"
#include "grokking/model.hpp"
#include "grokking/optim.hpp"
#include "grokking/progress_note.hpp"
#include "grokking/run_output.hpp"
#include "grokking/signals.hpp"
#include "grokking/task.hpp"
#include "grokking/threads.hpp"

namespace grokking {

namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

struct Eval {
  std::vector<double> loss, acc, zero_terms, collapse;  // per replica
};

// Loss, accuracy and the diagnostics over a whole split for every replica, in chunks that bound
// memory; each chunk weighs by the examples (positions, for a sequence) it scores.
Eval evaluate(const Model& model, const Batch& batch, bool fast, torch::Tensor* outputs = nullptr) {
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> kept;  // outputs, where the caller wants them: [S, chunk, ...] each
  const int64_t n = batch.size(), S = model.replicas();
  int64_t chunk = evaluation_chunk(model.shape());
  // With several threads (step_shards), chunks go that many at a time, one a thread; a pair task's
  // split is cut into at least as many chunks as threads where each keeps 256 rows or more.
  const int threads = batch.x.device().is_cpu() ? step_shards() : 1;
  if (threads > 1 && model.shape().target == TaskShape::Target::last && n / threads >= 256)
    chunk = std::min(chunk, (n + threads - 1) / threads);
  const auto f64 = torch::TensorOptions().dtype(torch::kFloat64);
  auto loss_sum = torch::zeros({S}, f64), correct = torch::zeros({S}, f64);
  auto zero_sum = torch::zeros({S}, f64), collapse_sum = torch::zeros({S}, f64);
  double scored = 0;
  // A long evaluation (an S6 run's half a million pairs) says where it is every few seconds.
  ProgressNote note("evaluating " + std::to_string(n) + " examples, chunks of " + std::to_string(chunk),
                    size_t((n + chunk - 1) / chunk));
  struct Chunk {
    ReplicaMeasures m;
    torch::Tensor outputs;  // where the caller wants them
    double weight = 0;      // the examples (positions, for a sequence) it scores
  };
  std::vector<Chunk> chunks(static_cast<size_t>(threads));
  for (int64_t first = 0; first < n; first += chunk * threads) {
    const int count = int(std::min<int64_t>(threads, (n - first + chunk - 1) / chunk));
    auto measure = [&](int t) {
      torch::NoGradGuard no_grad_here;  // each thread's own
      const Batch part = batch.slice(first + t * chunk, first + (t + 1) * chunk);
      Chunk& c = chunks[size_t(t)];
      if (outputs) {
        c.outputs = model.outputs(part.x, fast);
        c.m = batch_measures(c.outputs, part, model.shape(), LossSpec::of(model.config().train));
      } else {
        c.m = model_measures(model, part, fast);
      }
      c.weight = model.shape().target == TaskShape::Target::sequence ? double((part.y >= 0).sum().item<int64_t>())
                                                                     : double(part.size());
    };
    if (count > 1) run_sharded(count, measure);
    else measure(0);
    for (int t = 0; t < count; ++t) {  // in the chunks' order
      const ReplicaMeasures& m = chunks[size_t(t)].m;
      const double w = chunks[size_t(t)].weight;
      if (outputs) kept.push_back(chunks[size_t(t)].outputs);
      loss_sum += m.loss.cpu() * w;
      correct += m.acc.cpu() * w;
      zero_sum += m.zero_terms.cpu() * w;
      collapse_sum += m.collapse.cpu() * w;
      scored += w;
      note.tick();
    }
  }
  if (outputs) *outputs = kept.size() == 1 ? kept.front() : torch::cat(kept, 1);
  Eval e;
  for (int64_t r = 0; r < S; ++r) {
    e.loss.push_back(loss_sum[r].item<double>() / scored);
    e.acc.push_back(correct[r].item<double>() / scored);
    e.zero_terms.push_back(zero_sum[r].item<double>() / scored);
    e.collapse.push_back(collapse_sum[r].item<double>() / scored);
  }
  return e;
}



// Where the training batches come from, chosen once when the task is made: its fixed split (the
// full batch, or minibatches in an order drawn from (seed, epoch), so that a resumed run draws the
// same order without saved generator state) or its fresh batches (one a step, drawn from the
// task's seed and the step). The training loop asks it, never the task's shape.
class DataSource {
 public:
  virtual ~DataSource() = default;
  // The batches of epoch `epoch` (counted from 0), each handed to `step` in order.
  virtual void for_each_batch(int64_t epoch, const std::function<void(const Batch&)>& step) const = 0;
  // What "train" means at an evaluation after `epochs` epochs.
  virtual Batch measure_set(int64_t epochs) const = 0;
  const Batch& eval() const { return eval_; }  // the test set, or the fixed evaluation set
  virtual int64_t n_train() const = 0;         // the training examples (0: fresh every step)
  virtual std::string describe() const = 0;    // "3830 train / 8939 test"
  virtual const char* unit() const = 0;        // what one pass is: "epoch" or "step"
  // The one batch every step trains on (what a CUDA graph can capture), or nullptr and why not.
  virtual const Batch* full_batch(std::string& why_not) const = 0;
  // Whether a run can enter a pack mid-way: its data must not depend on the pack's step.
  virtual bool run_may_enter_midway() const = 0;

 protected:
  Batch eval_;
};

class FixedSplit : public DataSource {
 public:
  FixedSplit(const Task& task, torch::Device device, int64_t batch_size, int64_t seed) : seed_(seed) {
    const Dataset& data = task.dataset();
    train_ = Batch{data.train_x, data.train_y, {}}.to(device);
    eval_ = Batch{data.test_x, data.test_y, {}}.to(device);
    n_ = train_.size();
    batch_ = batch_size > 0 ? batch_size : n_;
  }
  void for_each_batch(int64_t epoch, const std::function<void(const Batch&)>& step) const override {
    if (batch_ >= n_) return step(train_);
    auto gen = at::detail::createCPUGenerator(uint64_t(seed_) * 1000003u + uint64_t(epoch));
    const Batch all = train_.index_select(torch::randperm(n_, gen, torch::kInt64).to(train_.x.device()));
    for (int64_t i = 0; i < n_; i += batch_) step(all.slice(i, i + batch_));
  }
  Batch measure_set(int64_t) const override { return train_; }
  int64_t n_train() const override { return n_; }
  std::string describe() const override {
    return std::to_string(n_) + " train / " + std::to_string(eval_.size()) + " test";
  }
  const char* unit() const override { return "epoch"; }
  const Batch* full_batch(std::string& why_not) const override {
    if (batch_ < n_) return why_not = "minibatches", nullptr;
    return &train_;
  }
  bool run_may_enter_midway() const override { return true; }

 private:
  Batch train_;
  int64_t n_ = 0, batch_ = 0, seed_ = 0;
};

class FreshBatches : public DataSource {
 public:
  FreshBatches(const Task& task, torch::Device device, int64_t batch_size)
      : task_(task), device_(device), batch_(batch_size) {
    eval_ = task.eval_batch().to(device);
  }
  void for_each_batch(int64_t epoch, const std::function<void(const Batch&)>& step) const override {
    step(batch(epoch));
  }
  // The batch the last step trained on (the first batch before any step).
  Batch measure_set(int64_t epochs) const override { return batch(std::max<int64_t>(epochs - 1, 0)); }
  int64_t n_train() const override { return 0; }
  std::string describe() const override {
    return "fresh batches of " + std::to_string(batch_) + ", " + std::to_string(eval_.size()) + " to evaluate";
  }
  const char* unit() const override { return "step"; }
  const Batch* full_batch(std::string& why_not) const override { return why_not = "fresh batches", nullptr; }
  bool run_may_enter_midway() const override { return false; }

 private:
  Batch batch(int64_t step) const { return task_.train_batch(step, batch_).to(device_); }
  const Task& task_;
  torch::Device device_;
  int64_t batch_;
};

std::unique_ptr<DataSource> make_data_source(const Task& task, torch::Device device, const TrainConfig& tc) {
  if (task.shape().fresh_batches) return std::make_unique<FreshBatches>(task, device, tc.batch_size);
  return std::make_unique<FixedSplit>(task, device, tc.batch_size, tc.seed);
}

// One training run of several runs side by side in up to `slots` replicas (one run: a plain
// run), each with its own config (seed and, packed, the optimiser's numbers) and writing its own
// run directory. Each run has its own epoch count (its epoch 0 is the global epoch it entered
// at), ends on its own (early stop, divergence, its epoch budget) while the others go on, and
// writes its summary when it ends. Its place then goes to the next run waiting, or the pack
// shrinks to its live runs: no compute goes to a finished run (continuous packing). run() is
// the recipe; each step below it does one thing.
class TrainingRun {
 public:
  TrainingRun(std::vector<Config> cfgs, std::vector<std::string> dirs, bool resume, bool quiet, int64_t slots)
      : runs_(make_runs(std::move(cfgs), std::move(dirs))), cfg_(runs_.at(0).cfg), tc_(cfg_.train),
        M_(int64_t(runs_.size())), N_(slots <= 0 ? M_ : std::min(slots, M_)), resume_(resume), quiet_(quiet) {
    for (int64_t k = 0; k < N_; ++k) slots_.push_back(size_t(k)), runs_[size_t(k)].started = true;
    next_pending_ = N_;
    S_ = N_;
  }

  std::vector<TrainReport> run() {
    set_up_run();
    if (!resume_) {
      for (int64_t r = 0; r < S_; ++r) start_metrics(run_of(r));
      evaluate_rows(all_slots());
      checkpoint_running();
    }
    SignalScope signals;
    ProgressBar bar(!quiet_ && ::isatty(2));
    loop_start_ = Clock::now();
    work_at_start_ = work_done();
    while (true) {
      for (int64_t r = 0; r < S_; ++r)
        if (running(r) && local(r) >= tc_.epochs) end(r, RunStatus::completed);
      refresh_pack();
      if (active() == 0) {
        if (next_pending_ < M_) continue;
        break;
      }
      train_epoch();
      ++epoch_;
      // One model: a loss that is not finite ends the run at once. Replicas are checked at
      // evaluations (and before every checkpoint), each on its own.
      if (M_ == 1 && !std::isfinite(last_loss_)) {
        end(0, RunStatus::diverged);
        break;
      }
      std::vector<int64_t> due;
      for (int64_t r = 0; r < S_; ++r)
        if (running(r) && (local(r) % tc_.eval_every == 0 || local(r) == tc_.epochs)) due.push_back(r);
      if (!due.empty()) {
        bar.clear();  // a long evaluation's notes go on lines of their own
        evaluate_rows(due);
        // The first evaluation of this process gets a line too: a time estimate within seconds.
        if (epoch_ - last_logged_ >= std::max<int64_t>(tc_.log_every, 1) || (M_ == 1 && local(0) == tc_.epochs) ||
            !logged_once_) {
          logged_once_ = true;
          if (active() > 0) {
            bar.clear();
            log_->info(progress_line(latest_epoch(), tc_.epochs, latest_rows(), epochs_per_s(),
                                     data_->unit()));
            if (quiet_ && run_lines())  // a sweep's child: a line per run
              for (int64_t r = 0; r < S_; ++r)
                if (running(r))
                  run_line(run_of(r), progress_line(local(r), tc_.epochs, {runs_[run_of(r)].rows.back()},
                                                    epochs_per_s(), data_->unit()));
          }
          last_logged_ = epoch_;
        }
        for (auto r : due)
          if (running(r) && early_stop_reached(r)) {
            checkpoint(r);
            end(r, RunStatus::early_stopped);
          }
      }
      for (int64_t r = 0; r < S_; ++r)
        if (running(r) && (local(r) % tc_.checkpoint_every == 0 || local(r) == tc_.epochs)) checkpoint(r);
      if (signals.received() != 0) {
        signal_ = signals.received();
        checkpoint_running();
        for (int64_t r = 0; r < S_; ++r)
          if (running(r)) end(r, RunStatus::interrupted);
        break;
      }
      bar.update(work_done(), M_ * tc_.epochs, work_per_s());
    }
    bar.clear();
    std::vector<TrainReport> out;  // the runs that started (an interrupt leaves the others fresh)
    for (size_t k = 0; k < runs_.size(); ++k)
      if (runs_[k].started) out.push_back(runs_[k].report);
    report_end(out);
    return out;
  }

 private:
  // Threads, denormals and device; the task's data and the model(s), initialised on the CPU then
  // moved; the optimiser; on resume, the checkpoint's state and the metrics up to it; the CUDA graph.
  void set_up_run() {
    threads_ = configure_threads(tc_.threads);
    device_ = resolve_device(tc_.device);
    // Several threads go to the step's shards and the evaluation's chunks, each with BLAS on one.
    if (device_.is_cpu()) give_blas_threads_to_shards();
    if (device_.is_cpu()) at::globalContext().setFlushDenormal(tc_.flush_denormal);
    log_ = make_run_logger(run_dirs(), quiet_);

    task_ = make_task(slot_tasks(slots_));
    shape_ = task_->shape();
    for (auto k : slots_) task_->write_files(runs_[k].dir, resume_);
    model_ = std::make_unique<Model>(cfg_, slot_seeds(slots_));
    // Replicas train through the batched forward: the fast path where the kind has one.
    fast_ = model_->has_fast_path() && (tc_.path != "plain" || M_ > 1);
    Checkpoint ck;
    if (resume_) {
      ck = load_checkpoint(resume_path(runs_[0].dir));
      if (!ck.has_optimizer) throw RunError(ck.path + ": has no optimizer state; cannot resume from it");
      if (config_to_json(ck.config)["model"] != config_to_json(cfg_)["model"] ||
          config_to_json(ck.config)["task"] != config_to_json(cfg_)["task"])
        throw RunError(ck.path + ": was written by a different task/model config than " + runs_[0].dir + "/config.json");
      model_->load(ck.weights);
      epoch_ = start_epoch_ = last_logged_ = runs_[0].last_checkpoint = ck.epoch;
    }
    model_->to(device_);
    opt_ = std::make_unique<FlatAdamW>(*model_, cfg_.optim, slot_optims(slots_));
    if (resume_) {
      OptimState st{ck.exp_avg.to(device_), ck.exp_avg_sq.to(device_), ck.optimizer_step, {}};
      for (auto& [name, t] : ck.optimizer_extra) st.extra.emplace_back(name, t.to(device_));
      try {
        opt_->set_state(st);
      } catch (const RunError& e) {
        throw RunError(ck.path + ": " + e.what());
      }
      for (auto& r : read_metrics(metrics_path(0)))
        if (r.epoch <= start_epoch_) runs_[0].rows.push_back(conform(r));
      write_metrics(metrics_path(0), runs_[0].rows, extra_columns());  // drop rows written after the checkpoint
      elapsed_before_ = runs_[0].rows.empty() ? 0.0 : runs_[0].rows.back().elapsed_s;
      for (auto& row : runs_[0].rows) update_hold(0, row);
      // Changes given with --set (the allowed ones) reach config.json only now, once the state
      // they continue has been read back whole: a damaged run is left exactly as it was.
      const std::string cfg_text = config_file_text(cfg_);
      if (read_text_file(runs_[0].dir + "/config.json") != cfg_text) atomic_write(runs_[0].dir + "/config.json", cfg_text);
    }
    data_ = make_data_source(*task_, device_, tc_);

    const std::string graph_note = make_graph();
    log_->info("grokking {} | LibTorch {} | device {} | BLAS {} | {} thread{} | flush_denormal {} | {} path{}",
               GROKKING_VERSION, compat::torch_version(), device_.str(), blas_description(), threads_,
               threads_ == 1 ? "" : "s",
               device_.is_cpu() && tc_.flush_denormal ? "on" : "off", fast_ ? "fast" : "plain",
               device_.is_cuda() ? " | CUDA graph " + graph_note : "");
    if (device_.is_cpu())
      if (const std::string advice = blas_advice(); !advice.empty()) log_->info("note: {}", advice);
    log_->info("{} | {} {} | {} parameters | {} {}{}{}", describe_task(), data_description(), cfg_.model.kind,
               model_->flat().numel() / S_, tc_.epochs, std::string(data_->unit()) + "s",
               M_ > 1 ? " | " + std::to_string(S_) + " models side by side" +
                            (M_ > N_ ? " (" + std::to_string(M_) + " runs, each place refilled as a run ends)" : "")
                      : "",
               resume_ ? " | resuming at epoch " + std::to_string(start_epoch_) : "");
    const auto& kind = find_model_kind(cfg_.model.kind);
    if (kind.note)
      if (const std::string note = kind.note(cfg_, shape_); !note.empty()) log_->warn("{}", note);
  }

  // CUDA graphs: full batches of a fixed split only (a minibatch is a new tensor every step), and
  // replicas at one step count. Returns what the log says of it.
  std::string make_graph() {
    graph_.reset();
    if (!device_.is_cuda()) return "off";
    if (!tc_.cuda_graph) return "off (train.cuda_graph false)";
    if (!GraphedStep::built()) return "off (not built)";
    std::string why_not;
    const Batch* full = data_->full_batch(why_not);
    if (!full) return "off (" + why_not + ")";
    if (opt_->has_interventions()) return "off (optim interventions run eagerly)";
    if (opt_->own_steps()) return "off (replicas at different steps)";
    graph_ = std::make_unique<GraphedStep>(*model_, *opt_, full->x, full->y, fast_);
    return "on";
  }

  // The runs in the slots: their seeds, task configs and optimiser configs.
  std::vector<int64_t> slot_seeds(const std::vector<size_t>& slots) const {
    std::vector<int64_t> out;
    for (auto k : slots) out.push_back(runs_[k].seed());
    return out;
  }
  std::vector<TaskConfig> slot_tasks(const std::vector<size_t>& slots) const {
    std::vector<TaskConfig> out;
    for (auto k : slots) out.push_back(runs_[k].cfg.task);
    return out;
  }
  std::vector<OptimConfig> slot_optims(const std::vector<size_t>& slots) const {
    std::vector<OptimConfig> out;
    for (auto k : slots) out.push_back(runs_[k].cfg.optim);
    return out;
  }
  std::vector<int64_t> all_slots() const {
    std::vector<int64_t> out;
    for (int64_t r = 0; r < S_; ++r) out.push_back(r);
    return out;
  }

  // Continuous packing: once a run has ended, the pack is rebuilt from the live runs' weights and
  // optimiser states (each with its own step count) and the next waiting runs, initialised as
  // they would be alone. A run enters mid-way only where nothing but its weights and moments
  // depends on when it started: a fixed split (fresh batches are drawn by the step of the whole
  // pack), no Grokfast filter (its window is shared), and on the CPU (a CUDA graph replays one
  // step count); elsewhere the pack shrinks and the waiting runs start together once it is
  // empty. On a GPU the pack shrinks only once a quarter of it has ended (each rebuild is a new
  // graph capture); until then the ended replicas go on computing, written nowhere.
  void refresh_pack() {
    const int64_t live = active();
    if (live == S_ && (live == N_ || next_pending_ >= M_)) return;  // full, or nothing to add
    if (live == S_ && live > 0 && !can_enter_midway()) return;
    if (device_.is_cuda() && live > 0 && (S_ - live) * 4 < S_) return;
    std::vector<size_t> slots;
    std::vector<Model> ones;
    std::vector<OptimState> states;
    std::vector<int64_t> steps;
    for (int64_t r = 0; r < S_; ++r)
      if (running(r)) {
        slots.push_back(run_of(r));
        ones.push_back(model_->replica(r));
        states.push_back(opt_->state(r));
        steps.push_back(opt_->steps(r));
      }
    std::vector<size_t> entering;
    if (live == 0 || can_enter_midway())
      while (int64_t(slots.size()) < N_ && next_pending_ < M_) {
        const auto k = size_t(next_pending_++);
        Model one(runs_[k].cfg);
        FlatAdamW fresh(one, runs_[k].cfg.optim);
        states.push_back(fresh.state());
        ones.push_back(std::move(one));
        steps.push_back(0);
        slots.push_back(k);
        entering.push_back(k);
      }
    if (slots.empty()) {  // every run has ended
      S_ = 0;
      return;
    }
    graph_.reset();
    opt_.reset();
    if (!data_->run_may_enter_midway()) {  // the task's per-run numbers (sparse features) follow the slots
      task_ = make_task(slot_tasks(slots));
      data_ = make_data_source(*task_, device_, tc_);
    }
    auto model = std::make_unique<Model>(cfg_, slot_seeds(slots));
    std::vector<torch::Tensor> flats;
    for (auto& m : ones) flats.push_back(m.flat().detach().cpu());
    {
      torch::NoGradGuard no_grad;
      model->flat().detach().copy_(pack_replica_parts(flats, model->param_blocks()));
    }
    model->to(device_);
    model_ = std::move(model);
    opt_ = std::make_unique<FlatAdamW>(*model_, cfg_.optim, slot_optims(slots));
    opt_->set_state(pack_states(states, model_->param_blocks()), steps);
    slots_ = slots;
    S_ = int64_t(slots_.size());
    make_graph();
    std::vector<int64_t> new_slots;
    for (auto k : entering) {
      runs_[k].offset = epoch_;
      runs_[k].t_start = Clock::now();
      runs_[k].started = true;
      task_->write_files(runs_[k].dir, false);
      start_metrics(k);
      new_slots.push_back(int64_t(std::find(slots_.begin(), slots_.end(), k) - slots_.begin()));
      log_->info("{}: starts in the pack ({} side by side)", runs_[k].dir, S_);
    }
    if (!new_slots.empty()) {
      evaluate_rows(new_slots);
      for (auto r : new_slots) checkpoint(r);
    }
  }
  bool can_enter_midway() const {
    return data_->run_may_enter_midway() && cfg_.optim.grokfast == "none" && !device_.is_cuda();
  }

  // "add (mod 113)", "repeat (vocab 64, ...)": the task as its kind describes it in one phrase.
  std::string describe_task() const { return grokking::describe_task(cfg_.task); }
  std::string data_description() const { return data_->describe() + " |"; }

  std::string metrics_path(size_t k) const { return runs_[k].dir + "/metrics.csv"; }

  // A fresh metrics.csv, header only, for run k.
  void start_metrics(size_t k) { atomic_write(metrics_path(k), metrics_header(extra_columns()) + "\n"); }

  // One epoch: every batch of the data source's epoch (one step on a fresh batch; one pass over
  // a fixed split). last_loss_ is the epoch's last step's loss (on the CPU only: reading it on a
  // GPU would synchronise every step).
  void train_epoch() {
    data_->for_each_batch(local(0), [&](const Batch& b) {
      auto loss = graph_ ? graph_->run() : train_step(*model_, *opt_, b, fast_, opt_->scheduled_lr());
      if (device_.is_cpu()) last_loss_ = loss.item<double>();
    });
  }

  // Per replica: the cosine between the negative gradient of the training loss (on
  // train_measure_set) at the current weights and the weights, over every trained parameter
  // (frozen ones are zero in both), then per trained parameter tensor (Prieto et al.'s Fig. 5
  // reads it per layer). It overwrites the gradient buffer, which the next step recomputes from
  // scratch.
  struct GradCos {
    std::vector<double> total;
    std::vector<std::vector<double>> per_param;  // [replica][trained parameter]
  };
  GradCos grad_weight_cos(const Batch& train) {
    // Where training takes minibatches, the gradient of the mean over the measure set is taken a
    // minibatch at a time, each weighted by its share of the rows (a pair task's loss is a mean
    // over its rows), so that it needs no more memory than a step.
    const int64_t rows = train.size(), chunk = tc_.batch_size;
    if (chunk > 0 && chunk < rows && model_->shape().target == TaskShape::Target::last) {
      torch::Tensor sum;
      for (int64_t first = 0; first < rows; first += chunk) {
        const int64_t n = std::min(chunk, rows - first);
        forward_backward(*model_, train.slice(first, first + n), fast_);
        torch::NoGradGuard no_grad;
        const auto part = model_->flat_grad().to(torch::kFloat64) * (double(n) / double(rows));
        sum = sum.defined() ? sum + part : part;
      }
      torch::NoGradGuard no_grad;
      model_->flat_grad().copy_(sum);
    } else {
      forward_backward(*model_, train, fast_);
    }
    torch::NoGradGuard no_grad;
    GradCos out;
    auto cos = [](const torch::Tensor& g, const torch::Tensor& w) {
      const double denom = g.norm().item<double>() * w.norm().item<double>();
      return denom > 0 ? -g.dot(w).item<double>() / denom : 0.0;
    };
    const auto blocks = model_->param_blocks();
    for (int64_t r = 0; r < S_; ++r) {
      auto g = model_->replica_part(model_->flat_grad(), r).to(torch::kFloat64);
      auto w = model_->replica_part(model_->flat().detach(), r).to(torch::kFloat64);
      out.total.push_back(cos(g, w));
      std::vector<double> per;
      for (size_t k = 0; k < blocks.size(); ++k) {
        if (!model_->specs()[k].trained) continue;
        const auto& b = blocks[k];
        per.push_back(cos(model_->flat_grad().narrow(0, b.offset + r * b.numel, b.numel).to(torch::kFloat64),
                          model_->flat().detach().narrow(0, b.offset + r * b.numel, b.numel).to(torch::kFloat64)));
      }
      out.per_param.push_back(per);
    }
    return out;
  }

  // A row read back from metrics.csv with exactly extra_columns(), in order: a column the file
  // lacks (written by an earlier version) reads NaN.
  MetricsRow conform(const MetricsRow& row) const {
    MetricsRow out = row;
    out.extra.clear();
    for (auto& name : extra_columns()) {
      double v = std::numeric_limits<double>::quiet_NaN();
      for (auto& [n, x] : row.extra)
        if (n == name) v = x;
      out.extra.emplace_back(name, v);
    }
    return out;
  }

  // metrics.csv's columns past the ones every run has: the task's own, then the gradient-weight
  // cosine of each trained parameter.
  std::vector<std::string> extra_columns() const {
    auto cols = task_->extra_columns();
    for (auto& spec : model_->specs())
      if (spec.trained) cols.push_back("cos_" + spec.name);
    return cols;
  }

  // Evaluates every replica on both splits and appends a metrics.csv row, at its own epoch, to
  // each of `due` that is still running (the lr column: the rate of the epoch's last step).
  void evaluate_rows(const std::vector<int64_t>& due) {
    const Batch train = data_->measure_set(local(0));
    // The task's own columns read the evaluation set's outputs, which its evaluation keeps.
    const auto extra_names = task_->extra_columns();
    torch::Tensor eval_outputs;
    auto tr = evaluate(*model_, train, fast_),
         te = evaluate(*model_, data_->eval(), fast_, extra_names.empty() ? nullptr : &eval_outputs);
    const auto cos = grad_weight_cos(train);
    const auto extra = extra_names.empty() ? std::vector<std::vector<double>>{}
                                           : task_->extra_measures(eval_outputs, data_->eval());
    const auto columns = extra_columns();
    for (auto r : due) {
      if (!running(r)) continue;
      const auto i = size_t(r), run = run_of(r);
      const double sq =
          model_->replica_part(model_->flat().detach(), r).to(torch::kFloat64).pow(2).sum().item<double>();
      const int64_t epoch = local(r);
      const double lr = epoch == 0 ? 0.0 : opt_->lr_at(r, opt_->steps(r) - 1);
      const double elapsed = elapsed_before_ + seconds_since(runs_[run].t_start);
      MetricsRow row;
      row.epoch = epoch, row.elapsed_s = elapsed, row.lr = lr, row.sum_sq_weights = sq;
      row.train_loss = tr.loss[i], row.test_loss = te.loss[i], row.train_acc = tr.acc[i], row.test_acc = te.acc[i];
      row.zero_terms = tr.zero_terms[i], row.softmax_collapse = tr.collapse[i], row.grad_weight_cos = cos.total[i];
      for (size_t k = 0; k < extra_names.size(); ++k) row.extra.emplace_back(extra_names[k], extra[k][i]);
      for (size_t k = 0; k < cos.per_param[i].size(); ++k)
        row.extra.emplace_back(columns[extra_names.size() + k], cos.per_param[i][k]);
      if (!finite(row)) {  // diverged since the last evaluation: no row of it, the run ends here
        end(r, RunStatus::diverged);
        continue;
      }
      append_line(metrics_path(run), format_row(row));
      runs_[run].rows.push_back(row);
      update_hold(run, row);
    }
  }

  // The latest rows of the replicas still running.
  std::vector<MetricsRow> latest_rows() const {
    std::vector<MetricsRow> out;
    for (int64_t r = 0; r < S_; ++r)
      if (running(r)) out.push_back(runs_[run_of(r)].rows.back());
    return out;
  }
  int64_t latest_epoch() const {
    int64_t e = 0;
    for (int64_t r = 0; r < S_; ++r)
      if (running(r)) e = std::max(e, local(r));
    return e;
  }

  static bool finite(const MetricsRow& row) { return std::isfinite(row.train_loss) && std::isfinite(row.sum_sq_weights); }

  // Slot r's run, and its own epoch.
  size_t run_of(int64_t r) const { return slots_[size_t(r)]; }
  int64_t local(int64_t r) const { return epoch_ - runs_[run_of(r)].offset; }
  bool running(int64_t r) const { return !runs_[run_of(r)].status.has_value(); }
  // Epochs trained, summed over the runs (for the progress bar), and per second since the loop began.
  int64_t work_done() const {
    int64_t w = 0;
    for (size_t k = 0; k < runs_.size(); ++k)
      if (runs_[k].status) w += runs_[k].report.epochs_done;
    for (int64_t r = 0; r < S_; ++r)
      if (running(r)) w += local(r);
    return w;
  }
  double work_per_s() const {
    return double(work_done() - work_at_start_) / std::max(seconds_since(loop_start_), 1e-9);
  }
  int64_t active() const {
    int64_t n = 0;
    for (int64_t r = 0; r < S_; ++r) n += running(r) ? 1 : 0;
    return n;
  }
  // Replica r is done: its status at the current epoch, and its summary.json, written now. The
  // others go on; its weights keep being updated in the batched tensors (contained: no
  // operation mixes replicas) but nothing of it is written any more.
  void end(int64_t r, RunStatus status) {
    const auto i = run_of(r);
    runs_[i].status = status;
    TrainReport& rep = runs_[i].report;
    rep.status = status;
    rep.signal = status == RunStatus::interrupted ? signal_ : 0;
    rep.run_dir = runs_[i].dir;
    rep.fresh_batches = shape_.fresh_batches;
    rep.epochs_done = local(r);
    rep.wall_s = seconds_since(runs_[i].t_start);
    rep.milestones = find_milestones(runs_[i].rows);
    // Prieto et al.'s Fig. 5: the cosine's peak once the training set is fit.
    for (auto& row : runs_[i].rows)
      if (rep.milestones.memorised && row.epoch >= *rep.milestones.memorised &&
          (!rep.grad_weight_cos_peak || row.grad_weight_cos > *rep.grad_weight_cos_peak))
        rep.grad_weight_cos_peak = row.grad_weight_cos, rep.grad_weight_cos_peak_epoch = row.epoch;
    if (!runs_[i].rows.empty()) rep.final = runs_[i].rows.back();
    // What its summary reports: the weights and the time at its end, not the pack's.
    const double own_rate = double(rep.epochs_done - (i == 0 ? start_epoch_ : 0)) / std::max(rep.wall_s, 1e-9);
    write_summary(runs_[i].dir, summary_of(rep, facts(), runs_[i].seed(), weights_checksum(S_ == 1 ? *model_ : model_->replica(r)),
                                       elapsed_before_ + rep.wall_s, own_rate));
    if (quiet_ && run_lines() && status != RunStatus::interrupted) run_line(i, final_line(rep));
  }

  // "NAME: text" on stderr, NAME the run directory's last component (a sweep's run name).
  void run_line(size_t i, const std::string& text) const {
    std::string name = runs_[i].dir;
    while (name.size() > 1 && name.back() == '/') name.pop_back();
    if (const auto slash = name.find_last_of('/'); slash != std::string::npos && slash + 1 < name.size())
      name = name.substr(slash + 1);
    std::fprintf(stderr, "%s: %s\n", name.c_str(), text.c_str());
  }

  // runs_[k].held_since: the first epoch of run k's current stretch at or above the early-stop accuracy.
  void update_hold(size_t k, const MetricsRow& row) {
    auto& h = runs_[k].held_since;
    h = (tc_.early_stop_acc > 0 && row.test_acc >= tc_.early_stop_acc) ? (h < 0 ? row.epoch : h) : -1;
  }

  // Slot r's run has held the early-stop accuracy for early_stop_hold epochs.
  bool early_stop_reached(int64_t r) const {
    const auto h = runs_[run_of(r)].held_since;
    return tc_.early_stop_acc > 0 && h >= 0 && local(r) - h >= tc_.early_stop_hold;
  }

  // Replica r's weights-only epoch_N.pt of the history, and resume.pt with the optimiser; a
  // replica whose weights are no longer finite has diverged instead (its last checkpoint stays
  // the last finite one).
  void checkpoint(int64_t r) {
    const auto k = run_of(r);
    const int64_t epoch = local(r);
    if (epoch == runs_[k].last_checkpoint) return;
    Model one = S_ == 1 ? *model_ : model_->replica(r);
    if (M_ > 1) one.set_config(runs_[k].cfg);
    if (!torch::isfinite(one.flat()).all().item<bool>()) return end(r, RunStatus::diverged);
    const OptimState st = opt_->state(S_ == 1 ? -1 : r);
    save_checkpoint(checkpoint_path(runs_[k].dir, epoch), one, nullptr, epoch);
    save_checkpoint(resume_path(runs_[k].dir), one, &st, epoch);
    runs_[k].last_checkpoint = epoch;
  }
  void checkpoint_running() {
    for (int64_t r = 0; r < S_; ++r)
      if (running(r)) checkpoint(r);
  }

  double epochs_per_s() const {
    return double(epoch_ - start_epoch_) / std::max(seconds_since(loop_start_), 1e-9);
  }

  // Facts every replica's summary.json records beside its results.
  RunFacts facts() const {
    RunFacts f;
    f.epochs_planned = tc_.epochs;
    f.eval_every = tc_.eval_every;
    f.n_train = data_->n_train();
    f.n_test = data_->eval().size();
    f.n_params = model_->flat().numel() / std::max<int64_t>(S_, 1);
    f.seeds_side_by_side = N_;  // models side by side: seeds or packed runs
    f.threads = threads_;
    f.device = device_.str();
    f.blas = blas_description();
    f.path = fast_ ? "fast" : "plain";
    f.loss = shape_.has_accuracy() ? tc_.loss : "weighted_squared_error";
    f.loss_dtype = tc_.loss_dtype;
    f.flush_denormal = device_.is_cpu() && tc_.flush_denormal;
    f.cuda_graph = graph_ != nullptr;
    f.task_kind = cfg_.task.kind;
    f.model_kind = cfg_.model.kind;
    return f;
  }

  // How it ended: the milestones of the runs that finished, a warning with the resume command
  // for a signal; then an error naming every run that diverged (after all are written).
  void report_end(const std::vector<TrainReport>& reports) const {
    std::string diverged, interrupted;
    for (auto& rep : reports) {
      auto divergence = [&] {
        auto list = list_checkpoints(rep.run_dir);
        return (M_ > 1 ? rep.run_dir + ": " : std::string()) + "training diverged at epoch " +
               std::to_string(rep.epochs_done) + ": the loss is not finite (lr too high?); the last finite checkpoint is " +
               (list.empty() ? std::string("none") : list.back().second);
      };
      if (rep.status == RunStatus::diverged) {
        if (M_ > 1) log_->error(divergence());
        diverged = diverged.empty() ? divergence() : diverged;
      } else if (rep.status == RunStatus::interrupted) {
        interrupted += (interrupted.empty() ? "" : " ") + rep.run_dir;
      } else {
        log_->info("{}{}", M_ > 1 ? rep.run_dir + ": " : "", final_line(rep));
      }
    }
    if (!interrupted.empty())
      log_->warn("interrupted by {} at epoch {}; checkpoint written. Resume with: {}",
                 signal_ == SIGINT ? "Ctrl-C" : "SIGTERM", epoch_,
                 M_ == 1 ? "grokking train --resume " + runs_[0].dir
                         : "grokking train --resume DIR for each of " + interrupted);
    size_t n_diverged = 0;
    for (auto& rep : reports) n_diverged += rep.status == RunStatus::diverged ? 1 : 0;
    if (n_diverged == 1) throw RunError(diverged);
    if (n_diverged > 1)
      throw RunError(std::to_string(n_diverged) + " of " + std::to_string(reports.size()) + " runs diverged; first: " + diverged);
  }

  // What each run (index k, pending ones included) has of its own.
  struct RunState {
    Config cfg;  // its seed and, packed, its optimiser's numbers
    std::string dir;
    std::vector<MetricsRow> rows;             // every evaluation so far
    int64_t held_since = -1;                  // early stopping: the first evaluation of the hold
    std::optional<RunStatus> status;          // empty while it runs (or waits), then how it ended
    bool started = false;
    int64_t last_checkpoint = -1, offset = 0;  // its last checkpoint; the pack's epoch at its epoch 0
    Clock::time_point t_start = Clock::now();
    TrainReport report;                        // filled when it ends
    int64_t seed() const { return cfg.train.seed; }
  };
  static std::vector<RunState> make_runs(std::vector<Config> cfgs, std::vector<std::string> dirs) {
    std::vector<RunState> runs(cfgs.size());
    for (size_t k = 0; k < cfgs.size(); ++k) runs[k].cfg = std::move(cfgs[k]), runs[k].dir = std::move(dirs.at(k));
    return runs;
  }
  std::vector<std::string> run_dirs() const {
    std::vector<std::string> out;
    for (auto& r : runs_) out.push_back(r.dir);
    return out;
  }

  std::vector<RunState> runs_;
  const Config& cfg_;  // what the runs share (run 0's config)
  const TrainConfig& tc_;
  const int64_t M_, N_;  // runs, and places side by side
  const bool resume_, quiet_;
  const Clock::time_point t0_ = Clock::now();
  Clock::time_point loop_start_ = Clock::now();

  int threads_ = 0;
  torch::Device device_ = torch::kCPU;
  bool fast_ = true;
  std::shared_ptr<spdlog::logger> log_;
  std::unique_ptr<Task> task_;
  TaskShape shape_;
  std::unique_ptr<Model> model_;
  std::unique_ptr<FlatAdamW> opt_;
  std::unique_ptr<GraphedStep> graph_;
  std::unique_ptr<DataSource> data_;  // chosen once per task: fixed split or fresh batches

  std::vector<size_t> slots_;  // the run in each replica of the pack
  int64_t S_ = 0, next_pending_ = 0;  // replicas now; the next run waiting for a place
  bool logged_once_ = false;  // this process has printed a progress line (the first evaluation gets one)
  int64_t epoch_ = 0, start_epoch_ = 0, last_logged_ = 0, work_at_start_ = 0;  // epoch_: the pack's
  double elapsed_before_ = 0, last_loss_ = 0;
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

bool side_by_side(const Config& c) { return c.train.batch_size == 0 || task_shape(c.task).fresh_batches; }

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
                                      bool resume, bool quiet, int64_t slots) {
  if (cfgs.empty() || cfgs.size() != dirs.size()) throw std::invalid_argument("train_packed: one config per directory");
  if (resume && cfgs.size() != 1)
    throw UsageError("--resume continues one run; resume the runs of a batched run one by one");
  for (size_t i = 1; i < cfgs.size(); ++i)
    if (pack_key(cfgs[i]) != pack_key(cfgs[0]))
      throw UsageError(dirs[i] + ": its config differs from " + dirs[0] +
                       "'s in more than the keys runs trained side by side may differ in");
  return TrainingRun(cfgs, dirs, resume, quiet, slots).run();
}

namespace {

// The device a config asks for, checked before anything is written; the error names where the
// key came from: the --set that gave it, else the config file.
void check_device(const Config& cfg, const std::string& file, const std::vector<std::string>& sets) {
  try {
    resolve_device(cfg.train.device);
  } catch (const UsageError& e) {
    std::string from = file;
    for (auto& s : sets)
      if (s.rfind("train.device=", 0) == 0) from = "--set " + s;
    throw UsageError(from + ": " + e.what());
  }
}

// --resume: the run directory holds the config; a finished run is left alone.
TrainReport resume_run(const TrainOptions& opts) {
  const std::string dir = opts.resume_dir;
  Config cfg = load_run_config(dir, opts.sets);
  check_device(cfg, dir + "/config.json", opts.sets);
  RunLock lock(dir);
  remove_temporaries(dir);
  if (!exists(resume_path(dir))) {
    // Killed before its first checkpoint: nothing to lose, start the run over.
    spdlog::warn("{}: no checkpoint yet; starting the run from epoch 0", dir);
    atomic_write(dir + "/config.json", config_file_text(cfg));
    return train(cfg, dir, false, opts.quiet);
  }
  if (exists(summary_path(dir))) {
    const Summary s = read_summary(dir);
    // Done: it stopped early, or trained every epoch it is now asked for.
    if (finished(s.status) && (s.status == RunStatus::early_stopped || s.epochs >= cfg.train.epochs)) {
      TrainReport rep;
      rep.status = s.status;
      rep.run_dir = dir;
      rep.epochs_done = s.epochs;
      spdlog::info("{}: already complete ({} epochs, {}); nothing to do", dir, rep.epochs_done, to_string(s.status));
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
  check_device(cfg, opts.config_path, opts.sets);
  std::vector<int64_t> seeds = opts.seeds.empty() ? std::vector<int64_t>{cfg.train.seed} : opts.seeds;
  if (!opts.seeds.empty() && !side_by_side(cfg))
    throw UsageError("--seeds trains runs side by side on one batch each step: with a fixed split that is the full "
                     "batch (minibatch orders differ by seed); /train/batch_size must be 0 (got " +
                     std::to_string(cfg.train.batch_size) + ")");
  check_memory(cfg, int64_t(seeds.size()), opts.seeds.empty() ? opts.config_path : "--seeds");
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
    if (opts.force) clear_run_dir(dir);
    remove_temporaries(dir);  // a process killed while writing (its config.json, say) left them
    Config one = cfg;
    one.train.seed = seeds[i];
    one.output.dir = dir;
    atomic_write(dir + "/config.json", config_file_text(one));
  }
  return train_replicas(cfg, seeds, dirs, false, opts.quiet)[0];
}

}  // namespace

std::vector<TrainReport> run_packed(const std::vector<std::string>& dirs, bool quiet, int64_t slots) {
  if (dirs.empty()) throw UsageError("--packed: give the run directories to train side by side");
  const auto side = slots > 0 ? std::min<size_t>(size_t(slots), dirs.size()) : dirs.size();
  if (side > kMaxSeeds)
    throw UsageError("--packed: " + std::to_string(side) + " runs side by side, at most " + std::to_string(kMaxSeeds) +
                     " (the limit of --seeds; give --slots)");
  for (size_t i = 0; i < dirs.size(); ++i)
    for (size_t j = 0; j < i; ++j)
      if (dirs[i] == dirs[j]) throw UsageError("--packed: " + dirs[i] + " is listed twice");
  std::vector<Config> cfgs;
  std::vector<std::unique_ptr<RunLock>> locks;
  for (auto& dir : dirs) {
    cfgs.push_back(load_run_config(dir));
    if (exists(dir + "/metrics.csv") || exists(resume_path(dir)) || !list_checkpoints(dir).empty())
      throw UsageError(dir + ": --packed starts fresh runs; this one has started (continue it with --resume " + dir + ")");
    if (!side_by_side(cfgs.back()))
      throw UsageError(dir + "/config.json: /train/batch_size: runs side by side on a fixed split train full-batch (got " +
                       std::to_string(cfgs.back().train.batch_size) + ")");
    check_device(cfgs.back(), dir + "/config.json", {});
    make_dirs(dir + "/checkpoints");
    locks.push_back(std::make_unique<RunLock>(dir));
    remove_temporaries(dir);
  }
  check_memory(cfgs[0], int64_t(side), "--packed");
  return train_packed(cfgs, dirs, false, quiet, int64_t(side));
}

TrainReport run_train(const TrainOptions& opts) { return opts.resume_dir.empty() ? new_run(opts) : resume_run(opts); }

}  // namespace grokking
