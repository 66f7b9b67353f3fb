// The hand-written loops (the attention core, the small toy models' step) compiled three times on
// x86-64 with GCC or Clang: for AVX-512, for AVX2 with FMA, and for the baseline (SSE2), the
// CPU's best picked once at run time (GROKKING_SIMD=base|avx2|avx512 picks a lower one; the tests
// run every level the CPU has). Elsewhere they are compiled once. A level changes the rounding
// (FMA fuses a product and a sum) but not what is computed: every level equals the generic
// forward to 1e-5 (ctest `kinds`), and packed = alone holds at each.
#pragma once

#include "grokking/simd.hpp"

#include <cstdint>
#include <cstring>

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

namespace grokking {

// Eight lanes, for loops the compiler leaves scalar on its own (GCC's and Clang's vector
// extensions; on a level without 512-bit registers each operation is split into narrower ones).
// Their functions are always inlined, so GCC's note that passing them changes the ABI without
// AVX-512 (-Wpsabi, off in CMakeLists.txt) does not apply.
typedef float float8 __attribute__((vector_size(32)));
typedef double double8 __attribute__((vector_size(64)));
typedef int64_t int64x8 __attribute__((vector_size(64)));

// a < b ? t : f, lane by lane.
GROKKING_INLINE double select_lt(double a, double b, double t, double f) { return a < b ? t : f; }
GROKKING_INLINE double8 select_lt(double8 a, double8 b, double8 t, double8 f) {
  const int64x8 m = a < b;  // all ones where true
  int64x8 ti, fi;
  std::memcpy(&ti, &t, sizeof ti);
  std::memcpy(&fi, &f, sizeof fi);
  const int64x8 r = (ti & m) | (fi & ~m);
  double8 out;
  std::memcpy(&out, &r, sizeof out);
  return out;
}

// exp(x) for x <= 0 in float64 (0 below -708): 2^k exp(r) with k the nearest integer to
// x / ln 2 and |r| <= ln 2 / 2, exp(r) by its Taylor series to r^13 (truncation below 1e-17), 2^k
// made from k's bits. Branch-free; about 1 ulp. D: double, or double8 (I: int64x8) for eight at
// once, each lane with the same operations in the same order, so the same bits as one at a time.
template <class D, class I>
GROKKING_INLINE D exp_nonpositive64_of(D x) {
  const D lo = D{} - 708.0, zero = D{};
  const D clamped = select_lt(x, lo, lo, x);
  const D shifter = zero + 0x1.8p52;  // adding it rounds to an integer, held in the low bits
  const D t = clamped * 1.4426950408889634 + shifter;
  const D k = t - shifter;
  const D r = (clamped - k * 6.93147180369123816490e-01) - k * 1.90821492927058770002e-10;
  D p = zero + 1.0 / 6227020800.0;  // 1/13!
  p = p * r + 1.0 / 479001600.0;
  p = p * r + 1.0 / 39916800.0;
  p = p * r + 1.0 / 3628800.0;
  p = p * r + 1.0 / 362880.0;
  p = p * r + 1.0 / 40320.0;
  p = p * r + 1.0 / 5040.0;
  p = p * r + 1.0 / 720.0;
  p = p * r + 1.0 / 120.0;
  p = p * r + 1.0 / 24.0;
  p = p * r + 1.0 / 6.0;
  p = p * r + 0.5;
  p = p * r + 1.0;
  p = p * r + 1.0;
  I bits, shifter_bits;
  std::memcpy(&bits, &t, sizeof bits);
  std::memcpy(&shifter_bits, &shifter, sizeof shifter_bits);
  const I scale_bits = (bits - shifter_bits + 1023) << 52;  // 2^k, k >= -1022
  D scale;
  std::memcpy(&scale, &scale_bits, sizeof scale);
  return select_lt(x, lo, zero, p * scale);
}
GROKKING_INLINE double exp_nonpositive64(double x) { return exp_nonpositive64_of<double, int64_t>(x); }
GROKKING_INLINE double8 exp_nonpositive64(double8 x) { return exp_nonpositive64_of<double8, int64x8>(x); }

}  // namespace grokking
