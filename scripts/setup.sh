#!/usr/bin/env bash
# Installs what grokking needs from Debian's packages. Idempotent; quiet when all is there.
set -euo pipefail

packages=(
  cmake g++ ninja-build
  libtorch-dev            # LibTorch 1.13 (CPU)
  libopenblas0-pthread    # optimised BLAS: Debian's reference BLAS makes every step 14-40x slower
  libcli11-dev nlohmann-json3-dev libspdlog-dev catch2
  python3-torch           # the interop test loads a checkpoint with Python's torch.load
  gnuplot-nox             # grokking plot
  parallel                # scripts/sweep-parallel.sh
)

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# LibTorch must run on OpenBLAS, not the reference BLAS, whichever was installed first. An
# OpenBLAS chosen on purpose (the OpenMP build, see docs/speed.md) is left alone.
openblas=/usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3
if [ -e "$openblas" ] && command -v update-alternatives >/dev/null; then
  current=$(readlink -f /usr/lib/x86_64-linux-gnu/libblas.so.3 2>/dev/null || true)
  case "$current" in
    */openblas-*) ;;
    *)
      echo "setup: pointing libblas.so.3 at OpenBLAS" >&2
      $sudo update-alternatives --quiet --set libblas.so.3-x86_64-linux-gnu "$openblas" || true
      ;;
  esac
fi
