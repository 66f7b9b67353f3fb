#!/usr/bin/env bash
# Several `grokking sweep` processes started at the same instant on one sweep directory (shards
# of a cluster job sharing a file system): every run is trained exactly once, a run another
# process holds is skipped with a message, none is reported failed, and each exits 0, or 3 when
# another process still held runs as it ended (its sweep.csv lacks them; the last to end has
# them all). Then the same with one sweep process killed with SIGKILL mid-way: its trainings end
# with it (checkpoint and exit), the other processes take over the runs it left unfinished, and
# a rerun finds every run finished.
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
    (while [ ! -e go ]; do sleep 0.005; done; exec "$bin" sweep "${sweep_file:-tiny.json}" --dir "$dir" "$@") >"$dir.$i.out" 2>"$dir.$i.err" &
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
check "same: every sweep process exits 0 or 3 (got $rcs)" '[[ "$rcs" =~ ^[03]{3}$ ]]'
check "same: one of them exits 0 (got $rcs)" '[[ "$rcs" == *0* ]]'
check "same: no run reported failed" '! grep -q "exited with\|failed" same.*.err'
check "same: skipped runs say so" '[ "$(cat same.*.err | grep -c "claimed by another sweep process\|finished, skipped")" -ge 1 ]'
check "same: an exit 3 names the runs still held" \
  '(for i in 0 1 2; do [ "${rcs:$i:1}" != 3 ] || grep -q "still held by another sweep process" same.$i.err || exit 1; done)'
every_run_once same

# ---- three processes, two runs at a time each; one sweep process killed mid-way ----
# Runs of 2,000 epochs here (seconds each), so that a training outliving its sweep would show.
sed 's/"epochs": 20,/"epochs": 2000,/' tiny.json >tiny-long.json
sweep_file=tiny-long.json start killed 3 --jobs 2
# Killed while it trains (its first trainings under way).
children=""
for ((t = 0; t < 200; t++)); do
  sleep 0.05
  children=$(pgrep -P "${pids[0]}" | tr '\n' ' ')
  [ -n "$children" ] && break
done
kill -KILL "${pids[0]}"
# Its trainings get SIGTERM from the kernel as it dies: they checkpoint and end at once.
for ((t = 0; t < 20; t++)); do
  alive=0
  for c in $children; do kill -0 "$c" 2>/dev/null && alive=1; done
  [ $alive -eq 0 ] && break
  sleep 0.1
done
check "killed: it had trainings running (pids $children)" '[ -n "$children" ]'
check "killed: its trainings ended with it" '[ $alive -eq 0 ]'
rcs=""
for p in "${pids[@]:1}"; do wait "$p"; rcs="$rcs$?"; done
wait "${pids[0]}" 2>/dev/null
check "killed: the other sweep processes exit 0 or 3 (got $rcs)" '[[ "$rcs" =~ ^[03]{2}$ ]]'
check "killed: no run reported failed" '! grep -q "exited with\|failed" killed.1.err killed.2.err'
"$bin" sweep tiny-long.json --dir killed >rerun.out 2>rerun.err
check "killed: the rerun exits 0" '[ $? -eq 0 ]'
done_runs=0
for d in killed/runs/*/; do grep -q '"status": *"completed"' "$d/summary.json" 2>/dev/null && done_runs=$((done_runs + 1)); done
check "killed: every run finished ($done_runs of $runs)" '[ "$done_runs" -eq $runs ]'
check "killed: sweep.csv has every run" '[ "$(($(wc -l <killed/sweep.csv) - 1))" -eq $runs ]'

finish
