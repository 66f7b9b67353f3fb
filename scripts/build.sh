#!/usr/bin/env bash
# Configures (once) and builds grokking into ./build, Release, warnings as errors: the one
# configuration that scripts/demo.sh and scripts/test.sh share, so that the tests reuse what the
# demo built. Arguments are targets (none: everything); GROKKING_CMAKE_ARGS adds CMake options
# at the first configuration. It is a unity build (the sources compiled 16 to a translation
# unit: a fresh build of the executable takes a third of the time, since each unit parses
# LibTorch's headers); for editing and rebuilding one file at a time, configure with
# GROKKING_CMAKE_ARGS=-DCMAKE_UNITY_BUILD=OFF.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -f build/CMakeCache.txt ]; then
  gen=()
  command -v ninja >/dev/null && gen=(-G Ninja)
  # shellcheck disable=SC2086
  cmake -S . -B build "${gen[@]}" -DCMAKE_BUILD_TYPE=Release -DGROKKING_WARNINGS_AS_ERRORS=ON \
    -DCMAKE_UNITY_BUILD=ON -DCMAKE_UNITY_BUILD_BATCH_SIZE=16 ${GROKKING_CMAKE_ARGS:-} >/dev/null
fi
targets=()
for t in "$@"; do targets+=(--target "$t"); done
cmake --build build --parallel "$(nproc)" "${targets[@]}"
