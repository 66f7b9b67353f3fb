#!/usr/bin/env python3
"""Turns one of Chughtai et al.'s trained group models into a grokking run directory, so that
`grokking irreps` (and every other group analysis) reads the paper's own checkpoint.

Their repository (bilal-chughtai/rep-theory-mech-interp) keeps each published run under
rep_theory/batch_experiments/<GROUP>_<MLP|T>_seed<K>/ with model.pt (a state dict), cfg.json and
summary_metrics.json (what their metrics code printed at the end). This script reads model.pt and
cfg.json, builds the matching grokking config (their OneLayerMLP is `model.kind "mlp"` with
learned embeddings, no biases; their Transformer is Nanda et al.'s, TransformerLens names), trains
it for 1 epoch to get the run directory, and writes their weights as the run's last checkpoint
(epoch = their num_epochs) with the group elements renumbered from sympy's order (theirs) to ours.
It checks the renumbering by the multiplication tables and prints the model's accuracy over all
pairs: a wrong order would give chance.

Their train/test split is not ours (their torch.randperm under their seed): measures over all
pairs are theirs exactly; a measure over the training pairs uses our split of the same size.

Usage: import-chughtai.py THEIR_RUN_DIR OUT_RUN_DIR [--grokking build/grokking] [--row [--header]]
Needs python3 with torch and sympy (Debian: python3-torch, python3-sympy).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import torch
from sympy.combinatorics import Permutation, PermutationGroup
from sympy.combinatorics.named_groups import SymmetricGroup

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from checkpoint_checksum import checksum  # noqa: E402


def their_elements(group, n):
    """Their group elements as image lists, in their index order (utils/groups.py)."""
    if group == "SymmetricGroup":
        els = SymmetricGroup(n)._elements
    elif group == "AlternatingGroup" and n == 5:
        els = PermutationGroup(Permutation(0, 1, 2, 3, 4), Permutation(1, 2)(3, 4))._elements
    else:
        sys.exit(f"error: {group}({n}): only their symmetric groups and A5 are imported")
    return [list(p.array_form) + list(range(len(p.array_form), n)) for p in els]


def their_product(p, q):
    # sympy's p*q applies p first, then q: (p*q)(i) = q(p(i)).
    return tuple(q[p[i]] for i in range(len(p)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("their_dir")
    ap.add_argument("out_dir")
    ap.add_argument("--grokking", default="build/grokking")
    ap.add_argument("--row", action="store_true", help="print the comparison as one table row (theirs / ours)")
    ap.add_argument("--header", action="store_true", help="with --row: the table's header first")
    a = ap.parse_args()
    cfg = json.load(open(os.path.join(a.their_dir, "cfg.json")))
    sd = torch.load(os.path.join(a.their_dir, "model.pt"), map_location="cpu")
    n = int(cfg["group_parameter"])
    spec = {"SymmetricGroup": "S", "AlternatingGroup": "A"}.get(cfg["group"], "?") + str(n)
    task = {"kind": "group", "group": spec, "operation": "compose", "frac_train": cfg["frac_train"]}
    optim = {"lr": cfg["lr"], "weight_decay": cfg["weight_decay"], "beta1": cfg["betas"][0], "beta2": cfg["betas"][1]}
    if cfg["model"] == "OneLayerMLP":
        model = {"kind": "mlp", "encoding": "embed", "d_embed": sd["W_x"].shape[1], "hidden": [sd["W"].shape[1]],
                 "activation": "relu", "biases": False, "init": "normal"}
    elif cfg["model"] == "Transformer":
        h, d, dh = sd["blocks.0.attn.W_Q"].shape
        model = {"kind": "transformer", "d_model": d, "n_heads": h, "d_head": dh,
                 "d_mlp": sd["blocks.0.mlp.W_in"].shape[1], "activation": "relu", "train_biases": True, "init": "tl"}
    else:
        sys.exit(f"error: {a.their_dir}/cfg.json: model \"{cfg['model']}\" is not imported (OneLayerMLP, Transformer)")
    config = {"task": task, "model": model, "optim": optim,
              "train": {"epochs": 1, "seed": cfg["seed"], "threads": 1, "device": "cpu"}}
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(config, f, indent=1)
    try:  # one epoch, for the run directory and a checkpoint of the right layout
        subprocess.run([a.grokking, "train", f.name, "--out", a.out_dir, "--force", "-q"], check=True)
    finally:
        os.remove(f.name)

    # Their index -> ours, by the permutations: ours composes b first ((a.b)(i) = a(b(i))), theirs
    # applies a first, so the same permutation is an anti-isomorphism; its inverse is the isomorphism.
    group = json.load(open(os.path.join(a.out_dir, "group.json")))
    ours = {tuple(p): i for i, p in enumerate(group["images"])}
    theirs = their_elements(cfg["group"], n)
    order = len(theirs)
    if order != group["order"]:
        sys.exit(f"error: {spec}: their group has {order} elements, ours {group['order']}")

    def inverse(p):
        q = [0] * len(p)
        for i, x in enumerate(p):
            q[x] = i
        return tuple(q)

    phi = [ours[inverse(p)] for p in theirs]
    ours_table = [[ours[tuple(p[q[i]] for i in range(n))] for q in group["images"]] for p in group["images"]]
    index_of = {tuple(p): i for i, p in enumerate(theirs)}
    for x in range(order):
        for y in range(order):
            z = index_of[their_product(theirs[x], theirs[y])]
            if ours_table[phi[x]][phi[y]] != phi[z]:
                sys.exit("error: the renumbering is not an isomorphism (a bug in this script)")
    perm = torch.tensor(sorted(range(order), key=lambda i: phi[i]))  # ours[j] = theirs[perm[j]]

    def rows(t):
        extra = t[order:] if t.shape[0] > order else t[:0]
        return torch.cat([t[:order].index_select(0, perm), extra])

    if cfg["model"] == "OneLayerMLP":
        weights = {"embed.W_x": rows(sd["W_x"]), "embed.W_y": rows(sd["W_y"]), "hidden.0.W": sd["W"],
                   "unembed.W_U": sd["W_U"].index_select(1, perm)}
    else:
        weights = {}
        for k, v in sd.items():
            if k.endswith(("mask", "IGNORE")) or k in ("x_embed", "y_embed"):
                continue
            if k == "embed.W_E":
                v = rows(v)
            elif k == "unembed.W_U":
                v = v.index_select(1, perm)
            elif k == "unembed.b_U":
                v = v.index_select(0, perm)
            weights[k] = v

    ckdir = os.path.join(a.out_dir, "checkpoints")
    first = sorted(f for f in os.listdir(ckdir) if f.startswith("epoch_"))[0]
    d = torch.load(os.path.join(ckdir, first))
    for k in list(d["model"].keys()):
        if k not in weights:
            sys.exit(f"error: their model has no {k}")
        if tuple(weights[k].shape) != tuple(d["model"][k].shape):
            sys.exit(f"error: {k}: theirs {tuple(weights[k].shape)}, ours {tuple(d['model'][k].shape)}")
        d["model"][k] = weights[k].float().contiguous()
    epoch = int(cfg["num_epochs"])
    d["epoch"] = epoch
    d.pop("optimizer", None)
    d.pop("optimizer_step", None)
    d["checksum"] = checksum(d)
    for f in os.listdir(ckdir):
        os.remove(os.path.join(ckdir, f))
    torch.save(d, os.path.join(ckdir, "epoch_%07d.pt" % epoch))
    json.dump({"source": os.path.abspath(a.their_dir), "their_cfg": cfg, "renumbering": phi},
              open(os.path.join(a.out_dir, "imported.json"), "w"))

    # The check a wrong renumbering cannot pass: their grokked model scores on every pair.
    if cfg["model"] == "OneLayerMLP":
        tab = torch.tensor(ours_table)
        a_idx = torch.arange(order).repeat_interleave(order)
        b_idx = torch.arange(order).repeat(order)
        w = d["model"]
        hid = torch.relu(torch.cat([w["embed.W_x"][a_idx], w["embed.W_y"][b_idx]], 1) @ w["hidden.0.W"])
        acc = ((hid @ w["unembed.W_U"]).argmax(1) == tab[a_idx, b_idx]).double().mean().item()
        print(f"{a.out_dir}: their {cfg['model']} on {spec}, epoch {epoch}; accuracy over all pairs {acc:.4f}",
              file=sys.stderr if a.row else sys.stdout)
    else:
        print(f"{a.out_dir}: their {cfg['model']} on {spec}, epoch {epoch}", file=sys.stderr if a.row else sys.stdout)

    compare(a, cfg, spec)


# Their summary_metrics.json keys (the columns of rep_theory/paper/tables.py) and ours in
# `grokking irreps --json`'s theirs.table.
COLUMNS = [("W_a FVE", "percent_x_embed_explained", "embed_x_fve", "%"),
           ("W_b FVE", "percent_y_embed_explained", "embed_y_fve", "%"),
           ("W_U FVE", "percent_unembed_explained", "unembed_fve", "%"),
           ("MLP FVE", "percent_hidden_explained", "mlp_fve", "%"),
           ("MLP rho(ab) FVE", "percent_hidden_xy_explained", "mlp_xy_fve", "%"),
           ("Logit FVE", "percent_logits_explained", None, "%"),
           ("Exc. loss (train pairs)", "total_hidden_excluded_loss", "hidden_excluded_loss_train", "e"),
           ("Res. loss", "total_hidden_restricted_loss", "hidden_restricted_loss_all", "e"),
           ("loss, all pairs", "all_loss", None, "e")]


def compare(a, cfg, spec):
    """Their printed figures beside `grokking irreps` on the same weights."""
    path = os.path.join(a.their_dir, "summary_metrics.json")
    if not os.path.exists(path):
        return
    theirs = json.load(open(path))
    out = subprocess.run([a.grokking, "irreps", a.out_dir, "--json"], check=True, capture_output=True, text=True)
    ours = json.loads(out.stdout)
    table = ours["theirs"]["table"]
    key_path = os.path.join(a.their_dir, "key_reps.txt")
    their_keys = open(key_path).read().split() if os.path.exists(key_path) else []
    cells = []
    for name, their_key, our_key, kind in COLUMNS:
        if their_key not in theirs:
            continue
        if our_key is None:
            mine = ours["fve_total"] if their_key == "percent_logits_explained" else ours["model"]["all"]["loss"]
        elif our_key in table:
            mine = table[our_key]
        else:
            continue
        fmt = (lambda v: "%.1f %%" % (100 * v)) if kind == "%" else (lambda v: "%.2e" % v)
        cells.append((name, fmt(theirs[their_key]), fmt(mine)))
    if a.row:  # one table row, "theirs / ours" in each cell; --header prints the header first
        if a.header:
            print("| run | key irreps (theirs / ours) | " + " | ".join(c[0] for c in cells) + " |")
            print("|---" * (len(cells) + 2) + "|")
        print(f"| {cfg['model']} {spec} seed {cfg['seed']} | {', '.join(their_keys)} / {', '.join(ours['key_irreps'])} | "
              + " | ".join(f"{c[1]} / {c[2]}" for c in cells) + " |")
        return
    print(f"| {cfg['model']} {spec} seed {cfg['seed']} | theirs (summary_metrics.json) | grokking irreps |")
    print("|---|---|---|")
    print(f"| key irreps | {', '.join(their_keys)} | {', '.join(ours['key_irreps'])} |")
    for name, t_value, o_value in cells:
        print(f"| {name} | {t_value} | {o_value} |")


if __name__ == "__main__":
    main()
