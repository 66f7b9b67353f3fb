#!/usr/bin/env bash
# Makes the figures the README and docs/ show (docs/figures/*.svg): trains each family's
# quick-start config into runs/figures/ (a finished run there is reused), runs `grokking plot`
# on it, copies the figure each family is known for, and writes docs/figures/SOURCES.md, which
# says which run, command, date and machine made which figure.
#
#   scripts/figures.sh            # build/grokking; runs in runs/figures/
#   GROKKING=path/to/grokking FIGURE_RUNS=/tmp/runs scripts/figures.sh
set -euo pipefail
cd "$(dirname "$0")/.."
G=${GROKKING:-build/grokking}
R=${FIGURE_RUNS:-runs/figures}
out=docs/figures
mkdir -p "$R" "$out"
# name | config | the run's figure | the figure's file under docs/figures
figures=(
  "ci-small|configs/ci-small.json|accuracy.svg|modular-curves.svg"
  "ci-small|configs/ci-small.json|progress.svg|modular-progress.svg"
  "d17-quick|configs/groups/d17-quick.json|irreps.svg|groups-irreps.svg"
  "induction|configs/induction/small.json|heads.svg|induction-heads.svg"
  "induction|configs/induction/small.json|pattern.svg|induction-pattern.svg"
  "pentagon|configs/superposition/pentagon.json|superposition.svg|superposition-pentagon.svg"
  "abs|configs/superposition/abs.json|superposition.svg|superposition-abs.svg"
)
cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
{
  echo "# Where each figure comes from"
  echo
  echo "Made by \`scripts/figures.sh\` on $(date -u +%Y-%m-%d), $cpu, $(nproc) logical CPUs;"
  echo "$("$G" --version 2>&1 | head -1). Each run was trained by \`grokking train CONFIG --out DIR\`"
  echo "(the README's quick start) and drawn by \`grokking plot DIR\`."
  echo
  echo "| figure | config | the run's file |"
  echo "|---|---|---|"
} > "$out/SOURCES.md.tmp"
declare -A done_runs=()
for f in "${figures[@]}"; do
  IFS='|' read -r name config plot file <<< "$f"
  dir="$R/$name"
  if [ -z "${done_runs[$name]:-}" ]; then
    if ! grep -q '"status": *"\(completed\|early_stopped\)"' "$dir/summary.json" 2>/dev/null; then
      "$G" train "$config" --out "$dir" --force -q
    fi
    "$G" plot "$dir" > /dev/null
    done_runs[$name]=1
  fi
  cp "$dir/plots/$plot" "$out/$file"
  echo "| [$file]($file) | \`$config\` | plots/$plot |" >> "$out/SOURCES.md.tmp"
done
mv "$out/SOURCES.md.tmp" "$out/SOURCES.md"
ls -l "$out"
