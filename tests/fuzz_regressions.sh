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
# metrics.csv and the CSV/JSON readers are reached through a run directory that resume or plot
# would also change: no replay is defined for them yet, so a case there must not pass silently.
for f in "$cases"/metrics/* "$cases"/csv/*; do fail=$((fail + 1)); echo "FAIL: $f: no replay defined for this target" >&2; done
total=$((pass + fail))
echo "fuzz-regressions: $total cases"
finish
