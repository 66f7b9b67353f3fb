#include "grokking/threads.hpp"

#include <ATen/Parallel.h>
#include <torch/cuda.h>
#include <dlfcn.h>
#include <sched.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <exception>
#include <fstream>
#include <thread>
#include <vector>

namespace grokking {

namespace {
// OpenBLAS's threading model as loaded: 0 sequential, 1 its own pthreads, 2 OpenMP; -1 not OpenBLAS.
int openblas_parallel() {
  if (auto get = reinterpret_cast<int (*)()>(::dlsym(RTLD_DEFAULT, "openblas_get_parallel"))) return get();
  return -1;
}

std::atomic<int> shards{1};
// OpenBLAS's thread setters, or nullptr where the BLAS is another.
void (*blas_set_threads())(int) {
  static const auto f = reinterpret_cast<void (*)(int)>(::dlsym(RTLD_DEFAULT, "openblas_set_num_threads"));
  return f;
}
int (*blas_get_threads())() {
  static const auto f = reinterpret_cast<int (*)()>(::dlsym(RTLD_DEFAULT, "openblas_get_num_threads"));
  return f;
}
}  // namespace

int step_shards() { return shards.load(); }
void set_step_shards(int n) { shards.store(std::max(1, n)); }

void give_blas_threads_to_shards() {
  if (auto set_blas = blas_set_threads(); set_blas && step_shards() > 1) set_blas(1);
}

void run_sharded(int n, const std::function<void(int)>& fn) {
  n = std::max(1, n);
  auto set_blas = blas_set_threads();
  auto get_blas = blas_get_threads();
  const int before = get_blas ? get_blas() : 0;
  // OpenBLAS's pthreads build runs a product called from two threads at once one after the
  // other when it may use its pool; on one thread each, it runs in the caller.
  if (set_blas) set_blas(1);
  std::vector<std::exception_ptr> errors(static_cast<size_t>(n));
  auto guarded = [&](int k) {
    try {
      fn(k);
    } catch (...) {
      errors[size_t(k)] = std::current_exception();
    }
  };
  {
    std::vector<std::thread> workers;
    for (int k = 1; k < n; ++k) workers.emplace_back(guarded, k);
    guarded(0);
    for (auto& w : workers) w.join();
  }
  if (set_blas && before > 0) set_blas(before);
  for (auto& e : errors)
    if (e) std::rethrow_exception(e);
}

int usable_cpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  const int allowed = ::sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : 0;
  const int online = int(std::thread::hardware_concurrency());
  return std::max(1, allowed > 0 && online > 0 ? std::min(allowed, online) : std::max(allowed, online));
}

int configure_threads(int64_t requested) {
  int n = requested > 0 ? int(requested) : usable_cpus();
  auto set_blas = blas_set_threads();
  const int parallel = openblas_parallel();
  if (set_blas && parallel != 0 && parallel != 2) {
    // OpenBLAS with its own pthreads (or of unknown kind): two pools on the same cores stall each other (measured:
    // 2 OpenMP + 2 OpenBLAS threads ran a P=23 step 3x slower than either alone). The matrix
    // products carry the FLOPs, so the cores go to OpenBLAS and LibTorch's kernels get one.
    at::set_num_threads(1);
    set_blas(n);
    set_step_shards(n);
  } else {
    // OpenBLAS on OpenMP (Debian's libopenblas0-openmp) shares LibTorch's OpenMP pool, so both
    // can have every core (P=113 step about 10 % faster than the pthreads split); a sequential
    // OpenBLAS or another BLAS gets LibTorch's setting. An OpenBLAS that cannot say which it is
    // (openblas_get_parallel is missing) gets the pthreads split above, the safe choice.
    at::set_num_threads(n);
    if (set_blas) set_blas(n);
    set_step_shards(1);
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

std::string blas_advice() {
  auto core = reinterpret_cast<char* (*)()>(::dlsym(RTLD_DEFAULT, "openblas_get_corename"));
  if (!core || std::getenv("OPENBLAS_CORETYPE")) return "";
  const std::string name = core();
  // Prescott is the generic x86-64 kernel set OpenBLAS falls back to on a CPU its build does not
  // know (OpenBLAS 0.3.21 on a Cooper Lake Xeon: 30 GFLOP/s a core instead of about 140).
  if (name != "Prescott") return "";
  const char* better = nullptr;
#if defined(__x86_64__) && defined(__GNUC__)
  __builtin_cpu_init();
  better = __builtin_cpu_supports("avx512f") ? "SkylakeX" : __builtin_cpu_supports("avx2") ? "Haswell" : nullptr;
#endif
  if (!better) return "";
  return std::string("OpenBLAS did not recognise this CPU and runs its generic Prescott kernels: OPENBLAS_CORETYPE=") +
         better + " in the environment makes its matrix products several times faster here (docs/speed.md)";
}

bool on_cpu(const std::string& device) {
  return device == "cpu" || (device == "auto" && !torch::cuda::is_available());
}

}  // namespace grokking
