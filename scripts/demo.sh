#!/usr/bin/env bash
# Sets up, builds the grokking executable (not the tests) and trains the default small experiment
# (P = 23; about a minute on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh grokking
exec build/grokking train configs/ci-small.json --force "$@"
