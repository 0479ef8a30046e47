"""Shared by the seq family's lowerings (rnn.py, attention.py): float16/float64 values meet
float32 kernels through the `seq_float_convert` kernel (constants are converted once, when
planning), and small attribute readers."""

from __future__ import annotations

import math

import numpy as np

from ..errors import GraphError

FLOAT_TYPES = ("float32", "float16", "float64")


def as_float32(ctx, name: str) -> str:
    """`name` as a float32 value ("" stays ""): itself, a converted constant, or a scratch
    buffer filled by a conversion step."""
    if not name or ctx.dtype(name) == "float32":
        return name
    known = ctx.value(name)
    if known is not None:
        return ctx.constant(np.asarray(known, np.float32))
    out = ctx.scratch(ctx.shape(name), "float32")
    convert(ctx, name, out)
    return out


def float32_output(ctx, name: str, pending: list) -> str:
    """A float32 buffer a kernel writes in place of output `name`; (buffer, name) is added to
    `pending` for finish_outputs() when `name` is not float32 itself."""
    if not name or ctx.dtype(name) == "float32":
        return name
    buf = ctx.scratch(ctx.shape(name), "float32")
    pending.append((buf, name))
    return buf


def finish_outputs(ctx, pending: list) -> None:
    for buf, name in pending:
        convert(ctx, buf, name)


def convert(ctx, src: str, dst: str) -> None:
    ctx.kernel("seq_float_convert", [src], [dst], ints=[math.prod(ctx.shape(src))], dtype="any")


def int_attr(node, key: str, default, allowed=None) -> int:
    v = node.attrs.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int) or (allowed is not None and v not in allowed):
        want = f"one of {sorted(allowed)}" if allowed is not None else "an int"
        raise GraphError(f"node '{node.name}' ({node.op}): attribute '{key}' must be {want}, got {v!r}")
    return v


def float_attr(node, key: str, default):
    v = node.attrs.get(key, default)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise GraphError(f"node '{node.name}' ({node.op}): attribute '{key}' must be a number, got {v!r}")
    return float(v)
