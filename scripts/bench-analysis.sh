#!/usr/bin/env bash
# Wall time of the analysis subcommands on one run directory, end to end as a user sees them
# (process start and LibTorch loading included), median of N runs; and `grokking --version`
# alone, the fixed cost of starting the binary.
#
#   scripts/bench-analysis.sh RUN_DIR [N=5] [BINARY=build/grokking]
#
# `progress` is timed once (it reads every checkpoint). Nothing here is a test: figures go
# to the speed table of docs/speed.md.
set -euo pipefail
run=${1:?usage: scripts/bench-analysis.sh RUN_DIR [N] [BINARY]}
n=${2:-5}
bin=${3:-$(dirname "$0")/../build/grokking}
[ -d "$run" ] || { echo "bench-analysis: $run: not a run directory" >&2; exit 2; }
[ -x "$bin" ] || { echo "bench-analysis: $bin: no such binary (build first: scripts/build.sh)" >&2; exit 2; }

median_wall() {  # median wall seconds of n runs of "$@", output discarded
  local times=() t0 t1
  for _ in $(seq "$n"); do
    t0=$(date +%s.%N)
    "$@" >/dev/null 2>&1 || { echo "bench-analysis: failed: $*" >&2; exit 1; }
    t1=$(date +%s.%N)
    times+=("$(awk -v a="$t0" -v b="$t1" 'BEGIN {print b - a}')")
  done
  printf '%s\n' "${times[@]}" | sort -g | awk '{a[NR]=$1} END {printf "%.2f", a[int((NR+1)/2)]}'
}

ckpts=$(find "$run/checkpoints" -name 'epoch_*.pt' | wc -l)
printf '%-34s %8s\n' "command" "wall s"
printf '%-34s %8s\n' "grokking --version (start only)" "$(median_wall "$bin" --version)"
printf '%-34s %8s\n' "grokking fourier (latest)" "$(median_wall "$bin" fourier "$run")"
printf '%-34s %8s\n' "grokking ablate (latest)" "$(median_wall "$bin" ablate "$run")"
n=1
printf '%-34s %8s\n' "grokking progress ($ckpts checkpoints)" "$(median_wall "$bin" progress "$run")"
