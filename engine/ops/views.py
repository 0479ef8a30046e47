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


def copy_view(ctx, src: str, dst: str, shape, src_strides, dst_strides=None, src_offset: int = 0,
              dst_offset: int = 0) -> None:
    """dst[dst_offset + i·dst_strides] = src[src_offset + i·src_strides] for i in `shape`."""
    shape = [int(d) for d in shape]
    dst_strides = strides_of(shape) if dst_strides is None else list(dst_strides)
    elem = dtypes.itemsize(ctx.dtype(src))
    ctx.kernel("strided_copy", [src], [dst], dtype="any",
               ints=[elem, dst_offset, src_offset, len(shape), *shape, *dst_strides, *src_strides])


def transpose(ctx, src: str, dst: str, perm) -> None:
    """dst = src.transpose(perm) (dst contiguous)."""
    shape = ctx.shape(src)
    st = strides_of(shape)
    copy_view(ctx, src, dst, [shape[p] for p in perm], [st[p] for p in perm])


def fill(ctx, dst: str, value, count: int | None = None) -> None:
    """Fill dst (count elements, default all) with a scalar of dst's type."""
    dt = ctx.dtype(dst)
    n = math.prod(ctx.shape(dst)) if count is None else count
    scalar = ctx.constant(np.array([value], dtypes.to_numpy(dt)))
    ctx.kernel("fill", [scalar], [dst], dtype="any", ints=[dtypes.itemsize(dt), n])
