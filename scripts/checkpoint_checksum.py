"""The checksum a grokking checkpoint carries (the loader's FNV-1a over the epoch, the config and
every tensor's shape and bytes, src/rundir/checkpoint.cpp), for scripts that write checkpoints
with Python's torch: `d["checksum"] = checksum(d)` after changing d's tensors or epoch."""


def fnv1a(parts):
    h = 1469598103934665603
    for data in parts:
        for byte in data:
            h = ((h ^ byte) * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    return "%016x" % h


def _s(text):
    return text.encode() + b"\0"


def _i64(x):
    return int(x).to_bytes(8, "little", signed=True)


def _tensor(t):
    t = t.contiguous()
    return b"".join(_i64(n) for n in t.shape) + _s("float") + t.numpy().tobytes()


def checksum(d):
    """The checksum of checkpoint dict d (its model tensors float32; optimizer state if present)."""
    parts = [_s("grokking-checkpoint"), _i64(d["format_version"]), _i64(d["epoch"]), _s(d["config"])]
    for name, t in d["model"].items():
        parts += [_s(name), _tensor(t)]
    if "optimizer" in d:
        parts.append(_i64(d["optimizer_step"]))
        for name, t in d["optimizer"].items():
            parts += [_s(name), _tensor(t)]
    return fnv1a(parts)
