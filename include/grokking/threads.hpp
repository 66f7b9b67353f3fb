// CPU threads and the BLAS library LibTorch runs on. Torch-free.
#pragma once
#include <cstdint>
#include <string>

namespace grokking {

// Sets LibTorch's intra-op threads and the BLAS threads (0: usable_cpus()) so that the two
// pools do not stall each other; returns the thread count used.
int configure_threads(int64_t requested);
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
