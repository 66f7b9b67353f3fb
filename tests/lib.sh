# Shared by the shell tests: a scratch directory, counters, and `expect`.
# Source it after setting `name`; it defines $bin (argument 1, made absolute) and $work.
set -uo pipefail
bin=$(readlink -f "$1")
work=$(mktemp -d "${TMPDIR:-/tmp}/grokking-$name.XXXXXX")
trap 'chmod -R u+w "$work" 2>/dev/null; mountpoint -q "$work/disk" 2>/dev/null && umount "$work/disk"; rm -rf "$work"' EXIT
cd "$work" || exit 1
pass=0
fail=0

# check DESCRIPTION CONDITION: one assertion, evaluated.
check() { if eval "$2"; then pass=$((pass + 1)); else fail=$((fail + 1)); echo "FAIL: $1" >&2; fi; }

# expect CODE PATTERN -- command...: exit code CODE, no signal, no C++ backtrace, stderr matching
# PATTERN (empty: anything) and, for a failure, exactly one line.
expect() {
  local code=$1 pattern=$2
  shift 3
  "$@" >out.txt 2>err.txt
  local rc=$? why=""
  [ "$rc" -eq "$code" ] || why="exit $rc, want $code"
  [ "$rc" -lt 128 ] || [ "$code" -ge 128 ] || why="$why; killed by a signal ($rc)"
  [ "$code" -eq 0 ] || [ "$(grep -c . err.txt)" -eq 1 ] || why="$why; $(grep -c . err.txt) stderr lines, want 1"
  [ -z "$pattern" ] || grep -Eq -- "$pattern" err.txt || why="$why; stderr lacks /$pattern/"
  ! grep -q "Exception raised from\|frame #\|terminate called" err.txt || why="$why; backtrace"
  if [ -z "$why" ]; then
    pass=$((pass + 1))
  else
    fail=$((fail + 1))
    echo "FAIL: $* -> $why" >&2
    sed 's/^/  | /' err.txt | head -3 >&2
  fi
}

# Prints the closing line and exits non-zero on any failure.
finish() {
  echo "$name: $pass passed, $fail failed"
  [ "$fail" -eq 0 ]
}
