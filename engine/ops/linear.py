"""Dense (x·W + b with a fused activation, W pre-packed once), ONNX MatMul (numpy matmul:
1-D operands, broadcast batch) and Gemm (alpha·op(A)·op(B) + beta·C, C broadcast to M×N).

float32 runs on sgemm; a constant right operand (what exporters emit for Linear layers) is
packed once (PackedMatrixB, cached by weight name) and a 1-D C becomes the GEMM epilogue's
bias. float64 and the integer types run the typed GEMM; float16 is computed in float32."""

from __future__ import annotations

import math

import numpy as np

from ..errors import DTypeError, ShapeError
from . import views
from .activations import check_activation, number, resolve
from .elementwise import broadcast_shape
from .float16 import plan_constant, via_float32
from .nchw_types import check_dtype, same_dtypes, stable_weight
from .nchw_window import int_attr
from .registry import TensorType, register

TYPES = ("float32", "float64", "float16", "int32", "int64", "uint32", "uint64")


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
    act, a, b = resolve(node.attrs, node.name)
    rows = math.prod(ctx.shape(x)[:-1])
    if not stable_weight(ctx, w_name):  # a trained kernel (a training graph's input)
        K, N = ctx.shape(w_name)
        ctx.kernel("linear_gemm", [x, w_name, b_name], node.outputs, ints=[rows, N, K, 0, 0, 0], floats=[1.0, 0.0])
        if act:
            y = node.outputs[0]
            ctx.kernel("activation", [y], [y], ints=[rows * N, act], floats=[a, b])
        return
    packed = ctx.cached(("dense", w_name), lambda: ctx.pack_gemm_b(ctx.const(w_name)))
    ctx.kernel("gemm_packed", [x, b_name], node.outputs, ints=[rows, act], floats=[a, b], state=packed)


# Dense(x, kernel (in, out), [bias (out,)]); attrs: activation. Applies to the last axis.
register("Dense", dense_type, dense_lower, check=check_activation)


def _packed_b(ctx, b, transposed, shape):
    """op(B) packed once for gemm (B constant, float32; 1-D B is a K×1 column)."""
    return ctx.cached(("linear_b", b, bool(transposed)),
                      lambda: ctx.pack_gemm_b(np.asarray(ctx.value(b), np.float32).reshape(shape), transposed))


# -- MatMul ------------------------------------------------------------------------------------

def _as_matrices(a, b):
    """numpy matmul's promotion: a 1-D left operand is a row, a 1-D right operand a column."""
    return ((1,) + tuple(a) if len(a) == 1 else tuple(a)), (tuple(b) + (1,) if len(b) == 1 else tuple(b))


def matmul_type(node, ins):
    a, b = ins[0].shape, ins[1].shape
    dtype = same_dtypes(node, ins)
    check_dtype(node, dtype, TYPES)
    if len(a) < 1 or len(b) < 1:
        raise ShapeError(f"node '{node.name}' (MatMul): operands must have rank >= 1, got {a} and {b}")
    a2, b2 = _as_matrices(a, b)
    if a2[-1] != b2[-2]:
        raise ShapeError(f"node '{node.name}' (MatMul): inner dims differ: {a} @ {b}")
    batch = broadcast_shape(a2[:-2], b2[:-2], node)
    out = batch + ((a2[-2],) if len(a) > 1 else ()) + ((b2[-1],) if len(b) > 1 else ())
    return [TensorType(out, dtype)]


def matmul_lower(ctx, node):
    a, b = node.inputs[:2]
    if ctx.dtype(a) == "float16":
        return via_float32(ctx, [a, b], node.outputs, lambda i, o: _matmul(ctx, node, *i, o[0]))
    _matmul(ctx, node, a, b, node.outputs[0])


def _matmul(ctx, node, a, b, y):
    a2, b2 = _as_matrices(ctx.shape(a), ctx.shape(b))
    M, K, N = a2[-2], a2[-1], b2[-1]
    if math.prod(ctx.shape(y)) == 0:
        return
    nb = max(len(a2), len(b2)) - 2
    ab, bb = (1,) * (nb - len(a2) + 2) + a2[:-2], (1,) * (nb - len(b2) + 2) + b2[:-2]
    if math.prod(bb) == 1:  # one right matrix: a's batch folds into its rows, one GEMM
        rows = math.prod(ab) * M
        if ctx.dtype(a) == "float32" and stable_weight(ctx, b):
            ctx.kernel("linear_gemm", [a, "", ""], [y], ints=[rows, N, K, 0, 0, 0], floats=[1.0, 0.0],
                       state=_packed_b(ctx, b, False, (K, N)))
        else:
            ctx.kernel("linear_matmul", [a, b], [y], ints=[rows, N, K, 0])
        return
    batch = broadcast_shape(ab, bb, node)

    def strides(shape, matrix):
        out, step = [0] * nb, matrix
        for d in range(nb - 1, -1, -1):
            out[d] = 0 if shape[d] == 1 else step
            step *= shape[d]
        return out

    ctx.kernel("linear_matmul", [a, b], [y],
               ints=[M, N, K, nb, *batch, *strides(ab, M * K), *strides(bb, K * N)])


# MatMul(A, B): numpy matmul (1-D operands promoted and dropped, batch dims broadcast).
register("MatMul", matmul_type, matmul_lower)


# -- Gemm --------------------------------------------------------------------------------------

def _gemm_attrs(node):
    return (int_attr(node, "transA", 0, (0, 1)), int_attr(node, "transB", 0, (0, 1)),
            number(node.attrs, "alpha", 1.0, node.name), number(node.attrs, "beta", 1.0, node.name))


def gemm_check(node):
    _gemm_attrs(node)


def _gemm_dims(node, a, b):
    ta, tb, _, _ = _gemm_attrs(node)
    if len(a) != 2 or len(b) != 2:
        raise ShapeError(f"node '{node.name}' (Gemm): A and B must be 2-D, got {a} and {b}")
    M, K = (a[1], a[0]) if ta else a
    K2, N = (b[1], b[0]) if tb else b
    if K != K2:
        raise ShapeError(f"node '{node.name}' (Gemm): inner dims differ: op(A) is {M}x{K}, op(B) is {K2}x{N}")
    return M, N, K


def gemm_type(node, ins):
    dtype = same_dtypes(node, ins)
    check_dtype(node, dtype, TYPES)
    M, N, _ = _gemm_dims(node, ins[0].shape, ins[1].shape)
    if len(ins) > 2 and ins[2] is not None:
        c = ins[2].shape
        padded = (1,) * (2 - len(c)) + tuple(c)
        if len(c) > 2 or any(d not in (1, want) for d, want in zip(padded, (M, N))):
            raise ShapeError(f"node '{node.name}' (Gemm): C of shape {c} does not broadcast to ({M}, {N})")
    return [TensorType((M, N), dtype)]


def gemm_lower(ctx, node):
    a, b, c = (list(node.inputs) + ["", ""])[:3]
    if ctx.dtype(a) == "float16":
        return via_float32(ctx, [a, b, c], node.outputs, lambda i, o: _gemm(ctx, node, *i, o[0]))
    _gemm(ctx, node, a, b, c, node.outputs[0])


def _gemm(ctx, node, a, b, c, y):
    ta, tb, alpha, beta = _gemm_attrs(node)
    M, N, K = _gemm_dims(node, ctx.shape(a), ctx.shape(b))
    if M * N == 0:
        return
    f32 = ctx.dtype(a) == "float32"
    bias, acc = "", 0
    if c and beta != 0.0:
        cs = tuple(ctx.shape(c))
        row = cs in ((N,), (1, N))
        if f32 and row and beta == 1.0:
            bias = c  # the epilogue adds it while the tile is in cache
        elif f32 and row and stable_weight(ctx, c):
            bias = plan_constant(ctx, (beta * np.asarray(ctx.value(c), np.float32)).reshape(N))
        else:  # Y = C broadcast first, then Y = alpha·AB + beta·Y
            cm, cn = (1,) * (2 - len(cs)) + cs
            views.copy_view(ctx, c, y, (M, N), (0 if cm == 1 else cn, 0 if cn == 1 else 1))
            acc = 1
    if f32 and stable_weight(ctx, b):
        ctx.kernel("linear_gemm", [a, "", bias], [y], ints=[M, N, K, ta, tb, acc], floats=[alpha, beta],
                   state=_packed_b(ctx, b, tb, ctx.shape(b)))
    else:
        ctx.kernel("linear_gemm", [a, b, bias], [y], ints=[M, N, K, ta, tb, acc], floats=[alpha, beta])


# Gemm(A, B, [C]); attrs alpha, beta, transA, transB.
register("Gemm", gemm_type, gemm_lower, check=gemm_check)
