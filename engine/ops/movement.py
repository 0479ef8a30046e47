"""Data movement ops that are strided copies (ONNX semantics, every element type): Transpose,
Concat, Split, Slice, Expand, Tile, DepthToSpace, SpaceToDepth. Each lowers to `strided_copy`
calls between views (views.copy_view): a slice is an offset and strides, a broadcast a zero
stride, a concat a set of copies into views of one buffer."""

from __future__ import annotations

import numpy as np

from ..errors import GraphError
from .axes import attr_int, attr_ints, attr_str, known_ints, norm_axes, norm_axis, shape_error, tensor_of, tensors_of
from .registry import TensorType, register
from .views import copy_view, permute, strides_of, transpose

# -- Transpose -------------------------------------------------------------------------------


def _perm(node, rank: int) -> list:
    perm = attr_ints(node, "perm")
    if perm is None:
        return list(range(rank))[::-1]
    if sorted(perm) != list(range(rank)):
        raise shape_error(node, f"perm {perm} is not a permutation of the {rank} dims")
    return perm


def transpose_type(node, ins):
    x = ins[0].shape
    return [TensorType(tuple(x[p] for p in _perm(node, len(x))), ins[0].dtype)]


def transpose_lower(ctx, node):
    x = node.inputs[0]
    transpose(ctx, x, node.outputs[0], _perm(node, len(ctx.shape(x))))


register("Transpose", transpose_type, transpose_lower, check=lambda node: attr_ints(node, "perm"),
         evaluate=lambda node, ins: [np.transpose(ins[0].value, _perm(node, ins[0].value.ndim))])

# -- Concat / Split --------------------------------------------------------------------------


def concat_type(node, ins):
    if not ins or any(t is None for t in ins):
        raise shape_error(node, "needs at least one input, none absent")
    first = ins[0]
    if not first.shape:
        raise shape_error(node, "cannot concatenate scalars")
    axis = norm_axis(node, attr_int(node, "axis"), len(first.shape))
    total = 0
    for i, t in enumerate(ins):
        if t.dtype != first.dtype:
            raise shape_error(node, f"input {i} is {t.dtype}, input 0 is {first.dtype}")
        if len(t.shape) != len(first.shape) or any(a != b for d, (a, b) in enumerate(zip(t.shape, first.shape))
                                                    if d != axis):
            raise shape_error(node, f"input {i} has shape {t.shape}, which does not match input 0's "
                                    f"{first.shape} outside axis {axis}")
        total += t.shape[axis]
    out = list(first.shape)
    out[axis] = total
    return [TensorType(tuple(out), first.dtype)]


def concat_lower(ctx, node):
    y = node.outputs[0]
    out = ctx.shape(y)
    axis = norm_axis(node, attr_int(node, "axis"), len(out))
    ost = strides_of(out)
    at = 0
    for x in node.inputs:
        shape = ctx.shape(x)
        copy_view(ctx, x, y, shape, strides_of(shape), ost, dst_offset=at * ost[axis])
        at += shape[axis]


register("Concat", concat_type, concat_lower, check=lambda node: attr_int(node, "axis"),
         evaluate=lambda node, ins: [np.concatenate([t.value for t in ins], axis=attr_int(node, "axis"))])


def _split_sizes(node, ins) -> tuple:
    x = ins[0].shape
    axis = norm_axis(node, attr_int(node, "axis", 0), len(x))
    n = len(node.outputs)
    sizes = known_ints(node, ins, 1, "split")
    num = node.attrs.get("num_outputs")
    if sizes is not None:
        if num is not None:
            raise shape_error(node, "give either the split input or num_outputs, not both")
        if len(sizes) != n or any(s < 0 for s in sizes) or sum(sizes) != x[axis]:
            raise shape_error(node, f"split {sizes} must be {n} sizes >= 0 adding up to dim {axis} ({x[axis]})")
        return axis, sizes
    if num is not None and num != n:
        raise shape_error(node, f"num_outputs is {num} but the node has {n} outputs")
    part = -(-x[axis] // n)  # the last part is smaller when the dim does not divide evenly
    sizes = [part] * (n - 1) + [x[axis] - part * (n - 1)]
    if sizes[-1] < 0:
        raise shape_error(node, f"cannot split dim {axis} of size {x[axis]} into {n} parts")
    return axis, sizes


def split_type(node, ins):
    axis, sizes = _split_sizes(node, ins)
    x = ins[0].shape
    return [TensorType(x[:axis] + (s,) + x[axis + 1:], ins[0].dtype) for s in sizes]


def split_lower(ctx, node):
    x = node.inputs[0]
    shape = ctx.shape(x)
    axis, sizes = _split_sizes(node, tensors_of(ctx, node))
    st = strides_of(shape)
    at = 0
    for y, size in zip(node.outputs, sizes):
        if y:
            copy_view(ctx, x, y, shape[:axis] + (size,) + shape[axis + 1:], st, src_offset=at * st[axis])
        at += size


def split_eval(node, ins):
    axis, sizes = _split_sizes(node, ins)
    return np.split(ins[0].value, np.cumsum(sizes)[:-1], axis=axis)


def _split_check(node):
    attr_int(node, "axis", 0)
    if "num_outputs" in node.attrs and attr_int(node, "num_outputs") < 1:
        raise GraphError(f"node '{node.name}' (Split): num_outputs must be >= 1")


register("Split", split_type, split_lower, check=_split_check, evaluate=split_eval)

# -- Slice -----------------------------------------------------------------------------------


def _slice_dims(node, ins) -> list:
    """(start, step, size) per dim of the input."""
    x = ins[0].shape
    starts = known_ints(node, ins, 1, "starts")
    ends = known_ints(node, ins, 2, "ends")
    if starts is None or ends is None:
        raise shape_error(node, "needs its starts and ends inputs")
    axes = known_ints(node, ins, 3, "axes")
    axes = list(range(len(starts))) if axes is None else axes
    steps = known_ints(node, ins, 4, "steps")
    steps = [1] * len(starts) if steps is None else steps
    if not len(starts) == len(ends) == len(axes) == len(steps):
        raise shape_error(node, f"starts, ends, axes and steps differ in length ({len(starts)}, {len(ends)}, "
                                f"{len(axes)}, {len(steps)})")
    dims = [(0, 1, d) for d in x]
    for a, s, e, st in zip(norm_axes(node, axes, len(x)), starts, ends, steps):
        d = x[a]
        if st == 0:
            raise shape_error(node, f"step of axis {a} is 0")
        s, e = s + d if s < 0 else s, e + d if e < 0 else e
        if st > 0:
            s, e = min(max(s, 0), d), min(max(e, 0), d)
        else:
            s, e = min(max(s, 0), d - 1), min(max(e, -1), d - 1)
        dims[a] = (s, st, max(0, -(-(e - s) // st)))
    return dims


def slice_type(node, ins):
    return [TensorType(tuple(size for _, _, size in _slice_dims(node, ins)), ins[0].dtype)]


def slice_lower(ctx, node):
    x = node.inputs[0]
    dims = _slice_dims(node, tensors_of(ctx, node))
    st = strides_of(ctx.shape(x))
    copy_view(ctx, x, node.outputs[0], [size for _, _, size in dims], [step * s for (_, step, _), s in zip(dims, st)],
              src_offset=sum(start * s for (start, _, size), s in zip(dims, st) if size))


def slice_eval(node, ins):
    v = ins[0].value
    for a, (start, step, size) in enumerate(_slice_dims(node, ins)):
        v = np.take(v, start + step * np.arange(size, dtype=np.int64), axis=a)
    return [v]


register("Slice", slice_type, slice_lower, evaluate=slice_eval)

# -- Expand / Tile ---------------------------------------------------------------------------


def broadcast_to(node, shape, target) -> tuple:
    """numpy's (bidirectional) broadcast of `shape` and `target`."""
    n = max(len(shape), len(target))
    a, b = (1,) * (n - len(shape)) + tuple(shape), (1,) * (n - len(target)) + tuple(target)
    out = []
    for p, q in zip(a, b):
        if p != q and 1 not in (p, q):
            raise shape_error(node, f"shape {tuple(shape)} cannot be expanded to {tuple(target)}")
        out.append(q if p == 1 else p)
    return tuple(out)


def broadcast_strides(shape, out) -> list:
    """Element strides of `shape` viewed as `out` (left-padded), 0 along broadcast dims."""
    shape = (1,) * (len(out) - len(shape)) + tuple(shape)
    return [0 if d == 1 and o != 1 else s for d, o, s in zip(shape, out, strides_of(shape))]


def expand_type(node, ins):
    target = known_ints(node, ins, 1, "the target shape")
    if target is None or any(d < 0 for d in target):
        raise shape_error(node, f"needs a target shape of sizes >= 0, got {target}")
    return [TensorType(broadcast_to(node, ins[0].shape, target), ins[0].dtype)]


def expand_lower(ctx, node):
    x, y = node.inputs[0], node.outputs[0]
    out = ctx.shape(y)
    copy_view(ctx, x, y, out, broadcast_strides(ctx.shape(x), out))


register("Expand", expand_type, expand_lower,
         evaluate=lambda node, ins: [np.broadcast_to(ins[0].value, expand_type(node, ins)[0].shape).copy()])


def _repeats(node, ins) -> list:
    reps = known_ints(node, ins, 1, "repeats")
    if reps is None or len(reps) != len(ins[0].shape) or any(r < 0 for r in reps):
        raise shape_error(node, f"repeats {reps} must be one count >= 0 per dim of {ins[0].shape}")
    return reps


def tile_lower(ctx, node):
    # y viewed as [r0, d0, r1, d1, ...]: the repeat dims read x with stride 0.
    x, y = node.inputs[0], node.outputs[0]
    shape = ctx.shape(x)
    reps = _repeats(node, tensors_of(ctx, node))
    xst, yst = strides_of(shape), strides_of(ctx.shape(y))
    view, src, dst = [], [], []
    for d, r, xs, ys in zip(shape, reps, xst, yst):
        view += [r, d]
        src += [0, xs]
        dst += [d * ys, ys]
    copy_view(ctx, x, y, view, src, dst)


register("Tile", lambda node, ins: [TensorType(tuple(d * r for d, r in zip(ins[0].shape, _repeats(node, ins))),
                                               ins[0].dtype)],
         tile_lower, evaluate=lambda node, ins: [np.tile(ins[0].value, _repeats(node, ins))])

# -- DepthToSpace / SpaceToDepth -------------------------------------------------------------
# Both are a reshape to 6-D, a transpose and a reshape back (the ONNX definitions).


def _blocks(node, ins) -> tuple:
    x = ins[0].shape
    b = attr_int(node, "blocksize")
    mode = attr_str(node, "mode", "DCR", ("DCR", "CRD"))
    if len(x) != 4 or b < 1:
        raise shape_error(node, f"expects a 4-D input [N, C, H, W] and blocksize >= 1, got {x} and {b}")
    return x, b, mode


def _d2s_view(node, ins) -> tuple:
    (n, c, h, w), b, mode = _blocks(node, ins)
    if c % (b * b):
        raise shape_error(node, f"channels {c} are not a multiple of blocksize² ({b * b})")
    if mode == "DCR":
        return [n, b, b, c // (b * b), h, w], [0, 3, 4, 1, 5, 2], (n, c // (b * b), h * b, w * b)
    return [n, c // (b * b), b, b, h, w], [0, 1, 4, 2, 5, 3], (n, c // (b * b), h * b, w * b)


def _s2d_view(node, ins) -> tuple:
    (n, c, h, w), b, mode = _blocks(node, ins)
    if h % b or w % b:
        raise shape_error(node, f"height {h} and width {w} must be multiples of blocksize {b}")
    perm = [0, 3, 5, 1, 2, 4] if mode == "DCR" else [0, 1, 3, 5, 2, 4]
    return [n, c, h // b, b, w // b, b], perm, (n, c * b * b, h // b, w // b)


def _space_op(view_of):
    def infer(node, ins):
        return [TensorType(view_of(node, ins)[2], ins[0].dtype)]

    def lower(ctx, node):
        view, perm, _ = view_of(node, [tensor_of(ctx, node.inputs[0])])
        permute(ctx, node.inputs[0], node.outputs[0], view, perm)

    def evaluate(node, ins):
        view, perm, out = view_of(node, ins)
        return [ins[0].value.reshape(view).transpose(perm).reshape(out)]

    def check(node):
        attr_int(node, "blocksize")
        attr_str(node, "mode", "DCR", ("DCR", "CRD"))

    return dict(infer=infer, lower=lower, evaluate=evaluate, check=check)


for _name, _view in (("DepthToSpace", _d2s_view), ("SpaceToDepth", _s2d_view)):
    _f = _space_op(_view)
    register(_name, _f["infer"], _f["lower"], check=_f["check"], evaluate=_f["evaluate"])
