#include "grokking/rundir.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cinttypes>
#include <cmath>
#include <cstring>
#include <limits>
#include <sstream>

#include "grokking/analyses.hpp"
#include "grokking/config.hpp"
#include "grokking/error.hpp"
#include "grokking/limits.hpp"
#include "grokking/text.hpp"

namespace grokking {

namespace {
std::string errno_text(int err) { return std::strerror(err); }

void write_all(int fd, const char* data, size_t n, const std::string& path) {
  while (n > 0) {
    ssize_t w = ::write(fd, data, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      throw RunError(path + ": write failed: " + errno_text(errno));
    }
    data += w;
    n -= size_t(w);
  }
}

std::string parent_of(const std::string& path) {
  auto slash = path.find_last_of('/');
  return slash == std::string::npos ? "." : (slash == 0 ? "/" : path.substr(0, slash));
}
}  // namespace

void atomic_write(const std::string& path, const std::string& data) {
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw RunError(path + ": cannot write: " + errno_text(errno));
  try {
    write_all(fd, data.data(), data.size(), path);
    if (::fsync(fd) != 0) throw RunError(path + ": fsync failed: " + errno_text(errno));
  } catch (...) {
    ::close(fd);
    ::unlink(tmp.c_str());
    throw;
  }
  if (::close(fd) != 0) {
    int err = errno;
    ::unlink(tmp.c_str());
    throw RunError(path + ": write failed: " + errno_text(err));
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    int err = errno;
    ::unlink(tmp.c_str());
    throw RunError(path + ": rename failed: " + errno_text(err));
  }
  // Make the rename itself durable.
  int dfd = ::open(parent_of(path).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

void append_line(const std::string& path, const std::string& line) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) throw RunError(path + ": cannot append: " + errno_text(errno));
  std::string l = line + "\n";
  struct stat st {};
  ::fstat(fd, &st);
  try {
    write_all(fd, l.data(), l.size(), path);
    if (::fsync(fd) != 0) throw RunError(path + ": fsync failed: " + errno_text(errno));
  } catch (...) {
    // Never leave half a row behind: cut the file back to where it was.
    if (::ftruncate(fd, st.st_size) != 0) { /* the reader drops a partial last line anyway */ }
    ::close(fd);
    throw;
  }
  ::close(fd);
}

// Files of run and sweep directories are regular files that grokking wrote. Anything else (a
// FIFO would block, /dev/zero never ends) is refused before it is opened; O_NONBLOCK and the
// second check close the window where the path is swapped in between. At most the size seen
// then is read: a file that grows meanwhile (metrics.csv of a live run) is read as it was.
std::string read_file(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) throw RunError(path + ": cannot read: " + errno_text(errno));
  if (!S_ISREG(st.st_mode)) throw RunError(path + ": not a regular file");
  int fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) throw RunError(path + ": cannot read: " + errno_text(errno));
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw RunError(path + ": not a regular file");
  }
  std::string out;
  const size_t size = size_t(st.st_size);
  char buf[1 << 16];
  while (out.size() < size) {
    ssize_t r = ::read(fd, buf, std::min(sizeof buf, size - out.size()));
    if (r < 0) {
      if (errno == EINTR) continue;
      int err = errno;
      ::close(fd);
      throw RunError(path + ": cannot read: " + errno_text(err));
    }
    if (r == 0) break;
    out.append(buf, size_t(r));
  }
  ::close(fd);
  return out;
}

bool exists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0;
}

bool is_dir(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

void make_dirs(const std::string& path) {
  std::string cur;
  std::stringstream ss(path);
  std::string part;
  if (!path.empty() && path[0] == '/') cur = "/";
  while (std::getline(ss, part, '/')) {
    if (part.empty()) continue;
    cur += (cur.empty() || cur.back() == '/' ? "" : "/") + part;
    struct stat st {};
    if (::stat(cur.c_str(), &st) == 0) {
      if (!S_ISDIR(st.st_mode)) throw RunError(cur + ": exists and is not a directory");
      continue;
    }
    if (::mkdir(cur.c_str(), 0755) != 0 && errno != EEXIST)
      throw RunError(cur + ": cannot create directory: " + errno_text(errno));
  }
  if (::access(path.c_str(), W_OK) != 0) throw RunError(path + ": directory is not writable");
}

void remove_temporaries(const std::string& run_dir) {
  for (auto sub : {"", "/checkpoints"}) {
    const std::string d = run_dir + sub;
    if (DIR* h = ::opendir(d.c_str())) {
      while (auto* e = ::readdir(h))
        if (std::string(e->d_name).find(".tmp.") != std::string::npos) std::remove((d + "/" + e->d_name).c_str());
      ::closedir(h);
    }
  }
}

namespace {

// metrics.csv's columns, in file order: one table that writing and reading both follow.
struct MetricsColumn {
  const char* name;
  double MetricsRow::*field;  // null for epoch
  const char* format;
};
const std::vector<MetricsColumn>& column_table() {
  static const std::vector<MetricsColumn> cols = {
      {"epoch", nullptr, nullptr},
      {"train_loss", &MetricsRow::train_loss, "%.17g"},
      {"test_loss", &MetricsRow::test_loss, "%.17g"},
      {"train_acc", &MetricsRow::train_acc, "%.17g"},
      {"test_acc", &MetricsRow::test_acc, "%.17g"},
      {"sum_sq_weights", &MetricsRow::sum_sq_weights, "%.17g"},
      {"lr", &MetricsRow::lr, "%.17g"},
      {"elapsed_s", &MetricsRow::elapsed_s, "%.3f"},
      {"zero_terms", &MetricsRow::zero_terms, "%.17g"},
      {"softmax_collapse", &MetricsRow::softmax_collapse, "%.17g"},
      {"grad_weight_cos", &MetricsRow::grad_weight_cos, "%.17g"},
  };
  return cols;
}

std::vector<std::string> split_commas(const std::string& line) {
  std::vector<std::string> out;
  size_t start = 0;
  for (;;) {
    const size_t comma = line.find(',', start);
    out.push_back(line.substr(start, comma == std::string::npos ? std::string::npos : comma - start));
    if (comma == std::string::npos) return out;
    start = comma + 1;
  }
}

// A number of a metrics.csv field, all of it (nan and inf included: a diverged value or an
// accuracy a task does not have).
bool parse_number(const std::string& field, double& out) {
  if (field.empty()) return false;
  char* end = nullptr;
  out = std::strtod(field.c_str(), &end);
  return end == field.c_str() + field.size();
}

}  // namespace

const std::vector<std::string>& metrics_columns() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> n;
    for (auto& c : column_table()) n.push_back(c.name);
    return n;
  }();
  return names;
}

std::string metrics_header(const std::vector<std::string>& extra_columns) {
  std::string h;
  for (auto& c : metrics_columns()) h += (h.empty() ? "" : ",") + c;
  for (auto& c : extra_columns) h += "," + c;
  return h;
}

std::string format_row(const MetricsRow& r) {
  // %.17g round-trips doubles exactly: resumed and uninterrupted runs compare byte for byte.
  std::string out = std::to_string(r.epoch);
  char buf[64];
  for (auto& c : column_table()) {
    if (!c.field) continue;
    std::snprintf(buf, sizeof buf, c.format, r.*c.field);
    out += ",";
    out += buf;
  }
  for (auto& [name, v] : r.extra) {
    std::snprintf(buf, sizeof buf, "%.17g", v);
    out += ",";
    out += buf;
  }
  return out;
}

std::vector<MetricsRow> read_metrics(const std::string& path) {
  std::string text = read_file(path);
  std::vector<MetricsRow> rows;
  std::istringstream in(text);
  std::string line;
  int lineno = 0;
  // Per column of the file: the row field it fills (null: a task's extra column, or epoch).
  std::vector<const MetricsColumn*> slots;
  std::vector<std::string> names;
  bool old_collapse = false;  // a file from before zero_terms: its softmax_collapse counted zero terms
  while (std::getline(in, line)) {
    ++lineno;
    if (lineno == 1) {
      names = split_commas(line);
      if (names.empty() || names[0] != "epoch") throw RunError(path + ": line 1: not a grokking metrics.csv header");
      for (size_t i = 1; i < names.size(); ++i) {
        const MetricsColumn* slot = nullptr;
        for (auto& c : column_table())
          if (names[i] == c.name) slot = &c;
        for (size_t j = 1; j < i; ++j)
          if (names[j] == names[i]) throw RunError(path + ": line 1: column " + names[i] + " appears twice");
        slots.push_back(slot);
      }
      // Every column up to elapsed_s has been there from the first version on.
      for (auto& required : {"train_loss", "test_loss", "train_acc", "test_acc", "sum_sq_weights", "lr", "elapsed_s"})
        if (std::find(names.begin(), names.end(), required) == names.end())
          throw RunError(path + ": line 1: not a grokking metrics.csv header (no " + required + " column)");
      old_collapse = std::find(names.begin(), names.end(), "zero_terms") == names.end();
      continue;
    }
    if (in.eof() && text.back() != '\n') break;  // a half-written last row
    if (line.empty()) continue;
    const auto fields = split_commas(line);
    if (fields.size() != names.size())
      throw RunError(path + ": line " + std::to_string(lineno) + ": expected " + std::to_string(names.size()) +
                     " numbers");
    MetricsRow r;
    if (old_collapse) r.softmax_collapse = std::numeric_limits<double>::quiet_NaN();  // not measured then
    char* end = nullptr;
    const long long epoch = std::strtoll(fields[0].c_str(), &end, 10);
    if (fields[0].empty() || end != fields[0].c_str() + fields[0].size())
      throw RunError(path + ": line " + std::to_string(lineno) + ": expected " + std::to_string(names.size()) +
                     " numbers");
    r.epoch = int64_t(epoch);
    for (size_t i = 1; i < fields.size(); ++i) {
      double v = 0;
      if (!parse_number(fields[i], v))
        throw RunError(path + ": line " + std::to_string(lineno) + ": expected " + std::to_string(names.size()) +
                       " numbers");
      const MetricsColumn* slot = slots[i - 1];
      if (!slot) r.extra.emplace_back(names[i], v);
      else if (old_collapse && std::string(slot->name) == "softmax_collapse") r.zero_terms = v;
      else r.*slot->field = v;
    }
    rows.push_back(r);
  }
  return rows;
}

void write_metrics(const std::string& path, const std::vector<MetricsRow>& rows,
                   const std::vector<std::string>& extra_columns) {
  std::vector<std::string> extra = extra_columns;
  if (extra.empty() && !rows.empty())
    for (auto& e : rows.front().extra) extra.push_back(e.first);
  std::string out = metrics_header(extra) + "\n";
  for (auto& r : rows) out += format_row(r) + "\n";
  atomic_write(path, out);
}

const std::vector<std::string>& run_dir_entries() {
  // Training's, every analysis' (from their registry), plot's.
  static const std::vector<std::string> entries = [] {
    std::vector<std::string> e = training_entries();
    for (auto* k : analysis_kinds())
      for (auto& f : k->files)
        if (std::find(e.begin(), e.end(), f.name) == e.end()) e.push_back(f.name);
    for (auto& p : plot_entries()) e.push_back(p);
    return e;
  }();
  return entries;
}

namespace {
// Removes a file, or a folder with everything in it (no symlinks followed).
void remove_tree(const std::string& path) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) return;
  if (S_ISDIR(st.st_mode)) {
    if (DIR* h = ::opendir(path.c_str())) {
      std::vector<std::string> names;
      while (auto* e = ::readdir(h)) {
        const std::string name = e->d_name;
        if (name != "." && name != "..") names.push_back(name);
      }
      ::closedir(h);
      for (auto& n : names) remove_tree(path + "/" + n);
    }
    ::rmdir(path.c_str());
    return;
  }
  std::remove(path.c_str());
}
}  // namespace

void clear_run_dir(const std::string& run_dir) {
  for (auto& e : run_dir_entries()) {
    // The checkpoints folder stays (the lock and the run's own folder were made for this start).
    if (e == "checkpoints") {
      if (DIR* h = ::opendir((run_dir + "/checkpoints").c_str())) {
        std::vector<std::string> names;
        while (auto* d = ::readdir(h)) {
          const std::string name = d->d_name;
          if (name != "." && name != "..") names.push_back(name);
        }
        ::closedir(h);
        for (auto& n : names) remove_tree(run_dir + "/checkpoints/" + n);
      }
      continue;
    }
    remove_tree(run_dir + "/" + e);
  }
}

std::string to_string(RunStatus s) {
  switch (s) {
    case RunStatus::completed: return "completed";
    case RunStatus::early_stopped: return "early_stopped";
    case RunStatus::interrupted: return "interrupted";
    case RunStatus::diverged: return "diverged";
  }
  return "?";
}

RunStatus parse_status(const std::string& name, const std::string& origin) {
  for (auto st : {RunStatus::completed, RunStatus::early_stopped, RunStatus::interrupted, RunStatus::diverged})
    if (to_string(st) == name) return st;
  throw RunError(origin + ": /status: not a run status: " + short_text(name) +
                 " (completed, early_stopped, interrupted or diverged)");
}

nlohmann::json Summary::to_json() const {
  nlohmann::json s;
  s["status"] = to_string(status);
  s["task_kind"] = task_kind;
  s["model_kind"] = model_kind;
  s["epochs"] = epochs;
  s["epochs_planned"] = epochs_planned;
  s["final"] = {{"epoch", final.epoch}, {"train_loss", final.train_loss}, {"test_loss", final.test_loss},
                {"sum_sq_weights", final.sum_sq_weights}};
  // The grokking figures only where the task has accuracy.
  if (has_accuracy()) {
    s["final"]["train_acc"] = final.train_acc;
    s["final"]["test_acc"] = final.test_acc;
    s["memorised_epoch"] = optional_json(memorised_epoch);
    s["grokked_epoch"] = optional_json(grokked_epoch);
    s["grokking_delay"] = optional_json(grokking_delay);
    s["milestone_resolution_epochs"] = milestone_resolution_epochs;
  }
  s["wall_time_s"] = wall_time_s;
  s["epochs_per_s"] = epochs_per_s;
  s["n_train"] = n_train;
  s["n_test"] = n_test;
  s["n_params"] = n_params;
  s["weights_checksum"] = weights_checksum;
  s["seed"] = seed;
  s["seeds_side_by_side"] = seeds_side_by_side;
  s["device"] = device;
  s["threads"] = threads;
  s["blas"] = blas;
  s["flush_denormal"] = flush_denormal;
  s["path"] = path;
  s["loss"] = loss;
  s["loss_dtype"] = loss_dtype;
  s["cuda_graph"] = cuda_graph;
  s["libtorch"] = libtorch;
  s["grokking_version"] = grokking_version;
  s["grad_weight_cos_peak"] = grad_weight_cos_peak ? nlohmann::json(*grad_weight_cos_peak) : nlohmann::json();
  s["grad_weight_cos_peak_epoch"] = optional_json(grad_weight_cos_peak_epoch);
  if (!phases.is_null()) s["phases"] = phases;
  return s;
}

Summary Summary::from_json(const nlohmann::json& j, const std::string& origin) {
  if (!j.is_object()) throw RunError(origin + ": not a summary.json (a JSON object)");
  Summary s;
  auto get = [&](const char* key, auto& dst) {
    auto it = j.find(key);
    if (it == j.end() || it->is_null()) return;
    try {
      it->get_to(dst);
    } catch (const nlohmann::json::exception&) {
      throw RunError(origin + ": /" + key + ": has the wrong type");
    }
  };
  auto get_optional = [&](const char* key, std::optional<int64_t>& dst) {
    auto it = j.find(key);
    if (it == j.end() || it->is_null()) return;
    if (!it->is_number_integer()) throw RunError(origin + ": /" + key + ": must be an integer or null");
    dst = it->get<int64_t>();
  };
  std::string status;
  get("status", status);
  if (status.empty()) throw RunError(origin + ": /status: missing");
  s.status = parse_status(status, origin);
  get("task_kind", s.task_kind);
  get("model_kind", s.model_kind);
  get("epochs", s.epochs);
  get("epochs_planned", s.epochs_planned);
  if (j.contains("final") && j["final"].is_object()) {
    const auto& f = j["final"];
    auto num = [&](const char* key, double& dst) {
      if (f.contains(key) && f[key].is_number()) dst = f[key].get<double>();
    };
    if (f.contains("epoch") && f["epoch"].is_number_integer()) s.final.epoch = f["epoch"].get<int64_t>();
    num("train_loss", s.final.train_loss);
    num("test_loss", s.final.test_loss);
    num("train_acc", s.final.train_acc);
    num("test_acc", s.final.test_acc);
    num("sum_sq_weights", s.final.sum_sq_weights);
  }
  get_optional("memorised_epoch", s.memorised_epoch);
  get_optional("grokked_epoch", s.grokked_epoch);
  get_optional("grokking_delay", s.grokking_delay);
  get("milestone_resolution_epochs", s.milestone_resolution_epochs);
  get("wall_time_s", s.wall_time_s);
  get("epochs_per_s", s.epochs_per_s);
  get("n_train", s.n_train);
  get("n_test", s.n_test);
  get("n_params", s.n_params);
  get("weights_checksum", s.weights_checksum);
  get("seed", s.seed);
  get("seeds_side_by_side", s.seeds_side_by_side);
  get("device", s.device);
  get("threads", s.threads);
  get("blas", s.blas);
  get("flush_denormal", s.flush_denormal);
  get("path", s.path);
  get("loss", s.loss);
  get("loss_dtype", s.loss_dtype);
  get("cuda_graph", s.cuda_graph);
  get("libtorch", s.libtorch);
  get("grokking_version", s.grokking_version);
  if (j.contains("grad_weight_cos_peak") && j["grad_weight_cos_peak"].is_number())
    s.grad_weight_cos_peak = j["grad_weight_cos_peak"].get<double>();
  get_optional("grad_weight_cos_peak_epoch", s.grad_weight_cos_peak_epoch);
  if (j.contains("phases")) s.phases = j["phases"];
  return s;
}

std::string summary_path(const std::string& run_dir) { return run_dir + "/summary.json"; }

Summary read_summary(const std::string& run_dir) {
  const std::string path = summary_path(run_dir);
  return Summary::from_json(read_json_file(path), path);
}

void write_summary(const std::string& run_dir, const Summary& s) {
  atomic_write(summary_path(run_dir), s.to_json().dump(2) + "\n");
}

Milestones find_milestones(const std::vector<MetricsRow>& rows, double grok_acc) {
  Milestones m;
  for (auto& r : rows) {
    if (!m.memorised && r.train_acc >= 1.0) m.memorised = r.epoch;
    if (!m.grokked && r.test_acc >= grok_acc) m.grokked = r.epoch;
  }
  return m;
}

RunLock::RunLock(const std::string& dir) {
  const std::string path = dir + "/.lock";
  fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd_ < 0) throw RunError(path + ": cannot open lock file: " + errno_text(errno));
  if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
    std::string holder = read_file(path);
    ::close(fd_);
    fd_ = -1;
    throw UsageError(dir + ": run directory is in use by another grokking process" +
                     (holder.empty() ? std::string() : " (pid " + holder + ")"));
  }
  std::string pid = std::to_string(::getpid());
  if (::ftruncate(fd_, 0) == 0 && ::write(fd_, pid.data(), pid.size()) < 0) { /* the pid is informative only */ }
}

RunLock::~RunLock() {
  if (fd_ >= 0) ::close(fd_);  // closing releases the flock
}

std::string checkpoint_path(const std::string& run_dir, int64_t epoch) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "/checkpoints/epoch_%07" PRId64 ".pt", epoch);
  return run_dir + buf;
}

std::string resume_path(const std::string& run_dir) { return run_dir + "/checkpoints/resume.pt"; }

std::vector<std::pair<int64_t, std::string>> list_checkpoints(const std::string& run_dir) {
  std::vector<std::pair<int64_t, std::string>> out;
  const std::string dir = run_dir + "/checkpoints";
  DIR* d = ::opendir(dir.c_str());
  if (!d) return out;
  while (auto* e = ::readdir(d)) {
    std::string name = e->d_name;
    int64_t epoch = 0;
    char tail[8] = {0};
    if (name.size() > 9 && name.rfind("epoch_", 0) == 0 &&
        std::sscanf(name.c_str(), "epoch_%" SCNd64 ".%3s", &epoch, tail) == 2 && std::string(tail) == "pt" &&
        name.size() == name.find(".pt") + 3)
      out.emplace_back(epoch, dir + "/" + name);
  }
  ::closedir(d);
  std::sort(out.begin(), out.end());
  return out;
}

nlohmann::json read_json_file(const std::string& path) {
  std::string text = read_file(path);
  check_json_depth_run(text, path);
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    std::string msg = e.what();
    auto pos = msg.find("] ");
    throw RunError(path + ": invalid JSON: " + (pos == std::string::npos ? msg : msg.substr(pos + 2)));
  }
}

std::string format_duration(double s) {
  if (!std::isfinite(s) || s < 0) return "?";
  char buf[32];
  auto t = int64_t(s + 0.5);
  if (t >= 3600) std::snprintf(buf, sizeof buf, "%" PRId64 "h%02" PRId64 "m", t / 3600, (t % 3600) / 60);
  else if (t >= 60) std::snprintf(buf, sizeof buf, "%" PRId64 "m%02" PRId64 "s", t / 60, t % 60);
  else if (s < 10) std::snprintf(buf, sizeof buf, "%.1fs", s);
  else std::snprintf(buf, sizeof buf, "%" PRId64 "s", t);
  return buf;
}

Transition find_transition(const std::vector<MetricsRow>& rows) {
  Transition t;
  if (rows.empty()) return t;
  t.start = rows.front().test_loss;
  t.lowest = t.start;
  for (auto& r : rows) t.lowest = std::min(t.lowest, r.test_loss);
  const double drop = t.start - t.lowest;
  if (!(drop > 0)) return t;
  for (auto& r : rows) {
    if (!t.at10 && r.test_loss <= t.start - 0.1 * drop) t.at10 = r.epoch;
    if (!t.at50 && r.test_loss <= t.start - 0.5 * drop) t.at50 = r.epoch;
    if (!t.at90 && r.test_loss <= t.start - 0.9 * drop) t.at90 = r.epoch;
  }
  double running_min = rows.front().test_loss;
  for (auto& r : rows) {
    if (t.at90 && r.epoch > *t.at90) break;
    if (r.test_loss - running_min > t.rise) t.rise = r.test_loss - running_min, t.rise_at = r.epoch;
    running_min = std::min(running_min, r.test_loss);
  }
  // The lower convex hull of (log step, loss) (Andrew's monotone chain, x increasing), then each
  // point's height above it.
  std::vector<std::pair<double, double>> pts;
  std::vector<int64_t> steps;
  for (auto& r : rows)
    if (r.epoch > 0 && std::isfinite(r.test_loss)) pts.emplace_back(std::log(double(r.epoch)), r.test_loss), steps.push_back(r.epoch);
  std::vector<size_t> hull;
  auto cross = [&](size_t o, size_t a, size_t b) {
    return (pts[a].first - pts[o].first) * (pts[b].second - pts[o].second) -
           (pts[a].second - pts[o].second) * (pts[b].first - pts[o].first);
  };
  for (size_t i = 0; i < pts.size(); ++i) {
    while (hull.size() >= 2 && cross(hull[hull.size() - 2], hull.back(), i) <= 0) hull.pop_back();
    hull.push_back(i);
  }
  for (size_t h = 0; h + 1 < hull.size(); ++h) {
    const auto [x0, y0] = pts[hull[h]];
    const auto [x1, y1] = pts[hull[h + 1]];
    for (size_t i = hull[h] + 1; i < hull[h + 1]; ++i) {
      const double gap = pts[i].second - (y0 + (y1 - y0) * (pts[i].first - x0) / (x1 - x0));
      if (gap > t.bump) t.bump = gap, t.bump_at = steps[i];
    }
  }
  return t;
}

}  // namespace grokking
