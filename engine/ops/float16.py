"""Ops that compute float16 in float32 share these: a tensor converted to another element type
(once at plan time when its value is known, by the `math_cast` kernel otherwise), and a
lowering run on float32 copies of its float16 inputs and outputs."""

from __future__ import annotations

import math

from .. import dtypes


def plan_constant(ctx, value) -> str:
    """ctx.constant(value), bound to its slot at once: ctx.constant names a constant after the
    slot count, so two made before either is used would otherwise share one name."""
    name = ctx.constant(value)
    ctx.slot(name)
    return name


def cast(ctx, src: str, dst: str) -> None:
    """dst = src converted to dst's element type (same shape), each call."""
    ctx.kernel("math_cast", [src], [dst], dtype="any", ints=[math.prod(ctx.shape(src))])


def cast_to(ctx, name: str, dtype: str) -> str:
    """`name` in `dtype`: itself, a converted plan constant when its value is known, else a
    scratch buffer the math_cast kernel fills each call."""
    if not name or ctx.dtype(name) == dtype:
        return name
    known = ctx.value(name)
    if known is not None:
        return plan_constant(ctx, known.astype(dtypes.to_numpy(dtype)))
    tmp = ctx.scratch(ctx.shape(name), dtype)
    cast(ctx, name, tmp)
    return tmp


def via_float32(ctx, ins, outs, lower) -> None:
    """Run lower(ins32, outs32) with every float16 input and output replaced by a float32
    copy; outputs are rounded back to float16 once, at the end."""
    ins32 = [cast_to(ctx, n, "float32") if n and ctx.dtype(n) == "float16" else n for n in ins]
    outs32 = [ctx.scratch(ctx.shape(o), "float32") if o and ctx.dtype(o) == "float16" else o for o in outs]
    lower(ins32, outs32)
    for o, o32 in zip(outs, outs32):
        if o32 != o:
            cast(ctx, o32, o)
