#!/usr/bin/env bash
# Drives the real binary: exit codes, one-line errors, refusal to clobber, Ctrl-C and resume.
# Usage: tests/cli.sh path/to/grokking
name=cli
src=$(cd "$(dirname "$0")/.." && pwd)
source "$src/tests/lib.sh"

tiny='{"task": {"p": 7, "frac_train": 0.6}, "model": {"d_model": 8, "n_heads": 2, "d_head": 4, "d_mlp": 16},
       "train": {"epochs": 40, "eval_every": 10, "checkpoint_every": 20, "threads": 1, "device": "cpu"}}'
echo "$tiny" >tiny.json

# ---- bad input: exit 2, one line naming the file and field, nothing written ----
expect 2 "missing.json: no such file" -- "$bin" train missing.json
mkdir adir
expect 2 "adir: is a directory" -- "$bin" train adir
: >empty.json
expect 2 "empty.json: empty file" -- "$bin" train empty.json
echo '{"task": {"p": 7,}}' >trailing.json
expect 2 "trailing.json: invalid JSON: .*line 1" -- "$bin" train trailing.json
echo '{"task": {"p": 1}}' >p1.json
expect 2 "p1.json: /task/p: must be an integer in \[2, 4096\] \(got 1\)" -- "$bin" train p1.json
echo '{"optim": {"lr": -1}}' >lr.json
expect 2 "lr.json: /optim/lr: must be in \(0, 1e\+09\] \(got -1\)" -- "$bin" train lr.json
echo '{"optim": {"momentum": 0.9}}' >unknown.json
expect 2 "unknown.json: /optim/momentum: unknown key" -- "$bin" train unknown.json
expect 2 "--set task.p=abc: /task/p: must be an integer" -- "$bin" train tiny.json --set task.p=abc --out r0
expect 2 "--set train.device=cuda: /train/device: 'cuda' requested" -- "$bin" train tiny.json --set train.device=cuda --out r0
expect 2 "unrecognized|Extra|not expected|requires" -- "$bin" train tiny.json --bogus
echo '{"task": {"kind": "sparse_features", "n_features": 5, "set_size": 2}, "model": {"kind": "toy_superposition"}}' >sets.json
expect 2 "sets.json: /task/set_size: must divide n_features \(5\) into whole sets \(got 2\)" -- "$bin" train sets.json --out r0
echo '{"task": {"kind": "sparse_features", "n_features": 4, "set_size": 2, "sets": "anticorrelated", "sparsity": 0.3}, "model": {"kind": "toy_superposition"}}' >anti.json
expect 2 "anti.json: /task/sparsity: anticorrelated sets of 2 need k \(1 - S\) <= 1, so S >= 0.5 \(got 0.3\)" -- "$bin" train anti.json --out r0
echo '{"model": {"kind": "toy_mlp"}}' >toymlp.json
expect 2 "toymlp.json: /model/kind: toy_mlp maps real-valued features to outputs; task.kind \"modular\" is not such a task" -- "$bin" train toymlp.json --out r0
[ ! -e r0 ] && [ ! -e runs ] && pass=$((pass + 1)) || { fail=$((fail + 1)); echo "FAIL: a refused config wrote files" >&2; }
touch afile
expect 2 "afile: exists and is not a directory" -- "$bin" train tiny.json --out afile/run

# ---- a directory that a process killed mid-write left with only a temporary file: start there, leave none ----
mkdir -p rtmp/checkpoints && echo '{"half": ' >rtmp/config.json.tmp.999 && echo x >rtmp/checkpoints/resume.pt.tmp.999
expect 0 "" -- "$bin" train tiny.json --out rtmp -q --set train.epochs=20
check "train in a directory with a killed process's temporaries: it trains and removes them" \
  '[ -s rtmp/summary.json ] && [ -z "$(find rtmp -name "*.tmp.*")" ]'

# ---- a run, then refusal to start over in it ----
expect 0 "" -- "$bin" train tiny.json --out r1 -q
[ -s r1/metrics.csv ] && [ -s r1/summary.json ] && [ -s r1/checkpoints/resume.pt ] && pass=$((pass + 1)) ||
  { fail=$((fail + 1)); echo "FAIL: run directory incomplete" >&2; }
expect 2 "r1: run directory is not empty; use --resume r1" -- "$bin" train tiny.json --out r1
expect 0 "" -- "$bin" train tiny.json --out r1 --force -q
expect 0 "already complete" -- "$bin" train --resume r1
expect 2 "cannot change task.p when resuming.*allowed: .*train.cuda_graph" -- "$bin" train --resume r1 --set task.p=11
expect 2 "nothere: not a run directory" -- "$bin" train --resume nothere
# Killed while creating its directory (only an empty checkpoints/ folder): a fresh start goes ahead;
# with a config but no checkpoint yet, --resume starts over from epoch 0.
mkdir -p r2/checkpoints
expect 0 "" -- "$bin" train tiny.json --out r2 -q
rm -rf r3 && mkdir -p r3/checkpoints && cp r2/config.json r3/
expect 0 "no checkpoint yet; starting the run from epoch 0" -- "$bin" train --resume r3 -q
[ -s r3/checkpoints/resume.pt ] && cmp -s <(cut -d, -f1-7 r2/metrics.csv) <(cut -d, -f1-7 r3/metrics.csv) &&
  pass=$((pass + 1)) || { fail=$((fail + 1)); echo "FAIL: a restarted run differs from a fresh one" >&2; }

# ---- Ctrl-C / SIGTERM: checkpoint, one line saying how to resume, 130 / 143 ----
for sig in INT TERM; do
  want=130
  [ $sig = TERM ] && want=143
  "$bin" train tiny.json --out "s$sig" --set train.epochs=1000000 --set train.checkpoint_every=1000000 -q 2>err.txt &
  pid=$!
  for _ in $(seq 100); do [ -s "s$sig/metrics.csv" ] && [ "$(wc -l <"s$sig/metrics.csv")" -ge 3 ] && break; sleep 0.1; done
  kill -$sig $pid
  wait $pid
  rc=$?
  if [ $rc -eq $want ] && grep -q "Resume with: grokking train --resume s$sig" err.txt &&
    grep -q '"status": "interrupted"' "s$sig/summary.json"; then
    pass=$((pass + 1))
  else
    fail=$((fail + 1))
    echo "FAIL: SIG$sig -> rc $rc (want $want)" >&2
    cat err.txt >&2
  fi
done
# The interrupted run resumes to completion with a smaller epoch count than planned... or more.
done_at=$(grep -o '"epochs": [0-9]*' sINT/summary.json | grep -o '[0-9]*$')
expect 0 "" -- "$bin" train --resume sINT --set train.epochs=$((done_at + 20)) -q
grep -q '"status": "completed"' sINT/summary.json && pass=$((pass + 1)) || { fail=$((fail + 1)); echo "FAIL: resume did not complete" >&2; }

# ---- a second process on the same run directory is refused at once ----
"$bin" train tiny.json --out busy --set train.epochs=1000000 -q 2>/dev/null &
pid=$!
for _ in $(seq 100); do [ -s busy/metrics.csv ] && break; sleep 0.1; done
expect 2 "busy: run directory is in use by another grokking process" -- "$bin" train --resume busy
kill -9 $pid
wait $pid 2>/dev/null
# A dead process does not leave the lock stuck.
expect 0 "" -- "$bin" train --resume busy --set train.epochs=30 -q

# ---- config subcommand ----
expect 0 "" -- "$bin" config --doc
grep -q "task.p" out.txt && pass=$((pass + 1)) || { fail=$((fail + 1)); echo "FAIL: config --doc" >&2; }

# ---- analysis subcommands: table, --json, a CSV in the run directory ----
expect 0 "" -- "$bin" fourier r1
check "fourier: table" 'grep -q "key frequencies, neuron method" out.txt && grep -q "|W_E|_k" out.txt'
check "fourier: fourier.csv, one row per frequency (P=7: 3)" \
  '[ "$(head -1 r1/fourier.csv)" = "k,embed_norm,unembed_norm,neurons,key_neurons,key_embed,embed_cos,embed_sin,unembed_cos,unembed_sin,wl_norm,neurons_85" ] && [ -s r1/attention.csv ] && [ -s r1/neuron_spectrum.dat ] && [ -s r1/logit_spectrum.dat ] && [ "$(wc -l <r1/fourier.csv)" -eq 4 ]'
expect 0 "" -- "$bin" fourier r1/checkpoints/epoch_0000020.pt --json
check "fourier --json: epoch and cos/sin norms" 'grep -q "\"epoch\": 20" out.txt && grep -q "\"embed_sin\": \[" out.txt'
expect 0 "" -- "$bin" ablate r1 --freqs 1,3 --json
check "ablate --freqs: each named frequency, both spaces" \
  'grep -q "remove key freq 3" out.txt && grep -q "\"space\": \"weights\"" out.txt && grep -q "\"space\": \"logits\"" out.txt'
check "ablate: ablate.csv" '[ "$(wc -l <r1/ablate.csv)" -ge 8 ]'
expect 2 "--freqs: frequency 4 is out of range 1..3" -- "$bin" ablate r1 --freqs 4
expect 0 "" -- "$bin" progress r1 --json
check "progress: a row per checkpoint and the phases" \
  '[ "$(wc -l <r1/progress.csv)" -eq $(($(ls r1/checkpoints/epoch_*.pt | wc -l) + 1)) ] && grep -q "\"phases\"" out.txt'
check "progress: trig_fit.csv, alpha_k of each key frequency per checkpoint" \
  'head -1 r1/trig_fit.csv | grep -q "^epoch,frac_variance,alpha_k" && [ "$(wc -l <r1/trig_fit.csv)" -eq "$(wc -l <r1/progress.csv)" ]'
expect 0 "" -- "$bin" ablate r1 --json
check "ablate --json: W_L read at the key frequencies (rank, residual, Table 1) and the neuron projections" \
  'grep -q "\"neuron_logit_map\"" out.txt && grep -q "\"fve_cos\"" out.txt && grep -q "\"residual\"" out.txt && grep -q "\"space\": \"neurons\"" out.txt'
expect 0 "" -- "$bin" fourier r1 --json
check "fourier --json: each head's attention over (a, b) by one frequency" 'grep -q "\"pair_fve\"" out.txt'

# ---- plot: valid PNG and SVG files and a report for a trained run ----
expect 0 "" -- "$bin" plot r1
for f in loss accuracy spectrum neurons logits2d attention progress excluded trig_fit; do
  if [ "$(head -c 8 "r1/plots/$f.png" | od -An -tx1 | tr -d ' \n')" = "89504e470d0a1a0a" ] &&
    grep -q "<svg" "r1/plots/$f.svg" && grep -q "</svg>" "r1/plots/$f.svg" && [ -s "r1/plots/$f.gp" ]; then
    pass=$((pass + 1))
  else
    fail=$((fail + 1)); echo "FAIL: plot $f" >&2
  fi
done
grep -q "<svg" r1/report.html && grep -q "Ablations" r1/report.html && pass=$((pass + 1)) ||
  { fail=$((fail + 1)); echo "FAIL: report.html" >&2; }
expect 2 "not a directory" -- "$bin" plot tiny.json

# ---- plot of the other kinds: a repeat run's head scores and attention pattern; a two-feature
# superposition sweep's phase diagram (trained beside the optimum) ----
figure_ok() {  # figure_ok DIR NAME: a PNG, an SVG and its script
  [ "$(head -c 8 "$1/plots/$2.png" | od -An -tx1 | tr -d ' \n')" = "89504e470d0a1a0a" ] &&
    grep -q "</svg>" "$1/plots/$2.svg" && [ -s "$1/plots/$2.gp" ]
}
"$bin" train <(echo '{"task": {"kind": "repeat", "vocab": 8, "context": 16, "repeat_min": 3, "repeat_max": 6,
  "eval_sequences": 16}, "model": {"n_layers": 2, "attn_only": true, "d_model": 16, "n_heads": 2, "d_head": 8},
  "train": {"epochs": 40, "batch_size": 16, "eval_every": 10, "checkpoint_every": 20, "threads": 1}}') --out rrep -q 2>/dev/null
expect 0 "" -- "$bin" heads rrep
expect 0 "" -- "$bin" plot rrep --no-analysis
check "plot: head scores and the longest sequence's attention pattern" \
  'figure_ok rrep heads && figure_ok rrep pattern && grep -q "repeat length L = 6" rrep/heads_pattern.dat &&
   grep -q "induction target" rrep/plots/pattern.gp && grep -q "^# attention of head L0H" rrep/heads_pattern_prev.dat &&
   grep -q "previous-token head L0H" rrep/plots/pattern.gp && [ ! -e rrep/plots/icl.svg ]'
# With the loss on every token, the in-context-learning score over training.
"$bin" train <(echo '{"task": {"kind": "repeat", "vocab": 8, "context": 16, "repeat_min": 3, "repeat_max": 6,
  "eval_sequences": 16, "loss_on": "all"}, "model": {"n_layers": 2, "attn_only": true, "d_model": 16, "n_heads": 2,
  "d_head": 8}, "train": {"epochs": 40, "batch_size": 16, "eval_every": 10, "checkpoint_every": 20, "threads": 1}}') \
  --out rlm -q 2>/dev/null
expect 0 "" -- "$bin" plot rlm --no-analysis
check "plot: the in-context-learning score over training where metrics.csv has it" \
  'figure_ok rlm icl && grep -q "icl_score" rlm/plots/icl.gp'
cat >phase.json <<'J'
{"base": {"task": {"kind": "sparse_features", "n_features": 2},
          "model": {"kind": "toy_superposition", "d_hidden": 1},
          "train": {"epochs": 30, "batch_size": 64, "eval_every": 10, "threads": 1}},
 "grid": {"task.sparsity": [0.0, 0.9], "task.importances": [[1.0, 0.5], [1.0, 2.0]]}, "dir": "phase"}
J
"$bin" sweep phase.json -q 2>/dev/null
expect 0 "" -- "$bin" superposition phase
expect 0 "" -- "$bin" plot phase
check "plot: the phase diagram of a two-feature sweep, a tile a run" \
  'figure_ok phase phase && [ "$(wc -l <phase/plots/phase.csv)" -eq 5 ] && grep -q "of 4 trained cells agree" phase/plots/phase.gp &&
   grep -q "boxxyerror" phase/plots/phase.gp && head -1 phase/plots/phase.csv | grep -q "x_lo,x_hi,y_lo,y_hi"'
# The README's tables come from scripts/readme-tables.py: a row a run, from the tool's JSON.
GROKKING=$bin python3 "$src/scripts/readme-tables.py" heads rrep >tbl.txt 2>tbl.err
check "readme-tables heads: a header and a row for the run" \
  '[ "$(wc -l <tbl.txt)" -eq 3 ] && grep -q "^| run | steps | repeated-half loss" tbl.txt && grep -q "^| rrep | 40 | " tbl.txt'
GROKKING=$bin python3 "$src/scripts/readme-tables.py" superposition phase >tbl.txt 2>tbl.err
check "readme-tables superposition: a row per run" '[ "$(grep -c "^| task\." tbl.txt)" -eq 4 ]'
if GROKKING=$bin python3 "$src/scripts/readme-tables.py" sparsity phase >tbl.txt 2>tbl.err; then rc=0; else rc=$?; fi
check "readme-tables sparsity: refuses a sweep where more than sparsity and seed vary" \
  '[ $rc -ne 0 ] && grep -q "vary only task.sparsity and train.seed" tbl.err'
cat >sparse.json <<'J'
{"base": {"task": {"kind": "sparse_features", "n_features": 3},
          "model": {"kind": "toy_superposition", "d_hidden": 2},
          "train": {"epochs": 30, "batch_size": 64, "eval_every": 10, "threads": 1}},
 "grid": {"task.sparsity": [0.0, 0.9], "train.seed": [0, 1]}, "dir": "sparse"}
J
"$bin" sweep sparse.json -q 2>/dev/null
GROKKING=$bin python3 "$src/scripts/readme-tables.py" sparsity sparse >tbl.txt 2>tbl.err
check "readme-tables sparsity: a column per sparsity, both seeds in a cell" \
  'grep -q "^| sparsity S | 0.00 | 0.90 |$" tbl.txt && grep -Eq "^\| features represented \(seeds 0, 1\) \| [0-3] [0-3] \| [0-3] [0-3] \|$" tbl.txt'
rm -f sparse/superposition.csv
expect 0 "" -- "$bin" plot sparse
check "plot of a sparsity sweep runs the sweep-wide superposition analysis first" \
  '[ -s sparse/superposition.csv ] && [ -s sparse/plots/superposition.svg ]'
GROKKING=$bin python3 "$src/scripts/readme-tables.py" final sparse train_loss --by task.sparsity --by model.d_hidden >tbl.txt 2>tbl.err
range=$(for s in 0 1; do tail -n1 "sparse/runs/task.sparsity=0.9_train.seed=$s/metrics.csv" | cut -d, -f2; done |
  sort -g | awk '{v[NR] = $1} END {printf "%.3f | %.3f – %.3f", (v[1] + v[2]) / 2, v[1], v[2]}')
check "readme-tables final: an arm per sparsity, its runs' last train_loss (median, range); a key no run sets is (unset)" \
  '[ "$(grep -c "^| task.sparsity=0.[09], model.d_hidden=(unset) | 2 | " tbl.txt)" -eq 2 ] && grep -qF "| task.sparsity=0.9, model.d_hidden=(unset) | 2 | $range |" tbl.txt'
GROKKING=$bin python3 "$src/scripts/readme-tables.py" circuit r1 >tbl.txt 2>tbl.err
check "readme-tables circuit: ours beside the paper's, W_L and Table 1 rows" \
  'grep -q "^| W_L minus" tbl.txt && grep -q "(Table 1) |$" tbl.txt && [ "$(grep -c "^| loss:" tbl.txt)" -eq 9 ]'
GROKKING=$bin python3 "$src/scripts/readme-tables.py" phases r1 >tbl.txt 2>tbl.err
last_epoch=$(tail -n1 r1/metrics.csv | cut -d, -f1)
"$bin" progress r1 --json >prog.json
if grep -q '"note": "the training set was never fit' prog.json; then
  check "readme-tables phases: a run that never fit its training set: memorisation under way at its last epoch" \
    'grep -q "^| .*r1 | (under way at $last_epoch) |  |  | never (best 0\.[0-9]*) |  |  | the training set was never fit" tbl.txt'
elif grep -q '"grokked": false' prog.json; then
  check "readme-tables phases: a run that never grokked: memorisation, circuit formation under way at its last epoch" \
    'grep -q "^| .*r1 | 0–[0-9,]* | (under way at $last_epoch) |  | never (best 0\.[0-9]*) | .*never grokked" tbl.txt'
else
  check "readme-tables phases: a grokked run's three phases and whether the definitions hold" \
    'grep -Eq "^\| .*r1 \| .*0–[0-9,]*\)? \| .* \| (hold|none can: .*) \| (yes|no) / (yes|no) \|$" tbl.txt'
fi
GROKKING=$bin python3 "$src/scripts/readme-tables.py" curve r1 >tbl.txt 2>tbl.err
check "readme-tables curve: the TL demo's seven epochs beside the run's (absent epochs as -), and its milestones" \
  '[ "$(grep -c "^| [0-9,]* | " tbl.txt)" -eq 7 ] && grep -q "^| 200 | .* / 0.0319 | .* / 20.3 | " tbl.txt && grep -q "^| 25,000 | – / 9.45e-08 |" tbl.txt && grep -q "^Train accuracy 100 % first at epoch" tbl.txt'
GROKKING=$bin python3 "$src/scripts/readme-tables.py" speed tiny.json >tbl.txt 2>tbl.err
check "readme-tables speed: the machine and date, a row per path, the interventions (times not checked)" \
  'grep -q "^Measured 20[0-9-]* on .*LibTorch" tbl.txt && grep -q "^| \`tiny.json\`: add mod .* | plain | " tbl.txt && grep -q "^|  | fast | " tbl.txt && grep -q "^Interventions on the first setup.*orthograd" tbl.txt'

# ---- mul is analysed over discrete logs; operations with no basis are refused in one line ----
"$bin" train tiny.json --out rmul --set task.operation=mul --set train.epochs=20 -q 2>/dev/null
"$bin" train tiny.json --out rpoly --set 'task.operation="x^2+y^2"' --set train.epochs=20 -q 2>/dev/null
expect 0 "" -- "$bin" fourier rmul
check "mul is analysed over discrete logarithms" 'grep -q "frequencies of the discrete logarithms base" out.txt'
expect 0 "" -- "$bin" ablate rmul --json
check "ablate --json names the cycle" 'grep -q "\"relation\": \"log a + log b\"" out.txt'
"$bin" train tiny.json --out rmul12 --set task.operation=mul --set task.p=12 --set train.epochs=20 -q 2>/dev/null
expect 2 "fourier needs cycle \(an operation on a cycle \(add, sub; mul, div mod a prime; C_n\)" -- "$bin" fourier rmul12
expect 2 "ablate needs cycle .*; it is read by patch$" -- "$bin" ablate rpoly
expect 2 "progress needs cycle or group, which this run lacks" -- "$bin" progress rpoly

# ---- patch: a user's pairs (checked line by line), a toy model's hidden units, the figure ----
printf 'a,b,a2,b2\n1,2,3,2\n0,1,2,1  # a comment\n' >pairs.csv
before=$(cat r1/patch_*.csv 2>/dev/null | cksum)
expect 0 "" -- "$bin" patch r1 --pairs pairs.csv
check "patch --pairs: the user's pairs, named; the run directory's files left alone" \
  'grep -q "corrupted inputs: the pairs of pairs.csv" out.txt && [ "$(cat r1/patch_*.csv 2>/dev/null | cksum)" = "$before" ]'
printf '1,2,3\n' >badpairs.csv
expect 2 "badpairs.csv:1: expected four operands a, b, a', b'" -- "$bin" patch r1 --pairs badpairs.csv
printf '1,2,2,1\n' >same.csv
expect 2 "same.csv: row 1: the clean and corrupted pairs have the same answer" -- "$bin" patch r1 --pairs same.csv
expect 2 "nopairs.csv: no such file" -- "$bin" patch r1 --pairs nopairs.csv
expect 0 "" -- "$bin" patch r1
check "patch of a transformer: every site, the subspace rows, the heads" \
  'grep -q "blocks.0.attn.hook_v  *by head" out.txt && grep -q "^  key frequencies" out.txt && [ -s r1/patch_subspace.csv ] && [ -s r1/patch_heads.csv ]'
toy="sparse/runs/task.sparsity=0.9_train.seed=0"
expect 0 "" -- "$bin" patch "$toy"
check "patch of a toy model: a feature on against off, its hidden units, no heads" \
  'grep -q "hook_hidden  *by unit" out.txt && grep -q "the feature off" out.txt && [ -s "$toy/patch_acts.csv" ] && [ ! -e "$toy/patch_heads.csv" ]'
expect 0 "" -- "$bin" plot "$toy"
check "plot of the toy run draws the patching bars" '[ -s "$toy/plots/patch.svg" ]'

# ---- analyse: every analysis that applies, once; what does not apply is refused with what does ----
"$bin" train <(echo '{"task": {"kind": "group", "group": "D4", "frac_train": 0.6}, "model": {"d_model": 8, "n_heads": 2,
  "d_head": 4, "d_mlp": 16}, "train": {"epochs": 20, "eval_every": 10, "checkpoint_every": 10, "threads": 1}}') --out rgrp -q 2>/dev/null
expect 0 "" -- "$bin" analyse rgrp -n
check "analyse -n: a group run is read by progress, irreps, cosets and patch, nothing run yet" \
  'grep -q "^rgrp: would run progress, irreps, cosets, patch$" out.txt && [ ! -e rgrp/progress.csv ]'
expect 0 "" -- "$bin" analyse rgrp
check "analyse: the group run's files, a line per analysis" \
  '[ -s rgrp/progress.csv ] && [ -s rgrp/irreps_progress.csv ] && [ -s rgrp/irreps.csv ] && [ ! -e rgrp/trig_fit.csv ] &&
   [ -s rgrp/patch_heads.csv ] && [ -s rgrp/cosets.csv ] && grep -q "^rgrp: progress (" err.txt && grep -q "^rgrp: irreps (" err.txt &&
   grep -q "^rgrp: cosets (" err.txt'
expect 0 "" -- "$bin" cosets rgrp --json
check "cosets --json on the logits: every class's share and the irreps' at most the ceiling (functions of c^-1 y contain both)" \
  'python3 - <<"PYEOF"
import json
j = json.load(open("out.txt"))
lg = j["logits"]
assert 0 <= lg["ceiling_left"] <= 1 + 1e-9 and "verdict" in lg, lg
assert j["irreps"]["logit_fve"] <= lg["ceiling_left"] + 1e-9, (j["irreps"], lg)
for m in j["subgroups"]:
    assert -1e-9 <= m["logits"]["fve_left"] <= lg["ceiling_left"] + 1e-9, m
    assert -1e-9 <= m["logits"]["fve_right"] <= lg["ceiling_right"] + 1e-9, m
PYEOF'
expect 0 "" -- "$bin" analyse rgrp
check "analyse again: up to date, nothing rerun" 'grep -q "^rgrp: up to date (progress, irreps, cosets, patch)$" err.txt'
expect 0 "" -- "$bin" progress rgrp
check "progress of a group run: irreps_losses.csv, every irrep at every checkpoint, its excluded loss the one progress.csv has for a key irrep" \
  'python3 - rgrp <<"PYEOF"
import csv, sys
d = sys.argv[1]
rows = list(csv.DictReader(open(d + "/irreps_losses.csv")))
prog = list(csv.DictReader(open(d + "/progress.csv")))
assert len(rows) == 5 * len(prog) == 15, len(rows)
last = prog[-1]
keys = [c for c in last if c.startswith("excluded_loss_k")]
assert keys, last.keys()
for c in keys:
    k = c[len("excluded_loss_k"):]
    mine = [r for r in rows if r["epoch"] == last["epoch"] and r["irrep"] == k][0]
    assert abs(float(mine["excluded_train_loss"]) - float(last[c])) <= 1e-9 * max(1, abs(float(last[c]))), (c, mine)
PYEOF'
check "progress of a group run names its key irreps, not frequencies" 'grep -q "; key irreps .*(numbers .* of grokking irreps. table)" out.txt && ! grep -q "key frequencies" out.txt'
check "progress of a group run: the irreps over the key rule, in order" 'grep -q "^irreps over the key rule" out.txt && grep -q "dropped below it for good" out.txt'
expect 0 "" -- "$bin" progress rgrp --from-csv --json
check "progress --from-csv --json: the irrep order from irreps_progress.csv" 'grep -q "\"irrep_order\"" out.txt && grep -q "\"key_from\"" out.txt'
expect 2 "heads needs sequence .*; it is read by progress, irreps, cosets, patch$" -- "$bin" heads rgrp
expect 0 "" -- "$bin" plot rgrp
check "plot of a fresh group run: the irreps figure, excluded loss legend by irrep name" \
  '[ -s rgrp/plots/irreps.svg ] && { [ ! -e rgrp/plots/excluded.gp ] || ! grep -q "title .k = " rgrp/plots/excluded.gp; }'
"$bin" train --resume rgrp --set train.epochs=30 -q 2>/dev/null
expect 0 "" -- "$bin" analyse rgrp -n
check "analyse -n after more training: every analysis is stale" 'grep -q "^rgrp: would run progress, irreps, cosets, patch$" out.txt'
GROKKING=$bin python3 "$src/scripts/readme-tables.py" irrep-order rgrp >tbl.txt 2>tbl.err
check "readme-tables irrep-order: a row a run, the irreps in the order they become key, the key sets counted" \
  'grep -q "^| .*rgrp | " tbl.txt && grep -q "^1 runs: 1 distinct final key sets" tbl.txt'
# a toy_mlp run: superposition writes every neuron's weights by feature, plot draws them
"$bin" train <(echo '{"task": {"kind": "sparse_features", "n_features": 6, "sparsity": 0.9, "values": "signed", "target": "abs"},
  "model": {"kind": "toy_mlp", "d_hidden": 3}, "train": {"epochs": 50, "batch_size": 64, "eval_every": 25, "checkpoint_every": 25, "threads": 1}}') --out rmlp -q 2>/dev/null
expect 0 "" -- "$bin" superposition rmlp
check "superposition on a toy_mlp: the motif counted beside untrained models, superposition_neurons.csv a row per neuron and feature" \
  'grep -q "^asymmetric superposition .*(untrained, 16 inits: " out.txt && [ "$(tail -n +2 rmlp/superposition_neurons.csv | wc -l)" = 18 ]'
expect 0 "" -- "$bin" plot rmlp
check "plot of a toy_mlp run: the neuron panel drawn" \
  'grep -q "superposition_neurons.csv" rmlp/plots/superposition.gp && [ -s rmlp/plots/superposition.svg ]'
# compare --irreps: a sweep of three seeds, each run's order from its irreps_progress.csv, the key sets counted
cat >gsweep.json <<'EOF2'
{"base": {"task": {"kind": "group", "group": "D4", "frac_train": 0.6}, "model": {"d_model": 8, "n_heads": 2, "d_head": 4,
  "d_mlp": 16}, "train": {"epochs": 30, "eval_every": 10, "checkpoint_every": 10, "log_every": 10, "threads": 1},
  "optim": {"lr": 0.01}},
 "grid": {"train.seed": [0, 1, 2]}, "dir": "gsweep"}
EOF2
"$bin" sweep gsweep.json --pack 3 --jobs 1 >/dev/null 2>sweep.err
check "a packed sweep says where each run is: a line per run at each log interval and one when it ends" \
  'for k in 0 1 2; do grep -q "^train.seed=$k: epoch 10/30 | " sweep.err && grep -q "^train.seed=$k: done after 30 epochs" sweep.err || exit 1; done'
for r in gsweep/runs/*; do "$bin" progress "$r" >/dev/null 2>&1; done
expect 0 "" -- "$bin" compare gsweep --irreps --json
check "compare --irreps --json: every run's order is its progress --json irrep_order; the key sets count every run once" \
  'python3 - "$bin" <<"PYEOF"
import json, subprocess, sys
j = json.load(open("out.txt"))
assert j["by"] == [] and len(j["arms"]) == 1, j["arms"]
ir = j["arms"][0]["irreps"]
assert len(ir["runs"]) == 3 and ir["without_irreps_progress"] == [], ir
for r in ir["runs"]:
    mine = json.loads(subprocess.run([sys.argv[1], "progress", "gsweep/runs/" + r["run"], "--from-csv", "--json"],
                                     check=True, stdout=subprocess.PIPE, text=True).stdout)["irrep_order"]
    assert r["order"] == mine, (r, mine)
assert sum(s["runs"] for s in ir["key_sets"]) == 3, ir["key_sets"]
assert any(s["irreps"] for s in ir["key_sets"]), ir  # something became key (lr 0.01: it does in 30 epochs)
for p in ir["pairs"]:
    both = sum(1 for r in ir["runs"] if {p["first"], p["second"]} <= {c["irrep"] for c in r["order"] if c["key_from"] is not None})
    assert p["before"] + p["after"] + p["tied"] == both and p["before"] >= p["after"], p
for p in ir["drop_pairs"]:
    both = sum(1 for r in ir["runs"] if {p["first"], p["second"]} <= {c["irrep"] for c in r["order"] if c["dropped_at"] is not None})
    assert p["before"] + p["after"] + p["tied"] == both and p["before"] >= p["after"], p
PYEOF'
rm gsweep/runs/train.seed=1/irreps_progress.csv
expect 0 "" -- "$bin" compare gsweep --irreps
check "compare --irreps: a run without irreps_progress.csv is named and left out of the counts" \
  'grep -q "^all runs: irreps in the order they became key" out.txt && grep -q "1 run(s) without irreps_progress.csv, left out .*train.seed=1" out.txt &&
   grep -q "final key sets: .* of 2;" out.txt'
expect 2 "--baseline needs --by" -- "$bin" compare gsweep --baseline 1
expect 0 "" -- "$bin" train <(echo '{"task": {"kind": "group", "group": "D4"}}') --out rgrp --force -q --set train.epochs=10 --set train.threads=1
check "--force leaves none of the analyses' files or figures" '[ ! -e rgrp/irreps.csv ] && [ ! -e rgrp/irreps_progress.csv ] && [ ! -e rgrp/cosets.csv ] && [ ! -e rgrp/plots ]'

# ---- bench --families: a line per model family at its shipped config, from the repository root ----
# --vs-peer: each family's plain PyTorch peer timed in the same run (a few steps each with --steps 1)
(cd "$src" && "$bin" bench --families --vs-peer --python "${GROKKING_PYTHON:-/usr/bin/python3}" --steps 1 \
   --set train.threads=1 --json) >fam.json 2>fam.err
check "bench --families --vs-peer: seven families, each timed, its FLOPs from its shapes, the packed toy models counted as models, each beside its peer" \
  'python3 -c "
import json, sys
j = json.load(open(\"fam.json\"))
f = j[\"families\"]
assert len(f) == 7, len(f)
assert all(l[\"ms_per_step\"] > 0 and l[\"step_gflop\"] > 0 for l in f), f
assert [l[\"models\"] for l in f] == [1, 1, 1, 1, 1, 30, 20]
assert f[0][\"path\"] == \"fast\" and f[1][\"path\"] == \"plain\" and f[0][\"step_gflop\"] == f[1][\"step_gflop\"]
assert [l[\"peer\"][\"script\"].split(\"/\")[-1] for l in f] == [\"paper_step.py\"] * 2 + [\"induction_peer.py\"] * 2 + [\"group_mlp_peer.py\"] + [\"superposition_peer.py\"] * 2
for l in f:
    p = l[\"peer\"]
    assert p[\"ms_per_step\"] > 0 and abs(p[\"peer_over_ours\"] - p[\"ms_per_step\"] / l[\"ms_per_step\"]) < 1e-9 * p[\"peer_over_ours\"], l
"'
expect 2 "bench --python: /nonexistent/python cannot import torch" -- "$bin" bench --families --vs-peer --python /nonexistent/python
expect 2 "--vs-peer requires --families" -- "$bin" bench --vs-peer
expect 2 "bench --families: configs/induction/minimal.json not found: run it from the repository root" -- "$bin" bench --families --steps 1

# ---- scripts/import-chughtai.py: one of Chughtai et al.'s checkpoints as a run ----
# Their OneLayerMLP on S4 (random weights, their layout, their element order: sympy's), written
# as their model.pt; imported, our irreps analysis must read the same model: its loss over all
# pairs equals the loss computed from their weights under their own indexing and composition.
PY=${GROKKING_PYTHON:-/usr/bin/python3}
mkdir theirs
"$PY" - theirs <<'PYEOF'
import json, sys, torch
from sympy.combinatorics.named_groups import SymmetricGroup
d = sys.argv[1]
torch.manual_seed(0)
n = 24
sd = {"W_x": torch.randn(n, 8), "W_y": torch.randn(n, 8), "W": torch.randn(16, 12), "W_U": torch.randn(12, n)}
torch.save(sd, d + "/model.pt")
json.dump({"lr": 0.001, "weight_decay": 1, "betas": [0.9, 0.98], "layers": {"embed_dim": 8, "hidden_dim": 12},
           "model": "OneLayerMLP", "group": "SymmetricGroup", "group_parameter": 4, "frac_train": 0.4,
           "num_epochs": 1000, "seed": 1}, open(d + "/cfg.json", "w"))
els = SymmetricGroup(4)._elements
idx = {p: i for i, p in enumerate(els)}
x = torch.arange(n).repeat_interleave(n); y = torch.arange(n).repeat(n)
z = torch.tensor([idx[els[a] * els[b]] for a, b in zip(x.tolist(), y.tolist())])
h = torch.relu(torch.cat([sd["W_x"][x], sd["W_y"][y]], 1) @ sd["W"])
loss = torch.nn.functional.cross_entropy((h @ sd["W_U"]).double(), z)
open(d + "/loss.txt", "w").write("%.9e" % loss.item())
PYEOF
"$PY" "$src/scripts/import-chughtai.py" theirs imported --grokking "$bin" >imp.txt 2>imp.err
check "import-chughtai: a run directory with their weights as the last checkpoint" \
  '[ -s imported/checkpoints/epoch_0001000.pt ] && grep -q "their OneLayerMLP on S4, epoch 1000" imp.txt'
expect 0 "" -- "$bin" irreps imported --json
check "import-chughtai: our reading of the imported model has their loss over all pairs" \
  '"$PY" -c "import json,sys; o=json.load(open(\"out.txt\"))[\"model\"][\"all\"][\"loss\"]; t=float(open(\"theirs/loss.txt\").read()); sys.exit(abs(o-t)>1e-5*t)"'

finish
