#!/usr/bin/env bash
# The bad-input corpus: every case must exit with the expected code, print exactly one line on
# stderr that names the file and the field (or what is wrong with the file), print no C++
# backtrace, not die of a signal, and leave nothing half-written.
# Usage: tests/bad_input.sh path/to/grokking
here=$(cd "$(dirname "$0")" && pwd)
data=$here/bad_input
py=${GROKKING_PYTHON:-/usr/bin/python3}
name=bad-input
source "$here/lib.sh"

# Nothing written for a refused config: no run directory appeared.
nothing_written() {
  if [ -e runs ] || [ -e out ]; then fail=$((fail + 1)); echo "FAIL: a refused input wrote files" >&2; rm -rf runs out; else pass=$((pass + 1)); fi
}

T="$bin train"
# ---- configs: exit 2, "FILE: /section/key: what is allowed (got X)" ----
expect 2 "nothere.json: no such file" -- $T nothere.json --out out
expect 2 "bad_input: is a directory" -- $T "$data" --out out
expect 2 "empty.json: empty file" -- $T "$data/empty.json" --out out
expect 2 "binary.json: invalid JSON: .*line 1, column 1" -- $T "$data/binary.json" --out out
expect 2 "truncated.json: invalid JSON: .*line 2" -- $T "$data/truncated.json" --out out
expect 2 "trailing.json: invalid JSON: .*line 1, column 2[0-9]" -- $T "$data/trailing.json" --out out
expect 2 "duplicate.json: duplicate key \"p\"" -- $T "$data/duplicate.json" --out out
expect 2 "comment.json: invalid JSON: .*line 1, column 1" -- $T "$data/comment.json" --out out
expect 2 "task_p_string.json: /task/p: must be an integer \(got \"23\"\)" -- $T "$data/task_p_string.json" --out out
expect 2 "model_bool.json: /model/d_model: must be an integer \(got true\)" -- $T "$data/model_bool.json" --out out
expect 2 "optim_lr_string.json: /optim/lr: must be a number" -- $T "$data/optim_lr_string.json" --out out
expect 2 "train_epochs_float.json: /train/epochs: must be an integer \(got 10.5\)" -- $T "$data/train_epochs_float.json" --out out
expect 2 "output_dir_number.json: /output/dir: must be a string \(got 42\)" -- $T "$data/output_dir_number.json" --out out
expect 2 "section_array.json: /train: must be an object" -- $T "$data/section_array.json" --out out
expect 2 "nan.json: invalid JSON" -- $T "$data/nan.json" --out out
expect 2 "infinity.json: invalid JSON" -- $T "$data/infinity.json" --out out
expect 2 "overflow.json: invalid JSON: number overflow" -- $T "$data/overflow.json" --out out
expect 2 "lr_negative.json: /optim/lr: must be in \(0, " -- $T "$data/lr_negative.json" --out out
expect 2 "lr_zero.json: /optim/lr: must be in \(0, " -- $T "$data/lr_zero.json" --out out
expect 2 "wd_negative.json: /optim/weight_decay: must be in \[0, " -- $T "$data/wd_negative.json" --out out
expect 2 "epochs_huge.json: /train/epochs: must be an integer" -- $T "$data/epochs_huge.json" --out out
expect 2 "epochs_zero.json: /train/epochs: must be an integer in \[1, " -- $T "$data/epochs_zero.json" --out out
# the interventions' keys: unknown choices, wrong types, ranges, combinations that make no sense
expect 2 "grokfast_unknown.json: /optim/grokfast: must be one of none, ema, ma \(got \"fast\"\)" -- $T "$data/grokfast_unknown.json" --out out
expect 2 "grokfast_alpha_string.json: /optim/grokfast_alpha: must be a number" -- $T "$data/grokfast_alpha_string.json" --out out
expect 2 "grokfast_alpha_one.json: /optim/grokfast_alpha: must be in \[0, 1\)" -- $T "$data/grokfast_alpha_one.json" --out out
expect 2 "grokfast_window_without_ma.json: /optim/grokfast_window: is used only with optim.grokfast \"ma\"" -- $T "$data/grokfast_window_without_ma.json" --out out
expect 2 "grokfast_lamb_without_filter.json: /optim/grokfast_lamb: is used only with optim.grokfast" -- $T "$data/grokfast_lamb_without_filter.json" --out out
expect 2 "grokfast_window_zero.json: /optim/grokfast_window: must be an integer in \[1, " -- $T "$data/grokfast_window_zero.json" --out out
expect 2 "orthograd_string.json: /optim/orthograd: must be true or false" -- $T "$data/orthograd_string.json" --out out
expect 2 "init_scale_zero.json: /model/init_scale: must be in \(0, " -- $T "$data/init_scale_zero.json" --out out
expect 2 "weight_norm_unknown.json: /optim/weight_norm: must be one of free, fixed" -- $T "$data/weight_norm_unknown.json" --out out
expect 2 "loss_unknown.json: /train/loss: must be one of softmax, stablemax" -- $T "$data/loss_unknown.json" --out out
expect 2 "loss_dtype_half.json: /train/loss_dtype: must be one of float64, float32" -- $T "$data/loss_dtype_half.json" --out out
expect 2 "p0.json: /task/p: must be an integer in \[2, 4096\] \(got 0\)" -- $T "$data/p0.json" --out out
expect 2 "p1.json: /task/p: must be an integer in \[2, 4096\] \(got 1\)" -- $T "$data/p1.json" --out out
expect 2 "p_huge.json: /task/p: must be an integer in \[2, 4096\]; a full-batch step runs every training pair at once.* \(got 100000\)" -- $T "$data/p_huge.json" --out out
expect 2 "p_memory.json: /task/p: too large: .* GB" -- $T "$data/p_memory.json" --out out
expect 2 "frac0.json: /task/frac_train: must be in \(0, 1\) \(got 0\)" -- $T "$data/frac0.json" --out out
expect 2 "frac1.json: /task/frac_train: must be in \(0, 1\) \(got 1\)" -- $T "$data/frac1.json" --out out
expect 2 "op_unknown.json: /task/operation: must be one of add, sub, mul" -- $T "$data/op_unknown.json" --out out
expect 2 "act_unknown.json: /model/activation: must be one of relu, gelu" -- $T "$data/act_unknown.json" --out out
expect 2 "device_unknown.json: /train/device: must be one of auto, cpu, cuda" -- $T "$data/device_unknown.json" --out out
expect 2 "device_cuda.json: /train/device: 'cuda' requested but" -- $T "$data/device_cuda.json" --out out
expect 2 "section_unknown.json: /trian: unknown section" -- $T "$data/section_unknown.json" --out out
expect 2 "key_unknown.json: /optim/momentum: unknown key; allowed in optim: lr" -- $T "$data/key_unknown.json" --out out
expect 2 "d_model_mismatch.json: /model/d_model: must equal n_heads\*d_head" -- $T "$data/d_model_mismatch.json" --out out
expect 2 "batch_too_big.json: /train/batch_size: must be 0 \(full batch\) or at most the 3830" -- $T "$data/batch_too_big.json" --out out
expect 2 "toplevel_array.json: /: the config must be a JSON object" -- $T "$data/toplevel_array.json" --out out
expect 2 "threads_negative.json: /train/threads: must be an integer in \[0, 1024\]" -- $T "$data/threads_negative.json" --out out
expect 2 "eval_zero.json: /train/eval_every: must be an integer in \[1, " -- $T "$data/eval_zero.json" --out out
expect 2 "beta2_one.json: /optim/beta2: must be in \[0, 1\)" -- $T "$data/beta2_one.json" --out out
expect 2 "div_not_prime.json: /task/p: must be prime for operation 'div'" -- $T "$data/div_not_prime.json" --out out
expect 2 "seed_negative.json: /task/seed: must be an integer in \[0, " -- $T "$data/seed_negative.json" --out out
expect 2 "early_stop_range.json: /train/early_stop_acc: must be in \[0, 1\]" -- $T "$data/early_stop_range.json" --out out
# ---- task and model kinds ----
expect 2 "/dev/fd/[0-9]+: /task/kind: must be one of modular" -- $T <(echo '{"task": {"kind": "graph"}}') --out out
expect 2 "/model/kind: must be one of transformer, mlp" -- $T <(echo '{"model": {"kind": "cnn"}}') --out out
expect 2 "/model/n_heads: belongs to model.kind \"transformer\"; this config's model.kind is \"mlp\"" -- \
  $T <(echo '{"model": {"kind": "mlp", "n_heads": 4}}') --out out
expect 2 "/model/hidden: belongs to model.kind \"mlp\"" -- $T <(echo '{"model": {"hidden": [64]}}') --out out
expect 2 "/model/hidden: must be a list of 1 to 16 integers" -- $T <(echo '{"model": {"kind": "mlp", "hidden": []}}') --out out
expect 2 "/train/path: model.kind \"mlp\" has no fast path for this task and model .it needs model.encoding \"embed\"" -- \
  $T <(echo '{"model": {"kind": "mlp", "encoding": "one_hot"}, "train": {"path": "fast"}}') --out out
nothing_written
# ---- --set ----
expect 2 "--set task.q=1: /task/q: unknown key" -- $T "$data/ok_tiny.json" --set task.q=1 --out out
expect 2 "--set task.p=abc: /task/p: must be an integer \(got \"abc\"\)" -- $T "$data/ok_tiny.json" --set task.p=abc --out out
expect 2 "--set nonsense: expected section.key=value" -- $T "$data/ok_tiny.json" --set nonsense --out out
expect 2 "--set optim.lr=-1: /optim/lr: must be in" -- $T "$data/ok_tiny.json" --set optim.lr=-1 --out out
# A long value is quoted by a short prefix (not 100 KB on stderr).
long=$(head -c 100000 /dev/zero | tr '\0' y)
expect 2 "/train/device: must be one of" -- $T "$data/ok_tiny.json" --set "train.device=$long" --out out
check "a 100,000-character --set value is quoted short" '[ "$(wc -c <err.txt)" -lt 400 ]'
"$py" -c 'import json,sys; json.dump({"base": sys.argv[1], "grid": {"train.device": ["x" * 60000]}}, open("long_sweep.json", "w"))' "$data/ok_tiny.json"
expect 2 "long_sweep.json: run train.device=x+\.\.\.: its values make a directory name of" -- "$bin" sweep long_sweep.json --list
check "a 60,000-character grid value is quoted short" '[ "$(wc -c <err.txt)" -lt 400 ]'
nothing_written
# ---- bench takes train's limits before it allocates ----
expect 2 "--seeds: 1024 seeds, at most 256" -- bash -c "ulimit -v 8000000; exec \"$bin\" bench --seeds 1024"
expect 2 "--seeds 200: 200 models side by side need about .* GB, more than the .* GB this process may still map \(ulimit -v" -- \
  bash -c "ulimit -v 3000000; exec \"$bin\" bench --seeds 200"
# ---- output directories ----
touch afile
expect 2 "afile: exists and is not a directory" -- $T "$data/ok_tiny.json" --out afile/run
expect 2 "afile: run directory path exists and is not a directory" -- $T "$data/ok_tiny.json" --out afile
expect 2 "/proc/grokking-run: cannot create directory" -- $T "$data/ok_tiny.json" --out /proc/grokking-run
mkdir ro && chmod 555 ro
if [ "$(id -u)" -ne 0 ]; then
  expect 2 "ro/run: cannot create directory: Permission denied" -- $T "$data/ok_tiny.json" --out ro/run
fi
$T "$data/ok_tiny.json" --out good -q 2>/dev/null
expect 2 "good: run directory is not empty; use --resume good to continue it or --force" -- $T "$data/ok_tiny.json" --out good
expect 2 "nothere: not a run directory \(no config.json\)" -- $T --resume nothere

# ---- checkpoints, for every analysis subcommand ----
$T "$data/ok_tiny_p11.json" --out other -q 2>/dev/null
good_ck=$(ls good/checkpoints/epoch_*.pt | tail -1)
other_ck=$(ls other/checkpoints/epoch_*.pt | tail -1)
mkdir bad
if ! "$py" "$here/make_bad_checkpoints.py" "$good_ck" "$other_ck" bad 2>py.err; then
  fail=$((fail + 1))
  echo "FAIL: cannot make the bad checkpoints with $py (python3-torch missing?):" >&2
  cat py.err >&2
fi
for sub in fourier ablate; do
  expect 1 "missing.pt: no such file or directory" -- "$bin" $sub bad/missing.pt
  expect 1 "bad/empty.pt: empty file, not a grokking checkpoint" -- "$bin" $sub bad/empty.pt
  expect 1 "bad/truncated.pt: not a readable checkpoint" -- "$bin" $sub bad/truncated.pt
  expect 1 "bad/garbage.pt: not a readable checkpoint" -- "$bin" $sub bad/garbage.pt
  expect 1 "bad/bitflip.pt: checksum mismatch" -- "$bin" $sub bad/bitflip.pt
  expect 1 "bad/foreign_zip.pt: not a readable checkpoint" -- "$bin" $sub bad/foreign_zip.pt
  expect 1 "bad/foreign_pickle.pt: .*not a grokking checkpoint" -- "$bin" $sub bad/foreign_pickle.pt
  expect 1 "bad/foreign_list.pt: not a grokking checkpoint" -- "$bin" $sub bad/foreign_list.pt
  expect 1 "bad/shape.pt: parameter blocks.0.mlp.W_in has shape \[[0-9]+, [0-9]+\] but the embedded config's model needs \[[0-9]+, [0-9]+\]" -- "$bin" $sub bad/shape.pt
  expect 1 "empty_run: no checkpoints" -- "$bin" $sub "$(mkdir -p empty_run && echo empty_run)"
done
expect 2 "--freqs: expected numbers like 1,2,5-7" -- "$bin" ablate "$good_ck" --freqs 1,x
expect 2 "--freqs: frequency 9 is out of range 1..3" -- "$bin" ablate "$good_ck" --freqs 9
# progress reads a whole run: each broken checkpoint in turn, and one from another run (P=11).
for f in empty truncated bitflip foreign_zip foreign_pickle other_p; do
  rm -rf prun && cp -r good prun && cp "bad/$f.pt" prun/checkpoints/epoch_0000005.pt
  want="epoch_0000005.pt: "
  [ $f = other_p ] && want="epoch_0000005.pt: task/model config differs"
  expect 1 "$want" -- "$bin" progress prun
done
expect 2 "progress takes a run directory" -- "$bin" progress "$good_ck"
# progress --from-csv: a missing or damaged progress.csv is named with its line.
expect 1 "good/progress.csv: cannot read: No such file" -- "$bin" progress good --from-csv
"$bin" progress good >/dev/null 2>&1
cp -r good crun && sed -i '3s/^[0-9]*,/x,/' crun/progress.csv
expect 1 "crun/progress.csv: line 3: column epoch: not a finite number" -- "$bin" progress crun --from-csv
expect 2 "--from-csv: the key frequencies are progress.csv's" -- "$bin" progress good --from-csv --freqs 1

# ---- train --packed: fresh run directories with config.json only, one pack_key ----
mkdir -p pk1 pk2 pk3 && cp good/config.json pk1/ && cp good/config.json pk2/
sed 's/"d_mlp": [0-9]*/"d_mlp": 24/' good/config.json >pk3/config.json
expect 2 "pk3: its config differs from pk1's in more than the keys" -- $T --packed pk1 pk3
expect 2 "good: --packed starts fresh runs; this one has started" -- $T --packed pk1 good
expect 2 "nothere: not a run directory \(no config.json\)" -- $T --packed pk1 nothere
expect 2 "--packed: pk1 is listed twice" -- $T --packed pk1 pk1
expect 2 "--packed: the runs' config.json files say everything; no --set" -- $T --packed pk1 pk2 --set train.epochs=3
# A corrupted resume checkpoint is reported, not loaded.
rm -rf rrun && cp -r good rrun && cp bad/bitflip.pt rrun/checkpoints/resume.pt
expect 1 "rrun/checkpoints/resume.pt: checksum mismatch" -- $T --resume rrun --set train.epochs=40
check "a refused resume leaves config.json as it was" 'cmp -s rrun/config.json good/config.json'
# A damaged metrics.csv: resume and plot name it in one line; resume changes nothing.
rm -rf mrun && cp -r good mrun && printf 'epoch,train_loss\n1,2\n' >mrun/metrics.csv
expect 1 "mrun/metrics.csv: line 1: not a grokking metrics.csv header" -- $T --resume mrun --set train.epochs=40
check "a refused resume leaves config.json as it was" 'cmp -s mrun/config.json good/config.json'
expect 1 "mrun/metrics.csv: line 1: not a grokking metrics.csv header" -- "$bin" plot mrun --no-analysis

finish
