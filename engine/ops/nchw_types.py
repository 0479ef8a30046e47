"""Element types and operands for the nchw + linear lowerings: dtype checks, weights known
under stable names (cache keys), plan constants, and float16 computed in float32."""

from __future__ import annotations

import numpy as np

from ..errors import DTypeError


def check_dtype(node, dtype, allowed) -> None:
    if dtype not in allowed:
        raise DTypeError(f"node '{node.name}' ({node.op}): element type {dtype} is not supported "
                         f"(supported: {', '.join(allowed)})")


def same_dtypes(node, ins) -> str:
    """The common element type of the present inputs; DTypeError naming the node if they differ."""
    types = {t.dtype for t in ins if t is not None}
    if len(types) != 1:
        raise DTypeError(f"node '{node.name}' ({node.op}): inputs must share one element type, got "
                         f"{', '.join(t.dtype if t is not None else '-' for t in ins)}")
    return types.pop()


def stable_weight(ctx, name) -> bool:
    """A weight known when planning, under a name that is the same in every plan (so it can
    key the model-wide cache of packed weights; plan constants are not)."""
    return bool(name) and ctx.value(name) is not None and not name.startswith("\0")


def plan_constant(ctx, value) -> str:
    """ctx.constant(value), bound to its slot at once: ctx.constant names a constant after the
    slot count, so two made before either is used would otherwise share one name."""
    name = ctx.constant(value)
    ctx.slot(name)
    return name


def convert(ctx, src: str, dst: str) -> None:
    """dst = src converted float16 <-> float32 (same shape)."""
    n = int(np.prod(ctx.shape(src), dtype=np.int64))
    ctx.kernel("nchw_convert", [src], [dst], dtype="any", ints=[n])


def via_float32(ctx, ins, outs, lower) -> None:
    """Run lower(ins32, outs32) with every float16 input and output replaced by a float32
    copy (known inputs converted when planning, the rest by a kernel; outputs converted back)."""
    ins32 = []
    for name in ins:
        if name and ctx.dtype(name) == "float16":
            value = ctx.value(name)
            if value is not None:
                ins32.append(plan_constant(ctx, value.astype(np.float32)))
            else:
                tmp = ctx.scratch(ctx.shape(name), "float32")
                convert(ctx, name, tmp)
                ins32.append(tmp)
        else:
            ins32.append(name)
    outs32 = [ctx.scratch(ctx.shape(o), "float32") if o and ctx.dtype(o) == "float16" else o for o in outs]
    lower(ins32, outs32)
    for o, o32 in zip(outs, outs32):
        if o32 != o:
            convert(ctx, o32, o)
