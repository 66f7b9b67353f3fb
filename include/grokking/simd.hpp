// The instruction set the hand-written loops run at (the attention core, the small toy models'
// step): each is compiled for AVX-512, for AVX2 with FMA and for the baseline on x86-64 with GCC or
// Clang, and the CPU's best is picked once at run time; GROKKING_SIMD=base|avx2 picks a lower
// one. A level changes the rounding (FMA fuses a product and a sum) but not what is computed.
#pragma once

#include <string>
#include <vector>

namespace grokking {

enum class Simd { base, avx2, avx512 };

// The level the kernels run at: the CPU's best, lowered by GROKKING_SIMD or force_simd_level.
Simd simd_level();
// The levels this CPU can run, lowest first (on other than x86-64: base alone).
std::vector<Simd> simd_levels();
std::string simd_name(Simd level);
// Tests and bench: run the kernels at `level` from now on (lowered to the CPU's best).
void force_simd_level(Simd level);

}  // namespace grokking
