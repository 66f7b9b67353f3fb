// CPU threads and the BLAS library LibTorch runs on. Torch-free.
#pragma once
#include <cstdint>
#include <functional>
#include <string>

namespace grokking {

// Sets LibTorch's intra-op threads and the BLAS threads (0: usable_cpus()) so that the two
// pools do not stall each other; returns the thread count used. Where OpenBLAS has its own
// pthreads, LibTorch's kernels get one thread and a CPU training step is split into shards, one
// a thread (step_shards()).
int configure_threads(int64_t requested);
// How many row shards a CPU training step of a fixed split splits into (1: not split). A step's
// matrix products are too small for OpenBLAS to split well, and LibTorch's kernels between them
// run on one thread: whole shards on their own threads use both cores (forward_backward).
int step_shards();
void set_step_shards(int n);  // configure_threads sets it; tests set it directly
// Where steps go in shards (step_shards() > 1), OpenBLAS on one thread from now on, as the
// shards run it: its own pool, woken by any product on more threads, spins in sched_yield for a
// while after each, taking a core from the shards (a third of the CPU of induction/small.json on
// two threads). train calls it for a CPU run, bench once it has measured the sgemm peak.
void give_blas_threads_to_shards();
// Runs fn(0) .. fn(n - 1) at once, fn(0) on the calling thread, each with BLAS on one thread (n
// = 1 included: fn(0) alone, BLAS on one thread), and restores the BLAS threads after; rethrows
// the first shard's exception.
void run_sharded(int n, const std::function<void(int)>& fn);
// CPUs this process may run on: the online ones within its affinity mask.
int usable_cpus();
// The BLAS library LibTorch's matrix products run on, as loaded into this process
// ("OpenBLAS 0.3.21 (pthreads)").
std::string blas_description();
// Empty, or one line of advice where OpenBLAS runs slower kernels than the CPU allows (its generic
// Prescott set on a CPU with AVX2 or AVX-512 that it does not recognise).
std::string blas_advice();
// Whether a train.device setting ("auto", "cpu", "cuda", "cuda:N") trains on the CPU here.
bool on_cpu(const std::string& device);

}  // namespace grokking
