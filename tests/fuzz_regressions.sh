#!/usr/bin/env bash
# Replays every input scripts/fuzz.sh ever found (tests/fuzz_regressions/<target>/*) through the
# normal binary, the way a user would hand it over: exit 1 or 2 (no signal), exactly one line on
# stderr, no backtrace, and nothing written.
# Usage: tests/fuzz_regressions.sh path/to/grokking
here=$(cd "$(dirname "$0")" && pwd)
cases=$here/fuzz_regressions
name=fuzz-regressions
source "$here/lib.sh"

# replay CASE COMMAND...: run in an empty directory, which must stay empty.
replay() {
  local case=$1
  shift
  rm -rf scratch && mkdir scratch && (cd scratch && "$@" >../out.txt 2>../err.txt)
  local rc=$? why=""
  { [ "$rc" -eq 1 ] || [ "$rc" -eq 2 ]; } || why="exit $rc, want 1 or 2"
  [ "$(grep -c . err.txt)" -eq 1 ] || why="$why; $(grep -c . err.txt) stderr lines, want 1"
  grep -q '^error: ' err.txt || why="$why; stderr does not start with 'error: '"
  ! grep -q "Exception raised from\|frame #\|terminate called\|Sanitizer" err.txt || why="$why; backtrace"
  [ -z "$(ls -A scratch)" ] || why="$why; wrote $(ls -A scratch | head -3 | tr '\n' ' ')"
  if [ -z "$why" ]; then pass=$((pass + 1)); else fail=$((fail + 1)); echo "FAIL: $case -> $why" >&2; sed 's/^/  | /' err.txt | head -3 >&2; fi
}

shopt -s nullglob
for f in "$cases"/config/*; do replay "$f" "$bin" config "$f"; done
for f in "$cases"/set/*; do
  args=()
  while IFS= read -r line || [ -n "$line" ]; do args+=(--set "$line"); done < <(tr -d '\000' <"$f")
  replay "$f" "$bin" config "${args[@]}"
done
for f in "$cases"/sweep/*; do replay "$f" "$bin" sweep "$f" --list --dir sw; done
for f in "$cases"/int_list/*; do replay "$f" "$bin" train "$here/bad_input/ok_tiny.json" --out out --seeds "$(tr -d '\000' <"$f")"; done
for f in "$cases"/checkpoint/*; do replay "$f" "$bin" fourier "$f"; done
# metrics.csv (read by --resume) and the CSV/JSON files of run and sweep directories are reached
# through a directory: each case replaces one file of a finished fixture, and the command reading
# it must fail in one line (resume, compare) or finish (plot, which tolerates what it cannot
# draw) without a signal, and change nothing it was not asked to write.
fixtures() {
  [ -d fixture ] && return
  "$bin" train "$here/bad_input/ok_tiny.json" --out fixture/run -q >/dev/null 2>&1 || { echo "FAIL: fixture run" >&2; exit 1; }
  printf '{"base": {"task": {"p": 7, "frac_train": 0.5}, "model": {"d_model": 8, "n_heads": 2, "d_head": 4, "d_mlp": 16}, "train": {"epochs": 20, "eval_every": 10, "threads": 1}}, "grid": {"train.seed": [0]}}' >fixture/sweep.json
  "$bin" sweep fixture/sweep.json --dir fixture/sweep -q >/dev/null 2>&1 || { echo "FAIL: fixture sweep" >&2; exit 1; }
}
# in_dir CASE DIR FILE COMMAND...: DIR copied to scratch/d, FILE replaced by CASE, COMMAND run in
# scratch with d as its directory; files that existed must keep their content.
in_dir() {
  local case=$1 src=$2 file=$3
  shift 3
  rm -rf scratch && mkdir scratch && cp -r "$src" scratch/d && cp "$case" "scratch/d/$file"
  local before
  before=$( (cd scratch && find d -type f ! -name '*.lock' -exec md5sum {} + | sort) )
  (cd scratch && "$@" >../out.txt 2>../err.txt)
  local rc=$? why=""
  [ "$rc" -lt 128 ] || why="killed by a signal ($rc)"
  if [ "$rc" -ne 0 ]; then
    { [ "$rc" -eq 1 ] || [ "$rc" -eq 2 ]; } || why="$why; exit $rc, want 0, 1 or 2"
    [ "$(grep -c . err.txt)" -eq 1 ] || why="$why; $(grep -c . err.txt) stderr lines, want 1"
    grep -q '^error: ' err.txt || why="$why; stderr does not start with 'error: '"
  fi
  ! grep -q "Exception raised from\|frame #\|terminate called\|Sanitizer" err.txt || why="$why; backtrace"
  local after
  after=$( (cd scratch && find d -type f ! -name '*.lock' -exec md5sum {} + | sort) )
  # plot writes plots/ and report.html; nothing that was there before may change.
  local changed
  changed=$(comm -23 <(echo "$before") <(echo "$after") | head -3)
  # (a command that succeeded was entitled to write: a case that reads fine now trains on)
  [ -z "$changed" ] || [ "$rc" -eq 0 ] || why="$why; changed ${changed//$'\n'/ }"
  if [ -z "$why" ]; then pass=$((pass + 1)); else fail=$((fail + 1)); echo "FAIL: $case -> $why" >&2; sed 's/^/  | /' err.txt | head -3 >&2; fi
}
for f in "$cases"/metrics/*; do
  fixtures
  in_dir "$f" fixture/run metrics.csv "$bin" train --resume d -q --set train.epochs=30
  in_dir "$f" fixture/run metrics.csv "$bin" plot d --no-analysis
done
for f in "$cases"/csv/*; do
  fixtures
  in_dir "$f" fixture/sweep sweep.csv "$bin" plot d --no-analysis
  in_dir "$f" fixture/sweep plan.json "$bin" compare d --by train.seed
  in_dir "$f" fixture/run summary.json "$bin" plot d --no-analysis
done
total=$((pass + fail))
echo "fuzz-regressions: $total cases"
finish
