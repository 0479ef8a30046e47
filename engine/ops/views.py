"""Building blocks for lowerings that move data: strided copies between views, fills and
transposes, all on the `strided_copy` / `fill` kernels (any element type)."""

from __future__ import annotations

import math

import numpy as np

from .. import dtypes


def strides_of(shape) -> list[int]:
    """Element strides of a C-contiguous array of `shape`."""
    out, step = [0] * len(shape), 1
    for d in range(len(shape) - 1, -1, -1):
        out[d] = step
        step *= shape[d]
    return out


def simplify(shape, *strides) -> tuple:
    """The same copy with fewer dims: size-1 dims dropped and neighbours that are contiguous
    in every view merged (a Tile or a Transpose of a big rank stays within the kernel's 16)."""
    dims = [(d, [s[i] for s in strides]) for i, d in enumerate(shape) if d != 1]
    merged: list = []
    for d, st in dims:
        if merged:
            pd, pst = merged[-1]
            if all(p == q * d for p, q in zip(pst, st)):
                merged[-1] = (pd * d, st)
                continue
        merged.append((d, st))
    return [d for d, _ in merged], *[[st[k] for _, st in merged] for k in range(len(strides))]


def copy_view(ctx, src: str, dst: str, shape, src_strides, dst_strides=None, src_offset: int = 0,
              dst_offset: int = 0) -> None:
    """dst[dst_offset + i·dst_strides] = src[src_offset + i·src_strides] for i in `shape`
    (nothing for an empty shape)."""
    shape = [int(d) for d in shape]
    if 0 in shape:
        return
    dst_strides = strides_of(shape) if dst_strides is None else list(dst_strides)
    shape, dst_strides, src_strides = simplify(shape, dst_strides, list(src_strides))
    elem = dtypes.itemsize(ctx.dtype(src))
    ctx.kernel("strided_copy", [src], [dst], dtype="any",
               ints=[elem, dst_offset, src_offset, len(shape), *shape, *dst_strides, *src_strides])


def transpose(ctx, src: str, dst: str, perm) -> None:
    """dst = src.transpose(perm) (dst contiguous)."""
    permute(ctx, src, dst, ctx.shape(src), perm)


def permute(ctx, src: str, dst: str, view_shape, perm) -> None:
    """dst = src.reshape(view_shape).transpose(perm) (dst contiguous): DepthToSpace and
    friends."""
    st = strides_of(view_shape)
    copy_view(ctx, src, dst, [view_shape[p] for p in perm], [st[p] for p in perm])


def fill(ctx, dst: str, value, count: int | None = None) -> None:
    """Fill dst (count elements, default all) with a scalar of dst's type."""
    dt = ctx.dtype(dst)
    n = math.prod(ctx.shape(dst)) if count is None else count
    scalar = ctx.constant(np.array([value], dtypes.to_numpy(dt)))
    ctx.kernel("fill", [scalar], [dst], dtype="any", ints=[dtypes.itemsize(dt), n])
