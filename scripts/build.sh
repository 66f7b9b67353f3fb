#!/usr/bin/env bash
# Configures (once) and builds grokking into ./build, Release, warnings as errors: the one
# configuration that scripts/demo.sh and scripts/test.sh share, so that the tests reuse what the
# demo built. Arguments are targets (none: everything); GROKKING_CMAKE_ARGS adds CMake options
# at the first configuration.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -f build/CMakeCache.txt ]; then
  gen=()
  command -v ninja >/dev/null && gen=(-G Ninja)
  # shellcheck disable=SC2086
  cmake -S . -B build "${gen[@]}" -DCMAKE_BUILD_TYPE=Release -DGROKKING_WARNINGS_AS_ERRORS=ON \
    ${GROKKING_CMAKE_ARGS:-} >/dev/null
fi
targets=()
for t in "$@"; do targets+=(--target "$t"); done
cmake --build build --parallel "$(nproc)" "${targets[@]}"
