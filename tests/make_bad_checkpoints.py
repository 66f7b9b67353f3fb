"""Writes broken variants of a valid grokking checkpoint for the bad-input corpus.

Usage: make_bad_checkpoints.py GOOD.pt OTHER_P.pt OUTDIR
"""
import os
import sys
import zipfile

import torch

good, other, out = sys.argv[1], sys.argv[2], sys.argv[3]
raw = open(good, "rb").read()
open(os.path.join(out, "empty.pt"), "wb").close()
open(os.path.join(out, "truncated.pt"), "wb").write(raw[: len(raw) // 2])
open(os.path.join(out, "garbage.pt"), "wb").write(os.urandom(4096))

# A bit flipped inside the largest tensor record (the data, not the zip structure).
with zipfile.ZipFile(good) as z:
    info = max((i for i in z.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    data_start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
flipped = bytearray(raw)
flipped[data_start + info.file_size // 2] ^= 0x04
open(os.path.join(out, "bitflip.pt"), "wb").write(bytes(flipped))

# Foreign files: some other zip, and some other PyTorch pickle.
with zipfile.ZipFile(os.path.join(out, "foreign_zip.pt"), "w") as z:
    z.writestr("hello.txt", "not a checkpoint")
torch.save({"state_dict": {"weight": torch.zeros(3)}}, os.path.join(out, "foreign_pickle.pt"))
torch.save([1, 2, 3], os.path.join(out, "foreign_list.pt"))

# A checkpoint of another run (another P) is valid on its own; mixed into a run it must be refused.
os.link(other, os.path.join(out, "other_p.pt")) if not os.path.exists(os.path.join(out, "other_p.pt")) else None

# Shapes that disagree with the embedded config, under a valid checksum (the loader's FNV-1a,
# recomputed here): the refusal must name both shapes.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "scripts"))
from checkpoint_checksum import checksum  # noqa: E402

d = torch.load(good, weights_only=False) if "weights_only" in torch.load.__code__.co_varnames else torch.load(good)
d["model"]["blocks.0.mlp.W_in"] = d["model"]["blocks.0.mlp.W_in"][:, :-1].clone()
d["checksum"] = checksum(d)
torch.save(d, os.path.join(out, "shape.pt"))
