"""Element types and operands for the nchw + linear lowerings: dtype checks and weights known
under stable names (cache keys). float16 computed in float32 is in float16.py."""

from __future__ import annotations

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
