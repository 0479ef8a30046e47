"""Einsum (numpy's einsum semantics: implicit or explicit output, ellipsis broadcasting,
repeated labels as diagonals, sums over labels missing from the output).

Parsed once per plan. Every operand is a strided view over its labels (a repeated label is
one dim whose stride is the sum of its strides; a broadcast dim has stride 0), so diagonals,
transposes and broadcasts cost nothing until an operand is packed. Operands are contracted
left to right, each pair as a batched matrix product [batch, M, K] x [batch, K, N] (float32
on the GEMM, other types on einsum_bmm); labels no later term needs are summed while an
operand is packed (einsum_sum), and the last result is copied into the output's label order.
float16 runs in float32 and is rounded once.
"""

from __future__ import annotations

import math
import re
from typing import NamedTuple

import numpy as np

from .. import dtypes
from ..errors import DTypeError, GraphError, ShapeError
from .float16 import via_float32
from .registry import TensorType, register
from .views import copy_view, fill, strides_of

_TERM = re.compile(r"^[A-Za-z]*(\.\.\.)?[A-Za-z]*$")


def _split(node):
    eq = node.attrs.get("equation")
    if not isinstance(eq, str):
        raise GraphError(f"node '{node.name}' (Einsum): attribute 'equation' must be a string, got {eq!r}")
    eq = eq.replace(" ", "")
    lhs, arrow, rhs = eq.partition("->")
    terms = lhs.split(",")
    for t in terms + ([rhs] if arrow else []):
        if not _TERM.match(t):
            raise GraphError(f"node '{node.name}' (Einsum): bad term {t!r} in equation {eq!r} (letters and "
                             "at most one '...' per term)")
    return terms, (rhs if arrow else None)


def _check(node):
    _split(node)


class Spec(NamedTuple):
    operands: list   # per input: its labels, one per dim (ellipsis dims as '.0', '.1', ...)
    output: list     # output labels
    sizes: dict      # label -> size


def _spec(node, shapes) -> Spec:
    terms, rhs = _split(node)
    where = f"node '{node.name}' (Einsum)"
    if len(terms) != len(shapes):
        raise ShapeError(f"{where}: equation has {len(terms)} terms for {len(shapes)} inputs")
    n_ell = []
    for t, shape in zip(terms, shapes):
        k = len(shape) - len(t.replace("...", ""))
        if k < 0 or (k > 0 and "..." not in t):
            raise ShapeError(f"{where}: term {t!r} does not match input rank {len(shape)}")
        n_ell.append(k)
    ell = max(n_ell, default=0)

    def expand(t, k):
        head, dots, tail = t.partition("...")
        return list(head) + ([f".{ell - k + i}" for i in range(k)] if dots else []) + list(tail)

    operands = [expand(t, k) for t, k in zip(terms, n_ell)]
    sizes: dict = {}
    for labels, shape in zip(operands, shapes):
        mine: dict = {}
        for lab, n in zip(labels, shape):
            if mine.setdefault(lab, n) != n:
                raise ShapeError(f"{where}: repeated label {lab!r} has sizes {mine[lab]} and {n} in one input")
        for lab, n in mine.items():
            m = sizes.get(lab)
            if m is None or m == 1:
                sizes[lab] = n
            elif n != m and n != 1:
                raise ShapeError(f"{where}: label {lab!r} has sizes {m} and {n} (inputs {list(shapes)})")
    ell_labels = [f".{i}" for i in range(ell)]
    if rhs is None:
        letters = [c for t in terms for c in t.replace("...", "")]
        output = ell_labels + sorted(c for c in set(letters) if letters.count(c) == 1)
    else:
        if "..." not in rhs and ell_labels:
            raise ShapeError(f"{where}: the inputs have '...' dims, so the output term needs '...' too")
        output = expand(rhs, ell) if "..." in rhs else list(rhs)
        if len(set(output)) != len(output):
            raise ShapeError(f"{where}: output term {rhs!r} repeats a label")
        for lab in output:
            if lab not in sizes:
                raise ShapeError(f"{where}: output label {lab!r} is in no input term")
    return Spec(operands, output, sizes)


def einsum_type(node, ins):
    dt = ins[0].dtype
    if any(t.dtype != dt for t in ins):
        raise DTypeError(f"node '{node.name}' (Einsum): inputs have different element types "
                         f"{[t.dtype for t in ins]}")
    if dt not in ("float32", "float64", "float16") + dtypes.INTEGERS:
        raise DTypeError(f"node '{node.name}' (Einsum): element type {dt} is not supported")
    spec = _spec(node, [t.shape for t in ins])
    return [TensorType(tuple(spec.sizes[lab] for lab in spec.output), dt)]


def einsum_eval(node, ins):
    eq = node.attrs["equation"].replace(" ", "")
    return [np.asarray(np.einsum(eq, *[t.value for t in ins]))]


# -- lowering --------------------------------------------------------------------------------------

class View(NamedTuple):
    """A value seen through its labels: dims[label] = (size, element stride)."""
    name: str
    dims: dict


def _view(name, labels, shape, sizes) -> View:
    dims: dict = {}
    for lab, n, st in zip(labels, shape, strides_of(shape)):
        size, stride = dims.get(lab, (n, 0))
        dims[lab] = (size, stride + st)  # a repeated label walks the diagonal
    for lab, (n, st) in dims.items():
        if n == 1 and sizes[lab] != 1:
            dims[lab] = (sizes[lab], 0)  # broadcast
    return View(name, dims)


def _materialize(ctx, v: View, kept: list, dst: str, dt: str) -> None:
    """dst (contiguous, labels `kept` in that order) = v summed over its other labels."""
    shape = [v.dims[lab][0] for lab in kept]
    if math.prod(shape) == 0:
        return
    rest = [lab for lab in v.dims if lab not in kept]
    kst = [v.dims[lab][1] for lab in kept]
    if not rest:
        if kst == strides_of(shape) or math.prod(shape) == 1:
            ctx.kernel("copy", [v.name], [dst], dtype="any", ints=[math.prod(shape) * dtypes.itemsize(dt)])
        else:
            copy_view(ctx, v.name, dst, shape, kst)
        return
    rshape = [v.dims[lab][0] for lab in rest]
    if math.prod(rshape) == 0:
        fill(ctx, dst, 0)
        return
    ctx.kernel("einsum_sum", [v.name], [dst], dtype=dt,
               ints=[len(kept), len(rest), *shape, *kst, *rshape, *[v.dims[lab][1] for lab in rest]])


def _is_packed(v: View, order: list) -> bool:
    """Whether v already is contiguous with exactly the labels `order`."""
    if sorted(v.dims) != sorted(order):
        return False
    shape = [v.dims[lab][0] for lab in order]
    return all(v.dims[lab][1] == st or v.dims[lab][0] == 1 for lab, st in zip(order, strides_of(shape)))


def _visible(v: View, order: list) -> View:
    """v without the broadcast labels (stride 0) that `order` leaves out: batch labels the
    other operand supplies, not to be summed over."""
    return View(v.name, {lab: d for lab, d in v.dims.items() if lab in order or d[1] != 0})


def _pack(ctx, v: View, order: list, dt: str) -> str:
    v = _visible(v, order)
    if _is_packed(v, order):
        return v.name
    buf = ctx.scratch((math.prod(v.dims[lab][0] for lab in order),), dt)
    _materialize(ctx, v, order, buf, dt)
    return buf


def _contract(ctx, a: View, b: View, keep: set, sizes: dict, dt: str, dst: str | None, out_labels: list) -> View:
    """The product of a and b summed over the labels that neither `keep` nor the other
    needs; written to dst when its label order is out_labels, else to a scratch buffer."""
    batch = [lab for lab in a.dims if lab in b.dims and lab in keep]
    red = [lab for lab in a.dims if lab in b.dims and lab not in keep]
    m = [lab for lab in a.dims if lab not in b.dims and lab in keep]
    n = [lab for lab in b.dims if lab not in a.dims and lab in keep]
    size = lambda labs: math.prod(sizes[lab] for lab in labs)  # noqa: E731
    B, M, N, K = size(batch), size(m), size(n), size(red)
    result = batch + m + n
    out = dst if dst is not None and result == out_labels else ctx.scratch((B * M * N,), dt)
    view = View(out, dict(zip(result, zip([sizes[lab] for lab in result], strides_of([sizes[lab] for lab in result])))))
    if B * M * N == 0:
        return view
    if K == 0:
        fill(ctx, out, 0, B * M * N)
        return view
    # An operand constant over the batch is packed once and broadcast (batch stride 0).
    a_batch = batch if any(a.dims[lab][1] for lab in batch) else []
    b_batch = batch if any(b.dims[lab][1] for lab in batch) else []
    sa, sb = (M * K if a_batch else 0), (K * N if b_batch else 0)
    if dt == "float32":  # the GEMM also reads either operand transposed: fewer copies
        ta = not _is_packed(_visible(a, a_batch + m + red), a_batch + m + red) and \
            _is_packed(_visible(a, a_batch + red + m), a_batch + red + m)
        tb = not _is_packed(_visible(b, b_batch + red + n), b_batch + red + n) and \
            _is_packed(_visible(b, b_batch + n + red), b_batch + n + red)
        pa = _pack(ctx, a, a_batch + (red + m if ta else m + red), dt)
        pb = _pack(ctx, b, b_batch + (n + red if tb else red + n), dt)
        ctx.kernel("matmul", [pa, pb], [out], ints=[B, M, N, K, int(ta), int(tb), sa, sb])
    else:
        pa = _pack(ctx, a, a_batch + m + red, dt)
        pb = _pack(ctx, b, b_batch + red + n, dt)
        ctx.kernel("einsum_bmm", [pa, pb], [out], dtype=dt, ints=[B, M, N, K, sa, sb])
    return view


def einsum_lower(ctx, node):
    dt = ctx.dtype(node.inputs[0])
    if dt == "float16":
        return _lower_via_float32(ctx, node)
    _lower(ctx, node, list(node.inputs), node.outputs[0], dt)


def _lower(ctx, node, inputs, out, dt):
    spec = _spec(node, [ctx.shape(i) for i in inputs])
    views = [_view(name, labels, ctx.shape(name), spec.sizes) for name, labels in zip(inputs, spec.operands)]
    if math.prod(spec.sizes[lab] for lab in spec.output) == 0:
        return
    acc = views[0]
    for i in range(1, len(views)):
        keep = set(spec.output).union(*(v.dims for v in views[i + 1:]))
        last = i == len(views) - 1
        acc = _contract(ctx, acc, views[i], keep, spec.sizes, dt, out if last else None, spec.output)
    if acc.name != out:
        _materialize(ctx, acc, spec.output, out, dt)


def _lower_via_float32(ctx, node):
    """float16: convert the inputs, run in float32, round the result once."""
    via_float32(ctx, node.inputs, node.outputs[:1], lambda ins, outs: _lower(ctx, node, ins, outs[0], "float32"))


# Einsum(inputs...); attrs: equation.
register("Einsum", einsum_type, einsum_lower, check=_check, evaluate=einsum_eval)
