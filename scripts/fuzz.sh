#!/usr/bin/env bash
# Builds the libFuzzer targets of fuzz/ (clang-14, ASan + UBSan) into build-fuzz and runs each
# for SECONDS_PER_TARGET (default 60), one after the other, on a corpus seeded from tests/ and
# configs/ data. Every input that crashed, hung or ran out of memory is copied to
# tests/fuzz_regressions/<target>/, which ctest's fuzz-regressions entry replays through the
# normal binary. Per-target time, executions and findings go to build-fuzz/fuzz-report.txt.
# Usage: scripts/fuzz.sh [SECONDS_PER_TARGET]   (FUZZ_TARGETS="config set" picks targets;
#        JOBS=N build parallelism, default 2; GROKKING=path/to/grokking for the seed checkpoint)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
targets=(config set sweep int_list checkpoint metrics csv)
[ -n "${FUZZ_TARGETS:-}" ] && read -ra targets <<<"$FUZZ_TARGETS"
root=$PWD
out=$root/build-fuzz

# ---- tools: Debian's clang 14 and its libFuzzer runtime ----
if ! command -v clang++-14 >/dev/null || ! compgen -G "/usr/lib/llvm-14/lib/clang/*/lib/linux/libclang_rt.fuzzer-x86_64.a" >/dev/null; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo apt-get install -y clang-14 libclang-rt-14-dev
fi

# ---- build: the library with coverage and sanitizers, one binary per target ----
gen=()
command -v ninja >/dev/null && gen=(-G Ninja)
if [ ! -f "$out/CMakeCache.txt" ]; then
  cmake -S . -B "$out" "${gen[@]}" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER=clang++-14 \
    -DGROKKING_SANITIZE=ON -DGROKKING_FUZZ=ON -DGROKKING_BUILD_TESTS=OFF >/dev/null
fi
nice -n 19 cmake --build "$out" --parallel "${JOBS:-2}" --target "${targets[@]/#/fuzz_}"

# ---- seed corpora (the working corpus in build-fuzz/corpus/<target> grows between runs) ----
seeds=$out/seeds
rm -rf "$seeds"
mkdir -p "$seeds"/{config,set,sweep,int_list,checkpoint,metrics,csv}
cp tests/bad_input/*.json configs/*.json "$seeds/config/"
cp configs/sweeps/*.json "$seeds/sweep/"
printf '{"base": {"task": {"p": 7}}, "grid": {"train.seed": [0, 1], "optim.lr": [0.001]}, "points": [{"task.p": 11}]}' >"$seeds/sweep/inline.json"
i=0
for s in "task.p=53" "optim.lr=3e-3" "train.device=cpu" "model.activation=gelu" $'task.p=7\ntrain.epochs=10' "output.dir=\"x\"" "train.seed=1e3"; do
  printf '%s' "$s" >"$seeds/set/$((i++))"
done
i=0
for s in "0-7" "1,2,5-7" "14,35,41" "-3" "0" "3-1" "1,1"; do printf '%s' "$s" >"$seeds/int_list/$((i++))"; done
# A real run gives a checkpoint, a metrics.csv and the CSV/JSON files plot reads.
bin=${GROKKING:-$root/build/grokking}
if [ -x "$bin" ]; then
  run=$(mktemp -d)
  "$bin" train tests/bad_input/ok_tiny.json --out "$run/r" -q >/dev/null 2>&1 || true
  cp "$run"/r/checkpoints/epoch_*.pt "$seeds/checkpoint/" 2>/dev/null || true
  cp "$run/r/metrics.csv" "$seeds/metrics/" 2>/dev/null || true
  "$bin" progress "$run/r" >/dev/null 2>&1 || true
  cp "$run/r/metrics.csv" "$run/r/summary.json" "$run/r/config.json" "$run/r/progress.csv" "$seeds/csv/" 2>/dev/null || true
  rm -rf "$run"
else
  echo "fuzz.sh: $bin not built (scripts/build.sh): checkpoint, metrics and csv start from a tiny corpus" >&2
fi
printf 'epoch,train_loss,test_loss,train_acc,test_acc,sum_sq_weights,lr,elapsed_s\n0,1,1,0,0,1,0.001,0.1\n' >"$seeds/metrics/min.csv"
printf 'name,a,"b ""q"""\nx,1,"2,3"\n' >"$seeds/csv/quoted.csv"
printf 'PK\005\006%018d' 0 >"$seeds/checkpoint/empty_zip"

# ---- run: one target at a time; a crash, a hang (-timeout) or -rss_limit_mb is a finding ----
report=$out/fuzz-report.txt
for t in "${targets[@]}"; do
  corpus=$out/corpus/$t artifacts=$out/artifacts/$t
  mkdir -p "$corpus" "$artifacts"
  log=$out/fuzz_$t.log
  echo "fuzz.sh: fuzz_$t for ${secs}s" >&2
  touch "$out/.started"
  # fork mode keeps fuzzing past a finding; every finding is written under $artifacts.
  ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    nice -n 19 "$out/fuzz/fuzz_$t" "$corpus" "$seeds/$t" -fork=1 -ignore_crashes=1 -ignore_timeouts=1 \
    -ignore_ooms=1 -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
    -artifact_prefix="$artifacts/" >"$log" 2>&1 || true
  execs=$(grep -Eo '#[0-9]+' "$log" | tail -1 | tr -d '#')
  found=0
  for f in "$artifacts"/*; do
    [ -f "$f" ] || continue
    [ "$f" -nt "$out/.started" ] && found=$((found + 1))  # new in this run
    [ -e "tests/fuzz_open/$t/$(basename "$f")" ] && continue  # known and not fixed yet: such inputs live in tests/fuzz_open/<target>/, which ctest does not replay
    mkdir -p "tests/fuzz_regressions/$t"
    cp -n "$f" "tests/fuzz_regressions/$t/"
  done
  echo "$(date -u +%FT%TZ) fuzz_$t: ${secs}s, ${execs:-?} executions, $found new findings (all in $artifacts)" | tee -a "$report"
done
