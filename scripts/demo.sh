#!/usr/bin/env bash
# Sets up, builds and trains the default small experiment (about a minute on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh
exec build/grokking train configs/ci-small.json --force "$@"
