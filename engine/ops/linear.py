"""Dense (x·W + b with a fused activation, W pre-packed once) and MatMul (two activations)."""

from __future__ import annotations

import math

from ..errors import DTypeError, ShapeError
from .activations import check_activation, resolve
from .elementwise import broadcast_shape
from .registry import TensorType, register


def dense_type(node, ins):
    for k, what in ((0, "input"), (1, "kernel"), (2, "bias")):
        if k < len(ins) and ins[k] is not None and ins[k].dtype != "float32":
            raise DTypeError(f"node '{node.name}' (Dense): {what} must be float32, got {ins[k].dtype}")
    x, w = ins[0].shape, ins[1].shape
    if len(w) != 2:
        raise ShapeError(f"node '{node.name}' (Dense): kernel must be 2-D (in, out), got {w}")
    if len(x) < 1 or x[-1] != w[0]:
        raise ShapeError(f"node '{node.name}' (Dense): input's last dim must be {w[0]}, "
                         f"got input shape {x}")
    if len(ins) > 2 and ins[2] is not None and ins[2].shape != (w[1],):
        raise ShapeError(f"node '{node.name}' (Dense): bias must have shape ({w[1]},), got {ins[2].shape}")
    return [TensorType(tuple(x[:-1]) + (w[1],), ins[0].dtype)]


def dense_lower(ctx, node):
    x, w_name = node.inputs[0], node.inputs[1]
    b_name = node.inputs[2] if len(node.inputs) > 2 else ""
    packed = ctx.cached(("dense", w_name), lambda: ctx.pack_gemm_b(ctx.const(w_name)))
    act, a, b = resolve(node.attrs, node.name)
    rows = math.prod(ctx.shape(x)[:-1])
    ctx.kernel("gemm_packed", [x, b_name], node.outputs, ints=[rows, act], floats=[a, b], state=packed)


# Dense(x, kernel (in, out), [bias (out,)]); attrs: activation. Applies to the last axis.
register("Dense", dense_type, dense_lower, check=check_activation)


def matmul_type(node, ins):
    a, b = ins[0].shape, ins[1].shape
    if len(a) < 2 or len(b) < 2:
        raise ShapeError(f"node '{node.name}' (MatMul): both inputs need rank >= 2, got {a} and {b}")
    if a[-1] != b[-2]:
        raise ShapeError(f"node '{node.name}' (MatMul): inner dims differ: {a} @ {b}")
    batch = broadcast_shape(a[:-2], b[:-2], node)
    return [TensorType(batch + (a[-2], b[-1]), ins[0].dtype)]


def matmul_lower(ctx, node):
    a, b = node.inputs
    sa, sb = ctx.shape(a), ctx.shape(b)
    out = ctx.shape(node.outputs[0])
    M, K, N = sa[-2], sa[-1], sb[-1]
    batch = math.prod(out[:-2])
    a_batch, b_batch = math.prod(sa[:-2]), math.prod(sb[:-2])
    if a_batch not in (1, batch) or b_batch not in (1, batch):
        raise ShapeError(f"node '{node.name}' (MatMul): partial batch broadcasting {sa} @ {sb} "
                         "is not supported")
    ctx.kernel("matmul", [a, b], node.outputs,
               ints=[batch, M, N, K, 0, 0, M * K if a_batch > 1 else 0, K * N if b_batch > 1 else 0])


# MatMul(a, b): numpy matmul semantics for rank >= 2 (batch dims equal or one side unbatched).
register("MatMul", matmul_type, matmul_lower)
