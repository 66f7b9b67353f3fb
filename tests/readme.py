#!/usr/bin/env python3
"""The README's commands against the binary (ctest `readme`), the way Rust runs its docs' examples.

1. Every `grokking SUB ...` the README shows in code (spans, indented and fenced blocks), with or
   without its build/ prefix, names a subcommand the binary has and only options that SUB's
   --help lists; every `--set KEY=...` and `--by KEY` names a key of `grokking config --doc`.
2. Every configs/... and scripts/... path the README names exists in the repository.
3. The "Using it" block runs as written, with one documented substitution: the paper's run
   (configs/tl-demo.json, 25,000 epochs) becomes configs/ci-small.json with 300 epochs, and
   runs/ goes to a temporary directory. `bench` is left out (it times; speed belongs in the
   README's figures, not in a test).
4. The "On the small config" block: its three commands run as written (DIR a temporary
   directory), and every line it shows "as printed" is printed (or begins a printed line: an
   excerpt may leave out the columns on the right): the same text and key
   frequencies, each number of the form 1.234e-05 (a loss) within a factor of 10 of the README's,
   each other number (accuracies, percentages) within 0.05 of it (percentages within 5 points).
   The run is deterministic for one thread on one machine; the tolerances leave room for other
   CPUs and BLAS builds, not for a changed table.
5. The run directory's analysis files: the block the README shows is `grokking analyse --list`.

usage: tests/readme.py README.md path/to/grokking
"""
import os
import re
import shlex
import subprocess
import sys
import tempfile

readme_path, binary = sys.argv[1], os.path.abspath(sys.argv[2])
root = os.path.dirname(os.path.abspath(readme_path))
text = open(readme_path, encoding="utf-8").read()
failures = []


def fail(msg):
    failures.append(msg)
    print("FAIL " + msg)


def run(*args, cwd=root):
    return subprocess.run([binary, *args], cwd=cwd, capture_output=True, text=True)


top = run("--help").stdout
subcommands = set(re.findall(r"^  ([a-z]+) ", top.split("Subcommands:")[1], re.M))
helps = {sub: run(sub, "--help").stdout for sub in subcommands}
doc = run("config", "--doc").stdout
keys = set(re.findall(r"^  ([a-z_]+\.[a-z_0-9]+) ", doc, re.M))
if len(subcommands) < 10 or len(keys) < 50:
    fail(f"could not read the binary's subcommands ({len(subcommands)}) or keys ({len(keys)})")

# Code: `spans`, indented blocks (4 spaces), fenced blocks.
code = re.findall(r"`([^`\n]+)`", text)
code += [line[4:] for line in text.splitlines() if line.startswith("    ") and not line.strip().startswith(("-", "|"))]
code += re.findall(r"```[a-z]*\n(.*?)```", text, re.S)

checked = 0
for chunk in code:
    for line in chunk.splitlines():
        for m in re.finditer(r"(?:^|[\s(])(?:[\w./-]*/)?grokking ([a-z]+)\b(.*)", line):
            sub, rest = m.group(1), m.group(2).split("#")[0]
            if sub not in subcommands:
                if sub in ("train", "sweep", "plot") or re.match(r"^\s*--", rest):
                    fail(f"README: `grokking {sub}`: no such subcommand")
                continue
            try:
                words = shlex.split(rest)
            except ValueError:
                words = rest.split()
            checked += 1
            for i, w in enumerate(words):
                nxt = words[i + 1] if i + 1 < len(words) else ""
                if w.startswith("-") and len(w) > 1 and not w.startswith("--set=") and not re.match(r"^-\d", w):
                    flag = w.split("=")[0]
                    if not re.search(r"(^|[\s,])" + re.escape(flag) + r"\b", helps[sub]):
                        fail(f"README: `grokking {sub} ... {flag}`: {sub} has no such option")
                    # A flag that takes no value (no TYPE after it in --help) followed by a number: the
                    # number would be an unexpected argument (`--gap 0.95` where `--acc 0.95 --gap` is meant).
                    entry = re.search(r"^\s+(?:-\w,)?" + re.escape(flag) + r"( [A-Z][A-Z:]*)?(?:\s|$)", helps[sub], re.M)
                    if entry and not entry.group(1) and "=" not in w and re.match(r"^-?\d+(\.\d+)?(e-?\d+)?$", nxt):
                        fail(f"README: `grokking {sub} ... {flag} {nxt}`: {flag} takes no value")
                if w in ("--set", "--by") and re.match(r"^[a-z_]+\.[a-z_0-9]+", nxt):
                    key = re.match(r"^[a-z_]+\.[a-z_0-9]+", nxt).group(0)
                    if key not in keys:
                        fail(f"README: `grokking {sub} {w} {nxt}`: {key} is not a config key")
if checked < 30:
    fail(f"only {checked} commands found in the README: is the pattern still right?")

for path in sorted(set(re.findall(r"\b((?:configs|scripts|tests)/[\w./-]+\.(?:json|sh|py|slurm))\b", text))):
    if not os.path.exists(os.path.join(root, path)):
        fail(f"README names {path}, which does not exist")

# The quick-start block, run as written (with the substitution above).
block = text.split("## Using it", 1)[1].split("\n\n", 2)[1]
with tempfile.TemporaryDirectory() as tmp:
    for line in block.splitlines():
        cmd = line.strip().split("#")[0].strip()
        if not cmd.startswith("build/grokking") or " bench" in cmd:
            continue
        cmd = cmd.replace("configs/tl-demo.json", "configs/ci-small.json --set train.epochs=300 --out runs/tl-demo")
        cmd = cmd.replace("configs/ci-small.json --set optim", "configs/ci-small.json --set train.epochs=300 --set optim")
        cmd = cmd.replace("runs/", tmp + "/runs/")
        args = shlex.split(cmd)[1:]
        if args[0] == "train" and "--out" not in args and "--resume" not in args:
            # The default run directory, runs/<config file name>, under the temporary directory.
            stem = os.path.splitext(os.path.basename(args[1]))[0]
            args += ["--out", tmp + "/runs/" + stem]
        if args[:2] == ["train", "--resume"]:
            args += ["--set", "train.epochs=400"]  # a finished run continues only past its budget
        r = run(*args)
        print(f"{'ok  ' if r.returncode == 0 else 'FAIL'} {' '.join(args)}")
        if r.returncode != 0:
            fail(f"README's `{line.strip()}` (as `{' '.join(args)}`) exited {r.returncode}: {r.stderr.strip()[-300:]}")

# The small-config block, its commands run and its printed lines compared.
small = text.split("### On the small config", 1)[1].split("\n## ", 1)[0]
commands = re.findall(r"`(build/grokking [^`]+)`", small)
shown = [line[4:] for line in small.splitlines() if line.startswith("    ")]
if len(commands) != 3 or len(shown) < 5:
    fail(f"the small-config block: expected 3 commands and the lines they print, found {len(commands)} and {len(shown)}")
else:
    NUM = r"[-+]?\d+(?:\.\d+)?(?:e[-+]\d+)?%?"
    with tempfile.TemporaryDirectory() as tmp:
        printed = ""
        for c in commands:
            r = run(*shlex.split(c.replace("DIR", tmp + "/small"))[1:])
            print(f"{'ok  ' if r.returncode == 0 else 'FAIL'} {c}")
            if r.returncode != 0:
                fail(f"the small-config block's `{c}` exited {r.returncode}: {r.stderr.strip()[-300:]}")
            printed += r.stdout
    lines = printed.splitlines()
    text_of = lambda l: re.sub(NUM, "#", re.sub(r"\s+", " ", l.strip()))  # the line with its numbers as #
    for want in shown:
        # An excerpt may leave out columns on the right: the printed line starts with the shown one.
        got = next((l for l in lines if text_of(l).startswith(text_of(want))), None)
        if got is None:
            fail(f"the small-config block shows `{want.strip()}`, which the commands no longer print")
            continue
        for w, g in zip(re.findall(NUM, want), re.findall(NUM, got)):
            if "e" in w:
                ok = float(g) > 0 and float(w) > 0 and 0.1 <= float(g) / float(w) <= 10
            elif w.endswith("%"):
                ok = abs(float(g[:-1]) - float(w[:-1])) <= 5
            elif "." in w:
                ok = abs(float(g) - float(w)) <= 0.05
            else:
                ok = g == w  # integers: key frequencies, counts
            if not ok:
                fail(f"the small-config block shows {w} in `{want.strip()}`; the commands print {g}")

# 5. The analysis registry's block is `grokking analyse --list`'s output, line for line.
marker = "(this block is\nits output, checked by the `readme` test):"
if marker not in text:
    fail("the README lost the block of `grokking analyse --list`")
else:
    after = text.split(marker, 1)[1].lstrip("\n").split("\n\n", 1)[0]
    shown_list = [l[4:] for l in after.splitlines()]
    printed_list = run("analyse", "--list").stdout.rstrip("\n").splitlines()
    if shown_list != printed_list:
        fail(f"the README's analysis list differs from `grokking analyse --list`: shown {shown_list}, printed {printed_list}")
    checked += 1

print(f"{checked} README commands checked; {len(failures)} failure(s)")
sys.exit(1 if failures else 0)
