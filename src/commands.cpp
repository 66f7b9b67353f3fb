#include "grokking/commands.hpp"

#include <ATen/Parallel.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <exception>
#include <thread>

#include "grokking/analysis.hpp"
#include "grokking/checkpoint.hpp"
#include "grokking/compat.hpp"
#include "grokking/config.hpp"
#include "grokking/error.hpp"
#include "grokking/rundir.hpp"
#include "grokking/train.hpp"

namespace grokking {

void init_cli_logging() {
  auto logger = spdlog::stderr_logger_mt("grokking");
  logger->set_pattern("%v");
  spdlog::set_default_logger(logger);
}

std::string describe_exception(const std::exception& e) {
  std::string s = compat::what(e);
  // LibTorch messages can span lines; the user gets the first one.
  if (auto nl = s.find('\n'); nl != std::string::npos) s.resize(nl);
  return s;
}

int run_config_command(const std::string& config_path, const std::vector<std::string>& sets, bool doc) {
  if (doc) {
    std::printf("%-24s %-10s %s\n", "key", "default", "meaning");
    for (auto& k : config_docs()) std::printf("%-24s %-10s %s\n", k.key.c_str(), k.default_value.c_str(), k.doc.c_str());
    return 0;
  }
  Config c = config_path.empty() ? parse_config("{}", "(defaults)", sets) : load_config(config_path, sets);
  std::printf("%s\n", config_to_json(c).dump(2).c_str());
  return 0;
}

// ---------------------------------------------------------------------------------------------
// Analysis subcommands

std::vector<int64_t> parse_int_list(const std::string& text, const std::string& what) {
  std::vector<int64_t> out;
  size_t i = 0;
  auto bad = [&]() -> std::vector<int64_t> {
    throw UsageError(what + ": expected numbers like 1,2,5-7 (got '" + text + "')");
  };
  if (text.empty()) bad();
  while (i < text.size()) {
    size_t j = text.find(',', i);
    std::string part = text.substr(i, j == std::string::npos ? std::string::npos : j - i);
    auto dash = part.find('-', 1);
    try {
      size_t used = 0;
      if (dash == std::string::npos) {
        out.push_back(std::stoll(part, &used));
        if (used != part.size()) bad();
      } else {
        size_t u1 = 0, u2 = 0;
        int64_t lo = std::stoll(part.substr(0, dash), &u1), hi = std::stoll(part.substr(dash + 1), &u2);
        if (u1 != dash || u2 != part.size() - dash - 1 || hi < lo || hi - lo > 100000) bad();
        for (int64_t v = lo; v <= hi; ++v) out.push_back(v);
      }
    } catch (const std::logic_error&) {
      bad();
    }
    if (j == std::string::npos) break;
    i = j + 1;
  }
  return out;
}

namespace {

// The run directory a checkpoint belongs to ("" when it is not inside one).
std::string run_dir_of(const std::string& path, const std::string& ckpt) {
  if (is_dir(path)) return path;
  auto slash = ckpt.find_last_of('/');
  std::string parent = slash == std::string::npos ? "." : ckpt.substr(0, slash);
  if (parent.size() >= 12 && parent.substr(parent.size() - 12) == "/checkpoints") {
    std::string run = parent.substr(0, parent.size() - 12);
    if (exists(run + "/config.json")) return run;
  }
  if (parent == "checkpoints" && exists("config.json")) return ".";
  return "";
}

std::string join(const std::vector<int64_t>& v, const char* sep = " ") {
  std::string s;
  for (auto x : v) s += (s.empty() ? "" : sep) + std::to_string(x);
  return s.empty() ? "-" : s;
}

std::string num(double v, const char* f = "%.4g") {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

nlohmann::json split_json(const Split& s) { return {{"loss", s.loss}, {"acc", s.acc}}; }

struct Loaded {
  Checkpoint ck;
  std::string run_dir;
};
Loaded load_for_analysis(const std::string& path) {
  configure_threads(0);
  auto file = resolve_checkpoint(path);
  Loaded l{load_checkpoint(file), ""};
  l.run_dir = run_dir_of(path, file);
  return l;
}

}  // namespace

int run_fourier_command(const AnalysisOptions& opts) {
  auto [ck, run_dir] = load_for_analysis(opts.path);
  Model model = model_from_checkpoint(ck);
  auto r = analyse_fourier(model);
  const int64_t nf = n_frequencies(r.p);

  if (!run_dir.empty()) {
    std::string csv = "k,embed_norm,unembed_norm,neurons,key_neurons,key_embed,embed_cos,embed_sin,unembed_cos,unembed_sin\n";
    for (int64_t k = 1; k <= nf; ++k) {
      auto has = [&](const std::vector<int64_t>& v) { return std::find(v.begin(), v.end(), k) != v.end() ? 1 : 0; };
      csv += std::to_string(k) + "," + num(r.embed_norm[size_t(k - 1)], "%.9g") + "," +
             num(r.unembed_norm[size_t(k - 1)], "%.9g") + "," + std::to_string(r.neurons_per_freq[size_t(k - 1)]) +
             "," + std::to_string(has(r.key_neurons)) + "," + std::to_string(has(r.key_embed)) + "," +
             num(r.embed_cos[size_t(k - 1)], "%.9g") + "," + num(r.embed_sin[size_t(k - 1)], "%.9g") + "," +
             num(r.unembed_cos[size_t(k - 1)], "%.9g") + "," + num(r.unembed_sin[size_t(k - 1)], "%.9g") + "\n";
    }
    atomic_write(run_dir + "/fourier.csv", csv);
  }
  if (opts.quiet) return 0;
  if (opts.json) {
    nlohmann::json j = {{"checkpoint", ck.path},
                        {"epoch", ck.epoch},
                        {"p", r.p},
                        {"key_freqs_neurons", r.key_neurons},
                        {"key_freqs_embed", r.key_embed},
                        {"agree", r.agree()},
                        {"frac_neurons_clustered", r.frac_neurons_clustered},
                        {"gini_embed", r.gini_embed},
                        {"gini_unembed", r.gini_unembed},
                        {"embed_const_norm", r.embed_const_norm},
                        {"embed_norm", r.embed_norm},
                        {"unembed_norm", r.unembed_norm},
                        {"embed_cos", r.embed_cos},
                        {"embed_sin", r.embed_sin},
                        {"unembed_cos", r.unembed_cos},
                        {"unembed_sin", r.unembed_sin},
                        {"neurons_per_freq", r.neurons_per_freq},
                        {"neuron_freq", r.neuron_freq},
                        {"neuron_frac", r.neuron_frac}};
    std::printf("%s\n", j.dump(2).c_str());
    return 0;
  }
  std::printf("checkpoint %s (epoch %lld, P=%lld)\n", ck.path.c_str(), (long long)ck.epoch, (long long)r.p);
  std::printf("key frequencies, neuron method:   %s  (%.1f%% of neurons explained >= %.0f%% by one frequency)\n",
              join(r.key_neurons).c_str(), 100 * r.frac_neurons_clustered, 100 * kNeuronClusterFrac);
  std::printf("key frequencies, W_E norm method: %s  (%s)\n", join(r.key_embed).c_str(),
              r.agree() ? "the methods agree" : "the methods differ");
  std::printf("Gini of frequency norms: W_E %.3f, W_U %.3f  (near 0: spread out; near 1: sparse)\n\n", r.gini_embed,
              r.gini_unembed);
  std::printf("%4s  %10s  %8s  %8s  %10s  %8s\n", "k", "|W_E|_k", "cos", "sin", "|W_U|_k", "neurons");
  for (int64_t k = 1; k <= nf; ++k) {
    bool key = std::find(r.key_neurons.begin(), r.key_neurons.end(), k) != r.key_neurons.end() ||
               std::find(r.key_embed.begin(), r.key_embed.end(), k) != r.key_embed.end();
    const auto i = size_t(k - 1);
    std::printf("%4lld  %10.4f  %8.4f  %8.4f  %10.4f  %8lld%s\n", (long long)k, r.embed_norm[i], r.embed_cos[i],
                r.embed_sin[i], r.unembed_norm[i], (long long)r.neurons_per_freq[i], key ? "  *" : "");
  }
  return 0;
}

int run_ablate_command(const AnalysisOptions& opts) {
  auto [ck, run_dir] = load_for_analysis(opts.path);
  Model model = model_from_checkpoint(ck);
  Dataset data = make_dataset(ck.config.task);
  AblateOptions ao{opts.freqs, opts.draws, opts.seed};
  std::vector<int64_t> freqs;
  auto rows = ablate(model, data, ao, &freqs);

  if (!run_dir.empty()) {
    std::string csv = "ablation,space,freqs,train_loss,train_acc,test_loss,test_acc,all_loss,all_acc,draws\n";
    for (auto& r : rows)
      csv += "\"" + r.name + "\"," + r.space + "," + join(r.freqs, " ") + "," + num(r.train.loss, "%.9g") + "," +
             num(r.train.acc, "%.9g") + "," + num(r.test.loss, "%.9g") + "," + num(r.test.acc, "%.9g") + "," +
             num(r.all.loss, "%.9g") + "," + num(r.all.acc, "%.9g") + "," + std::to_string(r.draws) + "\n";
    atomic_write(run_dir + "/ablate.csv", csv);
  }
  if (opts.quiet) return 0;
  if (opts.json) {
    nlohmann::json j = {{"checkpoint", ck.path}, {"epoch", ck.epoch}, {"freqs", freqs}, {"ablations", nlohmann::json::array()}};
    for (auto& r : rows)
      j["ablations"].push_back({{"name", r.name}, {"space", r.space}, {"freqs", r.freqs}, {"draws", r.draws},
                                {"train", split_json(r.train)}, {"test", split_json(r.test)}, {"all", split_json(r.all)}});
    std::printf("%s\n", j.dump(2).c_str());
    return 0;
  }
  std::printf("checkpoint %s (epoch %lld); frequencies %s%s\n", ck.path.c_str(), (long long)ck.epoch,
              join(freqs).c_str(), opts.freqs.empty() ? " (key, neuron method)" : " (--freqs)");
  std::printf("%-38s %-8s %11s %9s %11s %9s %11s %9s\n", "ablation", "space", "train loss", "train acc", "test loss",
              "test acc", "all loss", "all acc");
  for (auto& r : rows)
    std::printf("%-38s %-8s %11.3e %9.4f %11.3e %9.4f %11.3e %9.4f\n", r.name.c_str(), r.space.c_str(), r.train.loss,
                r.train.acc, r.test.loss, r.test.acc, r.all.loss, r.all.acc);
  std::printf("uniform guess: loss ln(P) = %.3f, accuracy 1/P = %.4f\n", std::log(double(ck.config.task.p)),
              1.0 / double(ck.config.task.p));
  return 0;
}

int run_progress_command(const AnalysisOptions& opts) {
  const std::string dir = opts.path;
  if (!is_dir(dir)) throw UsageError(dir + ": progress takes a run directory");
  auto list = list_checkpoints(dir);
  if (list.empty()) throw RunError(dir + ": no checkpoints in " + dir + "/checkpoints");
  const auto t0 = std::chrono::steady_clock::now();
  configure_threads(1);

  // Key frequencies of the final model, applied to every checkpoint (as the paper does).
  auto final_ck = load_checkpoint(list.back().second);
  std::vector<int64_t> key = opts.freqs;
  if (key.empty()) key = analyse_fourier(model_from_checkpoint(final_ck)).key_neurons;
  if (final_ck.config.task.operation != "add")
    throw UsageError("progress measures use the cos/sin(w(a+b)) directions: defined for operation 'add' only");
  Dataset data = make_dataset(final_ck.config.task);

  const auto shape_of = [](const Config& c) {
    auto j = config_to_json(c);
    return nlohmann::json{{"task", j["task"]}, {"model", j["model"]}};
  };
  auto measure = [&](const std::string& path) {
    auto ck = load_checkpoint(path);
    if (shape_of(ck.config) != shape_of(final_ck.config))
      throw RunError(path + ": task/model config differs from the run's final checkpoint " + list.back().second +
                     " (a checkpoint from another run?)");
    Model m = model_from_checkpoint(ck);
    auto lm = loss_measures(m, data, key);
    return ProgressRow{ck.epoch, lm.train_loss, lm.test_loss, lm.train_acc, lm.test_acc, lm.restricted_loss,
                       lm.excluded_loss, gini(frequency_norms(m.param("embed.W_E").detach().narrow(0, 0, ck.config.task.p))),
                       m.sum_squared_weights()};
  };
  // Checkpoints are independent: one worker thread per core, each with single-threaded kernels
  // and BLAS (configure_threads(1) above), takes the next checkpoint until none is left. The
  // first failing checkpoint in epoch order is the one reported.
  std::vector<ProgressRow> rows(list.size());
  std::vector<std::exception_ptr> errors(list.size());
  std::atomic<size_t> next{0};
  auto work = [&] {
    at::set_num_threads(1);  // OpenMP's thread count is per thread: new threads start at all cores
    for (size_t i; (i = next++) < list.size();) {
      try {
        rows[i] = measure(list[i].second);
      } catch (...) {
        errors[i] = std::current_exception();
        next = list.size();  // stop handing out work
      }
    }
  };
  const size_t workers = std::min<size_t>(list.size(), size_t(usable_cpus()));
  std::vector<std::thread> pool;
  try {
    for (size_t w = 1; w < workers; ++w) pool.emplace_back(work);
  } catch (const std::system_error&) {
    // No more threads to be had: the ones started and this one share the work.
  }
  work();
  for (auto& t : pool) t.join();
  for (auto& e : errors)
    if (e) std::rethrow_exception(e);
  std::string csv = "epoch,train_loss,test_loss,train_acc,test_acc,restricted_loss,excluded_loss,gini,sum_sq_weights\n";
  for (auto& r : rows)
    csv += std::to_string(r.epoch) + "," + num(r.train_loss, "%.9g") + "," + num(r.test_loss, "%.9g") + "," +
           num(r.train_acc, "%.9g") + "," + num(r.test_acc, "%.9g") + "," + num(r.restricted_loss, "%.9g") + "," +
           num(r.excluded_loss, "%.9g") + "," + num(r.gini, "%.9g") + "," + num(r.sum_sq_weights, "%.9g") + "\n";
  atomic_write(dir + "/progress.csv", csv);
  auto ph = detect_phases(rows);
  auto opt_epoch = [](const std::optional<int64_t>& e) { return e ? nlohmann::json(*e) : nlohmann::json(); };
  nlohmann::json phases = {{"grokked", ph.grokked},
                           {"key_freqs", key},
                           {"memorisation", {{"start", 0}, {"end", opt_epoch(ph.memorisation_end)}}},
                           {"circuit_formation", {{"start", opt_epoch(ph.memorisation_end)}, {"end", opt_epoch(ph.circuit_formation_end)}}},
                           {"cleanup", {{"start", opt_epoch(ph.circuit_formation_end)}, {"end", opt_epoch(ph.cleanup_end)}}},
                           {"note", ph.note}};
  if (exists(dir + "/summary.json")) {
    auto s = read_json_file(dir + "/summary.json");
    s["phases"] = phases;
    atomic_write(dir + "/summary.json", s.dump(2) + "\n");
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (opts.quiet) return 0;
  if (opts.json) {
    nlohmann::json j = {{"run_dir", dir}, {"checkpoints", rows.size()}, {"seconds", secs}, {"phases", phases}};
    std::printf("%s\n", j.dump(2).c_str());
    return 0;
  }
  auto e = [](const std::optional<int64_t>& v) { return v ? std::to_string(*v) : std::string("?"); };
  std::printf("%s: %zu checkpoints in %.1fs; key frequencies %s -> %s/progress.csv\n", dir.c_str(), rows.size(), secs,
              join(key).c_str(), dir.c_str());
  std::printf("%8s %11s %11s %9s %11s %11s %7s %10s\n", "epoch", "train loss", "test loss", "test acc", "restricted",
              "excluded", "gini", "sum w^2");
  const size_t stride = std::max<size_t>(1, rows.size() / 25);
  for (size_t i = 0; i < rows.size(); ++i)
    if (i % stride == 0 || i + 1 == rows.size()) {
      auto& r = rows[i];
      std::printf("%8lld %11.3e %11.3e %9.4f %11.3e %11.3e %7.3f %10.1f\n", (long long)r.epoch, r.train_loss,
                  r.test_loss, r.test_acc, r.restricted_loss, r.excluded_loss, r.gini, r.sum_sq_weights);
    }
  if (ph.grokked)
    std::printf("phases: memorisation 0-%s | circuit formation %s-%s | cleanup %s-%s\n", e(ph.memorisation_end).c_str(),
                e(ph.memorisation_end).c_str(), e(ph.circuit_formation_end).c_str(),
                e(ph.circuit_formation_end).c_str(), e(ph.cleanup_end).c_str());
  else
    std::printf("phases: %s%s\n", ph.note.c_str(),
                ph.memorisation_end ? (" (memorisation ended at " + e(ph.memorisation_end) + ")").c_str() : "");
  return 0;
}

}  // namespace grokking
