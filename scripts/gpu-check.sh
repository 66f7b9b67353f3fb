#!/usr/bin/env bash
# The CUDA checks, in one run on a GPU machine: build against the
# machine's PyTorch (LibTorch 2.x with CUDA) and the Debian packages unpacked in .deps/root,
# run the hidden [.cuda] tests and the CPU model tests under that LibTorch, benchmark the
# plain, fast and CUDA-graph steps (a CPU baseline in the same run), and time the paper's
# 25,000-epoch run with and without the graph. Everything is logged to OUT_DIR.
#
#   scripts/gpu-check.sh OUT_DIR [EPOCHS=25000]
#
# Prepare .deps/root on a Debian machine first (scripts/gpu-deps.sh), and copy it along.
set -uo pipefail
out=${1:?usage: scripts/gpu-check.sh OUT_DIR [EPOCHS]}
epochs=${2:-25000}
mkdir -p "$out"
out=$(cd "$out" && pwd)
cd "$(dirname "$0")/.."
exec > >(tee "$out/gpu-check.log") 2>&1
step() { echo; echo "=== $* ($(date +%T))"; }
status=0
run() { "$@" || { echo "FAILED ($?): $*"; status=1; }; }

step machine
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
nproc
python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda,
  "available", torch.cuda.is_available(), "cxx11 abi", torch._C._GLIBCXX_USE_CXX11_ABI)'

step build
TP=$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)')
deps=$PWD/.deps/root/usr
[ -d "$deps" ] || echo "warning: $deps missing: CLI11, nlohmann_json, spdlog, fmt and Catch2 must be installed"
cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$TP;$deps" | tail -5 || exit 1
cmake --build build-gpu --parallel "$(nproc)" || exit 1
export LD_LIBRARY_PATH=$deps/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}
bin=build-gpu/grokking

step "CUDA tests (hidden [.cuda] tag) and the CPU model and analysis tests under this LibTorch"
run build-gpu/grokking_tests "[.cuda]" --durations yes
run build-gpu/grokking_tests "[model],[optim],[analysis],[config]"

step "bench: P=113, CUDA (plain, fast, graph), then the CPU in the same run"
run "$bin" bench --set train.device=cuda --steps 300 --seeds 8
run "$bin" bench --set train.device=cuda --steps 300 --json >"$out/bench-cuda.json"
run "$bin" bench --set train.device=cpu --steps 10 --json >"$out/bench-cpu.json"

step "the paper's run, $epochs epochs (evaluation every 100 included), CUDA graph on"
t0=$(date +%s.%N)
run "$bin" train configs/nanda2023.json --set train.device=cuda --set train.epochs="$epochs" --out "$out/paper-graph" -q
t1=$(date +%s.%N)
echo "wall: $(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.1f", b - a}') s (process start included)"
step "the same without the graph, first 2,000 epochs (per-epoch rate)"
t0=$(date +%s.%N)
run "$bin" train configs/nanda2023.json --set train.device=cuda --set train.epochs=2000 --set train.cuda_graph=false \
  --out "$out/paper-eager" -q
t1=$(date +%s.%N)
echo "wall: $(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.1f", b - a}') s for 2,000 epochs"
grep -h '"wall_time_s"\|"epochs_per_s"\|"grokked_epoch"\|"cuda_graph"' "$out"/paper-*/summary.json
rm -rf "$out"/paper-*/checkpoints  # keep metrics and summaries; checkpoints are large

step "the interventions on CUDA (eager: the graph is off with them), 500 epochs of ci-small"
run "$bin" train configs/ci-small.json --set train.device=cuda --set train.epochs=500 --set 'optim.grokfast="ema"' \
  --set optim.orthograd=true --set 'train.loss="stablemax"' --set 'optim.weight_norm="fixed"' --out "$out/interventions" -q
grep -h '"status"\|"cuda_graph"\|"loss"' "$out/interventions/summary.json"
tail -2 "$out/interventions/metrics.csv"

step "analysis of the graph run's final checkpoint"
run "$bin" fourier "$out/paper-graph" >"$out/fourier.txt" 2>&1 || true
step "done: status $status"
exit $status
