#!/usr/bin/env bash
# The GPU checks, in one run on a CUDA machine: build against the machine's PyTorch (LibTorch
# 2.x with CUDA) and the Debian packages that scripts/gpu-deps.sh unpacked into .deps/root, run
# the CUDA tests, benchmark against the plain PyTorch baseline (scripts/paper_step.py) in the
# same run, time the paper's run, train runs for the analysis, and time packed sweeps.
#
#   scripts/gpu-check.sh OUT_DIR [PART...]
#
# PARTs, in this order by default: machine build tests bench paper pack phase-runs interventions
# (and, only when named: pack-1000, continuous packing at scale; papers, the papers' fair tests
# and group runs at their full budgets).
# Every part has its own time limit, so that one that hangs leaves time to the others. OUT_DIR
# gets two files, rewritten after every part (a run cut short keeps what was done): gpu-check.log
# and results.tar.gz (JSON figures, metrics, summaries and progress.csv files; no checkpoints).
set -uo pipefail
out=${1:?usage: scripts/gpu-check.sh OUT_DIR [PART...]}
shift
parts=("$@")
[ ${#parts[@]} -gt 0 ] || parts=(machine build tests bench paper pack phase-runs interventions)
mkdir -p "$out"
out=$(cd "$out" && pwd)
cd "$(dirname "$0")/.."
work=${GPU_WORK:-/tmp/grokking-gpu}
mkdir -p "$work"
exec > >(tee -a "$out/gpu-check.log") 2>&1
status=0
step() { echo; echo "=== $* ($(date +%T))"; }
run() {
  "$@"
  local rc=$?
  if [ $rc -ne 0 ]; then echo "FAILED ($rc): $*"; status=1; fi
  return $rc
}
# within SECONDS CMD...: the command under a time limit (exit 124 when it runs out).
within() { local s=$1; shift; run timeout --signal=INT --kill-after=10 "$s" "$@"; }
# timed SECONDS NAME CMD...: the same, its wall time appended to $work/times.txt.
timed() {
  local s=$1 name=$2; shift 2
  local t0 t1 rc; t0=$(date +%s.%N)
  within "$s" "$@"; rc=$?
  t1=$(date +%s.%N)
  echo "$name $(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.2f", b - a}') s rc=$rc" | tee -a "$work/times.txt"
  return $rc
}
pack_results() {
  (cd "$work" && tar --exclude='checkpoints' -czf "$out/results.tar.gz.tmp" . 2>/dev/null) &&
    mv "$out/results.tar.gz.tmp" "$out/results.tar.gz"
}

deps=$PWD/.deps/root/usr
export LD_LIBRARY_PATH=$deps/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}
bin=build-gpu/grokking
cuda=(--set train.device=cuda)

part_machine() {
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv || true
  echo "cpus: $(nproc)"; g++ --version | head -1; nvcc --version | tail -1; cmake --version | head -1
  python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda,
    "available", torch.cuda.is_available(), "cxx11 abi", torch._C._GLIBCXX_USE_CXX11_ABI)'
  nvidia-smi --query-gpu=name --format=csv,noheader >"$work/gpu.txt" 2>/dev/null || true
}

part_build() {
  local TP; TP=$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)')
  [ -d "$deps" ] || echo "warning: $deps missing: CLI11, nlohmann_json, spdlog, fmt and Catch2 must be installed"
  timed 300 configure cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$TP;$deps" \
    >"$work/configure.log" 2>&1 || { tail -30 "$work/configure.log"; return 1; }
  grep 'grokking:' "$work/configure.log"
  # The program first: the parts after the tests need only it.
  timed 400 build cmake --build build-gpu --parallel "$(nproc)" --target grokking >"$work/build.log" 2>&1 ||
    { grep -B2 -A12 'error' "$work/build.log" | head -80; return 1; }
  timed 300 build-tests cmake --build build-gpu --parallel "$(nproc)" >"$work/build-tests.log" 2>&1 ||
    grep -B2 -A12 'error' "$work/build-tests.log" | head -60
  return 0
}

part_tests() {
  within 90 build-gpu/grokking_tests "[.cuda]" --durations yes
}

part_bench() {
  # Ours (eager plain, eager fast, CUDA graph; then 8, 64, 256 models side by side through the
  # graph) and the plain PyTorch baseline (one model; torch.vmap over 64 and 256), back to back.
  within 45 "$bin" bench "${cuda[@]}" --steps 300 --json >"$work/bench-cuda.json"
  for s in 8 64 256; do
    within 45 "$bin" bench "${cuda[@]}" --steps 100 --seeds $s --json >"$work/bench-cuda-seeds$s.json"
  done
  {
    within 45 python3 scripts/paper_step.py --device cuda --steps 300
    within 45 python3 scripts/paper_step.py --device cuda --steps 300 --with-test
    for s in 64 256; do within 45 python3 scripts/paper_step.py --device cuda --steps 50 --seeds $s; done
  } >"$work/baseline-cuda.jsonl"
  cat "$work/baseline-cuda.jsonl"
  python3 - "$work" <<'EOF'
import json, sys, glob
w = sys.argv[1]
for f in sorted(glob.glob(w + "/bench-*.json")):
    try: j = json.load(open(f))
    except Exception as e: print(f, "unreadable:", e); continue
    print(f.split("/")[-1], {k: round(v["ms_per_step"], 4) for k, v in j["paths"].items()}, j.get("seeds_side_by_side", ""))
EOF
}

part_paper() {
  # The paper's run, 25,000 epochs (evaluation every 100 included), CUDA graph on; then 2,000
  # epochs without the graph for the eager per-epoch rate.
  timed 90 paper-25k-graph "$bin" train configs/nanda2023.json "${cuda[@]}" --set train.epochs=25000 \
    --set train.checkpoint_every=25000 --out "$work/paper-graph" -q
  grep -h '"wall_time_s"\|"epochs_per_s"\|"grokked_epoch"\|"cuda_graph"' "$work"/paper-*/summary.json
  within 30 "$bin" fourier "$work/paper-graph" >"$work/paper-graph/fourier.txt" 2>&1
  head -20 "$work/paper-graph/fourier.txt"
}

part_phase_runs() {
  # Fresh held-out runs of the tl-demo setup for the phase rule (seeds 999 and 1-8 are in the
  # README's tables already): 5 models side by side, a checkpoint every 100.
  timed 180 tl-demo-5-seeds "$bin" train configs/tl-demo.json "${cuda[@]}" --seeds 9,10,11,12,13 \
    --out "$work/tl-demo" -q
  for d in "$work"/tl-demo/seed=*; do timed 45 "progress-$(basename "$d")" "$bin" progress "$d" >/dev/null; done
  # The analysis benchmark: progress over the 251 checkpoints on 2 of this machine's cores.
  timed 60 progress-2-cores taskset -c 0,1 "$bin" progress "$work/tl-demo/seed=9" >/dev/null
  grep -h '"phases"' -A12 "$work"/tl-demo/seed=*/summary.json | grep -v '^--$' | head -80
}

part_pack() {
  # A 64-run grid of the paper's config (8 seeds x 4 lr x 2 weight decays), 2,000 epochs each:
  # all 64 side by side in one process, then 8 of them (shard 0/8) one by one.
  timed 120 pack-64-packed "$bin" sweep configs/sweeps/gpu-pack-grid.json --pack 64 --dir "$work/pack-packed" -q
  timed 90 pack-8-one-by-one "$bin" sweep configs/sweeps/gpu-pack-grid.json --shard 0/8 --dir "$work/pack-alone" -q
  python3 - "$work" <<'EOF'
import csv, sys
w = sys.argv[1]
def rows(d):
    try: return {r["name"]: r for r in csv.DictReader(open(w + "/" + d + "/sweep.csv"))}
    except OSError: return {}
a, p = rows("pack-alone"), rows("pack-packed")
diffs = [abs(float(p[n]["final_test_loss"]) - float(a[n]["final_test_loss"])) / abs(float(a[n]["final_test_loss"]))
         for n in a if n in p and a[n]["final_test_loss"]]
print(len(p), "packed runs,", len(a), "alone; final test loss, max relative difference:", max(diffs or [float("nan")]))
EOF
}

part_pack_1000() {
  # Continuous packing at scale: the 1,000-run sweep of the paper config (10 seeds x 10 weight
  # decays x 10 lr, early stop on) in 256 places, cut off after 240 s: model-epochs per second
  # from the epochs every run reached, and the projected wall time of the whole sweep.
  local t0=$SECONDS
  within 240 "$bin" sweep configs/sweeps/gpu-pack-1000.json --pack 256 --dir "$work/pack-1000" -q
  python3 - "$work/pack-1000" $((SECONDS - t0)) <<'EOF2'
import csv, glob, os, sys
d, secs = sys.argv[1], float(sys.argv[2])
done = 0
for m in glob.glob(d + "/runs/*/metrics.csv"):
    rows = list(csv.reader(open(m)))
    if len(rows) > 1: done += int(rows[-1][0])
ended = len(glob.glob(d + "/runs/*/summary.json"))
rate = done / secs if secs else float("nan")
print(f"pack-1000: {ended} runs ended, {done} model-epochs in {secs:.0f} s: {rate:.0f} model-epochs/s; "
      f"the whole sweep (at most 25,000,000 model-epochs, less with early stop) projects to "
      f"at most {25e6 / rate / 3600:.1f} h at this rate")
EOF2
}

part_papers() {
  # The papers' own settings at their full budgets, which the 2-core CPU could not afford (README,
  # "Verdicts" and "Groups"): far more than one lent session's 15 minutes in all, so each has its
  # own limit and a run cut short resumes with the same command on the next machine. Only when named.
  local s by
  for s in stablemax-p113-mlp stablemax-p113-transformer omnigrok-p113 orthograd-p113; do
    within 600 "$bin" sweep "configs/sweeps/$s.json" --pack 64 --dir "$work/$s" -q
    # Each with the README's outcome: the grokked epoch, or for Omnigrok the train-test gap.
    case $s in
      stablemax*) by=(--by train.loss_dtype --by train.loss) ;;
      omnigrok*) by=(--by optim.weight_norm --by model.init_scale --acc 0.95 --gap --at 1000,5000,15000) ;;
      *) by=(--by optim.orthograd --by optim.weight_decay --by optim.lr --baseline false,1.0,0.001) ;;
    esac
    "$bin" compare "$work/$s" "${by[@]}" 2>&1 | head -20
  done
  # Chughtai et al.'s groups: S5 transformer (their 50,000 epochs; the CPU ran seed 1 to its
  # grokking and seeds 2, 3 part of the way), S5 MLP (their 50 seeds; here 1-8), S6 and D59
  # transformers, seeds 1-4.
  within 300 "$bin" train configs/groups/chughtai-s5-transformer.json "${cuda[@]}" --seeds 1,2,3,4 \
    --set train.early_stop_acc=0.99 --set train.early_stop_hold=5000 --out "$work/s5-transformer" -q
  within 600 "$bin" train configs/groups/chughtai-s5-mlp.json "${cuda[@]}" --seeds 1,2,3,4,5,6,7,8 \
    --set train.early_stop_acc=0.99 --set train.early_stop_hold=5000 --out "$work/s5-mlp" -q
  for g in s6 d59; do
    within 300 "$bin" train "configs/groups/chughtai-$g-transformer.json" "${cuda[@]}" --seeds 1,2,3,4 \
      --set train.early_stop_acc=0.99 --set train.early_stop_hold=5000 --out "$work/$g-transformer" -q
  done
  for d in "$work"/s5-transformer/seed=* "$work"/s5-mlp/seed=* "$work"/s6-transformer/seed=* "$work"/d59-transformer/seed=*; do
    [ -d "$d" ] && within 120 "$bin" irreps "$d" 2>&1 | head -12
  done
}

part_interventions() {
  # The interventions on CUDA (eager: the graph is off with them), 500 epochs of ci-small.
  within 60 "$bin" train configs/ci-small.json "${cuda[@]}" --set train.epochs=500 --set 'optim.grokfast="ema"' \
    --set optim.orthograd=true --set 'train.loss="stablemax"' --set 'optim.weight_norm="fixed"' \
    --out "$work/interventions" -q
  grep -h '"status"\|"cuda_graph"\|"loss"' "$work/interventions/summary.json"
  tail -2 "$work/interventions/metrics.csv"
}

for p in "${parts[@]}"; do
  step "$p"
  if ! "part_${p//-/_}"; then
    echo "FAILED: part $p"
    status=1
    if [ "$p" = build ]; then pack_results; exit 1; fi
  fi
  pack_results
done
step "done: status $status"
cat "$work/times.txt" 2>/dev/null
exit $status
