#include "simd.hpp"

#include <atomic>
#include <cstdlib>
#include <cstring>

namespace grokking {

namespace {

Simd best_level() {
#ifdef GROKKING_SIMD_X86
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
    return Simd::avx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Simd::avx2;
#endif
  return Simd::base;
}

Simd initial_level() {
  Simd level = best_level();
  if (const char* want = std::getenv("GROKKING_SIMD")) {
    // Only ever lowered: a level the CPU lacks would fault.
    if (std::strcmp(want, "base") == 0) level = Simd::base;
    else if (std::strcmp(want, "avx2") == 0 && level == Simd::avx512) level = Simd::avx2;
  }
  return level;
}

std::atomic<int>& level_store() {
  static std::atomic<int> level{int(initial_level())};
  return level;
}

}  // namespace

Simd simd_level() { return Simd(level_store().load(std::memory_order_relaxed)); }

std::vector<Simd> simd_levels() {
  std::vector<Simd> out;
  for (Simd s : {Simd::base, Simd::avx2, Simd::avx512})
    if (int(s) <= int(best_level())) out.push_back(s);
  return out;
}

std::string simd_name(Simd level) {
  switch (level) {
    case Simd::avx512: return "avx512";
    case Simd::avx2: return "avx2";
    default: return "base";
  }
}

void force_simd_level(Simd level) {
  if (int(level) > int(best_level())) level = best_level();
  level_store().store(int(level), std::memory_order_relaxed);
}

}  // namespace grokking
