// GROKKING_CLONES: a function compiled twice on x86-64 with GCC, for AVX2 and for the baseline
// (SSE2), the loader picking one for the CPU (GCC's target_clones; other compilers build it once).
// AVX2 without FMA: each vector lane does the same float operations in the same order as the SSE2
// build, so where a function's reductions are written in explicit parts (eight running sums),
// both give the same bits.
#pragma once

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define GROKKING_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define GROKKING_CLONES
#endif
