#!/usr/bin/env bash
# A sweep with GNU parallel: JOBS runs at once, one thread each.
# Usage: JOBS=4 scripts/sweep-parallel.sh SWEEP.json [SWEEP_DIR]
set -euo pipefail
sweep=$1
bin=${GROKKING:-build/grokking}
dir=${2:-sweeps/$(basename "$sweep" .json)}
"$bin" sweep "$sweep" --dir "$dir" --list |
  parallel --colsep '\t' -j "${JOBS:-$(nproc)}" \
    "$bin train $dir/base.json {=2 uq() =} --out $dir/runs/{1} --set train.threads=1 -q || $bin train --resume $dir/runs/{1} -q"
"$bin" sweep --aggregate "$dir"
