#!/usr/bin/env python3
"""The result tables of docs/results/ and docs/speed.md, as Markdown, from run and sweep directories.

Each table is computed by the tool itself (`grokking heads|irreps|compare|ablate|fourier|progress|
bench --json`) or read from the runs' metrics.csv, and only laid out here, so that updating a
README table is one command:

  scripts/readme-tables.py heads RUN_DIR...                 # induction heads, a row a run
  scripts/readme-tables.py irreps RUN_DIR...                # groups: grokked epoch and key irreps
  scripts/readme-tables.py compare SWEEP_DIR --by KEY...    # the arms of a sweep (any compare option)
  scripts/readme-tables.py superposition SWEEP_DIR          # features represented and D* per run
  scripts/readme-tables.py sparsity SWEEP_DIR               # the same with a column per sparsity, a row a seed
  scripts/readme-tables.py circuit RUN_DIR                  # Nanda et al.'s sections 4.2-4.4 beside the paper's
  scripts/readme-tables.py curve RUN_DIR                    # a tl-demo run's losses beside TransformerLens's demo run
  scripts/readme-tables.py phases RUN_DIR...                # the phase rule's row a run (grokking progress --json)
  scripts/readme-tables.py irrep-order RUN_OR_SWEEP_DIR...  # groups: the order irreps become key, a row a seed
  scripts/readme-tables.py final SWEEP_DIR COLUMN --by KEY... # per arm, a metrics.csv column's last value over the runs
  scripts/readme-tables.py speed [CONFIG...]                # runs `grokking bench` (one thread): the Speed table
  scripts/readme-tables.py families [--threads N]           # runs `grokking bench --families --vs-peer`: every family beside its peer

GROKKING names the binary (default build/grokking). A row's label is the run directory's last
two path components ("minimal/seed=0"). Python 3 standard library only.
"""
import csv
import datetime
import json
import math
import os
import re
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


def cpu_name():
    """This machine's CPU model, as /proc/cpuinfo names it ("?" where it cannot be read)."""
    try:
        with open("/proc/cpuinfo") as f:
            return next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        return "?"


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
                     at, f'{num(t["bump"])} at {t["bump_at"]}', num(t.get("rise", 0))])
    return table(["run", "steps", "repeated-half loss", "first-half loss", "best previous-token score, layer 0",
                  "best induction score, last layer", "same, TransformerLens's", "induction heads",
                  "previous-token heads", "transition 10 / 50 / 90 %",
                  "bump: loss above its convex hull over log step (nats, at step)", "largest rise (nats)"], rows)


def irreps(runs):
    rows = []
    for run in runs:
        j = tool_json("irreps", run)
        s = summary(run)
        sims = sorted((i for i in j["irreps"] if i["key"]), key=lambda i: -i["similarity"])
        key = ", ".join(f"{i['name']} {i['similarity']:.2f}" for i in sims) or "none"
        grokked = s.get("grokked_epoch")
        if not s:  # a run that did not finish: where its last checkpoint stands
            grokked = f"not finished (last checkpoint {j['epoch']})"
        elif grokked is None:
            grokked = "never"
        rows.append([label(run), j["group"], s.get("epochs", j["epoch"]), grokked,
                     num(s.get("final", {}).get("test_acc")), key, num(j["model"]["test"]["loss"]),
                     num(j["excluded"]["train"]["loss"], 2), num(j["restricted"]["test"]["loss"]),
                     num(j["controls"]["random_excluded"]["test"]["acc"])])
    return table(["run", "group", "epochs", "grokked at", "test acc", "key irreps (similarity > 0.005)",
                  "test loss", "excluded loss (train)", "restricted loss (test; ours, logit-level)",
                  "random directions removed: test acc"], rows)


def compare(sweep, options):
    j = tool_json("compare", sweep, *options)
    grokked = j.get("outcome", "grokked epoch").startswith("grokked epoch")
    at = sorted({e for a in j["arms"] for e in a.get("median_test_acc_at", {})}, key=int)
    rows = []
    for a in j["arms"]:
        if "grokked_epoch" not in a:  # an arm none of whose runs has finished
            rows.append([a["arm"], a.get("runs", 0), "–", "no finished run", "–", "–", "–", "–"] + ["–"] * len(at))
            continue
        g, r = a["grokked_epoch"], a["ratio_to_baseline"]
        bound = "≥ " if g["median_is_lower_bound"] else ""
        d = a.get("grokking_delay") or {}
        delay = (("≥ " if d.get("median_is_lower_bound") else "") + f"{d['median']:g}") if "median" in d else "–"
        acc = [num(a.get("median_test_acc_at", {}).get(e)) for e in at]
        rows.append([a["arm"], a["runs"], a["grokked"], f"{bound}{g['median']:g} [{g['ci95'][0]:g}, {g['ci95'][1]:g}]", delay,
                     "–" if r["value"] is None else  # a baseline median of 0 (a gap of 0): no ratio
                     ("≥ " if r["is_lower_bound"] else "") + f"{r['value']:.2f} [{r['ci95'][0]:.2f}, {r['ci95'][1]:.2f}]",
                     num(a["mann_whitney"]["p"]), num(a["detectable_ratio_80pct_power"], 1)] + acc)
    outcome = "grokked epoch" if grokked else j["outcome"]
    header = ["arm", "runs", "grokked" if grokked else "reached", f"median {outcome} [95 % CI]",
              "median grokking delay" if grokked else "–", "ratio to baseline [95 % CI]", "Mann–Whitney p",
              "detectable ratio"] + [f"test acc at {int(e):,} (median)" for e in at]
    if not grokked:  # the delay column repeats the outcome for other outcomes: left out
        rows = [r[:4] + r[5:] for r in rows]
        header = header[:4] + header[5:]
    return table(header, rows)


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


STICKY = [(1, "1"), (3 / 4, "¾"), (2 / 3, "⅔"), (1 / 2, "½"), (2 / 5, "⅖"), (3 / 8, "⅜")]


def sparsity(sweep):
    """A column per sparsity; per seed: features represented, D*, features at a sticky fraction."""
    subprocess.run([BIN, "superposition", sweep], check=True, stdout=subprocess.DEVNULL)
    runs = {}
    with open(os.path.join(sweep, "superposition.csv")) as f:
        for r in csv.DictReader(f):
            runs.setdefault(r["run"], []).append(r)
    cells = {}  # (sparsity, seed) -> the run's feature rows
    for name, feats in runs.items():
        m = re.search(r"(?:^|_)train\.seed=([^_]+)", name)
        seed = m.group(1) if m else "0"
        key = (float(feats[0]["sparsity"]), seed)
        if key in cells:
            sys.exit(f"sparsity: {sweep}: two runs at sparsity {key[0]:g} and seed {key[1]} "
                     "(the table takes sweeps that vary only task.sparsity and train.seed)")
        cells[key] = feats
    ss = sorted({s for s, _ in cells})
    seeds = sorted({seed for _, seed in cells}, key=lambda x: (len(x), x))

    def per_seed(fn):
        return [" ".join(fn(cells[(s, seed)]) if (s, seed) in cells else "–" for seed in seeds) for s in ss]


    def fractions(feats):
        # Each represented feature counts at the sticky fraction nearest its dimensionality, when within 0.03.
        counts = {}
        for f in feats:
            if float(f["norm"]) < 0.5:
                continue
            d = float(f["dimensionality"])
            value, name = min(STICKY, key=lambda v: abs(d - v[0]))
            if abs(d - value) <= 0.03:
                counts[name] = counts.get(name, 0) + 1
        return ", ".join(f"{name}: {counts[name]}" for _, name in STICKY if name in counts) or "–"

    seeds_label = ", ".join(seeds)
    rows = [[f"features represented (seeds {seeds_label})"] + per_seed(lambda f: f[0]["represented"]),
            [f"D* = m/‖W‖² (seeds {seeds_label})"] + per_seed(lambda f: f"{float(f[0]['dims_per_feature']):.2f}"),
            [f"features at a fraction (within 0.03), seed {seeds[0]}"] +
            [fractions(cells[(s, seeds[0])]) if (s, seeds[0]) in cells else "–" for s in ss]]
    return table(["sparsity S"] + [f"{s:.2f}" for s in ss], rows)


# Nanda et al. (2023), their P = 113 main run: section 4.1-4.4, Table 1 (u_k, v_k) and Table 2 (heads).
PAPER = {
    "key": "{14, 35, 41, 42, 52}",
    "neurons_85": "84.6 % (§4.3)",
    "rank": "approximately rank 10 (§4.2)",
    "residual": "under 0.55 % (§4.2)",
    "table1": "93.2–98.2 % (Table 1)",
    "heads": "35: 99.0, 42: 98.5, 52: 99.1, 42: 97.9 (Table 2)",
    "trig": "95 % (§4.2)",
    "model": "2.41e-7",
    "fitted": "4.7e-8 (§4.2)",
    "restricted": "5.5e-8 (§4.4)",
    "excluded": "6.5–11 (§4.4)",
    "nonkey": "7.2e-8 (§4.4)",
    "projected": "1.19e-7 (§4.4)",
    "null": "5.27 (§4.4)",
}


def circuit(run):
    ab, fo = tool_json("ablate", run), tool_json("fourier", run)
    rows = {r["name"]: r for r in ab["ablations"]}

    def loss(prefix):
        r = next(v for k, v in rows.items() if k.startswith(prefix))
        return f"{r['all']['loss']:.2g} (acc {100 * r['all']['acc']:.1f} %)"

    wl, fit = ab["neuron_logit_map"], ab["logit_fit"]
    freqs = wl["freqs"]
    table1 = ", ".join(f"{k}: {100 * c:.1f} / {100 * s:.1f}" if s is not None else f"{k}: {100 * c:.1f}"
                       for k, c, s in zip(freqs, wl["fve_cos"], wl["fve_sin"]))
    heads = ", ".join(f"{h['pair_freq']}: {100 * h['pair_fve']:.1f}" for h in fo["attention_to_a"])
    n_dirs = sum(2 if s is not None else 1 for s in wl["fve_sin"])
    out = [
        ["key frequencies (neuron method)", "{" + ", ".join(map(str, ab["freqs"])) + "}", PAPER["key"]],
        ["neurons ≥ 85 % one frequency", f"{100 * fo['frac_neurons_85']:.1f} %", PAPER["neurons_85"]],
        [f"W_L: share of its squared norm in the {n_dirs} largest singular values", f"{100 * wl['top_share']:.2f} %",
         PAPER["rank"]],
        ["W_L minus Σ_k cos(w_k c) u_kᵀ + sin(w_k c) v_kᵀ, of its norm", f"{100 * wl['residual']:.2f} % ({100 * wl['residual'] ** 2:.3f} % of its square)",
         PAPER["residual"]],
        ["variance of u_k·MLP by cos(w_k(a+b)) / v_k·MLP by sin, per k", table1, PAPER["table1"]],
        ["attention of = to a over (a, b): best frequency: % by its degree-2 terms, per head", heads, PAPER["heads"]],
        ["logits' variance by Σ_k α_k cos(w_k(a+b−c))", f"{100 * fit['frac_variance']:.1f} %", PAPER["trig"]],
        ["loss: model as is", loss("model as is"), PAPER["model"]],
        ["loss: the fitted logits alone", f"{fit['loss']:.2g} (acc {100 * fit['acc']:.1f} %)", PAPER["fitted"]],
        ["loss: keep only the key (a+b) directions (restricted)", loss("keep only key freqs (restricted)"),
         PAPER["restricted"]],
        ["loss: remove them (excluded)", loss("remove all key freqs (excluded)"), PAPER["excluded"]],
        ["loss: remove all non-key components", loss("remove all non-key components"), PAPER["nonkey"]],
        [f"loss: remove {len(ab['freqs'])} random non-key frequencies (control)", loss("remove " + str(len(ab["freqs"])) + " random non-key freqs (control)"), "–"],
        ["loss: remove the key frequencies from W_E (weights)", loss("remove all key freqs from W_E"), "–"],
        ["loss: MLP activations projected onto the u_k, v_k", loss("hidden acts onto"), PAPER["projected"]],
        ["loss: ... onto their orthogonal complement", loss("hidden acts off"), PAPER["null"]],
    ]
    return table(["measure (losses over all pairs)", f"ours ({label(run)}, epoch {ab['epoch']})",
                  "paper (its main run)"], out)


# TransformerLens's demos/Grokking_Demo.ipynb (the configs/tl-demo.json setup), its stored outputs:
# the printed "Epoch E-1 Train Loss ... Test Loss ..." lines (the test loss after E steps, the train
# loss on the model before step E).
TL_DEMO = {200: (0.03195, 20.31), 1400: (4.16e-7, 34.10), 13000: (2.38e-7, 7.55), 13800: (1.81e-7, 0.862),
           14500: (1.34e-7, 4.89e-3), 15000: (1.26e-7, 1.54e-4), 25000: (9.45e-8, 2.03e-7)}


def milestones(run):
    """From metrics.csv: its rows by epoch, the first epochs of 100 % train and 99 % test accuracy
    (None when never), the last epoch and the best test accuracy."""
    m = {"rows": {}, "memorised": None, "grokked": None, "last": 0, "best_test_acc": 0.0}
    with open(os.path.join(run, "metrics.csv")) as f:
        for r in csv.DictReader(f):
            e, train, test = int(r["epoch"]), float(r["train_acc"]), float(r["test_acc"])
            m["rows"][e], m["last"], m["best_test_acc"] = r, e, max(m["best_test_acc"], test)
            if m["memorised"] is None and train >= 1:
                m["memorised"] = e
            if m["grokked"] is None and test >= 0.99:
                m["grokked"] = e
    return m


def curve(run):
    first = milestones(run)
    rows = first["rows"]
    g = lambda v: f"{v:.3g}"
    out = []
    for e, (tr, te) in TL_DEMO.items():
        r = rows.get(e)
        if r is None:
            out.append([f"{e:,}", "– / " + g(tr), "– / " + g(te), "–"])
            continue
        out.append([f"{e:,}", f"{g(float(r['train_loss']))} / {g(tr)}", f"{g(float(r['test_loss']))} / {g(te)}",
                    f"{float(r['test_acc']):.3f}"])
    m, k = first["memorised"], first["grokked"]
    at = lambda e: f"{e:,}" if e is not None else "never"
    note = (f"Train accuracy 100 % first at epoch {at(m)}, test accuracy 99 % first at {at(k)}" + (f": a grokking delay of {k - m:,} epochs." if m is not None and k is not None else "."))
    return table(["epoch", f"train loss (ours, {label(run)} / TL demo)", "test loss (ours / TL demo)", "test acc (ours)"],
                 out) + "\n\n" + note


def final(sweep, column, by):
    """Per arm (the values of the --by keys), the last row's COLUMN of each finished run: median, min-max."""
    with open(os.path.join(sweep, "plan.json")) as f:
        plan = json.load(f)
    arms = {}
    for r in plan["runs"]:
        run = os.path.join(sweep, "runs", r["name"])
        if summary(run).get("status", "interrupted") == "interrupted":  # not (yet) finished
            continue
        last = None
        with open(os.path.join(run, "metrics.csv")) as f:
            for last in csv.DictReader(f):
                pass
        if last is None or column not in last:
            sys.exit(f"final: {run}/metrics.csv has no column {column}")
        value = lambda v: v if isinstance(v, str) else json.dumps(v)  # as grokking compare labels arms
        arm = ", ".join(f"{k}={value(r['values'][k]) if k in r['values'] else '(unset)'}" for k in by)
        arms.setdefault(arm, []).append(float(last[column]))
    rows = []
    for arm, v in arms.items():
        v.sort()
        med = (v[(len(v) - 1) // 2] + v[len(v) // 2]) / 2
        rows.append([arm, len(v), num(med), f"{num(v[0])} – {num(v[-1])}"])
    return table(["arm", "finished runs", f"{column} at the end: median", "min – max"], rows)


def phases(runs):
    """A row a run of the phase tables: boundaries, each phase's changes, whether the definitions hold."""
    rows = []
    for run in runs:
        quick = ["--from-csv"] if os.path.exists(os.path.join(run, "progress.csv")) else []
        ph = tool_json("progress", run, *quick)["phases"]
        m = milestones(run)
        grok, best, last = m["grokked"], m["best_test_acc"], m["last"]
        dec = lambda v, d=1: f"{math.log10(v[1] / v[0]):+.{d}f} dec" if v[0] > 0 and v[1] > 0 else "–"
        pct = lambda v: f"{100 * (v[1] / v[0] - 1):+.0f} %" if v[0] > 0 else "–"
        e = lambda v: f"{v:,}" if v is not None else "?"
        hold = ph["definitions_hold"]
        par = (lambda t: t) if hold else (lambda t: f"({t})")
        ch = ph["changes"]
        if ph["memorisation"]["end"] is None:  # the training set never fit (or the measures are not finite)
            rows.append([label(run), f"(under way at {last:,})", "", "", f"never (best {best:.3f})", "", "",
                         ph["note"], ""])
            continue
        mem = f"0–{e(ph['memorisation']['end'])}"
        if not ph["grokked"]:
            rows.append([label(run), mem, f"(under way at {last:,})", "", f"never (best {best:.3f})", "", "", "never grokked",
                         ""])
            continue
        cf, cl = ch["circuit_formation"], ch["cleanup"]
        extra = ph["not_in_rule"]
        yes = lambda k: "yes" if extra.get(k) else "no"
        rows.append([label(run), mem if hold else f"(best fit {mem})",
                     par(f"{e(ph['circuit_formation']['start'])}–{e(ph['circuit_formation']['end'])}"),
                     par(f"{e(ph['cleanup']['start'])}–{e(ph['cleanup']['end'])}"), e(grok),
                     f"{dec(cf['excluded_loss'])}, {pct(cf['sum_sq_weights'])}, {dec(cf['test_loss'], 2)}",
                     f"{dec(cl['test_loss'])}, {dec(cl['restricted_loss'])}, {pct(cl['sum_sq_weights'])}, "
                     f"{cl['gini'][0]:.2f} → {cl['gini'][1]:.2f}",
                     "hold" if hold else "none can: " + ph["note"].split("at the best fit: ", 1)[-1],
                     f"{yes('circuit formation: restricted loss falls')} / {yes('cleanup: Gini of W_L jumps')}"])
    return table(["run", "memorisation", "circuit formation", "cleanup", "test acc ≥ 99 %",
                  "circuit formation: excluded loss, weight norm, test loss",
                  "cleanup: test loss, restricted loss, weight norm, Gini", "definitions",
                  "not in the rule: restricted loss falls in circuit formation / Gini of W_L jumps in cleanup"], rows)


# The Speed table's setups: (config or None for the paper's P = 113, extra bench options, label).
SPEED = [(None, [], "P = 113"), ("configs/ci-small.json", ["--seeds", "8"], "P = 23 (`configs/ci-small.json`)"),
         ("configs/groups/chughtai-s5-transformer.json", [], "S5 compose (`configs/groups/chughtai-s5-transformer.json`)"),
         ("configs/induction/minimal.json", [], "induction heads (`configs/induction/minimal.json`)")]


def speed(configs):
    """Times every setup (SPEED, or the configs given) with one thread: run it on a quiet machine."""
    rows, facts, inter = [], None, None
    setups = [(c, [], f"`{c}`") for c in configs] if configs else SPEED
    for config, extra, name in setups:
        j = tool_json("bench", *([config] if config else []), *extra, "--set", "train.threads=1")
        facts = facts or j
        examples = "" if "pairs" in j["task"] else f", {j['examples_per_step']:,} examples a step"
        setup = f"{name}: {j['task']}{examples} (limit {j['limit_ms']:.3g} ms at {j['gemm_peak_gflops']:.3g} GFLOP/s)"
        ms = lambda v: f"{v:,.0f}" if v >= 100 else f"{v:.3g}"
        for i, (path, t) in enumerate(sorted(j["paths"].items(), key=lambda kv: kv[0] != "plain")):
            rows.append([setup if i == 0 else "", path, ms(t["ms_per_step"]),
                         f"{100 * t['fraction_of_limit']:.0f} %"])
        if "seeds_side_by_side" in j:
            b = j["seeds_side_by_side"]
            rows.append([f"{name}, {b['seeds']} seeds side by side (`--seeds {b['seeds']}`)", f"{b['path']}, batched",
                         f"{ms(b['ms_per_step'])} for all {b['seeds']}",
                         f"{b['throughput_vs_sequential']:.2f}× the throughput of one seed at a time"])
        if config == setups[0][0]:
            inter = ", ".join(f"{k} {100 * v['overhead']:+.0f} %" for k, v in sorted(j.get("interventions", {}).items()))
    cpu = cpu_name()
    head = (f"Measured {datetime.date.today().isoformat()} on {cpu}, {os.cpu_count()} logical CPUs; LibTorch {facts['libtorch']}, {facts['blas']}; one thread, "
            f"device {facts['device']}; `build/grokking bench [CONFIG] --set train.threads=1 --json` per row")
    return (head + "\n\n" + table(["setup", "path", "ms/step", "of the sgemm limit"], rows) +
            f"\n\nInterventions on the first setup's fast step, the same run: " + (inter or "–") + ".")


def families(argv):
    """Every family at its shipped config beside its plain PyTorch peer, one run of
    `grokking bench --families --vs-peer` (from the repository root; run it on a quiet machine)."""
    threads = argv[argv.index("--threads") + 1] if "--threads" in argv else None
    j = tool_json("bench", "--families", "--vs-peer", *(["--set", f"train.threads={threads}"] if threads else []))
    rows = []
    for f in j["families"]:
        peer = f.get("peer", {})
        rows.append([f["family"], f"`{f['config']}`" if f["config"].startswith("configs/") else f["config"], f["path"],
                     f["models"], f"{f['ms_per_step']:.3g}", f"{f['step_gflop']:.4g}",
                     f"{100 * f['fraction_of_peak']:.0f} %", f"{peer.get('ms_per_step', float('nan')):.3g}",
                     f"{peer.get('peer_over_ours', float('nan')):.2f}×"])
    cpu = cpu_name()
    head = (f"Measured {datetime.date.today().isoformat()} on {cpu}, {j['threads']} thread(s); LibTorch {j['libtorch']}, "
            f"{j['blas']}, sgemm peak {j['gemm_peak_gflops']:.3g} GFLOP/s; peers run by {j['peer_python']}; "
            f"`build/grokking bench --families --vs-peer" + (f" --set train.threads={threads}" if threads else "") + " --json`")
    return head + "\n\n" + table(["family", "config", "path", "models", "ms/step", "GFLOP/step", "of peak",
                                  "peer ms/step", "peer / ours"], rows)


def irrep_order(paths):
    """Chughtai et al.'s universality question over seeds: for each group run (a sweep directory
    stands for its runs), the irreps in the order they become key for good and drop out for good
    (grokking progress --json, irrep_order), and how many runs share a final key set and an order."""
    runs = []
    for p in paths:
        sub = os.path.join(p, "runs")
        runs += sorted(os.path.join(sub, r) for r in os.listdir(sub)) if os.path.isdir(sub) else [p]
    rows, key_sets, orders = [], {}, {}
    for run in runs:
        j = tool_json("progress", run)
        order = j.get("irrep_order")
        if order is None:
            sys.exit(f"irrep-order: {run} is not a group run (no irrep_order in grokking progress --json)")
        key = sorted((c for c in order if c["key_from"] is not None), key=lambda c: c["key_from"])
        dropped = sorted((c for c in order if c["dropped_at"] is not None), key=lambda c: c["dropped_at"])
        names = tuple(c["irrep"] for c in key)
        key_sets.setdefault(tuple(sorted(names)), []).append(label(run))
        orders.setdefault(names, []).append(label(run))
        grok = summary(run).get("grokked_epoch")
        rows.append([label(run), grok if grok is not None else "never",
                     ", ".join(f"{c['irrep']} ({c['key_from']})" for c in key) or "none",
                     ", ".join(f"{c['irrep']} ({c['dropped_at']})" for c in dropped) or "none"])
    out = table(["run", "grokked at", "key for good from (epoch), in order", "dropped out for good (epoch), in order"], rows)
    out += f"\n\n{len(runs)} runs: {len(key_sets)} distinct final key sets"
    out += "".join(f"; {{{', '.join(k) or 'none'}}} in {len(v)}" for k, v in sorted(key_sets.items(), key=lambda kv: -len(kv[1])))
    out += f"; {len(orders)} distinct orders."
    return out


def main(argv):
    if argv[:1] == ["final"]:
        if len(argv) < 5 or "--by" not in argv:
            sys.exit("final: give SWEEP_DIR COLUMN --by KEY [--by KEY...]")
        by = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--by"]
        print(final(argv[1], argv[2], by))
        return
    if argv[:1] == ["families"]:
        print(families(argv[1:]))
        return
    if argv[:1] == ["speed"]:
        print(speed(argv[1:]))
        return
    if argv[:1] == ["irrep-order"] and len(argv) > 1:
        print(irrep_order(argv[1:]))
        return
    if len(argv) < 2 or argv[0] not in ("heads", "irreps", "compare", "superposition", "sparsity", "circuit", "curve", "phases"):
        sys.exit(__doc__)
    what, rest = argv[0], argv[1:]
    if what == "compare":
        if "--by" not in rest:
            sys.exit("compare: give --by KEY (and any other option of grokking compare)")
        print(compare(rest[0], rest[1:]))
    elif what == "superposition":
        print(superposition(rest[0]))
    elif what == "circuit":
        print(circuit(rest[0]))
    elif what == "curve":
        print(curve(rest[0]))
    elif what == "sparsity":
        print(sparsity(rest[0]))
    else:
        print({"heads": heads, "irreps": irreps, "phases": phases}[what](rest))


if __name__ == "__main__":
    main(sys.argv[1:])
