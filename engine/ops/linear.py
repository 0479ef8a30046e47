"""Dense (x·W + b with a fused activation, W pre-packed once) and MatMul (two activations)."""

from __future__ import annotations

import math

import numpy as np

from .. import _C
from ..errors import ShapeError
from .activations import check_activation, resolve
from .elementwise import broadcast_shape
from .registry import register


def dense_shape(node, shapes):
    x, w = shapes[0], shapes[1]
    if len(w) != 2:
        raise ShapeError(f"node '{node.name}' (Dense): kernel must be 2-D (in, out), got {w}")
    if len(x) < 1 or x[-1] != w[0]:
        raise ShapeError(f"node '{node.name}' (Dense): input's last dim must be {w[0]}, "
                         f"got input shape {x}")
    if len(shapes) > 2 and shapes[2] not in ((w[1],), None):
        raise ShapeError(f"node '{node.name}' (Dense): bias must have shape ({w[1]},), got {shapes[2]}")
    return [tuple(x[:-1]) + (w[1],)]


def dense_forward(ctx, node):
    x, w_name = node.inputs[0], node.inputs[1]
    b_name = node.inputs[2] if len(node.inputs) > 2 else ""
    w = ctx.const(w_name)
    packed = ctx.cached(("dense", w_name), lambda: _C.PackedMatrixB(w, False))
    bias = ctx.const(b_name) if b_name else np.zeros(0, np.float32)
    act, a, b = resolve(node.attrs, node.name)
    rows = math.prod(ctx.shape(x)[:-1])
    ctx.program.gemm_packed(ctx.slot(node.outputs[0]), ctx.slot(x), packed, rows,
                            bias.tolist(), act, a, b)


# Dense(x, kernel (in, out), [bias (out,)]); attrs: activation. Applies to the last axis.
register("Dense", dense_shape, dense_forward, check=check_activation)


def matmul_shape(node, shapes):
    a, b = shapes
    if len(a) < 2 or len(b) < 2:
        raise ShapeError(f"node '{node.name}' (MatMul): both inputs need rank >= 2, got {a} and {b}")
    if a[-1] != b[-2]:
        raise ShapeError(f"node '{node.name}' (MatMul): inner dims differ: {a} @ {b}")
    batch = broadcast_shape(a[:-2], b[:-2], node)
    return [batch + (a[-2], b[-1])]


def matmul_forward(ctx, node):
    a, b = node.inputs
    sa, sb = ctx.shape(a), ctx.shape(b)
    out = ctx.shape(node.outputs[0])
    M, K, N = sa[-2], sa[-1], sb[-1]
    batch = math.prod(out[:-2])
    a_batch, b_batch = math.prod(sa[:-2]), math.prod(sb[:-2])
    if a_batch not in (1, batch) or b_batch not in (1, batch):
        raise ShapeError(f"node '{node.name}' (MatMul): partial batch broadcasting {sa} @ {sb} "
                         "is not supported")
    ctx.program.matmul(ctx.slot(node.outputs[0]), ctx.slot(a), ctx.slot(b), batch, M, N, K,
                       False, False, M * K if a_batch > 1 else 0, K * N if b_batch > 1 else 0)


# MatMul(a, b): numpy matmul semantics for rank >= 2 (batch dims equal or one side unbatched).
register("MatMul", matmul_shape, matmul_forward)
