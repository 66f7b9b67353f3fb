#!/usr/bin/env bash
# Sets up, builds everything (reusing what scripts/demo.sh built) and runs the whole test suite
# (what CI runs).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh
cd build
ctest --output-on-failure --timeout 1200 -j 2
