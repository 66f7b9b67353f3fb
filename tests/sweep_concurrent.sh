#!/usr/bin/env bash
# Several `grokking sweep` processes started at the same instant on one sweep directory (shards
# of a cluster job sharing a file system): every run is trained exactly once, a run another
# process holds is skipped with a message, none is reported failed, and all exit 0. Then the
# same with one sweep process killed mid-way: its training child keeps its claim, and a rerun
# finds every run finished.
# Usage: tests/sweep_concurrent.sh path/to/grokking
src=$(cd "$(dirname "$0")/.." && pwd)
name=sweep-concurrent
source "$src/tests/lib.sh"
starts() { grep -c "^\[.*\] grokking " "$1/train.log" 2>/dev/null || echo 0; }

cat >tiny.json <<'J'
{"base": {"task": {"p": 7, "frac_train": 0.6}, "model": {"d_model": 8, "n_heads": 2, "d_head": 4, "d_mlp": 16},
          "train": {"epochs": 20, "eval_every": 10, "checkpoint_every": 10, "device": "cpu", "threads": 1}},
 "grid": {"train.seed": [0, 1, 2, 3], "optim.weight_decay": [0.5, 1]}}
J
runs=8

# start DIR N ARGS...: N sweep processes on DIR, released together; their pids in $pids.
start() {
  local dir=$1 n=$2
  shift 2
  pids=()
  rm -f go
  for ((i = 0; i < n; i++)); do
    (while [ ! -e go ]; do sleep 0.005; done; exec "$bin" sweep tiny.json --dir "$dir" "$@") >"$dir.$i.out" 2>"$dir.$i.err" &
    pids+=($!)
  done
  sleep 0.5
  touch go
}

# every_run_once DIR: each run trained exactly once and finished.
every_run_once() {
  local total=0 done=0 d
  for d in "$1"/runs/*/; do
    total=$((total + $(starts "$d")))
    grep -q '"status": *"completed"' "$d/summary.json" 2>/dev/null && done=$((done + 1))
  done
  check "$1: $runs runs trained in all ($total starts)" '[ "$total" -eq $runs ]'
  check "$1: every run finished ($done of $runs)" '[ "$done" -eq $runs ]'
}

# ---- three processes at the same instant ----
start same 3 --jobs 1
rcs=""
for p in "${pids[@]}"; do wait "$p"; rcs="$rcs$?"; done
check "same: every sweep process exits 0 (got $rcs)" '[ "$rcs" = 000 ]'
check "same: no run reported failed" '! grep -q "exited with\|failed" same.*.err'
check "same: skipped runs say so" '[ "$(cat same.*.err | grep -c "claimed by another sweep process\|finished, skipped")" -ge 1 ]'
every_run_once same

# ---- three processes, two runs at a time each; one sweep process killed mid-way ----
start killed 3 --jobs 2
sleep 1.5
kill -KILL "${pids[0]}"
rcs=""
for p in "${pids[@]:1}"; do wait "$p"; rcs="$rcs$?"; done
wait "${pids[0]}" 2>/dev/null
check "killed: the other sweep processes exit 0 (got $rcs)" '[ "$rcs" = 00 ]'
check "killed: no run reported failed" '! grep -q "exited with\|failed" killed.1.err killed.2.err'
# The killed process's training children finish on their own: wait for them.
for ((t = 0; t < 600; t++)); do
  [ "$(ls killed/runs/*/summary.json 2>/dev/null | wc -l)" -ge $runs ] && ! fuser -s killed/claims/* 2>/dev/null && break
  sleep 0.2
done
"$bin" sweep tiny.json --dir killed >rerun.out 2>rerun.err
check "killed: the rerun exits 0" '[ $? -eq 0 ]'
check "killed: the rerun trains nothing" '[ "$(grep -c "finished, skipped" rerun.err)" -eq $runs ]'
every_run_once killed
check "killed: sweep.csv has every run" '[ "$(($(wc -l <killed/sweep.csv) - 1))" -eq $runs ]'

finish
