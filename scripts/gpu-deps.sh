#!/usr/bin/env bash
# Unpacks the Debian packages a GPU machine lacks (CLI11, nlohmann_json, spdlog, fmt, Catch2)
# into .deps/root, git-ignored, for scripts/gpu-check.sh to build against there
# on a machine that has PyTorch but none of these packages. Run it on a Debian machine, then copy
# .deps/root along with the checkout.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.deps/' .git/info/exclude 2>/dev/null || echo /.deps/ >>.git/info/exclude
rm -rf .deps/debs .deps/root
mkdir -p .deps/debs
(cd .deps/debs && apt-get download -q libcli11-dev nlohmann-json3-dev libspdlog-dev libspdlog1.10 libfmt-dev libfmt9 catch2)
for f in .deps/debs/*.deb; do dpkg -x "$f" .deps/root; done
rm -rf .deps/debs
du -sh .deps/root
ls .deps/root/usr/lib/x86_64-linux-gnu/cmake .deps/root/usr/lib/cmake 2>/dev/null
