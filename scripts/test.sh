#!/usr/bin/env bash
# Sets up, builds and runs the whole test suite (what CI runs).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh -DGROKKING_WARNINGS_AS_ERRORS=ON
cd build
ctest --output-on-failure --timeout 1200 -j 2
