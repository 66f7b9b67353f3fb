#!/usr/bin/env bash
# A sweep as a plain bash loop: one `grokking train` per run of `grokking sweep --list`.
# Usage: scripts/sweep-loop.sh SWEEP.json [SWEEP_DIR]
set -euo pipefail
sweep=$1
bin=${GROKKING:-build/grokking}
dir=${2:-sweeps/$(basename "$sweep" .json)}
"$bin" sweep "$sweep" --dir "$dir" --list | while IFS=$'\t' read -r name sets; do
  eval "args=($sets)"   # the --set words, quoted by --list
  "$bin" train "$dir/base.json" "${args[@]}" --out "$dir/runs/$name" -q ||
    "$bin" train --resume "$dir/runs/$name" -q
done
"$bin" sweep --aggregate "$dir"
