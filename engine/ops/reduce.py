"""Reductions, ArgMax/ArgMin, CumSum, TopK (ONNX semantics), and the helpers the reduction
family shares (attribute readers, axis checks, float16 through float32).

Every kernel here sees its input as (outer, n, inner): the reduced or scanned run in the
middle, contiguous. Reduced axes in separate runs are reduced one run at a time (or, for
integer ops that would not survive wrapping intermediates, transposed next to each other
first); TopK moves its axis last. float16 runs on float32 copies (`Half`).
"""

from __future__ import annotations

import math

import numpy as np

from .. import dtypes
from ..errors import DTypeError, GraphError, ShapeError
from . import views
from .float16 import cast, cast_to
from .registry import Tensor, TensorType, known, register

# -- shared helpers ----------------------------------------------------------------------------


def where(node) -> str:
    return f"node '{node.name}' ({node.op})"


def int_attr(node, key: str, default=None, choices=None) -> int:
    v = node.attrs.get(key, default)
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
        raise GraphError(f"{where(node)}: attribute '{key}' must be an int, got {v!r}")
    if choices is not None and v not in choices:
        raise GraphError(f"{where(node)}: attribute '{key}' must be one of {list(choices)}, got {v!r}")
    return int(v)


def float_attr(node, key: str, default: float) -> float:
    v = node.attrs.get(key, default)
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise GraphError(f"{where(node)}: attribute '{key}' must be a number, got {v!r}")
    return float(v)


def flag_attr(node, key: str, default: int = 0) -> bool:
    return bool(int_attr(node, key, default, (0, 1)))


def axis_of(node, axis: int, rank: int) -> int:
    """`axis` in [-rank, rank) made non-negative; ShapeError naming the node otherwise."""
    if not -rank <= axis < rank:
        raise ShapeError(f"{where(node)}: axis {axis} out of range for rank {rank}")
    return axis % rank


def require_dtype(node, dtype: str, allowed, what: str = "input") -> None:
    if dtype not in allowed:
        raise DTypeError(f"{where(node)}: {what} of type {dtype} is not supported (supported: {', '.join(allowed)})")


def known_ints(node, ins, i: int, what: str) -> list[int]:
    """The values of input i, which must be known when planning (ValueNeeded otherwise)."""
    return [int(v) for v in np.asarray(known(ins, i, node, what)).reshape(-1)]


def seen(ctx, node) -> list:
    """The node's inputs as its type rule saw them (shape, dtype, known value)."""
    return [Tensor(ctx.shape(i), ctx.dtype(i), ctx.value(i)) if i else None for i in node.inputs]


def split3(shape, axis: int) -> tuple[int, int, int]:
    """(outer, n, inner) of `shape` around `axis`."""
    return math.prod(shape[:axis]), shape[axis], math.prod(shape[axis + 1:])


FLOATS = ("float32", "float64", "float16")
NUMERIC = FLOATS + dtypes.INTEGERS


class Half:
    """float16 runs on float32 copies: inputs are widened into scratch (a weight once, into a
    plan constant), outputs computed into float32 scratch and rounded into place by finish().
    Other types pass through."""

    def __init__(self, ctx):
        self.ctx, self.pending = ctx, []

    def input(self, name: str) -> str:
        if not name or self.ctx.dtype(name) != "float16":
            return name
        return cast_to(self.ctx, name, "float32")  # a weight: widened once, when planning

    def output(self, name: str) -> str:
        ctx = self.ctx
        if ctx.dtype(name) != "float16":
            return name
        wide = ctx.scratch(ctx.shape(name), "float32")
        self.pending.append((wide, name))
        return wide

    def finish(self) -> None:
        for wide, name in self.pending:
            cast(self.ctx, wide, name)
        self.pending = []


def move_axes_last(ctx, x: str, perm) -> str:
    """x transposed by `perm` into scratch (x itself when perm is the identity)."""
    if list(perm) == sorted(perm):
        return x
    shape = ctx.shape(x)
    out = ctx.scratch([shape[p] for p in perm], ctx.dtype(x))
    views.transpose(ctx, x, out, perm)
    return out


# -- Reduce* -----------------------------------------------------------------------------------

REDUCE_CODES = {"ReduceSum": 0, "ReduceMean": 1, "ReduceMax": 2, "ReduceMin": 3, "ReduceProd": 4, "ReduceL1": 5,
                "ReduceL2": 6, "ReduceLogSum": 7, "ReduceLogSumExp": 8, "ReduceSumSquare": 9}


def _reduce_check(node):
    if "axes" in node.attrs:
        raise GraphError(f"{where(node)}: 'axes' is an input since opset 18 (13 for ReduceSum); the ONNX importer "
                         "converts older nodes")
    flag_attr(node, "keepdims", 1)
    flag_attr(node, "noop_with_empty_axes", 0)


def reduce_axes(node, ins) -> tuple | None:
    """The reduced axes (sorted, non-negative), or None when the node is the identity."""
    rank = len(ins[0].shape)
    axes = known_ints(node, ins, 1, "axes") if len(ins) > 1 and ins[1] is not None else []
    if not axes:
        return None if flag_attr(node, "noop_with_empty_axes", 0) else tuple(range(rank))
    norm = [axis_of(node, a, rank) for a in axes]
    if len(set(norm)) != len(norm):
        raise ShapeError(f"{where(node)}: repeated axes {axes}")
    return tuple(sorted(norm))


def _reduced_shape(shape, axes, keepdims: bool) -> tuple:
    if keepdims:
        return tuple(1 if d in axes else s for d, s in enumerate(shape))
    return tuple(s for d, s in enumerate(shape) if d not in axes)


def reduce_type(node, ins):
    _reduce_check(node)
    x = ins[0]
    allowed = NUMERIC + ("bool",) if node.op in ("ReduceMax", "ReduceMin") else NUMERIC
    require_dtype(node, x.dtype, allowed)
    axes = reduce_axes(node, ins)
    if axes is None:
        return [TensorType(x.shape, x.dtype)]
    return [TensorType(_reduced_shape(x.shape, axes, flag_attr(node, "keepdims", 1)), x.dtype)]


def reduce_runs(shape, axes) -> list:
    """`shape` as alternating runs of kept and reduced dims, outer first: [(size, reduced)].
    Size-1 dims are dropped: they change no layout."""
    runs: list = []
    for d, size in enumerate(shape):
        if size == 1:
            continue
        red = d in axes
        if runs and runs[-1][1] == red:
            runs[-1] = (runs[-1][0] * size, red)
        else:
            runs.append((size, red))
    return runs


# A reduction over several separate runs of axes runs as one reduction per run, innermost
# first: (first stage, middle stages, last stage). Integer intermediates wrap, so integers
# stage only the ops that are exact modulo the type; the rest is transposed instead.
STAGES = {
    "ReduceSum": ("ReduceSum",) * 3, "ReduceMax": ("ReduceMax",) * 3, "ReduceMin": ("ReduceMin",) * 3,
    "ReduceProd": ("ReduceProd",) * 3, "ReduceL1": ("ReduceL1", "ReduceSum", "ReduceSum"),
    "ReduceSumSquare": ("ReduceSumSquare", "ReduceSum", "ReduceSum"),
    "ReduceMean": ("ReduceMean",) * 3,             # equal counts: the mean of means
    "ReduceL2": ("ReduceL2",) * 3,                 # sqrt(sum of squared norms)
    "ReduceLogSum": ("ReduceSum", "ReduceSum", "ReduceLogSum"),
    "ReduceLogSumExp": ("ReduceLogSumExp",) * 3,
}
_EXACT_IN_INTEGERS = {"ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceSumSquare"}


def _stages(op: str, dtype: str, runs: list):
    """[(op, outer, n, inner)] reducing the runs one at a time, or None (transpose instead)."""
    if sum(red for _, red in runs) > 1 and dtype not in FLOATS and op not in _EXACT_IN_INTEGERS:
        return None
    out = []
    first, middle, last = STAGES[op]
    runs = list(runs)
    while True:
        reduced = [i for i, (_, red) in enumerate(runs) if red]
        i = reduced[-1] if reduced else len(runs)
        n = runs[i][0] if reduced else 1
        outer = math.prod(size for size, _ in runs[:i])
        inner = math.prod(size for size, _ in runs[i + 1:])
        done = len(reduced) <= 1
        out.append((op if done and not out else last if done else middle if out else first, outer, n, inner))
        if done:
            return out
        runs = runs[:i] + runs[i + 1:]


def reduce_lower(ctx, node):
    x, y = node.inputs[0], node.outputs[0]
    shape = ctx.shape(x)
    axes = reduce_axes(node, seen(ctx, node))
    if axes is None:
        ctx.kernel("copy", [x], [y], dtype="any", ints=[math.prod(shape) * dtypes.itemsize(ctx.dtype(x))])
        return
    runs = reduce_runs(shape, axes)
    stages = _stages(node.op, ctx.dtype(x), runs)
    if stages is None:
        kept = [d for d in range(len(shape)) if d not in axes]
        x = move_axes_last(ctx, x, kept + list(axes))
        stages = [(node.op, math.prod(shape[d] for d in kept), math.prod(shape[d] for d in axes), 1)]
    half = Half(ctx)
    cur, ys = half.input(x), half.output(y)
    for k, (op, outer, n, inner) in enumerate(stages):
        out = ys if k == len(stages) - 1 else ctx.scratch((outer * inner,), ctx.dtype(cur))
        ctx.kernel("reduce", [cur], [out], ints=[REDUCE_CODES[op], outer, n, inner])
        cur = out
    half.finish()


def _numpy_reduce(fn):
    def evaluate(node, ins):
        x = ins[0].value
        axes = reduce_axes(node, ins)
        if axes is None:
            return [x.copy()]
        return [fn(x, axes, bool(node.attrs.get("keepdims", 1)))]
    return evaluate


def _extreme(is_min):
    def fn(x, axes, keepdims):
        if x.dtype == np.bool_:
            ident = is_min  # max of nothing: False; min: True
        elif x.dtype.kind == "f":
            ident = np.inf if is_min else -np.inf
        else:
            info = np.iinfo(x.dtype)
            ident = info.max if is_min else info.min
        reducer = np.min if is_min else np.max
        return reducer(x, axis=axes, keepdims=keepdims, initial=ident)
    return fn


_EVALUATE = {
    "ReduceSum": lambda x, axes, k: np.sum(x, axis=axes, keepdims=k),
    "ReduceProd": lambda x, axes, k: np.prod(x, axis=axes, keepdims=k),
    "ReduceMax": _extreme(False),
    "ReduceMin": _extreme(True),
}

for _op in REDUCE_CODES:
    _ev = _EVALUATE.get(_op)
    register(_op, reduce_type, reduce_lower, check=_reduce_check,
             evaluate=_numpy_reduce(_ev) if _ev else None)


# -- ArgMax / ArgMin ---------------------------------------------------------------------------

def _arg_check(node):
    int_attr(node, "axis", 0)
    flag_attr(node, "keepdims", 1)
    flag_attr(node, "select_last_index", 0)


def arg_type(node, ins):
    _arg_check(node)
    x = ins[0]
    require_dtype(node, x.dtype, NUMERIC)
    axis = axis_of(node, int_attr(node, "axis", 0), len(x.shape))
    if x.shape[axis] == 0:
        raise ShapeError(f"{where(node)}: cannot take the arg {'min' if node.op == 'ArgMin' else 'max'} of an "
                         f"empty axis {axis} (shape {x.shape})")
    return [TensorType(_reduced_shape(x.shape, (axis,), flag_attr(node, "keepdims", 1)), "int64")]


def arg_lower(ctx, node):
    x = node.inputs[0]
    shape = ctx.shape(x)
    axis = axis_of(node, int_attr(node, "axis", 0), len(shape))
    half = Half(ctx)
    xs = half.input(x)
    ctx.kernel("arg_reduce", [xs], node.outputs[:1], dtype=ctx.dtype(xs),
               ints=[*split3(shape, axis), int(node.op == "ArgMin"), int(flag_attr(node, "select_last_index"))])


def arg_eval(node, ins):
    x = ins[0].value
    axis = axis_of(node, int_attr(node, "axis", 0), x.ndim)
    fn = np.argmin if node.op == "ArgMin" else np.argmax
    if flag_attr(node, "select_last_index"):
        idx = x.shape[axis] - 1 - fn(np.flip(x, axis), axis=axis)
    else:
        idx = fn(x, axis=axis)
    if flag_attr(node, "keepdims", 1):
        idx = np.expand_dims(idx, axis)
    return [idx.astype(np.int64)]


for _op in ("ArgMax", "ArgMin"):
    register(_op, arg_type, arg_lower, check=_arg_check, evaluate=arg_eval)


# -- CumSum ------------------------------------------------------------------------------------

def _cumsum_check(node):
    flag_attr(node, "exclusive", 0)
    flag_attr(node, "reverse", 0)


def _cumsum_axis(node, ins) -> int:
    if len(ins) < 2 or ins[1] is None:
        raise ShapeError(f"{where(node)}: the axis input is required")
    vals = known_ints(node, ins, 1, "axis")
    if len(vals) != 1:
        raise ShapeError(f"{where(node)}: axis must be a single value, got {vals}")
    return axis_of(node, vals[0], len(ins[0].shape))


def cumsum_type(node, ins):
    _cumsum_check(node)
    require_dtype(node, ins[0].dtype, NUMERIC)
    _cumsum_axis(node, ins)
    return [TensorType(ins[0].shape, ins[0].dtype)]


def cumsum_lower(ctx, node):
    x = node.inputs[0]
    shape = ctx.shape(x)
    axis = _cumsum_axis(node, seen(ctx, node))
    half = Half(ctx)
    xs, ys = half.input(x), half.output(node.outputs[0])
    ctx.kernel("cumsum", [xs], [ys], ints=[*split3(shape, axis), int(flag_attr(node, "exclusive")),
                                           int(flag_attr(node, "reverse"))])
    half.finish()


def cumsum_eval(node, ins):
    """numpy's running sum, shifted one place for `exclusive`: the kernel's order of additions,
    and its float32 accumulation of float16."""
    axis = _cumsum_axis(node, ins)
    x = np.asarray(ins[0].value)
    reverse = flag_attr(node, "reverse", 0)
    if reverse:
        x = np.flip(x, axis)
    y = np.cumsum(x, axis=axis, dtype=np.float32 if x.dtype == np.float16 else x.dtype)
    if flag_attr(node, "exclusive", 0) and y.shape[axis]:
        y = np.concatenate([np.zeros_like(np.take(y, [0], axis)), np.delete(y, -1, axis)], axis)
    y = y.astype(x.dtype, copy=False)
    return [np.flip(y, axis) if reverse else y]


# Evaluated when its input is known: masks that transformers compute from position ids (GPT-2,
# Llama) are then fixed by the shapes.
register("CumSum", cumsum_type, cumsum_lower, check=_cumsum_check, evaluate=cumsum_eval)


# -- TopK --------------------------------------------------------------------------------------

def _topk_check(node):
    int_attr(node, "axis", -1)
    flag_attr(node, "largest", 1)
    flag_attr(node, "sorted", 1)


def _topk_k(node, ins, n: int) -> int:
    if len(ins) < 2 or ins[1] is None:
        raise ShapeError(f"{where(node)}: the K input is required")
    vals = known_ints(node, ins, 1, "K")
    if len(vals) != 1:
        raise ShapeError(f"{where(node)}: K must be a single value, got {vals}")
    k = vals[0]
    if not 0 <= k <= n:
        raise ShapeError(f"{where(node)}: K = {k} is outside [0, {n}] (the size of the axis)")
    return k


def topk_type(node, ins):
    _topk_check(node)
    x = ins[0]
    require_dtype(node, x.dtype, NUMERIC)
    axis = axis_of(node, int_attr(node, "axis", -1), len(x.shape))
    k = _topk_k(node, ins, x.shape[axis])
    shape = x.shape[:axis] + (k,) + x.shape[axis + 1:]
    return [TensorType(shape, x.dtype), TensorType(shape, "int64")]


def topk_lower(ctx, node):
    x = node.inputs[0]
    shape = ctx.shape(x)
    rank = len(shape)
    axis = axis_of(node, int_attr(node, "axis", -1), rank)
    k = _topk_k(node, seen(ctx, node), shape[axis])
    outs = list(node.outputs) + [""] * (2 - len(node.outputs))
    vals = outs[0] or ctx.scratch(shape[:axis] + (k,) + shape[axis + 1:], ctx.dtype(x))
    idx = outs[1] or ctx.scratch(ctx.shape(vals), "int64")
    perm = [d for d in range(rank) if d != axis] + [axis]
    xt = move_axes_last(ctx, x, perm)
    moved = xt != x
    tshape = [ctx.shape(vals)[p] for p in perm]
    vt = ctx.scratch(tshape, ctx.dtype(vals)) if moved else vals
    it = ctx.scratch(tshape, "int64") if moved else idx
    half = Half(ctx)
    xs, vs = half.input(xt), half.output(vt)
    ctx.kernel("topk", [xs], [vs, it], dtype=ctx.dtype(xs),
               ints=[math.prod(tshape[:-1]), shape[axis], k, int(flag_attr(node, "largest", 1))])
    half.finish()
    if moved:
        inverse = [perm.index(d) for d in range(rank)]
        views.transpose(ctx, vt, vals, inverse)
        views.transpose(ctx, it, idx, inverse)


register("TopK", topk_type, topk_lower, check=_topk_check)
