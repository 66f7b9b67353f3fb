// The hand-written loops (the attention core, the small toy models' step) compiled three times on
// x86-64 with GCC or Clang: for AVX-512, for AVX2 with FMA, and for the baseline (SSE2), the
// CPU's best picked once at run time (GROKKING_SIMD=base|avx2|avx512 picks a lower one; the tests
// run every level the CPU has). Elsewhere they are compiled once. A level changes the rounding
// (FMA fuses a product and a sum) but not what is computed: every level equals the generic
// forward to 1e-5 (ctest `kinds`), and packed = alone holds at each.
#pragma once

#include "grokking/simd.hpp"

#define GROKKING_INLINE inline __attribute__((always_inline))

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define GROKKING_SIMD_X86 1
#define GROKKING_TARGET_AVX2 __attribute__((target("avx2,fma")))
#define GROKKING_TARGET_AVX512 __attribute__((target("avx512f,avx2,fma")))
// name(args...) calls impl(args...) compiled for the level simd_level() gives: impl must be
// GROKKING_INLINE so that each wrapper compiles its own copy for its instruction set.
#define GROKKING_SIMD_KERNEL(name, impl)                                                 \
  template <class... A>                                                                  \
  GROKKING_TARGET_AVX512 auto name##_avx512(A... a) {                                    \
    return impl(a...);                                                                   \
  }                                                                                      \
  template <class... A>                                                                  \
  GROKKING_TARGET_AVX2 auto name##_avx2(A... a) {                                        \
    return impl(a...);                                                                   \
  }                                                                                      \
  template <class... A>                                                                  \
  auto name##_base(A... a) {                                                             \
    return impl(a...);                                                                   \
  }                                                                                      \
  template <class... A>                                                                  \
  auto name(A... a) {                                                                    \
    switch (::grokking::simd_level()) {                                                  \
      case ::grokking::Simd::avx512: return name##_avx512(a...);                         \
      case ::grokking::Simd::avx2: return name##_avx2(a...);                             \
      default: return name##_base(a...);                                                 \
    }                                                                                    \
  }
#else
#define GROKKING_SIMD_KERNEL(name, impl) \
  template <class... A>                  \
  auto name(A... a) {                    \
    return impl(a...);                   \
  }
#endif
