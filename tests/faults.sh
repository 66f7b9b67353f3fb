#!/usr/bin/env bash
# Faults during a run: kill -9 at random moments then --resume (seeded trials), and a disk that
# fills up while checkpoints are written. Every trial must end with the metrics and the weights
# of an uninterrupted run, bit for bit (CPU).
# Usage: tests/faults.sh path/to/grokking [TRIALS]
trials=${2:-12}
name=faults
source "$(dirname "$0")/lib.sh"
rows() { cut -d, -f1-7 "$1/metrics.csv"; }  # every column but elapsed seconds
weights() { grep -o '"weights_checksum": "[0-9a-f]*"' "$1/summary.json"; }

cat >tiny.json <<'J'
{"task": {"p": 13, "frac_train": 0.5}, "model": {"d_model": 16, "n_heads": 2, "d_head": 8, "d_mlp": 32},
 "train": {"epochs": 2000, "eval_every": 50, "checkpoint_every": 100, "threads": 1, "device": "cpu"}}
J
"$bin" train tiny.json --out ref -q
start=$(date +%s%N)
"$bin" train tiny.json --out timing -q
span_ms=$((($(date +%s%N) - start) / 1000000))

# ---- kill -9 at seeded random moments, then resume until done ----
RANDOM=20261126
interrupted=0
for t in $(seq "$trials"); do
  ms=$((100 + RANDOM % span_ms))
  delay=$(printf "%d.%03d" $((ms / 1000)) $((ms % 1000)))
  "$bin" train tiny.json --out "t$t" -q 2>/dev/null &
  pid=$!
  sleep "$delay"
  kill -9 $pid 2>/dev/null && interrupted=$((interrupted + 1))
  wait $pid 2>/dev/null
  for _ in 1 2 3; do
    grep -qs '"status": "completed"' "t$t/summary.json" && break
    if [ -e "t$t/config.json" ]; then
      "$bin" train --resume "t$t" -q 2>>resume.err
    else  # killed before it wrote anything: run it again
      "$bin" train tiny.json --out "t$t" -q 2>>resume.err
    fi
  done
  [ -e "t$t/summary.json" ] || { echo "trial $t: no summary after three tries; their stderr:" >&2; tail -5 resume.err >&2; }
  check "trial $t (kill after ${delay}s): same metrics rows" 'cmp -s <(rows ref) <(rows "t$t")'
  check "trial $t: same final weights" '[ -n "$(weights ref)" ] && [ "$(weights ref)" = "$(weights "t$t")" ]'
  check "trial $t: no temporary files left" '[ -z "$(find "t$t" -name "*.tmp.*")" ]'
done
echo "kill -9: $interrupted of $trials trials interrupted mid-run, all resumed"

# ---- a full disk while writing checkpoints ----
mkdir disk
big='{"task": {"p": 23, "frac_train": 0.5}, "train": {"epochs": 60, "eval_every": 10, "checkpoint_every": 10, "threads": 1, "device": "cpu"}}'
echo "$big" >big.json
"$bin" train big.json --out bigref -q
if mount -t tmpfs -o size=7m tmpfs disk 2>/dev/null; then
  "$bin" train big.json --out disk/run -q 2>full.err
  rc=$?
  check "full disk: exit 1 (got $rc)" '[ $rc -eq 1 ]'
  check "full disk: one line naming the file and the cause" \
    '[ "$(grep -c . full.err)" -eq 1 ] && grep -Eq "disk/run/(checkpoints/)?[a-z_0-9]+\.(pt|csv|json): .*No space left on device" full.err'
  cat full.err
  mount -o remount,size=64m disk
  "$bin" train --resume disk/run -q 2>>resume.err
  check "full disk: resumed after space was freed, same metrics" 'cmp -s <(rows bigref) <(rows disk/run)'
  check "full disk: same final weights" '[ "$(weights bigref)" = "$(weights disk/run)" ]'
  umount disk
else
  # No mount here: a file-size limit makes the same write fail (EFBIG instead of ENOSPC).
  ( ulimit -f 1500; "$bin" train big.json --out lim -q 2>full.err )
  rc=$?
  check "file-size limit: exit 1 (got $rc)" '[ $rc -eq 1 ]'
  check "file-size limit: one line naming the file" '[ "$(grep -c . full.err)" -eq 1 ] && grep -q "lim/checkpoints/resume.pt: write failed: File too large" full.err'
  "$bin" train --resume lim -q 2>>resume.err
  check "file-size limit: resumed, same weights" '[ "$(weights bigref)" = "$(weights lim)" ]'
fi

finish
