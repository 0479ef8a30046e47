"""Normalisations (ONNX semantics): LayerNormalization, RMSNormalization,
GroupNormalization, InstanceNormalization, MeanVarianceNormalization (one row kernel:
statistics per row, then a per-element or per-channel affine), BatchNormalization
(inference and training_mode), LRN, LpNormalization. float32 / float64; float16 runs on
float32 copies."""

from __future__ import annotations

import math

import numpy as np

from ..errors import DTypeError, GraphError, ShapeError
from . import views
from .reduce import (FLOATS, Half, axis_of, flag_attr, float_attr, int_attr, move_axes_last, require_dtype,
                     where)
from .registry import TensorType, register

LAYER, RMS, MVN = 0, 1, 2  # native NormMode


def _compute_type(dtype: str) -> str:
    return "float64" if dtype == "float64" else "float32"


def _param_type(node, x, p, what: str) -> None:
    """A scale / bias / statistic must be of X's type, or float16 / float32 when X computes in float32."""
    if p is None:
        return
    ok = p.dtype == x.dtype or (_compute_type(x.dtype) == "float32" and p.dtype in ("float32", "float16"))
    if not ok:
        raise DTypeError(f"{where(node)}: {what} of type {p.dtype} with X of type {x.dtype} is not supported")


def _ins(ctx, node, half):
    """Every input in its compute type (float16 widened)."""
    return [half.input(i) if i else "" for i in node.inputs]


def _norm_kernel(ctx, node, x, scale, bias, outs, rows, groups, cps, seg, eps, mode):
    """The row kernel; a float16 x / y stays float16 (the kernel converts a row at a time),
    scale / bias are float32 then."""
    ctx.kernel("normalize", [x, scale, bias], outs, dtype=ctx.dtype(x), ints=[rows, groups, cps, seg, mode],
               floats=[eps])


# -- LayerNormalization / RMSNormalization -------------------------------------------------------

def _layer_check(node):
    int_attr(node, "axis", -1)
    float_attr(node, "epsilon", 1e-5)
    int_attr(node, "stash_type", 1, (1,))


def _affine_shape(node, param, shape, axis, what: str) -> None:
    """Scale / bias broadcast to X (unidirectionally) and vary only along the normalised axes."""
    if param is None:
        return
    p = tuple(param.shape)
    if len(p) > len(shape):
        raise ShapeError(f"{where(node)}: {what} of shape {p} does not broadcast to X {shape}")
    padded = (1,) * (len(shape) - len(p)) + p
    for d, (a, b) in enumerate(zip(padded, shape)):
        if a not in (1, b):
            raise ShapeError(f"{where(node)}: {what} of shape {p} does not broadcast to X {shape}")
        if d < axis and a != 1:
            raise ShapeError(f"{where(node)}: {what} of shape {p} varies along axis {d}, outside the normalised "
                             f"axes [{axis}, {len(shape)}); not supported")


def layer_type(node, ins):
    _layer_check(node)
    x = ins[0]
    require_dtype(node, x.dtype, FLOATS)
    if not x.shape:
        raise ShapeError(f"{where(node)}: X must have rank >= 1")
    axis = axis_of(node, int_attr(node, "axis", -1), len(x.shape))
    n_params = 2 if node.op == "LayerNormalization" else 1
    if len(ins) < 2 or ins[1] is None:
        raise ShapeError(f"{where(node)}: the Scale input is required")
    for i, what in zip(range(1, n_params + 1), ("Scale", "B")):
        p = ins[i] if i < len(ins) else None
        _param_type(node, x, p, what)
        _affine_shape(node, p, x.shape, axis, what)
    if len(node.outputs) > 3:
        raise ShapeError(f"{where(node)}: has at most 3 outputs (Y, Mean, InvStdDev), the graph names "
                         f"{len(node.outputs)}")
    # Mean / InvStdDev: ONNX outputs of LayerNormalization; RMSNormalization has them too here
    # (Mean all zeros) so that training graphs keep the per-row statistics (norm_grad.py).
    stat = TensorType(x.shape[:axis] + (1,) * (len(x.shape) - axis), "float32")
    return [TensorType(x.shape, x.dtype)] + [stat, stat][:max(0, len(node.outputs) - 1)]


def expand_to(ctx, name: str, shape) -> str:
    """`name` broadcast to the contiguous `shape` (itself when it already is that shape): a
    plan constant when its value is known, else a broadcasting copy into scratch."""
    if not name:
        return name
    shape = tuple(shape)
    have = tuple(ctx.shape(name))
    if math.prod(have) == math.prod(shape) and tuple(d for d in have if d != 1) == tuple(d for d in shape if d != 1):
        return name
    value = ctx.value(name)
    if value is not None:
        full = np.broadcast_to(value.reshape((1,) * (len(shape) - value.ndim) + value.shape), shape)
        const = ctx.constant(np.ascontiguousarray(full))
        ctx.slot(const)  # bound now: a second constant() before any use would reuse the name
        return const
    padded = (1,) * (len(shape) - len(have)) + have
    strides = views.strides_of(padded)
    out = ctx.scratch(shape, ctx.dtype(name))
    views.copy_view(ctx, name, out, shape, [0 if p == 1 else s for p, s in zip(padded, strides)])
    return out


def _stat_outputs(ctx, node, rows: int) -> list:
    """[y] or [y, mean, inv_std], with scratch for statistics the graph does not use."""
    outs = list(node.outputs)
    if len(outs) == 1 or not any(outs[1:]):
        return outs[:1]
    outs += [""] * (3 - len(outs))
    return [outs[0]] + [o or ctx.scratch((rows,), "float32") for o in outs[1:3]]


def layer_lower(ctx, node):
    x = node.inputs[0]
    shape = ctx.shape(x)
    axis = axis_of(node, int_attr(node, "axis", -1), len(shape))
    rows, length = math.prod(shape[:axis]), math.prod(shape[axis:])
    half = Half(ctx)
    params = [half.input(p) for p in list(node.inputs[1:3]) + [""] * (3 - len(node.inputs))]
    scale, bias = (expand_to(ctx, p, shape[axis:]) for p in params)
    if node.op == "RMSNormalization":
        bias = ""
    mode = RMS if node.op == "RMSNormalization" else LAYER
    _norm_kernel(ctx, node, x, scale, bias, _stat_outputs(ctx, node, rows), rows, 1, length, 1,
                 float_attr(node, "epsilon", 1e-5), mode)


register("LayerNormalization", layer_type, layer_lower, check=_layer_check)
register("RMSNormalization", layer_type, layer_lower, check=_layer_check)


# -- GroupNormalization / InstanceNormalization ----------------------------------------------------

def _channels(node, x) -> tuple[int, int, int]:
    """(N, C, spatial size) of an (N, C, ...) input."""
    if len(x.shape) < 2:
        raise ShapeError(f"{where(node)}: X must be (N, C, ...), got shape {x.shape}")
    return x.shape[0], x.shape[1], math.prod(x.shape[2:])


def _group_check(node):
    float_attr(node, "epsilon", 1e-5)
    if node.op == "GroupNormalization":
        if "num_groups" not in node.attrs:
            raise GraphError(f"{where(node)}: attribute 'num_groups' is required")
        if int_attr(node, "num_groups") < 1:
            raise GraphError(f"{where(node)}: num_groups must be >= 1")
        int_attr(node, "stash_type", 1, (1,))
        flag_attr(node, "scale_per_group", 0)


def _groups(node, C: int) -> int:
    if node.op == "InstanceNormalization":
        return C
    g = int_attr(node, "num_groups")
    if C % g:
        raise ShapeError(f"{where(node)}: {C} channels do not split into {g} groups")
    return g


def group_type(node, ins):
    _group_check(node)
    x = ins[0]
    require_dtype(node, x.dtype, FLOATS)
    _, C, _ = _channels(node, x)
    G = _groups(node, C)
    per = G if flag_attr(node, "scale_per_group", 0) else C
    for i, what in ((1, "scale"), (2, "bias")):
        p = ins[i] if i < len(ins) else None
        if p is None:
            raise ShapeError(f"{where(node)}: the {what} input is required")
        _param_type(node, x, p, what)
        if tuple(p.shape) != (per,):
            raise ShapeError(f"{where(node)}: {what} must have shape ({per},), got {p.shape}")
    return [TensorType(x.shape, x.dtype)]


def group_lower(ctx, node):
    x = node.inputs[0]
    N, C, S = _channels(node, ctx.types[x])
    G = _groups(node, C)
    half = Half(ctx)
    scale, bias = (half.input(p) for p in node.inputs[1:3])
    y = node.outputs[0]
    eps = float_attr(node, "epsilon", 1e-5)
    if flag_attr(node, "scale_per_group", 0):  # opset 18: one scale per group
        _norm_kernel(ctx, node, x, scale, bias, [y], N * G, G, 1, (C // G) * S, eps, LAYER)
    else:
        _norm_kernel(ctx, node, x, scale, bias, [y], N * G, G, C // G, S, eps, LAYER)


register("GroupNormalization", group_type, group_lower, check=_group_check)
register("InstanceNormalization", group_type, group_lower, check=_group_check)


# -- MeanVarianceNormalization --------------------------------------------------------------------

def _mvn_axes(node, rank: int) -> list[int]:
    axes = node.attrs.get("axes", [0, 2, 3])
    if not isinstance(axes, (list, tuple)) or not all(isinstance(a, int) and not isinstance(a, bool) for a in axes):
        raise GraphError(f"{where(node)}: attribute 'axes' must be a list of ints, got {axes!r}")
    if rank is None:
        return list(axes)
    norm = sorted({axis_of(node, a, rank) for a in axes})
    if len(norm) != len(axes):
        raise ShapeError(f"{where(node)}: repeated axes {axes}")
    return norm


def mvn_type(node, ins):
    _mvn_axes(node, None)
    x = ins[0]
    require_dtype(node, x.dtype, FLOATS)
    _mvn_axes(node, len(x.shape))
    return [TensorType(x.shape, x.dtype)]


def mvn_lower(ctx, node):
    x, y = node.inputs[0], node.outputs[0]
    shape = ctx.shape(x)
    axes = _mvn_axes(node, len(shape))
    perm = [d for d in range(len(shape)) if d not in axes] + axes
    rows, length = math.prod(shape[d] for d in perm[:len(shape) - len(axes)]), math.prod(shape[d] for d in axes)
    moved = [d for d in perm if shape[d] != 1] != sorted(d for d in perm if shape[d] != 1)
    if not moved:
        _norm_kernel(ctx, node, x, "", "", [y], rows, 1, length, 1, 1e-9, MVN)
        return
    xt = move_axes_last(ctx, x, perm)
    yt = ctx.scratch(ctx.shape(xt), ctx.dtype(xt))
    _norm_kernel(ctx, node, xt, "", "", [yt], rows, 1, length, 1, 1e-9, MVN)
    views.transpose(ctx, yt, y, [perm.index(d) for d in range(len(shape))])


register("MeanVarianceNormalization", mvn_type, mvn_lower, check=lambda node: _mvn_axes(node, None))


# -- BatchNormalization --------------------------------------------------------------------------

def _batch_check(node):
    float_attr(node, "epsilon", 1e-5)
    float_attr(node, "momentum", 0.9)
    flag_attr(node, "training_mode", 0)


def batch_type(node, ins):
    _batch_check(node)
    x = ins[0]
    require_dtype(node, x.dtype, FLOATS)
    _, C, _ = _channels(node, x)
    if len(ins) < 5 or any(p is None for p in ins[1:5]):
        raise ShapeError(f"{where(node)}: needs X, scale, B, input_mean and input_var")
    for p, what in zip(ins[1:5], ("scale", "B", "input_mean", "input_var")):
        _param_type(node, x, p, what)
        if tuple(p.shape) != (C,):
            raise ShapeError(f"{where(node)}: {what} must have shape ({C},), got {p.shape}")
    training = flag_attr(node, "training_mode", 0)
    if not training and len(node.outputs) > 1:
        raise ShapeError(f"{where(node)}: running_mean / running_var are outputs of training_mode=1 only")
    stats = TensorType((C,), ins[3].dtype)
    return [TensorType(x.shape, x.dtype)] + [stats] * (len(node.outputs) - 1)


def batch_lower(ctx, node):
    x = node.inputs[0]
    N, C, S = _channels(node, ctx.types[x])
    half = Half(ctx)
    ins = _ins(ctx, node, half)[:5]
    eps = float_attr(node, "epsilon", 1e-5)
    y = half.output(node.outputs[0])
    if not flag_attr(node, "training_mode", 0):
        ctx.kernel("batchnorm", ins, [y], dtype=ctx.dtype(ins[0]), ints=[N, C, S], floats=[eps])
    else:
        outs = list(node.outputs[1:3]) + [""] * (3 - len(node.outputs))
        stats = [half.output(o) if o else ctx.scratch((C,), ctx.dtype(ins[0])) for o in outs]
        ctx.kernel("batchnorm_train", ins, [y] + stats, dtype=ctx.dtype(ins[0]), ints=[N, C, S],
                   floats=[eps, float_attr(node, "momentum", 0.9)])
    half.finish()


register("BatchNormalization", batch_type, batch_lower, check=_batch_check)


# -- KerasBatchNorm ------------------------------------------------------------------------------
# engine.nn's BatchNormalization in a training graph: KerasBatchNorm(x, gamma | "", beta | "",
# moving_mean, moving_variance) -> y, the channel axes being attrs axis (the first) and naxes
# (contiguous, default 1); every parameter has their shape. Attrs epsilon, momentum (Keras's:
# m = m·momentum + batch·(1 − momentum)), frozen (1: a layer with trainable=False, which uses
# the moving statistics in training too). Lowered here with the moving statistics (inference);
# training uses batch statistics through the training form in norm_grad.py.

def _keras_bn_check(node):
    int_attr(node, "axis")
    if int_attr(node, "naxes", 1) < 1:
        raise GraphError(f"{where(node)}: naxes must be >= 1")
    float_attr(node, "epsilon", 1e-3)
    momentum = float_attr(node, "momentum", 0.99)
    if not 0 <= momentum <= 1:
        raise GraphError(f"{where(node)}: momentum must be in [0, 1], got {momentum}")
    flag_attr(node, "frozen", 0)


def channel_view(node, shape) -> tuple[int, int, int]:
    """(N, C, S) of `shape` around its channel axes attrs (axis, naxes): N the size before
    them, C theirs, S after them."""
    rank = len(shape)
    axis = axis_of(node, int_attr(node, "axis"), max(rank, 1))
    end = axis + int_attr(node, "naxes", 1)
    if end > rank:
        raise ShapeError(f"{where(node)}: channel axes {axis}..{end - 1} exceed the input's rank {rank}")
    return math.prod(shape[:axis]), math.prod(shape[axis:end]), math.prod(shape[end:])


def channel_shape(node, shape) -> tuple:
    axis = axis_of(node, int_attr(node, "axis"), max(len(shape), 1))
    return tuple(shape[axis:axis + int_attr(node, "naxes", 1)])


def keras_bn_type(node, ins):
    _keras_bn_check(node)
    x = ins[0]
    require_dtype(node, x.dtype, ("float32",))
    if len(ins) != 5 or ins[3] is None or ins[4] is None:
        raise ShapeError(f"{where(node)}: expects inputs [x, gamma, beta, moving_mean, moving_variance] "
                         "(gamma / beta may be absent)")
    channel_view(node, x.shape)
    want = channel_shape(node, x.shape)
    for p, what in zip(ins[1:], ("gamma", "beta", "moving_mean", "moving_variance")):
        if p is None:
            continue
        require_dtype(node, p.dtype, ("float32",), what)
        if tuple(p.shape) != want:
            raise ShapeError(f"{where(node)}: {what} must have shape {want} (the channel axes of X {x.shape}), "
                             f"got {p.shape}")
    return [TensorType(x.shape, x.dtype)]


def keras_bn_lower(ctx, node):
    x, gamma, beta, mean, var = node.inputs
    N, C, S = channel_view(node, ctx.shape(x))
    if not N * C * S:
        return
    gamma = gamma or ctx.constant(np.ones(C, np.float32))
    beta = beta or ctx.constant(np.zeros(C, np.float32))
    ctx.kernel("batchnorm", [x, gamma, beta, mean, var], node.outputs[:1], ints=[N, C, S],
               floats=[float_attr(node, "epsilon", 1e-3)])


register("KerasBatchNorm", keras_bn_type, keras_bn_lower, check=_keras_bn_check)


# -- LRN -----------------------------------------------------------------------------------------

def _lrn_check(node):
    if "size" not in node.attrs:
        raise GraphError(f"{where(node)}: attribute 'size' is required")
    if int_attr(node, "size") < 1:
        raise GraphError(f"{where(node)}: size must be >= 1")
    for key, default in (("alpha", 1e-4), ("beta", 0.75), ("bias", 1.0)):
        float_attr(node, key, default)


def lrn_type(node, ins):
    _lrn_check(node)
    require_dtype(node, ins[0].dtype, FLOATS)
    _channels(node, ins[0])
    return [TensorType(ins[0].shape, ins[0].dtype)]


def lrn_lower(ctx, node):
    N, C, S = _channels(node, ctx.types[node.inputs[0]])
    half = Half(ctx)
    x, y = half.input(node.inputs[0]), half.output(node.outputs[0])
    ctx.kernel("lrn", [x], [y], ints=[N, C, S, int_attr(node, "size")],
               floats=[float_attr(node, "alpha", 1e-4), float_attr(node, "beta", 0.75), float_attr(node, "bias", 1.0)])
    half.finish()


register("LRN", lrn_type, lrn_lower, check=_lrn_check)


# -- LpNormalization -----------------------------------------------------------------------------

def _lp_check(node):
    int_attr(node, "axis", -1)
    int_attr(node, "p", 2, (1, 2))


def lp_type(node, ins):
    _lp_check(node)
    require_dtype(node, ins[0].dtype, FLOATS)
    if not ins[0].shape:
        raise ShapeError(f"{where(node)}: X must have rank >= 1")
    axis_of(node, int_attr(node, "axis", -1), len(ins[0].shape))
    return [TensorType(ins[0].shape, ins[0].dtype)]


def lp_lower(ctx, node):
    shape = ctx.shape(node.inputs[0])
    axis = axis_of(node, int_attr(node, "axis", -1), len(shape))
    half = Half(ctx)
    x, y = half.input(node.inputs[0]), half.output(node.outputs[0])
    ctx.kernel("lp_norm", [x], [y], ints=[math.prod(shape[:axis]), shape[axis], math.prod(shape[axis + 1:]),
                                          int_attr(node, "p", 2)])
    half.finish()


register("LpNormalization", lp_type, lp_lower, check=_lp_check)
