#!/usr/bin/env bash
# The sweep scripts on a tiny sweep: bash loop, GNU parallel, SLURM shards set by hand, and an
# interrupted sweep that resumes without retraining finished runs.
# Usage: tests/sweep.sh path/to/grokking
src=$(cd "$(dirname "$0")/.." && pwd)
name=sweep
source "$src/tests/lib.sh"
export GROKKING=$bin
starts() { grep -c "^\[.*\] grokking " "$1/train.log" 2>/dev/null || echo 0; }

cat >tiny.json <<'J'
{"base": {"task": {"p": 7, "frac_train": 0.6}, "model": {"d_model": 8, "n_heads": 2, "d_head": 4, "d_mlp": 16},
          "train": {"epochs": 20, "eval_every": 10, "checkpoint_every": 10, "device": "cpu", "threads": 1}},
 "grid": {"train.seed": [0, 1, 2], "optim.weight_decay": [0.5, 1]}, "points": [{"task.p": 11}]}
J
runs=7

# ---- bash loop ----
bash "$src/scripts/sweep-loop.sh" tiny.json loop >/dev/null 2>loop.err
check "loop: sweep.csv has every run" '[ "$(($(wc -l <loop/sweep.csv) - 1))" -eq $runs ]'

# ---- compare: arms by weight decay, seeds pooled (the p=11 point is an arm of its own) ----
"$GROKKING" compare loop --by optim.weight_decay --json >cmp.json 2>cmp.err
check "compare: two arms of 3 runs each" '[ "$(grep -c "\"runs\": 3" cmp.json)" -eq 2 ]'
check "compare: compare.csv has a row per arm" '[ "$(wc -l <loop/compare.csv)" -eq 4 ]'
check "compare: compare_runs.csv has a row per run" '[ "$(($(wc -l <loop/compare_runs.csv) - 1))" -eq $runs ]'
python3 "$src/scripts/readme-tables.py" compare loop --by optim.weight_decay >tbl.txt 2>tbl.err
check "readme-tables compare: the arms as Markdown rows (two of the grid, the p=11 point's)" \
  '[ "$(grep -c "^| optim.weight_decay=" tbl.txt)" -eq 3 ] && grep -q "^| optim.weight_decay=(unset) | 1 |" tbl.txt &&
   grep -q "^| arm | runs | grokked |" tbl.txt'
# Another outcome (Omnigrok's gap) names itself in the JSON and the table, with the --at columns;
# an arm of one run can detect no ratio ("none").
python3 "$src/scripts/readme-tables.py" compare loop --by optim.weight_decay --acc 0.5 --gap --at 10,20 >tbl.txt 2>tbl.err
check "readme-tables compare --acc --gap --at: the outcome in the header, a column per epoch, a cell each" \
  'grep -q "^| arm | runs | reached | median epochs from train to test accuracy >= 0.5 \[95 % CI\] | ratio to baseline .* | test acc at 10 (median) | test acc at 20 (median) |$" tbl.txt &&
   [ "$(grep "^| optim.weight_decay=" tbl.txt | awk -F"|" "{print NF}" | sort -u)" = 11 ]'
"$GROKKING" compare loop --by optim.weight_decay --acc 0.5 --gap --json >cmp.json 2>cmp.err
check "compare --json names its outcome" 'grep -q "\"outcome\": \"epochs from train to test accuracy >= 0.5\"" cmp.json'
"$GROKKING" compare loop --by optim.weight_decay >cmp.txt 2>cmp.err
check "compare: an arm of one run detects no ratio (none), the others a finite one" \
  'grep -Eq "^optim.weight_decay=\(unset\) .* none$" cmp.txt && grep -Eq "^optim.weight_decay=1(\.0)? .* x[0-9.]+$" cmp.txt'
# A run whose summary says interrupted is not finished: compare leaves it out until it is.
cp -r loop loopi
sed -i 's/"status": "completed"/"status": "interrupted"/' "loopi/runs/$(ls loopi/runs | head -1)/summary.json"
"$GROKKING" compare loopi --by optim.weight_decay --json >cmp.json 2>cmp.err
check "compare counts no interrupted run" \
  '[ "$(python3 -c "import json; print(sum(a.get(\"runs\", 0) for a in json.load(open(\"cmp.json\"))[\"arms\"]))")" -eq $((runs - 1)) ]'
expect 2 "--by train.lr: not a swept key" -- "$GROKKING" compare loop --by train.lr
expect 2 "nothere: not a sweep directory" -- "$GROKKING" compare nothere --by optim.lr

# ---- GNU parallel ----
if command -v parallel >/dev/null; then
  JOBS=2 bash "$src/scripts/sweep-parallel.sh" tiny.json par >/dev/null 2>par.err
  check "parallel: sweep.csv has every run" '[ "$(($(wc -l <par/sweep.csv) - 1))" -eq $runs ]'
else
  echo "FAIL: GNU parallel is not installed (scripts/setup.sh installs it)" >&2
  fail=$((fail + 1))
fi

# ---- SLURM array: every run trained by exactly one of n tasks, for several n ----
for n in 1 3 4; do
  for ((i = 0; i < n; i++)); do
    SLURM_ARRAY_TASK_ID=$i SLURM_ARRAY_TASK_COUNT=$n bash "$src/scripts/sweep.slurm" tiny.json --dir "slurm$n" -q 2>>slurm.err
  done
  total=0
  for d in "slurm$n"/runs/*/; do total=$((total + $(starts "$d"))); done
  check "slurm n=$n: each run trained exactly once ($total starts)" '[ "$total" -eq $runs ]'
  check "slurm n=$n: aggregate has every run" '[ "$(($(wc -l <slurm$n/sweep.csv) - 1))" -eq $runs ]'
done
# Shards partition the runs: the union of --list over shards is the whole list, no repeats.
"$GROKKING" sweep tiny.json --dir lst --list | cut -f1 | sort >all.txt
for n in 2 5 7 9; do
  : >union.txt
  for ((i = 0; i < n; i++)); do "$GROKKING" sweep tiny.json --dir lst --list --shard "$i/$n" | cut -f1 >>union.txt; done
  check "shards $n partition the runs" 'sort union.txt | cmp -s - all.txt'
done
SLURM_ARRAY_TASK_ID=3 SLURM_ARRAY_TASK_MIN=1 SLURM_ARRAY_TASK_MAX=4 bash "$src/scripts/sweep.slurm" tiny.json --dir minmax --list >mm.txt
"$GROKKING" sweep tiny.json --dir lst --list --shard 2/4 >want.txt
check "slurm with 1-based array ids maps to shard 2/4" 'cmp -s mm.txt want.txt'

# ---- --pack --jobs 1: the six p=7 runs (3 seeds x 2 weight decays) in one process, the p=11 point alone ----
col() {  # col FILE COLUMN: "name value" per row of a sweep.csv
  # sweep.csv quotes list values (RFC 4180): read by a CSV parser, not split at every comma.
  python3 -c 'import csv, sys
for r in csv.DictReader(open(sys.argv[1])): print(r["name"], r[sys.argv[2]])' "$1" "$2" | sort
}
"$GROKKING" sweep tiny.json --dir packed --pack 8 --jobs 1 2>packed.err
check "pack: sweep.csv has every run" '[ "$(($(wc -l <packed/sweep.csv) - 1))" -eq $runs ]'
check "pack: one process trained the six p=7 runs side by side" '[ "$(grep -c "6 runs, 6 side by side" packed.err)" -eq 1 ]'
check "pack: six summaries say 6 models side by side" \
  '[ "$(grep -l "\"seeds_side_by_side\": 6" packed/runs/*/summary.json | wc -l)" -eq 6 ]'
check "pack: every run completed" '[ "$(col packed/sweep.csv status | grep -c " completed$")" -eq $runs ]'
join <(col loop/sweep.csv final_test_loss) <(col packed/sweep.csv final_test_loss) >losses.txt
check "pack: each run's final test loss is the one it has trained alone (rel. 1e-4)" \
  '[ "$(wc -l <losses.txt)" -eq $runs ] && awk "{ d = \$2 - \$3; if (d < 0) d = -d; if (d > 1e-4 * \$2) bad++ } END { exit bad > 0 }" losses.txt'
"$GROKKING" sweep tiny.json --dir packed --pack 8 --jobs 1 2>packed2.err
check "pack: a finished packed sweep is not retrained" '! grep -q "side by side" packed2.err'
expect 2 "--pack: Value 0 not in range 1 to 256" -- "$GROKKING" sweep tiny.json --dir packed --pack 0
# --pack without --jobs on the CPU: a queue a core (here two), one thread each; the same results.
if [ "$(nproc)" -ge 2 ]; then
  taskset -c 0,1 "$GROKKING" sweep tiny.json --dir split --pack 8 2>split.err
  check "pack on 2 CPUs without --jobs: two processes of 3 runs side by side, one thread each" \
    'grep -q "packs split into 2 processes of one thread" split.err && [ "$(grep -c "3 runs, 3 side by side" split.err)" -eq 2 ] &&
     [ "$(grep -l "\"threads\": 1" split/runs/*/summary.json | wc -l)" -eq $runs ]'
  join <(col loop/sweep.csv final_test_loss) <(col split/sweep.csv final_test_loss) >slosses.txt
  check "pack split over cores: each run's final test loss as alone (rel. 1e-4)" \
    '[ "$(wc -l <slosses.txt)" -eq $runs ] && awk "{ d = \$2 - \$3; if (d < 0) d = -d; if (d > 1e-4 * \$2) bad++ } END { exit bad > 0 }" slosses.txt'
else
  echo "note: one CPU: the split of packs over cores is not tested here" >&2
fi

# ---- an interrupted sweep resumes; finished runs are not retrained ----
sed 's/"epochs": 20/"epochs": 400/' tiny.json >slow.json
"$GROKKING" sweep slow.json --dir intr -q &
pid=$!
for _ in $(seq 200); do [ "$(ls intr/runs 2>/dev/null | wc -l)" -ge 3 ] && break; sleep 0.1; done
kill -INT $pid
wait $pid
pkill -INT -f "grokking train .*intr/" 2>/dev/null
sleep 0.5
"$GROKKING" sweep slow.json --dir intr -q 2>intr.err
check "interrupted sweep completes" '[ "$(($(wc -l <intr/sweep.csv) - 1))" -eq $runs ]'
first=$(ls intr/runs | head -1)
check "a run finished before the interruption was trained once" '[ "$(starts "intr/runs/$first")" -eq 1 ]'
check "every run completed" '! grep -q interrupted intr/sweep.csv'

# ---- the same with --pack: the runs interrupted side by side resume one by one ----
"$GROKKING" sweep slow.json --dir pintr --pack 8 --jobs 1 -q &
pid=$!
for _ in $(seq 300); do [ -n "$(ls pintr/runs/*/checkpoints/epoch_10.pt 2>/dev/null)" ] && break; sleep 0.1; done
kill -INT $pid
wait $pid
pkill -INT -f "grokking train .*pintr/" 2>/dev/null
sleep 0.5
check "packed runs were interrupted part-way" '[ -n "$(ls pintr/runs/*/checkpoints/resume.pt 2>/dev/null)" ]'
"$GROKKING" sweep slow.json --dir pintr --pack 8 --jobs 1 -q 2>pintr.err
check "interrupted packed sweep completes" '[ "$(col pintr/sweep.csv status | grep -c " completed$")" -eq $runs ]'
join <(col intr/sweep.csv final_test_loss) <(col pintr/sweep.csv final_test_loss) >plosses.txt
check "resumed packed runs end where unpacked ones do (rel. 1e-4)" \
  '[ "$(wc -l <plosses.txt)" -eq $runs ] && awk "{ d = \$2 - \$3; if (d < 0) d = -d; if (d > 1e-4 * \$2) bad++ } END { exit bad > 0 }" plosses.txt'

# ---- continuous packing: a finished run's place goes to the next run; a kill -9 after some ----
# ---- runs ended leaves those exactly as the uninterrupted sweep wrote them                   ----
cat >cont.json <<'J'
{"base": {"task": {"p": 7, "frac_train": 0.6}, "model": {"d_model": 8, "n_heads": 2, "d_head": 4, "d_mlp": 16},
          "optim": {"lr": 0.01},
          "train": {"epochs": 600, "eval_every": 10, "checkpoint_every": 50, "device": "cpu", "threads": 1,
                    "early_stop_acc": 0.35, "early_stop_hold": 0}},
 "grid": {"train.seed": [5, 0, 4, 1, 2, 3]}}
J
"$GROKKING" sweep cont.json --dir cref --pack 2 --jobs 1 -q 2>cref.err
check "continuous pack: every run finished" '[ "$(($(wc -l <cref/sweep.csv) - 1))" -eq 6 ]'
check "continuous pack: two runs stopped early" '[ "$(grep -c early_stopped cref/sweep.csv)" -eq 2 ]'
check "continuous pack: four runs entered the pack as others ended" \
  '[ "$(grep -h "starts in the pack" cref/runs/*/train.log | sort -u | wc -l)" -eq 4 ]'
"$GROKKING" sweep cont.json --dir ckill --pack 2 --jobs 1 -q 2>/dev/null &
pid=$!
for _ in $(seq 600); do [ "$(ls ckill/runs/*/summary.json 2>/dev/null | wc -l)" -ge 2 ] && break; sleep 0.02; done
pkill -KILL -f "grokking train .*ckill/" 2>/dev/null
kill -KILL $pid 2>/dev/null
wait $pid 2>/dev/null
ended=$(for f in ckill/runs/*/summary.json; do basename "$(dirname "$f")"; done)
check "kill -9: at least two runs had ended" '[ "$(echo "$ended" | wc -l)" -ge 2 ]'
"$GROKKING" sweep cont.json --dir ckill --pack 2 --jobs 1 -q 2>ckill.err
check "kill -9, then the same command: every run finished" '[ "$(($(wc -l <ckill/sweep.csv) - 1))" -eq 6 ]'
nolap() { cut -d, -f1-7,9- "$1"; }  # metrics.csv without its elapsed_s column
facts() { grep -E '"(status|epochs|grokked_epoch|weights_checksum)"' "$1"; }
for n in $ended; do
  check "$n, ended before the kill: metrics as uninterrupted" \
    'cmp -s <(nolap "ckill/runs/$n/metrics.csv") <(nolap "cref/runs/$n/metrics.csv")'
  check "$n, ended before the kill: summary as uninterrupted, trained once" \
    'cmp -s <(facts "ckill/runs/$n/summary.json") <(facts "cref/runs/$n/summary.json") && ! grep -q resuming "ckill/runs/$n/train.log"'
done

finish
