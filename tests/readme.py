#!/usr/bin/env python3
"""The README's and the docs' commands against the binary (ctest `readme`), the way Rust runs its docs' examples.

1. Every `grokking SUB ...` that README.md or a page under docs/ shows in code (spans, indented
   and fenced blocks), with or without its build/ prefix, names a subcommand the binary has and
   only options that SUB's --help lists; every `--set KEY=...` and `--by KEY` names a key of
   `grokking config --doc`.
2. Every configs/..., scripts/... and tests/... path they name exists in the repository, and so
   does every relative link (docs pages, figures).
3. The README's quick starts, one per family, run as written (runs/ in a temporary directory),
   and the lines each shows as printed are printed (tolerances below); so are the blocks a docs
   page marks `<!-- readme-test: build/grokking ... runs/NAME -->`, run on the quick starts' runs.
4. The run directory's analysis files: the block the README shows is `grokking analyse --list`.

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
pages = {readme_path: text}
for d, _, files in os.walk(os.path.join(root, "docs")):
    for f in sorted(files):
        if f.endswith(".md"):
            pages[os.path.join(d, f)] = open(os.path.join(d, f), encoding="utf-8").read()
everything = "\n".join(pages.values())
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
code = re.findall(r"`([^`\n]+)`", everything)
code += [line[4:] for line in everything.splitlines() if line.startswith("    ") and not line.strip().startswith(("-", "|"))]
code += re.findall(r"```[a-z]*\n(.*?)```", everything, re.S)

checked = 0
for chunk in code:
    for line in chunk.splitlines():
        for m in re.finditer(r"(?:^|[\s(])(?:[\w./-]*/)?grokking ([a-z]+)\b(.*)", line):
            sub, rest = m.group(1), m.group(2).split("#")[0]
            if sub not in subcommands:
                if sub in ("train", "sweep", "plot") or re.match(r"^\s*--", rest):
                    fail(f"docs: `grokking {sub}`: no such subcommand")
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
                        fail(f"README or docs: `grokking {sub} ... {flag}`: {sub} has no such option")
                    # A flag that takes no value (no TYPE after it in --help) followed by a number: the
                    # number would be an unexpected argument (`--gap 0.95` where `--acc 0.95 --gap` is meant).
                    entry = re.search(r"^\s+(?:-\w,)?" + re.escape(flag) + r"( [A-Z][A-Z:]*)?(?:\s|$)", helps[sub], re.M)
                    if entry and not entry.group(1) and "=" not in w and re.match(r"^-?\d+(\.\d+)?(e-?\d+)?$", nxt):
                        fail(f"README or docs: `grokking {sub} ... {flag} {nxt}`: {flag} takes no value")
                if w in ("--set", "--by") and re.match(r"^[a-z_]+\.[a-z_0-9]+", nxt):
                    key = re.match(r"^[a-z_]+\.[a-z_0-9]+", nxt).group(0)
                    if key not in keys:
                        fail(f"README or docs: `grokking {sub} {w} {nxt}`: {key} is not a config key")
if checked < 30:
    fail(f"only {checked} commands found in the README and docs: is the pattern still right?")

for page, body in pages.items():
    name = os.path.relpath(page, root)
    for path in sorted(set(re.findall(r"\b((?:configs|scripts|tests)/[\w./-]+\.(?:json|sh|py|slurm))\b", body))):
        if not os.path.exists(os.path.join(root, path)):
            fail(f"{name} names {path}, which does not exist")
    for link in sorted(set(re.findall(r"\]\(([^)#:\s]+)(?:#[^)]*)?\)", body))):
        if not os.path.exists(os.path.join(os.path.dirname(page), link)):
            fail(f"{name} links to {link}, which does not exist")

# The quick starts: under "## Quick start", each family's commands run as written (runs/ in a
# temporary directory) and every line it shows as printed is printed (or begins a printed line:
# an excerpt may leave out the columns on the right). Text must match; numbers within tolerances
# that leave room for other CPUs, BLAS builds and thread counts, not for a changed table: a loss
# (1.234e-05) within a factor of 10, or of 100 where both are below 0.05 (a model right on every
# pair, whose loss is set by how far past grokking its early stop fell: the D17 run's test loss
# is 9e-4 on an Intel Xeon and 2e-2 on an AMD EPYC), a decimal (0.123) within 0.05 or 5 %, a
# percentage within 5 points, an integer below 50 (a key frequency, an irrep, a head) exactly and
# a larger one (an epoch, a count) within a factor of 2.
NUM = r"[-+]?\d+(?:\.\d+)?(?:e[-+]\d+)?%?"
text_of = lambda l: re.sub(NUM, "#", re.sub(r"\s+", " ", l.strip()))  # the line with its numbers as #


def number_ok(w, g):
    if "e" in w:
        if not (float(g) > 0 and float(w) > 0):
            return False
        factor = 100 if max(float(g), float(w)) < 0.05 else 10
        return 1 / factor <= float(g) / float(w) <= factor
    if w.endswith("%"):
        return g.endswith("%") and abs(float(g[:-1]) - float(w[:-1])) <= 5
    if "." in w:
        return abs(float(g) - float(w)) <= max(0.05, 0.05 * abs(float(w)))
    if abs(int(w)) < 50:
        return g == w
    return "." not in g and 0.5 <= float(g) / float(w) <= 2


quick = text.split("## Quick start", 1)[1].split("\n## ", 1)[0] if "## Quick start" in text else ""
families = re.split(r"\n### ", quick)[1:]
if len(families) < 4:
    fail(f"the quick start: expected a block per family (4), found {len(families)}")


def compare_shown(where, shown, printed):
    """Every shown line is printed (or begins a printed line), its numbers within the tolerances."""
    lines = printed.splitlines()
    for want in shown:
        # The printed line of the same text whose numbers agree (rows of a table differ only in them).
        alike = [l for l in lines if text_of(l).startswith(text_of(want))]
        agrees = lambda l: all(number_ok(w, g) for w, g in zip(re.findall(NUM, want), re.findall(NUM, l)))
        got = next((l for l in alike if agrees(l)), alike[0] if alike else None)
        if got is None:
            fail(f"{where} shows `{want.strip()}`, which its commands no longer print")
            continue
        for w, g in zip(re.findall(NUM, want), re.findall(NUM, got)):
            if not number_ok(w, g):
                fail(f"{where} shows {w} in `{want.strip()}`; its commands print {g}")


def run_shown(where, commands, tmp):
    printed = ""
    for c in commands:
        args = shlex.split(c.replace("runs/", tmp + "/runs/"))[1:]
        r = run(*args)
        print(f"{'ok  ' if r.returncode == 0 else 'FAIL'} {where}: {' '.join(args)}")
        if r.returncode != 0:
            fail(f"{where}: `{c}` exited {r.returncode}: {r.stderr.strip()[-300:]}")
        printed += (r.stdout + r.stderr).replace(tmp + "/", "")  # as if run where the README runs it
    return printed


# The quick starts' runs stay in one temporary directory, runs/NAME as the README names them, so
# that a docs page may show what a command prints on one of them: a line
# `<!-- readme-test: build/grokking SUB runs/NAME ... -->` before an indented block has that
# command run and the block compared as the quick starts' are.
# READMETEST_STATIC=1 (for editing docs): the checks that run nothing long, without the runs.
static_only = os.environ.get("READMETEST_STATIC") == "1"
quick_tmp = tempfile.TemporaryDirectory()
for fam in ([] if static_only else families):
    name = fam.split("\n", 1)[0]
    blocks = re.findall(r"((?:^    .*\n?)+)", fam, re.M)
    commands = [l.strip() for l in blocks[0].splitlines()] if blocks else []
    shown_at = fam.find("Printed")
    shown = []
    if shown_at >= 0:
        after = re.findall(r"((?:^    .*\n?)+)", fam[shown_at:], re.M)
        shown = [l[4:] for l in after[0].splitlines()] if after else []
    if not commands or not all(c.startswith("build/grokking ") for c in commands) or len(shown) < 3:
        fail(f"quick start {name}: expected its commands, then the lines they print after \"Printed\"")
        continue
    compare_shown(f"quick start {name}", shown, run_shown(f"quick start {name}", commands, quick_tmp.name))
    checked += 1

docs_checked = 0
for page, body in ([] if static_only else pages.items()):
    for m in re.finditer(r"<!-- readme-test: (build/grokking [^>]*?) -->\n+((?:    .*\n?)+)", body):
        where = f"{os.path.relpath(page, root)} (`{m.group(1)}`)"
        shown = [l[4:] for l in m.group(2).splitlines() if l.strip()]
        compare_shown(where, shown, run_shown(where, [m.group(1)], quick_tmp.name))
        docs_checked += 1
if docs_checked < 2 and not static_only:
    fail(f"only {docs_checked} docs blocks checked against the quick starts' runs: is the marker still there?")
quick_tmp.cleanup()

# 5. The analysis registry's block is `grokking analyse --list`'s output, line for line.
marker = "(`build/grokking analyse --list`; checked by the `readme` test):"
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
