#!/usr/bin/env bash
# Nothing changes for existing configs unnoticed: configs/ci-small.json (300 epochs, the default
# path and the plain one) and the first 200 epochs of configs/tl-demo.json, on one thread, give
# the weights checksum and the metrics.csv values of the commit each run names in
# tests/reference/identity.json (the plain path's: the last commit before the task and model
# kinds; the fast path's: the one that wrote its attention and loss by hand, and says why and by
# how much that moved them). A change that moves them records them again, with its reason there. BLAS kernels differ between CPUs, so the
# reference holds only on a machine like the one it was recorded on (tests/reference/identity.json);
# elsewhere the test says so and is skipped (exit 77), and the parity tests of the suite
# (fast = generic forward, packed = alone, resume = uninterrupted) still run.
# Usage: tests/identity.sh path/to/grokking
name=identity
here=$(cd "$(dirname "$0")" && pwd)
source "$here/lib.sh"
src=$(dirname "$here")
py=${GROKKING_PYTHON:-/usr/bin/python3}
ref=$here/reference

# This machine's signature, as the reference records it.
cpu=$(grep -m1 "model name" /proc/cpuinfo | sed 's/.*: //')
avx512=false; grep -qm1 avx512f /proc/cpuinfo && avx512=true
"$bin" train "$src/configs/ci-small.json" --set train.epochs=1 --set train.threads=1 --out probe -q
blas=$("$py" -c 'import json,sys; s=json.load(open(sys.argv[1])); print(s["blas"] + "|" + s["libtorch"])' probe/summary.json)
want=$("$py" -c 'import json,sys; m=json.load(open(sys.argv[1]))["machine"]; print(m["cpu"] + "|" + str(m["avx512f"]).lower() + "|" + m["blas"] + "|" + m["libtorch"])' "$ref/identity.json")
have="$cpu|$avx512|$blas"
if [ "$have" != "$want" ]; then
  echo "identity: the reference was recorded on $want; this machine is $have: BLAS kernels differ, skipped"
  exit 77
fi

for run in ci-small-300 ci-small-300-plain tl-demo-200; do
  read -r config sets checksum < <("$py" -c '
import json, sys
r = json.load(open(sys.argv[1]))["runs"][sys.argv[2]]
print(r["config"], ",".join(r["sets"]), r["weights_checksum"])' "$ref/identity.json" "$run")
  args=()
  IFS=, read -ra list <<<"$sets"
  for s in "${list[@]}"; do args+=(--set "$s"); done
  "$bin" train "$src/$config" "${args[@]}" --set train.threads=1 --out "$run" -q
  got=$(grep -o '"weights_checksum": "[0-9a-f]*"' "$run/summary.json" | grep -o '[0-9a-f]\{16\}')
  check "$run: weights checksum $got, the reference's $checksum" '[ "$got" = "$checksum" ]'
  # Every column of the reference's metrics.csv but the wall time, by name (its softmax_collapse
  # counted the zero terms: that column is zero_terms now).
  check "$run: metrics.csv values identical to the reference's" '"$py" - "$ref/$run.csv" "$run/metrics.csv" <<"PY"
import csv, sys
ref, got = list(csv.DictReader(open(sys.argv[1]))), list(csv.DictReader(open(sys.argv[2])))
assert len(ref) == len(got), (len(ref), len(got))
for a, b in zip(ref, got):
    for k, v in a.items():
        if k == "elapsed_s": continue
        k2 = "zero_terms" if k == "softmax_collapse" and "zero_terms" not in a else k
        assert b[k2] == v, (a["epoch"], k, v, b[k2])
PY'
done
finish
