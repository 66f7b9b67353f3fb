#include "grokking/sweep.hpp"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstring>
#include <cstdio>
#include <map>
#include <mutex>
#include <thread>

#include "grokking/config.hpp"
#include "grokking/error.hpp"
#include "grokking/limits.hpp"
#include "grokking/rundir.hpp"
#include "grokking/signals.hpp"
#include "grokking/text.hpp"
#include "grokking/threads.hpp"
#include "grokking/train.hpp"

namespace grokking {
using nlohmann::json;

namespace {

// A value as it appears in a directory name: 0.3, 1e-05, add, true.
std::string value_text(const json& v) {
  if (v.is_string()) return v.get<std::string>();
  return v.dump();
}

std::string safe_name(std::string s) {
  for (auto& ch : s)
    if (!(std::isalnum(static_cast<unsigned char>(ch)) || ch == '.' || ch == '=' || ch == '-' || ch == '_' || ch == '+'))
      ch = '-';
  return s;
}

std::string dir_of(const std::string& path) {
  auto slash = path.find_last_of('/');
  return slash == std::string::npos ? "." : path.substr(0, slash);
}

std::string stem_of(const std::string& path) {
  auto slash = path.find_last_of('/');
  std::string s = slash == std::string::npos ? path : path.substr(slash + 1);
  if (s.size() > 5 && s.substr(s.size() - 5) == ".json") s.resize(s.size() - 5);
  return s;
}

}  // namespace

namespace {

using Axes = std::vector<std::pair<std::string, std::vector<json>>>;

// The base config: a path (relative to the sweep file) or inline.
Config sweep_base(const json& j, const std::string& path) {
  Config base;
  if (!j.contains("base") || j["base"].is_object()) {
    base = config_from_json(j.value("base", json::object()), path + " (base)");
  } else if (j["base"].is_string()) {
    std::string p = j["base"].get<std::string>();
    if (!p.empty() && p[0] != '/' && !exists(p)) p = dir_of(path) + "/" + p;
    base = load_config(p);
  } else {
    throw UsageError(path + ": /base: must be a config path or an inline config object");
  }
  return base;
}

// The grid's axes, keys in file order of nlohmann (sorted); their keys join plan_keys.
Axes sweep_grid(const json& j, const std::string& path, std::vector<std::string>& plan_keys) {
  std::vector<std::pair<std::string, std::vector<json>>> axes;
  if (j.contains("grid")) {
    if (!j["grid"].is_object()) throw UsageError(path + ": /grid: must be an object of \"section.key\": [values]");
    for (auto& [key, values] : j["grid"].items()) {
      if (!values.is_array() || values.empty())
        throw UsageError(path + ": /grid/" + short_text(key) + ": must be a non-empty list of values");
      axes.emplace_back(key, std::vector<json>(values.begin(), values.end()));
      plan_keys.push_back(key);
    }
  }
  return axes;
}

// The arms, each one crossed with the grid (typically arms x seeds); a key an arm leaves out
// takes the base config's value, so every run carries every arm key (compare --by needs it).
std::vector<json> sweep_arms(const json& j, const std::string& path, const Axes& axes, const json& plan_base,
                             std::vector<std::string>& plan_keys) {
  std::vector<json> arms;
  if (j.contains("arms")) {
    if (!j["arms"].is_array() || j["arms"].empty())
      throw UsageError(path + ": /arms: must be a non-empty list of {\"section.key\": value} objects");
    for (size_t i = 0; i < j["arms"].size(); ++i) {
      const json& arm = j["arms"][i];
      if (!arm.is_object() || arm.empty())
        throw UsageError(path + ": /arms/" + std::to_string(i) + ": must be a non-empty object");
      for (auto& item : arm.items()) {
        const std::string k = item.key();  // (a lambda cannot capture a structured binding before C++20)
        if (std::any_of(axes.begin(), axes.end(), [&](const auto& a) { return a.first == k; }))
          throw UsageError(path + ": /arms/" + std::to_string(i) + "/" + short_text(k) + ": also a grid key; give it in one place");
        if (std::find(plan_keys.begin(), plan_keys.end(), k) == plan_keys.end()) plan_keys.push_back(k);
      }
    }
    for (auto& arm : j["arms"]) {
      json full = json::object();
      for (auto& k : plan_keys) {
        if (arm.contains(k)) { full[k] = arm[k]; continue; }
        if (std::any_of(axes.begin(), axes.end(), [&](const auto& a) { return a.first == k; })) continue;
        const auto dot = k.find('.');
        const json* v = nullptr;
        if (dot != std::string::npos && plan_base.contains(k.substr(0, dot)) &&
            plan_base[k.substr(0, dot)].contains(k.substr(dot + 1)))
          v = &plan_base[k.substr(0, dot)][k.substr(dot + 1)];
        if (!v) throw UsageError(path + ": /arms: " + short_text(k) + ": not a config key (section.key)");
        full[k] = *v;
      }
      arms.push_back(full);
    }
  }
  return arms;
}

// Refused before the product is enumerated: a grid of a few long axes is billions of runs.
void check_run_count(const json& j, const std::string& path, const Axes& axes, const std::vector<json>& arms) {
  const size_t n_points = j.contains("points") && j["points"].is_array() ? j["points"].size() : 0;
  const uint64_t huge = uint64_t(1) << 62;  // saturates the product: "more than" beyond it
  uint64_t n_runs = axes.empty() ? 0 : 1;
  for (auto& axis : axes) n_runs = n_runs > huge / axis.second.size() ? huge : n_runs * axis.second.size();
  if (!arms.empty()) n_runs = n_runs > huge / arms.size() ? huge : std::max<uint64_t>(n_runs, 1) * arms.size();
  n_runs += n_points;
  if (n_runs > kMaxSweepRuns)
    throw UsageError(path + ": /grid: " + (n_runs >= huge ? "more than " + std::to_string(huge) : std::to_string(n_runs)) +
                     " runs, at most " + std::to_string(kMaxSweepRuns) +
                     " (each run is a directory and a training process; split the study into several sweep files)");
}

// Every point of the grid crossed with the arms (or the arms alone).
std::vector<json> grid_points(const Axes& axes, const std::vector<json>& arms) {
  std::vector<json> combos;
  if (!axes.empty()) {
    std::vector<size_t> idx(axes.size(), 0);
    for (;;) {
      json c = json::object();
      for (size_t a = 0; a < axes.size(); ++a) c[axes[a].first] = axes[a].second[idx[a]];
      if (arms.empty()) combos.push_back(c);
      for (auto& arm : arms) {
        json ac = arm;
        ac.update(c);
        combos.push_back(ac);
      }
      size_t a = axes.size();
      while (a > 0 && ++idx[a - 1] == axes[a - 1].second.size()) idx[--a] = 0;
      if (a == 0) break;
    }
  }
  if (axes.empty())
    for (auto& arm : arms) combos.push_back(arm);
  return combos;
}

// The sweep's own points, after the grid's; their keys join plan_keys.
void add_points(const json& j, const std::string& path, std::vector<std::string>& plan_keys, std::vector<json>& combos) {
  if (j.contains("points")) {
    if (!j["points"].is_array()) throw UsageError(path + ": /points: must be a list of {\"section.key\": value} objects");
    for (size_t i = 0; i < j["points"].size(); ++i) {
      auto& pt = j["points"][i];
      if (!pt.is_object() || pt.empty())
        throw UsageError(path + ": /points/" + std::to_string(i) + ": must be a non-empty object");
      for (auto& [k, v] : pt.items())
        if (std::find(plan_keys.begin(), plan_keys.end(), k) == plan_keys.end()) plan_keys.push_back(k);
      combos.push_back(pt);
    }
  }
}

// Every run named by its values and validated now, before anything is written.
std::vector<SweepRun> validated_runs(const std::vector<json>& combos, const json& plan_base, const std::string& path) {
  std::vector<SweepRun> runs;
  std::map<std::string, int> seen;
  for (size_t i = 0; i < combos.size(); ++i) {
    SweepRun r;
    r.values = combos[i];
    std::string name;
    for (auto& [k, v] : combos[i].items()) {
      r.sets.push_back(k + "=" + v.dump());
      name += (name.empty() ? "" : "_") + k + "=" + value_text(v);
    }
    r.name = safe_name(name);
    // A run is a directory named by its values: a file system takes names of up to 255 bytes.
    if (r.name.size() > 200)
      throw UsageError(path + ": run " + short_text(r.name) + ": its values make a directory name of " +
                       std::to_string(r.name.size()) + " characters, at most 200 (shorten the values)");
    if (seen[r.name]++) throw UsageError(path + ": two runs share the name " + r.name + " (a duplicate point?)");
    try {
      parse_config(plan_base.dump(), path, r.sets);
    } catch (const UsageError& e) {
      throw UsageError(path + ": run " + r.name + ": " + e.what());
    }
    runs.push_back(r);
  }
  return runs;
}

}  // namespace

SweepPlan load_sweep(const std::string& path, const std::string& dir_override) {
  json j = parse_json_strict(read_text_file(path), path);
  if (!j.is_object()) throw UsageError(path + ": /: a sweep file is a JSON object");
  for (auto& [k, v] : j.items())
    if (k != "base" && k != "grid" && k != "arms" && k != "points" && k != "dir")
      throw UsageError(path + ": /" + k + ": unknown key; allowed: base, grid, arms, points, dir");
  SweepPlan plan;
  plan.base = config_to_json(sweep_base(j, path));
  plan.dir = !dir_override.empty() ? dir_override : j.value("dir", std::string("sweeps/") + stem_of(path));
  const Axes axes = sweep_grid(j, path, plan.keys);
  const auto arms = sweep_arms(j, path, axes, plan.base, plan.keys);
  check_run_count(j, path, axes, arms);
  auto combos = grid_points(axes, arms);
  add_points(j, path, plan.keys, combos);
  if (combos.empty()) throw UsageError(path + ": the sweep has no runs (give a grid or points)");
  plan.runs = validated_runs(combos, plan.base, path);
  return plan;
}

std::pair<int64_t, int64_t> parse_shard(const std::string& text) {
  long long i = -1, n = -1;
  char tail = 0;
  if (std::sscanf(text.c_str(), "%lld/%lld%c", &i, &n, &tail) != 2 || n < 1 || i < 0 || i >= n)
    throw UsageError("--shard " + text + ": expected i/n with 0 <= i < n, e.g. --shard 0/4");
  return {i, n};
}

std::vector<SweepRun> shard(const std::vector<SweepRun>& runs, int64_t i, int64_t n) {
  std::vector<SweepRun> out;
  for (size_t j = 0; j < runs.size(); ++j)
    if (int64_t(j) % n == i) out.push_back(runs[j]);
  return out;
}

namespace {

// Where a run of a sweep stands.
enum class RunState {
  fresh,       // nothing of it yet
  unfinished,  // started, interrupted or diverged (or its summary unreadable): resumed or restarted
  finished,    // completed or stopped early
};
const char* state_name(RunState s) {
  return s == RunState::fresh ? "not started" : s == RunState::finished ? "finished" : "not finished";
}

RunState run_state(const std::string& run_dir) {
  if (exists(summary_path(run_dir))) {
    try {
      return finished(read_summary(run_dir).status) ? RunState::finished : RunState::unfinished;
    } catch (const RunError&) {
      return RunState::unfinished;
    }
  }
  // A config but no summary: a process was killed before its first checkpoint or while
  // training; `train --resume` continues it or starts it over. (Called with the claim held.)
  if (exists(run_dir + "/checkpoints/resume.pt") || exists(run_dir + "/config.json")) return RunState::unfinished;
  return RunState::fresh;
}

// A run a pack may take: nothing of it trained yet (at most the config.json of a pack that was
// killed before the run's turn came).
bool never_started(const std::string& run_dir) {
  return !exists(summary_path(run_dir)) && !exists(run_dir + "/metrics.csv") &&
         !exists(run_dir + "/checkpoints/resume.pt") && list_checkpoints(run_dir).empty();
}

// The claim on one run of a sweep: an flock on <sweep>/claims/<run>, taken before the run's
// status is read. Whichever process gets it trains the run; the others skip it. The training
// child inherits the descriptor, so the claim lasts as long as the training does, even when
// the sweep process that started it is killed. The kernel releases it when both are gone.
class RunClaim {
 public:
  RunClaim(const std::string& sweep_dir, const std::string& run) {
    const std::string path = sweep_dir + "/claims/" + run;
    fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd_ < 0) throw RunError(path + ": cannot open the claim file: " + std::strerror(errno));
    if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
      ::close(fd_);
      fd_ = -1;
    }
  }
  ~RunClaim() {
    if (fd_ >= 0) ::close(fd_);
  }
  RunClaim(const RunClaim&) = delete;
  RunClaim& operator=(const RunClaim&) = delete;
  bool held() const { return fd_ >= 0; }
  int fd() const { return fd_; }

 private:
  int fd_ = -1;
};

// Runs `args` (this binary and its arguments) as a child process that holds `claims` too;
// returns its exit code. The child runs in a process group of its own, so that a Ctrl-C at the
// terminal reaches the sweep only, which passes it on once (`signals`): the child checkpoints
// and stops (a second SIGINT would make it stop at once, without its last checkpoint).
int run_child(const std::vector<std::string>& args, const std::vector<const RunClaim*>& claims,
              const SignalScope& signals) {
  const pid_t parent = ::getpid();
  pid_t pid = ::fork();
  if (pid < 0) throw RunError("fork failed");
  if (pid == 0) {
    ::setpgid(0, 0);
    // The training ends with the sweep that started it (checkpoint and exit), even when the sweep
    // is killed with SIGKILL: no orphan keeps a run's claim from the next sweep process.
    ::prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (::getppid() != parent) std::_Exit(143);  // the sweep died before the line above
    ::signal(SIGINT, SIG_DFL);  // a sweep started in the background of a script ignores SIGINT: not its runs
    for (auto* claim : claims) ::fcntl(claim->fd(), F_SETFD, 0);  // the child's copies survive exec: it holds the claims
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    ::execv(argv[0], argv.data());
    std::_Exit(127);
  }
  int st = 0;
  bool passed_on = false;
  for (;;) {
    const pid_t r = ::waitpid(pid, &st, WNOHANG);
    if (r == pid || (r < 0 && errno != EINTR)) break;
    if (const int sig = signals.received(); sig != 0 && !passed_on) {
      ::kill(pid, sig);
      passed_on = true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

// The run's resolved config, as `grokking train base.json --out DIR --set ...` would write it.
Config run_config(const SweepPlan& plan, const SweepRun& run) {
  Config c = load_config(plan.dir + "/base.json", run.sets);
  c.output.dir = plan.dir + "/runs/" + run.name;
  return c;
}

// The threads a run trains on: --threads, else its config's train.threads (base or point) where
// set, else `split` (the cores shared among the runs at once).
int64_t run_threads(const SweepOptions& opts, const SweepPlan& plan, const SweepRun& run, int64_t split) {
  if (opts.threads > 0) return opts.threads;
  const int64_t own = run_config(plan, run).train.threads;
  return own > 0 ? own : split;
}

// Runs `grokking train` for one run of the plan as a child process; returns its exit code.
int train_child(const SweepOptions& opts, const SweepPlan& plan, const SweepRun& run, int64_t threads,
                const RunClaim& claim, const SignalScope& signals) {
  const std::string run_dir = plan.dir + "/runs/" + run.name;
  std::vector<std::string> args = {opts.self_exe, "train"};
  if (run_state(run_dir) == RunState::unfinished) {
    args.insert(args.end(), {"--resume", run_dir});
  } else {
    args.insert(args.end(), {plan.dir + "/base.json", "--out", run_dir});
    for (auto& s : run.sets) args.insert(args.end(), {"--set", s});
  }
  // The config's (or the point's) train.threads where it sets one, or --threads, else the split.
  args.insert(args.end(), {"--set", "train.threads=" + std::to_string(run_threads(opts, plan, run, threads)), "-q"});
  if (!opts.quiet) args.push_back("--run-lines");
  return run_child(args, {&claim}, signals);
}


// The work of a sweep process: runs in plan order; with --pack N, the new runs that can train
// side by side and share a pack_key gathered into one queue (in the place of its first run),
// split into at most `jobs` queues of at least N runs (`fill_cores`: of any size, so that every
// core gets a queue). A queue trains in one process, N at a time, each place refilled from the
// queue as its run ends.
std::vector<std::vector<SweepRun>> make_packs(const SweepOptions& opts, const SweepPlan& plan,
                                              const std::vector<SweepRun>& todo, int64_t jobs, bool fill_cores) {
  std::vector<std::vector<SweepRun>> groups;
  std::map<std::string, size_t> group_of;  // pack_key -> index in groups
  for (auto& r : todo) {
    if (opts.pack <= 1 || !never_started(plan.dir + "/runs/" + r.name)) {
      groups.push_back({r});
      continue;
    }
    const Config c = run_config(plan, r);
    if (!side_by_side(c)) {
      groups.push_back({r});
      continue;
    }
    const auto [it, added] = group_of.emplace(pack_key(c), groups.size());
    if (added) groups.emplace_back();
    groups[it->second].push_back(r);
  }
  std::vector<std::vector<SweepRun>> out;
  for (auto& g : groups) {
    const auto n = int64_t(g.size());
    const int64_t parts =
        std::max<int64_t>(1, std::min<int64_t>(jobs, fill_cores ? n : n / std::max<int64_t>(opts.pack, 1)));
    // Round robin, not in blocks: a grid's neighbours differ in one key (often the one that sets
    // how long a run trains), so blocks would give one queue the long runs and another the short.
    const size_t first = out.size();
    out.resize(first + size_t(parts));
    for (int64_t i = 0; i < n; ++i) out[first + size_t(i % parts)].push_back(g[size_t(i)]);
  }
  return out;
}

}  // namespace

namespace {
size_t aggregate_plan(const std::string& dir, const json& plan);
}

size_t aggregate_sweep(const std::string& dir) {
  const json plan = read_json_file(dir + "/plan.json");
  try {
    return aggregate_plan(dir, plan);
  } catch (const json::exception& e) {  // plan.json (or a summary.json) edited by hand
    std::string msg = e.what();
    if (auto pos = msg.find("] "); pos != std::string::npos) msg = msg.substr(pos + 2);
    throw RunError(dir + "/plan.json: not a plan grokking wrote: " + msg);
  }
}

namespace {
size_t aggregate_plan(const std::string& dir, const json& plan) {
  std::vector<std::string> keys = plan.at("keys").get<std::vector<std::string>>();
  std::vector<std::string> columns = {"name"};
  columns.insert(columns.end(), keys.begin(), keys.end());
  for (auto c : {"status", "epochs", "memorised_epoch", "grokked_epoch", "grokking_delay", "final_train_acc",
                 "final_test_acc", "final_train_loss", "final_test_loss", "wall_time_s", "key_freqs",
                 "memorisation_end", "circuit_formation_end", "cleanup_end"})
    columns.push_back(c);
  CsvWriter csv(columns);
  size_t rows = 0;
  for (auto& run : plan.at("runs")) {
    const std::string name = run.at("name").get<std::string>(), run_dir = dir + "/runs/" + name;
    if (!exists(summary_path(run_dir))) continue;
    Summary s;
    try {
      s = read_summary(run_dir);
    } catch (const RunError&) {
      continue;
    }
    csv.field(name);
    for (auto& k : keys) csv.field(run.at("values").value(k, json()));
    std::string key_freqs;
    if (s.phases.is_object() && s.phases.contains("key_freqs"))
      for (auto& k : s.phases["key_freqs"]) key_freqs += (key_freqs.empty() ? "" : " ") + k.dump();
    csv.field(to_string(s.status)).field(s.epochs).field(optional_json(s.memorised_epoch));
    csv.field(optional_json(s.grokked_epoch)).field(optional_json(s.grokking_delay));
    // A task without accuracy leaves its accuracy columns empty.
    if (s.has_accuracy()) csv.field(s.final.train_acc).field(s.final.test_acc);
    else csv.field(nlohmann::json()).field(nlohmann::json());
    csv.field(s.final.train_loss).field(s.final.test_loss);
    csv.field(s.wall_time_s).field(key_freqs);
    // Boundaries that fail the paper's definitions of the phases are not reported as phases.
    const bool phases_hold = s.phases.is_object() && s.phases.value("definitions_hold", json()) != json(false);
    for (auto phase : {"memorisation", "circuit_formation", "cleanup"})
      csv.field(phases_hold ? s.phases[phase]["end"] : json());
    csv.end_row();
    ++rows;
  }
  atomic_write(dir + "/sweep.csv", csv.text());
  return rows;
}
}  // namespace

namespace {

// The sweep directory: base config and plan, identical for every shard.
void prepare_sweep_dir(const SweepPlan& plan) {
  try {
    make_dirs(plan.dir + "/runs");
    make_dirs(plan.dir + "/claims");
  } catch (const RunError& e) {
    throw UsageError(e.what());
  }
  atomic_write(plan.dir + "/base.json", plan.base.dump(2) + "\n");
  json pj = {{"keys", plan.keys}, {"runs", json::array()}};
  for (auto& r : plan.runs) pj["runs"].push_back({{"name", r.name}, {"sets", r.sets}, {"values", r.values}});
  atomic_write(plan.dir + "/plan.json", pj.dump(2) + "\n");
}

// --list: a run a line, its name, a tab, then its shell-quoted overrides.
void print_list(const std::vector<SweepRun>& runs) {
  for (auto& r : runs) {
    std::printf("%s\t", r.name.c_str());
    for (size_t k = 0; k < r.sets.size(); ++k) {
      std::string q;
      for (char ch : r.sets[k]) q += ch == '\'' ? std::string("'\\''") : std::string(1, ch);
      std::printf("%s--set '%s'", k ? " " : "", q.c_str());
    }
    std::printf("\n");
  }
}

std::string plural_threads(int64_t n) { return std::to_string(n) + " thread" + (n == 1 ? "" : "s"); }

// The trainings of one sweep process: its packs, `jobs` at a time, each run or pack in a child
// process under its claims; Ctrl-C or SIGTERM starts no new run and passes the signal on; runs
// another process held are tried again at the end.
class SweepProcess {
 public:
  SweepProcess(const SweepOptions& opts, const SweepPlan& plan, const std::vector<SweepRun>& runs, int64_t threads)
      : opts_(opts), plan_(plan), runs_(runs), threads_(threads) {}

  void train(const std::vector<std::vector<SweepRun>>& packs, int64_t jobs) {
    std::atomic<size_t> next{0};
    std::vector<std::thread> workers;
    for (int64_t w = 0; w < jobs; ++w)
      workers.emplace_back([&] {
        for (size_t k; !signals_.received() && (k = next++) < packs.size();) {
          if (packs[k].size() > 1) train_pack(packs[k]);
          else train_one(packs[k][0]);
        }
      });
    for (auto& t : workers) t.join();
  }

  // The runs another process held: those it left unfinished (it was stopped or killed) are
  // trained here now; those it still holds are returned.
  std::vector<std::string> retry_skipped() {
    retrying_ = true;
    std::vector<std::string> held_elsewhere;
    for (auto& r : skipped_) {
      if (signals_.received() || finished_run(r.name)) continue;
      bool free = false;
      {
        RunClaim probe(plan_.dir, r.name);
        free = probe.held();
      }
      if (!free) {
        held_elsewhere.push_back(r.name);
        continue;
      }
      if (!opts_.quiet) spdlog::info("{}: released unfinished by the process that held it: training it here", r.name);
      train_one(r);
      if (!finished_run(r.name) && !signals_.received()) held_elsewhere.push_back(r.name);
    }
    return held_elsewhere;
  }

  int signal() const { return signals_.received(); }
  int failures() const { return failures_.load(); }

 private:
  bool finished_run(const std::string& name) const { return run_state(plan_.dir + "/runs/" + name) == RunState::finished; }
  void interrupted(const std::string& name) const {
    spdlog::warn("{}: interrupted; the same sweep command resumes it", name);
  }
  void claimed_elsewhere(const std::string& name) {
    spdlog::warn("{}: claimed by another sweep process (another shard or machine is training it), skipped", name);
    std::lock_guard<std::mutex> lock(skipped_mutex_);
    if (retrying_) return;
    for (auto& r : runs_)
      if (r.name == name) skipped_.push_back(r);
  }

  // One run in a child of its own (new, or resumed), under its claim.
  void train_one(const SweepRun& run) {
    RunClaim claim(plan_.dir, run.name);
    if (!claim.held()) return claimed_elsewhere(run.name);
    if (finished_run(run.name)) {  // by another process meanwhile
      if (!opts_.quiet) spdlog::info("{}: finished, skipped", run.name);
      return;
    }
    int rc = train_child(opts_, plan_, run, threads_, claim, signals_);
    if (signals_.received()) {
      interrupted(run.name);
    } else if (rc == 2 && run_state(plan_.dir + "/runs/" + run.name) != RunState::fresh) {
      spdlog::warn("{}: busy (another shard or machine is training it), skipped", run.name);
    } else if (rc != 0) {
      spdlog::error("{}: grokking train exited with {}", run.name, rc);
      ++failures_;
    }  // done: its training process printed its final line (--run-lines)
  }

  // A pack of several new runs: claimed run by run (one claimed elsewhere meanwhile is left to
  // that process), each directory prepared with its config.json, then one `train --packed` child.
  void train_pack(const std::vector<SweepRun>& pack) {
    std::vector<std::unique_ptr<RunClaim>> claims;
    std::vector<std::string> args = {opts_.self_exe, "train", "-q", "--slots", std::to_string(opts_.pack)};
    if (!opts_.quiet) args.push_back("--run-lines");  // a line per run as the pack goes
    args.push_back("--packed");
    std::vector<std::string> names;
    std::vector<size_t> alone;  // started meanwhile by another process, which let go of it: one by one
    for (size_t i = 0; i < pack.size(); ++i) {
      const auto& r = pack[i];
      auto claim = std::make_unique<RunClaim>(plan_.dir, r.name);
      const std::string dir = plan_.dir + "/runs/" + r.name;
      if (!claim->held()) {
        claimed_elsewhere(r.name);
        continue;
      }
      if (!never_started(dir)) {
        alone.push_back(i);
        continue;
      }
      Config c = run_config(plan_, r);
      c.train.threads = run_threads(opts_, plan_, r, threads_);
      make_dirs(dir + "/checkpoints");
      atomic_write(dir + "/config.json", config_file_text(c));
      args.push_back(dir);
      names.push_back(r.name);
      claims.push_back(std::move(claim));
    }
    if (!names.empty()) {
      std::vector<const RunClaim*> held;
      for (auto& c : claims) held.push_back(c.get());
      if (!opts_.quiet)
        spdlog::info("{} runs, {} side by side: {} ...", names.size(), std::min<int64_t>(opts_.pack, int64_t(names.size())),
                     names[0]);
      const int rc = run_child(args, held, signals_);
      for (auto& name : names) {
        const auto st = run_state(plan_.dir + "/runs/" + name);
        if (st != RunState::finished && signals_.received()) {
          interrupted(name);
        } else if (st == RunState::finished) {
          // its training process printed its final line (--run-lines)
        } else {
          spdlog::error("{}: {} (grokking train --packed exited with {})", name, state_name(st), rc);
          ++failures_;
        }
      }
    }
    claims.clear();
    for (auto i : alone)
      if (!signals_.received()) train_one(pack[i]);
  }

  const SweepOptions& opts_;
  const SweepPlan& plan_;
  const std::vector<SweepRun>& runs_;
  const int64_t threads_;
  SignalScope signals_;  // Ctrl-C or SIGTERM: no new run starts, the running ones checkpoint and stop
  std::atomic<int> failures_{0};
  std::mutex skipped_mutex_;
  std::vector<SweepRun> skipped_;
  bool retrying_ = false;
};

}  // namespace

int run_sweep_command(const SweepOptions& opts) {
  if (!opts.aggregate_dir.empty()) {
    if (!exists(opts.aggregate_dir + "/plan.json"))
      throw UsageError(opts.aggregate_dir + ": not a sweep directory (no plan.json)");
    size_t n = aggregate_sweep(opts.aggregate_dir);
    spdlog::info("{}/sweep.csv: {} finished runs", opts.aggregate_dir, n);
    return 0;
  }
  if (opts.sweep_path.empty()) throw UsageError("sweep: give a SWEEP.json, or --aggregate DIR");
  SweepPlan plan = load_sweep(opts.sweep_path, opts.dir);
  auto runs = plan.runs;
  if (!opts.shard.empty()) {
    auto [i, n] = parse_shard(opts.shard);
    runs = shard(runs, i, n);
  }
  prepare_sweep_dir(plan);
  // --list prepares the directory too, so that shell loops can train from base.json.
  if (opts.list) return print_list(runs), 0;

  // ---- run what is not finished, `jobs` at a time, threads split between them ----
  std::vector<SweepRun> todo;
  for (auto& r : runs) {
    if (run_state(plan.dir + "/runs/" + r.name) == RunState::finished) {
      if (!opts.quiet) spdlog::info("{}: finished, skipped", r.name);
    } else {
      todo.push_back(r);
    }
  }
  const int64_t cores = usable_cpus();
  // --pack without --jobs on a CPU: a queue a core, one thread each. On a CPU, packing saves no
  // arithmetic (the replicas' products are as many as the runs'), and one process whose threads
  // share a pack is slower than as many one-thread processes (docs/sweeps.md).
  const bool fill_cores = opts.jobs == 0 && opts.pack > 1 && !todo.empty() &&
                          on_cpu(run_config(plan, todo.front()).train.device);
  const int64_t wanted = fill_cores ? cores : std::max<int64_t>(opts.jobs, 1);
  const auto packs = make_packs(opts, plan, todo, wanted, fill_cores);
  const int64_t jobs = std::max<int64_t>(1, std::min<int64_t>(wanted, int64_t(packs.size())));
  if (fill_cores && jobs > 1 && !opts.quiet)
    spdlog::info("{}: on the CPU, packs split into {} processes of one thread (--jobs 1 keeps one process)", plan.dir,
                 jobs);
  const int64_t threads = std::max<int64_t>(1, cores / jobs);
  if (!opts.quiet) {
    // What each run trains on, and where that number came from.
    std::string how = opts.threads > 0 ? plural_threads(opts.threads) + " each (--threads)"
                                       : plural_threads(threads) + " each where the config sets no train.threads";
    if (opts.threads == 0 && !todo.empty())
      if (const int64_t own = run_config(plan, todo.front()).train.threads; own > 0)
        how = plural_threads(own) + " each (train.threads of the config)";
    spdlog::info("{}: {} runs in this shard, {} to train, {} at a time, {}", plan.dir, runs.size(), todo.size(), jobs, how);
  }
  SweepProcess process(opts, plan, runs, threads);
  process.train(packs, jobs);
  const auto held_elsewhere = process.retry_skipped();

  // ---- the aggregate, and how the sweep ended ----
  size_t n = aggregate_sweep(plan.dir);
  if (!opts.quiet) spdlog::info("{}/sweep.csv: {} finished runs", plan.dir, n);
  if (const int sig = process.signal(); sig != 0) {
    size_t done = 0;
    for (auto& r : runs) done += run_state(plan.dir + "/runs/" + r.name) == RunState::finished ? 1 : 0;
    spdlog::warn("{}: interrupted with {} of {} runs finished; the same command resumes the rest", plan.dir, done,
                 runs.size());
    return 128 + sig;
  }
  if (process.failures() > 0)
    throw RunError(std::to_string(process.failures()) + " run(s) of the sweep failed; see their train.log");
  if (!held_elsewhere.empty()) {
    spdlog::warn("{}: {} run(s) still held by another sweep process and not in sweep.csv ({}{}); the same command "
                 "run again once it ends completes the sweep",
                 plan.dir, held_elsewhere.size(), held_elsewhere[0], held_elsewhere.size() > 1 ? ", ..." : "");
    return kExitIncomplete;
  }
  return 0;
}

}  // namespace grokking
