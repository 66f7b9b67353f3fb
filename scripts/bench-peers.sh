#!/usr/bin/env bash
# Times `grokking` (A) against the plain PyTorch a researcher would write (B, scripts/peers/*.py)
# on the pairs of scripts/peers/README.md: whole processes, one thread each, both pinned to one
# CPU, in turn A B A B, REPS counted rounds after one warm-up round; prints the median CPU
# seconds of each side and the median of the B/A ratios taken pair by pair, as a table.
#
#   scripts/bench-peers.sh [PAIR ...]     PAIR: sup1 sup30 sup200 ind-small ind-min s5mlp (default: all)
# Environment: G [build/grokking], PY [/usr/bin/python3: Debian's python3-torch], REPS [3],
#   PIN [0: the CPU both sides are pinned to], SCRATCH [a temporary directory].
# Nothing else should run meanwhile: the figures are ratios measured in one run on one machine.
set -euo pipefail
cd "$(dirname "$0")/.."
G=${G:-build/grokking}; PY=${PY:-/usr/bin/python3}; REPS=${REPS:-3}; PIN=${PIN:-0}; P=scripts/peers
S=${SCRATCH:-$(mktemp -d)}
pairs=("$@"); [ ${#pairs[@]} -gt 0 ] || pairs=(sup1 sup30 sup200 ind-small ind-min s5mlp)
"$PY" -c 'import torch' 2>/dev/null || { echo "error: $PY cannot import torch (apt install python3-torch)" >&2; exit 2; }
SP=0.0,0.2831,0.4861,0.6316,0.7359,0.8107,0.8643,0.9027,0.9303,0.95

commands() {  # pair -> A and B command lines and the model-steps, in A, B, UNITS
  case $1 in
    sup1) UNITS=10000
      A="$G train configs/superposition/pentagon.json --set train.threads=1 --out $S/pentagon --force -q"
      B="$PY $P/superposition_peer.py --instances 1 --features 5 --hidden 2 --sparsity 0.95 --importance-decay 0.9 --steps 10000 --threads 1 --init per_model" ;;
    sup30) UNITS=300000
      A="sh -c 'rm -rf $S/sw52 && exec $G sweep configs/sweeps/superposition-5-2.json --pack 30 --jobs 1 --dir $S/sw52 -q'"
      B="$PY $P/superposition_peer.py --instances 30 --features 5 --hidden 2 --sparsity $SP --sparsity-repeat 3 --importance-decay 0.9 --steps 10000 --threads 1 --init per_model" ;;
    sup200) UNITS=6000
      A="$G train configs/sweeps/superposition-200-20-base.json --seeds 0-19 --set task.sparsity=0.9 --set train.epochs=300 --set train.threads=1 --out $S/s200 --force -q"
      B="$PY $P/superposition_peer.py --instances 20 --features 200 --hidden 20 --sparsity 0.9 --steps 300 --threads 1 --init per_model" ;;
    ind-small) UNITS=3000
      A="$G train configs/induction/small.json --set train.threads=1 --out $S/ind-small --force -q"
      B="$PY $P/induction_peer.py --config configs/induction/small.json --threads 1" ;;
    ind-min) UNITS=500
      A="$G train configs/induction/minimal.json --set train.threads=1 --set train.epochs=500 --out $S/ind-min --force -q"
      B="$PY $P/induction_peer.py --config configs/induction/minimal.json --steps 500 --threads 1" ;;
    s5mlp) UNITS=300
      A="$G train configs/groups/chughtai-s5-mlp.json --set train.threads=1 --set train.epochs=300 --out $S/s5mlp --force -q"
      B="$PY $P/group_mlp_peer.py --config configs/groups/chughtai-s5-mlp.json --epochs 300 --threads 1" ;;
    *) echo "error: unknown pair $1 (sup1 sup30 sup200 ind-small ind-min s5mlp)" >&2; exit 2 ;;
  esac
}
cpu_seconds() {  # command line -> CPU seconds (user + sys) of the whole process
  /usr/bin/time -f "%U %S" -o "$S/time" taskset -c "$PIN" sh -c "$1" > "$S/log" 2>&1 ||
    { echo "error: \`$1\` failed (log: $S/log)" >&2; exit 1; }
  awk '{ printf "%.2f\n", $1 + $2 }' "$S/time"
}
median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

echo "$(date -u +%Y-%m-%d), $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1), pinned to CPU $PIN;" \
     "$("$G" --version 2>&1 | head -1); PyTorch $("$PY" -c 'import torch; print(torch.__version__)'); $REPS rounds after a warm-up"
echo
echo "| pair | model-steps | grokking CPU s | PyTorch CPU s | PyTorch / grokking (median of pairs) |"
echo "|---|---|---|---|---|"
for pair in "${pairs[@]}"; do
  commands "$pair"
  cpu_seconds "$A" > /dev/null; cpu_seconds "$B" > /dev/null  # warm-up
  : > "$S/a"; : > "$S/b"; : > "$S/r"
  for _ in $(seq "$REPS"); do
    a=$(cpu_seconds "$A"); b=$(cpu_seconds "$B")
    echo "$a" >> "$S/a"; echo "$b" >> "$S/b"; awk -v a="$a" -v b="$b" 'BEGIN { printf "%.3f\n", b / a }' >> "$S/r"
  done
  echo "| $pair | $UNITS | $(median < "$S/a") | $(median < "$S/b") | $(median < "$S/r") |"
done
