#!/usr/bin/env bash
# Every subcommand, given broken input outside the bad-input corpus: one line on stderr in the
# form "error: FILE: /json/path: what is wrong" (or "error: --option ...: what is wrong"),
# exit 2 for bad input and 1 for an unreadable run file, no signal, no raw library message, no
# hang, and nothing written. Also: limits refused before any file or directory is created, and
# configs read through pipes.
# Usage: tests/error_format.sh path/to/grokking
here=$(cd "$(dirname "$0")" && pwd)
data=$here/bad_input
name=error-format
source "$here/lib.sh"
T="timeout 60 $bin"

nothing_written() {
  if [ -n "$(ls -A out 2>/dev/null)$(ls -d runs sw 2>/dev/null)" ]; then fail=$((fail + 1)); echo "FAIL: $1 wrote files" >&2; rm -rf out runs sw; else pass=$((pass + 1)); fi
}
# No raw message of nlohmann, CLI11's internals or LibTorch ("[json.exception", "c10::").
no_raw() { check "$1: no raw library message" '! grep -q "json.exception\|c10::\|what():" err.txt'; }

# A config nested 100000 levels deep (it used to overflow the stack: SIGSEGV).
python3 -c 'print("{\"task\": " + "[" * 100000 + "]" * 100000 + "}")' >deep.json
python3 -c 'print("{\"base\": {}, \"points\": [" + "{\"a\": " * 100000 + "1" + "}" * 100000 + "]}")' >deep_sweep.json

# ---- train ----
expect 2 "^error: deep.json: /: JSON nested deeper than 64 levels at line 1" -- $T train deep.json --out out
expect 2 "^error: --set task.p=1e999: /task/p: number out of range" -- $T train "$data/ok_tiny.json" --set task.p=1e999 --out out
no_raw "train --set 1e999"
expect 2 "^error: --set optim.lr=-1e400: /optim/lr: number out of range" -- $T train "$data/ok_tiny.json" --set optim.lr=-1e400 --out out
expect 2 "^error: --set model.d_mlp=\[\[\[.*: /: JSON nested deeper" -- $T train "$data/ok_tiny.json" --set "model.d_mlp=$(printf '[%.0s' {1..200})" --out out
expect 2 "^error: --seeds: [0-9]+ values, at most 256" -- $T train "$data/ok_tiny.json" --seeds 0-99999999999 --out out
expect 2 "^error: --seeds: too many values|^error: --seeds: [0-9]+ values, at most 256" -- $T train "$data/ok_tiny.json" --seeds=-9223372036854775807-9223372036854775807 --out out
expect 2 "^error: --seeds: 300 seeds, at most 256|^error: --seeds: [0-9]+ values, at most 256" -- $T train "$data/ok_tiny.json" --seeds "$(seq -s, 0 299)" --out out
expect 2 "^error: --seeds: seed 1 is listed twice" -- $T train "$data/ok_tiny.json" --seeds 1,2,1 --out out
expect 2 "^error: --seeds: seeds are integers >= 0 \(got -3\)" -- $T train "$data/ok_tiny.json" --seeds=-3 --out out
expect 2 "^error: /dev/zero: more than the 16 MiB a config or sweep file may have" -- $T train /dev/zero --out out
nothing_written train
# A config through a pipe, as shell users write it, still trains.
expect 0 "" -- $T train <(cat "$data/ok_tiny.json") --out piped -q
check "train <(cat ...): the run finished" '[ -f piped/summary.json ]'
expect 0 "" -- $T train /dev/stdin --out stdin_run -q <"$data/ok_tiny.json"
check "train /dev/stdin: the run finished" '[ -f stdin_run/summary.json ]'
good_ck=$(ls piped/checkpoints/epoch_*.pt | tail -1)

# ---- config ----
expect 2 "^error: deep.json: /: JSON nested deeper" -- $T config deep.json
expect 2 "^error: --set train.epochs=1e99999: /train/epochs: number out of range" -- $T config --set train.epochs=1e99999
expect 0 "" -- $T config <(echo '{"task": {"p": 11}}')
# Found by fuzz_set: a byte that is not UTF-8 made nlohmann's dump() throw (exit 1, raw message).
expect 2 "^error: --set .*: not valid UTF-8 text" -- $T config --set $'output.dir=runs/\xff'
expect 2 "^error: --set .*: not valid UTF-8 text" -- $T config --set $'optim.lr=-6\xff\xff'
no_raw "config --set invalid UTF-8"

# ---- fourier, ablate: a FIFO and a device as checkpoints are refused, not waited on ----
mkfifo fifo.pt
for sub in fourier ablate; do
  expect 1 "^error: fifo.pt: not a regular file" -- $T $sub fifo.pt
  expect 1 "^error: /dev/zero: not a regular file" -- $T $sub /dev/zero
done
expect 2 "^error: --freqs: [0-9]+ values, at most 4096" -- $T ablate "$good_ck" --freqs 1-99999999
expect 2 "^error: --freqs: expected numbers like 1,2,5-7" -- $T ablate "$good_ck" --freqs 5-1

# ---- progress: a FIFO among a run's checkpoints ----
mkdir -p frun && cp -r piped/. frun/ && rm -f frun/checkpoints/epoch_*.pt && mkfifo frun/checkpoints/epoch_0000010.pt
expect 1 "epoch_0000010.pt: not a regular file" -- $T progress frun

# ---- bench ----
expect 2 "^error: deep.json: /: JSON nested deeper" -- $T bench deep.json
expect 2 "^error: --set train.seed=1e400: /train/seed: number out of range" -- $T bench --set train.seed=1e400

# ---- sweep: limits before the sweep directory is created ----
expect 2 "^error: deep_sweep.json: /: JSON nested deeper" -- $T sweep deep_sweep.json --dir sw
python3 -c 'import json; print(json.dumps({"base": {}, "grid": {"train.seed": list(range(1000)), "optim.lr": [1e-3] * 0 + [i / 1e4 + 1e-4 for i in range(100)]}}))' >huge_grid.json
expect 2 "^error: huge_grid.json: /grid: 100000 runs, at most 10000" -- $T sweep huge_grid.json --dir sw
python3 -c 'import json; print(json.dumps({"base": {}, "grid": {k: list(range(1000)) for k in ["train.seed", "task.seed", "train.epochs", "optim.warmup_steps"]}}))' >huger_grid.json
expect 2 "^error: huger_grid.json: /grid: 1000000000000 runs, at most 10000" -- $T sweep huger_grid.json --dir sw
expect 2 "^error: --jobs: " -- $T sweep huge_grid.json --dir sw --jobs 100000
expect 2 "^error: /dev/zero: more than the 16 MiB" -- $T sweep /dev/zero --dir sw
nothing_written sweep
expect 0 "" -- $T sweep <(echo '{"base": {}, "grid": {"train.seed": [1, 2]}}') --dir listed --list

# ---- plot: a run directory whose summary.json nests too deep, or is a FIFO ----
mkdir -p prun && cp piped/config.json piped/metrics.csv prun/
python3 -c 'print("[" * 1000 + "]" * 1000)' >prun/summary.json
expect 1 "^error: prun/summary.json: /: JSON nested deeper" -- $T plot prun --no-analysis
rm prun/summary.json && mkfifo prun/summary.json
expect 1 "^error: prun/summary.json: not a regular file" -- $T plot prun --no-analysis

finish
