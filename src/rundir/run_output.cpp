#include "grokking/run_output.hpp"

#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstdio>

#include "grokking/compat.hpp"
#include "grokking/text.hpp"

namespace grokking {

std::shared_ptr<spdlog::logger> make_run_logger(const std::vector<std::string>& run_dirs, bool quiet) {
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

void ProgressBar::update(int64_t epoch, int64_t total, double epochs_per_s) {
  const auto now = std::chrono::steady_clock::now();
  if (!enabled_ || std::chrono::duration<double>(now - last_).count() < 0.2) return;
  last_ = now;
  const int width = 30;
  const auto filled = size_t(double(width) * double(epoch) / double(total));
  std::string bar(filled, '#');
  bar.resize(size_t(width), '.');
  std::fprintf(stderr, "\r[%s] %lld/%lld  %.0f ep/s  eta %s\033[K", bar.c_str(), (long long)epoch, (long long)total,
               epochs_per_s, format_duration(double(total - epoch) / std::max(epochs_per_s, 1e-9)).c_str());
  std::fflush(stderr);
  shown_ = true;
}

void ProgressBar::clear() {
  if (shown_) std::fprintf(stderr, "\r\033[K"), std::fflush(stderr);
  shown_ = false;
}

std::string progress_line(int64_t epoch, int64_t epochs, const std::vector<MetricsRow>& latest, double epochs_per_s,
                          const std::string& unit) {
  std::string figures;
  const bool acc = !latest.empty() && std::isfinite(latest[0].test_acc);  // a task without accuracy: losses only
  if (latest.size() == 1) {
    const auto& r = latest[0];
    figures = "train " + format_number(r.train_loss, "%.2e") + " | test " + format_number(r.test_loss, "%.2e");
    if (acc) figures += " | acc " + format_number(r.train_acc, "%.3f") + "/" + format_number(r.test_acc, "%.3f");
  } else {
    double lo = 1e300, hi = -1e300, mean = 0;
    for (auto& r : latest) {
      const double v = acc ? r.test_acc : r.test_loss;
      lo = std::min(lo, v);
      hi = std::max(hi, v);
      mean += v / double(latest.size());
    }
    const char* fmt = acc ? "%.3f" : "%.3g";
    figures = std::string(acc ? "test acc" : "test loss") + " over " + std::to_string(latest.size()) + " models min " +
              format_number(lo, fmt) + " mean " + format_number(mean, fmt) + " max " + format_number(hi, fmt);
  }
  return unit + " " + std::to_string(epoch) + "/" + std::to_string(epochs) + " | " + figures + " | " +
         format_number(epochs_per_s, "%.0f") + " " + (unit == "step" ? "steps" : "ep") + "/s | eta " +
         format_duration(double(epochs - epoch) / std::max(epochs_per_s, 1e-9));
}

std::string final_line(const TrainReport& rep) {
  auto epoch_text = [](const std::optional<int64_t>& e) { return e ? std::to_string(*e) : std::string("never"); };
  const std::string unit = rep.fresh_batches ? " steps" : " epochs";
  std::string out = std::string(rep.status == RunStatus::completed ? "done" : "early stop") + " after " +
                    std::to_string(rep.epochs_done) + unit + " in " + format_duration(rep.wall_s);
  // Memorisation and grokking are milestones of a fixed split.
  if (!rep.fresh_batches)
    out += ": " + (rep.milestones.memorised ? "memorised at epoch " + epoch_text(rep.milestones.memorised)
                                            : std::string("never memorised")) +
           ", " + (rep.milestones.grokked ? "grokked at epoch " + epoch_text(rep.milestones.grokked)
                                          : std::string("never grokked"));
  out += " | final train " + format_number(rep.final.train_loss, "%.2e") + " test " +
         format_number(rep.final.test_loss, "%.2e");
  if (std::isfinite(rep.final.test_acc))
    out += " acc " + format_number(rep.final.train_acc, "%.3f") + "/" + format_number(rep.final.test_acc, "%.3f");
  return out;
}

Summary summary_of(const TrainReport& rep, const RunFacts& facts, int64_t seed, const std::string& weights_checksum,
                   double wall_time_s, double epochs_per_s) {
  const auto& m = rep.milestones;
  Summary s;
  s.status = rep.status;
  s.task_kind = facts.task_kind;
  s.model_kind = facts.model_kind;
  s.epochs = rep.epochs_done;
  s.epochs_planned = facts.epochs_planned;
  s.final = rep.final;
  s.memorised_epoch = m.memorised;
  s.grokked_epoch = m.grokked;
  s.grad_weight_cos_peak = rep.grad_weight_cos_peak;
  s.grad_weight_cos_peak_epoch = rep.grad_weight_cos_peak_epoch;
  if (m.memorised && m.grokked) s.grokking_delay = *m.grokked - *m.memorised;
  s.milestone_resolution_epochs = facts.eval_every;
  s.wall_time_s = wall_time_s;
  s.epochs_per_s = epochs_per_s;
  s.n_train = facts.n_train;
  s.n_test = facts.n_test;
  s.n_params = facts.n_params;
  s.weights_checksum = weights_checksum;
  s.seed = seed;
  s.seeds_side_by_side = facts.seeds_side_by_side;
  s.device = facts.device;
  s.threads = facts.threads;
  s.blas = facts.blas;
  s.flush_denormal = facts.flush_denormal;
  s.path = facts.path;
  s.loss = facts.loss;
  s.loss_dtype = facts.loss_dtype;
  s.cuda_graph = facts.cuda_graph;
  s.libtorch = compat::torch_version();
  s.grokking_version = GROKKING_VERSION;
  return s;
}

}  // namespace grokking
