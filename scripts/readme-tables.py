#!/usr/bin/env python3
"""The README's result tables, as Markdown, from run and sweep directories.

Each table is computed by the tool itself (`grokking heads|irreps|compare --json`) and only
laid out here, so that updating a README table is one command:

  scripts/readme-tables.py heads RUN_DIR...                 # induction heads, a row a run
  scripts/readme-tables.py irreps RUN_DIR...                # groups: grokked epoch and key irreps
  scripts/readme-tables.py compare SWEEP_DIR --by KEY...    # the arms of a sweep (any compare option)
  scripts/readme-tables.py superposition SWEEP_DIR          # features represented and D* per run

GROKKING names the binary (default build/grokking). A row's label is the run directory's last
two path components ("minimal/seed=0"). Python 3 standard library only.
"""
import csv
import json
import os
import subprocess
import sys

BIN = os.environ.get("GROKKING", "build/grokking")


def tool_json(*args):
    out = subprocess.run([BIN, *args, "--json"], check=True, stdout=subprocess.PIPE, text=True).stdout
    return json.loads(out)


def label(path):
    parts = os.path.normpath(path).split(os.sep)
    return "/".join(parts[-2:])


def num(v, digits=3):
    if v is None:
        return "–"
    if isinstance(v, float) and (abs(v) >= 1e4 or (v != 0 and abs(v) < 10 ** -digits)):
        return f"{v:.2g}"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def summary(run):
    try:
        with open(os.path.join(run, "summary.json")) as f:
            return json.load(f)
    except OSError:
        return {}


def heads(runs):
    rows = []
    for run in runs:
        j = tool_json("heads", run)
        hs = j["heads"]
        layer = lambda h: int(h["head"][1:h["head"].index("H")])
        last = max(layer(h) for h in hs)
        first = [h for h in hs if layer(h) == 0]
        top = [h for h in hs if layer(h) == last]
        t = j["transition"]
        at = "/".join(str(t[k]) if t[k] is not None else "–" for k in ("at10", "at50", "at90"))
        rows.append([label(run), summary(run).get("epochs", "–"), num(j["repeated_half_loss"]),
                     num(j["first_half_loss"]), num(max(h["previous"] for h in first), 2),
                     num(max(h["induction"] for h in top), 2), num(max(h["induction_tl"] for h in top), 2),
                     ", ".join(j["induction_heads"]) or "none", ", ".join(j["previous_token_heads"]) or "none",
                     at, num(t["bump"])])
    return table(["run", "steps", "repeated-half loss", "first-half loss", "best previous-token score, layer 0",
                  "best induction score, last layer", "same, TransformerLens's", "induction heads",
                  "previous-token heads", "transition 10 / 50 / 90 %", "bump (nats)"], rows)


def irreps(runs):
    rows = []
    for run in runs:
        j = tool_json("irreps", run)
        s = summary(run)
        sims = sorted((i for i in j["irreps"] if i["key"]), key=lambda i: -i["similarity"])
        key = ", ".join(f"{i['name']} {i['similarity']:.2f}" for i in sims) or "none"
        grokked = s.get("grokked_epoch")
        rows.append([label(run), j["group"], s.get("epochs", "–"), grokked if grokked is not None else "never",
                     num(s.get("final", {}).get("test_acc")), key, num(j["model"]["test"]["loss"]),
                     num(j["excluded"]["train"]["loss"], 2), num(j["restricted"]["test"]["loss"]),
                     num(j["controls"]["random_excluded"]["test"]["acc"])])
    return table(["run", "group", "epochs", "grokked at", "test acc", "key irreps (similarity > 0.005)",
                  "test loss", "excluded loss (train)", "restricted loss (test)",
                  "random directions removed: test acc"], rows)


def compare(sweep, options):
    j = tool_json("compare", sweep, *options)
    rows = []
    for a in j["arms"]:
        if "grokked_epoch" not in a:  # an arm none of whose runs has finished
            rows.append([a["arm"], a.get("runs", 0), "–", "no finished run", "–", "–", "–", "–"])
            continue
        g, r = a["grokked_epoch"], a["ratio_to_baseline"]
        bound = "≥ " if g["median_is_lower_bound"] else ""
        d = a.get("grokking_delay") or {}
        delay = (("≥ " if d.get("median_is_lower_bound") else "") + f"{d['median']:g}") if "median" in d else "–"
        rows.append([a["arm"], a["runs"], a["grokked"], f"{bound}{g['median']:g} [{g['ci95'][0]:g}, {g['ci95'][1]:g}]", delay,
                     ("≥ " if r["is_lower_bound"] else "") + f"{r['value']:.2f} [{r['ci95'][0]:.2f}, {r['ci95'][1]:.2f}]",
                     num(a["mann_whitney"]["p"]), num(a["detectable_ratio_80pct_power"], 1)])
    return table(["arm", "runs", "grokked", "median grokked epoch [95 % CI]", "median grokking delay",
                  "ratio to baseline [95 % CI]",
                  "Mann–Whitney p", "detectable ratio"], rows)


def superposition(sweep):
    subprocess.run([BIN, "superposition", sweep], check=True, stdout=subprocess.DEVNULL)
    per_run = {}
    with open(os.path.join(sweep, "superposition.csv")) as f:
        for r in csv.DictReader(f):
            per_run.setdefault(r["run"], r)
    rows = [[name, num(float(r["sparsity"]), 2), num(float(r["dims_per_feature"]), 2), r["represented"],
             r["superposed"]] for name, r in sorted(per_run.items(), key=lambda kv: (kv[0].split("sparsity")[0],
                                                                                    float(kv[1]["sparsity"])))]
    return table(["run", "sparsity S", "D* = m/‖W‖²", "features represented", "in superposition"], rows)


def main(argv):
    if len(argv) < 2 or argv[0] not in ("heads", "irreps", "compare", "superposition"):
        sys.exit(__doc__)
    what, rest = argv[0], argv[1:]
    if what == "compare":
        if "--by" not in rest:
            sys.exit("compare: give --by KEY (and any other option of grokking compare)")
        print(compare(rest[0], rest[1:]))
    elif what == "superposition":
        print(superposition(rest[0]))
    else:
        print({"heads": heads, "irreps": irreps}[what](rest))


if __name__ == "__main__":
    main(sys.argv[1:])
