#!/usr/bin/env bash
# One sweep trained several ways, one after another, on a quiet machine: e.g. packed (`--pack N`:
# one process, N runs side by side, each place refilled as a run ends) against unpacked
# (`--jobs J`: J processes of one run each). Prints a Markdown table of wall time, CPU time
# (user + system) and CPU time per run-epoch, then whether every run's grokking epoch (COMPARE:
# another sweep.csv column, e.g. final_train_loss for a task without accuracy) agrees with the
# last way's.
#   usage: scripts/bench-sweep.sh SWEEP.json "--pack 12" "--pack 6 --jobs 2" "--jobs 2"
# GROKKING (default build/grokking) is the binary. Everything goes to a temporary directory,
# removed at the end. Nothing else should run meanwhile.
set -euo pipefail
sweep=${1:?usage: scripts/bench-sweep.sh SWEEP.json "SWEEP OPTIONS" ...}
shift
[ $# -ge 1 ] || set -- "--pack 12" "--jobs 2"
bin=${GROKKING:-build/grokking}
what=${COMPARE:-grokked_epoch}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

col() {  # col DIR COLUMN: "name value" per finished run, sorted
  # sweep.csv quotes list values (RFC 4180): read by a CSV parser, not split at every comma.
  python3 -c 'import csv, sys
for r in csv.DictReader(open(sys.argv[1])): print(r["name"], r[sys.argv[2]])' "$1/sweep.csv" "$2" | sort
}
epochs() { col "$1" epochs | awk '{ s += $2 } END { print s }'; }

rows=()
i=0
for how in "$@"; do
  i=$((i + 1))
  # shellcheck disable=SC2086  # the options are words
  /usr/bin/time -f "%e %U %S" -o "$tmp/$i.time" "$bin" sweep "$sweep" --dir "$tmp/$i" -q $how 2>"$tmp/$i.err" ||
    { cat "$tmp/$i.err" >&2; exit 1; }
  rows+=("$(awk -v how="$how" -v e="$(epochs "$tmp/$i")" \
    '{ printf "| `%s` | %.1f | %.1f | %.2f |", how, $1, $2 + $3, 1000 * ($2 + $3) / e }' "$tmp/$i.time")")
done
runs=$(($(wc -l <"$tmp/1/sweep.csv") - 1))
echo "$(basename "$sweep"): $runs runs, $(epochs "$tmp/1") epochs in all; $(nproc) cores; $(date -u +%Y-%m-%d); $("$bin" --version)"
echo
echo "| sweep options | wall s | CPU s | CPU ms per run-epoch |"
echo "|---|---|---|---|"
printf '%s\n' "${rows[@]}"
echo
for j in $(seq 1 $((i - 1))); do
  if cmp -s <(col "$tmp/$j" "$what") <(col "$tmp/$i" "$what"); then
    echo "\`${!j}\`: every run's $what as with \`${!i}\`"
  else
    echo "\`${!j}\`: $what values that differ from \`${!i}\`'s (name, this, that):"
    join <(col "$tmp/$j" "$what") <(col "$tmp/$i" "$what") | awk '$2 != $3'
  fi
done
