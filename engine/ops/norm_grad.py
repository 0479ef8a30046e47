"""Training of the normalisations (engine/ops/norm.py): batch norm with batch statistics and
moving statistics updated in place, layer / RMS norm backward, and the grad-only ops they
lower to (the native steps of csrc/runtime/kernels/grad_norm_steps.cpp). float32.

- KerasBatchNorm (engine.nn's BatchNormalization): in training, batch statistics (population
  variance) and Keras's momentum; a frozen layer (attr frozen, Keras's trainable=False) keeps
  its inference form and its gradient uses the moving statistics.
- BatchNormalization (ONNX, NCHW): torch's `model.train()`: batch statistics, the running
  variance updated with the unbiased batch variance, ONNX's momentum (torch's 1 − momentum).
  With settings["frozen_batchnorm"] true it keeps its inference form (torch's `eval()` BN).
- LayerNormalization / RMSNormalization: the forward keeps its per-row mean / inv_std
  (the normalize step's optional outputs) for `layernorm_grad`.

The moving statistics are written in place: the training step's output slots for them are
their input slots, so they must be graph inputs (state the caller binds). When they are
constants of the graph (a vjp of a model whose statistics are initializers) the step updates
scratch copies and the update is dropped.
"""

from __future__ import annotations

import math

from ..errors import DTypeError, ShapeError
from ..graph import Node
from . import views
from .grad_ops import _mask, _wanted, zero_fill
from .grad_registry import backward_rule, training_form
from .norm import channel_shape, channel_view, expand_to
from .reduce import axis_of, flag_attr, float_attr, int_attr, where
from .registry import Tensor, TensorType, get_op, register


def _float32(node, dtype: str, what: str = "X") -> None:
    if dtype != "float32":
        raise DTypeError(f"{where(node)}: training needs float32, {what} is {dtype}")


# -- BatchNormTrain(x, gamma | "", beta | "", running_mean, running_var) -> [y, mean, invstd] ---
# attrs axis, naxes (the channel axes, as KerasBatchNorm), epsilon, momentum (Keras's
# convention), unbiased (1: the running variance takes the unbiased batch variance, torch).
# mean / invstd: the batch statistics (C), for BatchNormGrad.

def bn_train_type(node, ins):
    x = ins[0]
    _float32(node, x.dtype)
    N, C, S = channel_view(node, x.shape)
    if N * S < 1 + int_attr(node, "unbiased", 0):
        raise ShapeError(f"{where(node)}: batch statistics need at least {1 + int_attr(node, 'unbiased', 0)} "
                         f"values per channel, got {N * S} (input {x.shape})")
    cs = channel_shape(node, x.shape)
    for p, what in zip(ins[1:5], ("gamma", "beta", "running_mean", "running_var")):
        if p is not None:
            _float32(node, p.dtype, what)
            if math.prod(p.shape) != C:
                raise ShapeError(f"{where(node)}: {what} must have {C} values (shape {cs}), got shape {p.shape}")
    if ins[3] is None or ins[4] is None:
        raise ShapeError(f"{where(node)}: the running mean and variance are required")
    stat = TensorType((C,), "float32")
    return [TensorType(x.shape, "float32"), stat, stat]


def _channels_last(ctx, x: str, N: int, C: int, S: int) -> str:
    """x (N, C, S) as (N·S, C) in scratch; x itself when S is 1."""
    if S == 1:
        return x
    out = ctx.scratch((N, S, C), "float32")
    views.permute(ctx, x, out, (N, C, S), (0, 2, 1))
    return out


def _channels_back(ctx, t: str, out: str, N: int, C: int, S: int) -> None:
    if t != out:
        views.permute(ctx, t, out, (N, S, C), (0, 2, 1))


def _state(ctx, name: str, C: int) -> str:
    """A running statistic's slot for an in-place update: the input itself, or a scratch copy
    of a graph constant (whose update is then dropped)."""
    if ctx.value(name) is None:
        return name
    copy = ctx.scratch((C,), "float32")
    views.copy_view(ctx, name, copy, (C,), [1])
    return copy


def bn_train_lower(ctx, node):
    x, gamma, beta, rm, rv = node.inputs
    N, C, S = channel_view(node, ctx.shape(x))
    y, mean, invstd = (list(node.outputs) + ["", ""])[:3]
    mean = mean or ctx.scratch((C,), "float32")
    invstd = invstd or ctx.scratch((C,), "float32")
    rm, rv = _state(ctx, rm, C), _state(ctx, rv, C)
    xt = _channels_last(ctx, x, N, C, S)
    yt = y if S == 1 else ctx.scratch((N, S, C), "float32")
    ctx.kernel("batchnorm_train_fwd", [xt, gamma, beta, rm, rv], [yt, mean, invstd, rm, rv],
               ints=[N * S, C, int_attr(node, "unbiased", 0)],
               floats=[float_attr(node, "epsilon", 1e-3), float_attr(node, "momentum", 0.99)])
    _channels_back(ctx, yt, y, N, C, S)


register("BatchNormTrain", bn_train_type, bn_train_lower)


# -- BatchNormGrad(dy, x, gamma | "", mean, stat) -> [dx, dgamma, dbeta] ("" when unwanted) -----
# attrs axis, naxes, epsilon, batch_stats (1: mean / stat are BatchNormTrain's mean / invstd;
# 0: the moving mean and variance). dgamma / dbeta have the channel axes' shape.

def bn_grad_type(node, ins):
    for t in ins:
        if t is not None:
            _float32(node, t.dtype, "an input")
    x = ins[1]
    channel_view(node, x.shape)
    cs = channel_shape(node, x.shape)
    return [TensorType(x.shape, "float32"), TensorType(cs, "float32"), TensorType(cs, "float32")]


def bn_grad_lower(ctx, node):
    dy, x, gamma, mean, stat = node.inputs
    N, C, S = channel_view(node, ctx.shape(x))
    wanted = _wanted(node)
    if not wanted:
        return
    dx = node.outputs[0]
    dyt, xt = _channels_last(ctx, dy, N, C, S), _channels_last(ctx, x, N, C, S)
    dxt = dx if not dx or S == 1 else ctx.scratch((N, S, C), "float32")
    outs = [dxt] + [o for o in node.outputs[1:] if o] if dx else wanted
    ctx.kernel("batchnorm_grad", [dyt, xt, gamma, mean, stat], outs,
               ints=[N * S, C, int_attr(node, "batch_stats", 1), _mask(node)],
               floats=[float_attr(node, "epsilon", 1e-3)])
    if dx:
        _channels_back(ctx, dxt, dx, N, C, S)


register("BatchNormGrad", bn_grad_type, bn_grad_lower)


def _bn_attrs(node, **extra) -> dict:
    return {"axis": int(node.attrs["axis"]), "naxes": int(node.attrs.get("naxes", 1)), **extra}


def _bn_backward(gb, node, dy: str, x: str, gamma: str, beta: str, mean: str, stat: str, batch: int,
                 attrs: dict) -> list:
    """[dx, dgamma, dbeta] through BatchNormGrad, each None unless wanted; dgamma / dbeta
    reshaped to the parameters' own shapes."""
    want = [gb.needs(x), gb.needs(gamma), gb.needs(beta)]
    if not any(want):
        return [None, None, None]
    base = f"grad/{node.outputs[0]}"
    outs = [gb.fresh(f"{base}/{k}") if w else "" for k, w in zip(("dx", "dgamma", "dbeta"), want)]
    gb.node("BatchNormGrad", [dy, x, gamma, mean, stat], outs, {**attrs, "batch_stats": batch})
    grads = [o or None for o in outs]
    for k, p in ((1, gamma), (2, beta)):
        if grads[k] is not None and gb.shape(grads[k]) != gb.shape(p):
            grads[k] = gb.node("Reshape", [grads[k]], attrs={"shape": list(gb.shape(p))})
    return grads


def _checked(gb, node) -> None:
    """The node's own type rule on its inputs, so a bad node is named as the graph has it."""
    op = get_op(node.op, node.name)
    if op.check is not None:
        op.check(node)
    op.infer(node, [Tensor(gb.shape(i), gb.dtype(i), gb.value(i)) if i else None for i in node.inputs])


@training_form("KerasBatchNorm")
def keras_bn_training(gb, node):
    _checked(gb, node)
    if flag_attr(node, "frozen", 0):  # Keras: a frozen BatchNormalization runs in inference mode
        gb.add(_copy(gb, node))
        return
    attrs = _bn_attrs(node, epsilon=float_attr(node, "epsilon", 1e-3), momentum=float_attr(node, "momentum", 0.99),
                      unbiased=0)
    _emit_train(gb, node, list(node.inputs), attrs)


def _copy(gb, node, outputs=None) -> Node:
    """node as it is (or with `outputs`), keeping its name."""
    outputs = list(node.outputs if outputs is None else outputs)
    gb._names.update([node.name] + [o for o in outputs if o])
    return Node(node.op, list(node.inputs), outputs, dict(node.attrs), node.name)


def _emit_train(gb, node, inputs: list, attrs: dict) -> None:
    y = node.outputs[0]
    probe = Node("BatchNormTrain", [], [], attrs, node.name)
    N, C, S = channel_view(probe, gb.shape(inputs[0]))
    if N * S < 1 + attrs["unbiased"]:
        raise ShapeError(f"{where(node)}: training with batch statistics needs at least {1 + attrs['unbiased']} "
                         f"values per channel, got {N * S} (input {gb.shape(inputs[0])})")
    gb.node("BatchNormTrain", inputs, [y, gb.fresh(f"{y}/batch_mean"), gb.fresh(f"{y}/batch_invstd")], attrs)


@backward_rule("BatchNormTrain")
def bn_train_backward(gb, node, dys):
    x, gamma, beta = node.inputs[:3]
    attrs = {k: node.attrs[k] for k in ("axis", "naxes", "epsilon")}
    return _bn_backward(gb, node, dys[0], x, gamma, beta, node.outputs[1], node.outputs[2], 1, attrs) + [None, None]


@backward_rule("KerasBatchNorm")
def keras_bn_backward(gb, node, dys):
    """A frozen layer (inference form): the moving statistics are constants of the step."""
    x, gamma, beta, mm, mv = node.inputs
    attrs = _bn_attrs(node, epsilon=float_attr(node, "epsilon", 1e-3))
    return _bn_backward(gb, node, dys[0], x, gamma, beta, mm, mv, 0, attrs) + [None, None]


@training_form("BatchNormalization")
def onnx_bn_training(gb, node):
    if gb.settings.get("frozen_batchnorm"):
        gb.add(_copy(gb, node))
        return
    if len([o for o in node.outputs if o]) > 1:
        raise ShapeError(f"{where(node)}: the running_mean / running_var outputs (training_mode=1) are not "
                         "supported in a training graph: the running statistics are updated in place")
    _checked(gb, node)
    for name, what in zip(node.inputs[:5], ("X", "scale", "B", "input_mean", "input_var")):
        _float32(node, gb.dtype(name), what)
    attrs = {"axis": 1, "naxes": 1, "epsilon": float_attr(node, "epsilon", 1e-5),
             "momentum": float_attr(node, "momentum", 0.9), "unbiased": 1}
    _emit_train(gb, node, list(node.inputs[:5]), attrs)


@backward_rule("BatchNormalization")
def onnx_bn_backward(gb, node, dys):
    """Inference form (settings["frozen_batchnorm"]): the running statistics are constants."""
    if flag_attr(node, "training_mode", 0):
        raise ShapeError(f"{where(node)}: training_mode=1 nodes are differentiated through their training form")
    x, scale, bias, mean, var = node.inputs[:5]
    _float32(node, gb.dtype(x))
    attrs = {"axis": 1, "naxes": 1, "epsilon": float_attr(node, "epsilon", 1e-5)}
    return _bn_backward(gb, node, dys[0], x, scale, bias, mean, var, 0, attrs) + [None, None]


# -- LayerNormGrad(dy, x, gamma, mean | "", invstd) -> [dx, dgamma, dbeta] -------------------
# attrs axis (the first normalised axis), rms. gamma broadcasts to x.shape[axis:]; dgamma /
# dbeta have that shape.

def ln_grad_type(node, ins):
    for t in ins:
        if t is not None:
            _float32(node, t.dtype, "an input")
    x = ins[1]
    axis = axis_of(node, int_attr(node, "axis"), len(x.shape))
    inner = TensorType(x.shape[axis:], "float32")
    return [TensorType(x.shape, "float32"), inner, inner]


def ln_grad_lower(ctx, node):
    dy, x, gamma, mean, invstd = node.inputs
    shape = ctx.shape(x)
    axis = axis_of(node, int_attr(node, "axis"), len(shape))
    rows, D = math.prod(shape[:axis]), math.prod(shape[axis:])
    wanted = _wanted(node)
    if not wanted:
        return
    if not rows * D:
        for o in wanted:
            zero_fill(ctx, o)
        return
    rms = int_attr(node, "rms", 0)
    ctx.kernel("layernorm_grad", [dy, x, expand_to(ctx, gamma, shape[axis:]), "" if rms else mean, invstd],
               wanted, ints=[rows, D, rms, _mask(node)])


register("LayerNormGrad", ln_grad_type, ln_grad_lower)


@training_form("LayerNormalization", "RMSNormalization")
def layer_norm_training(gb, node):
    """The forward with its per-row statistics (the graph's own Mean / InvStdDev outputs when
    it names them)."""
    x = node.inputs[0]
    if gb.dtype(x) != "float32":  # not trainable here; the backward rule says so if it is reached
        gb.add(_copy(gb, node))
        return
    y = node.outputs[0]
    outs = (list(node.outputs) + ["", ""])[:3]
    if node.op == "LayerNormalization":
        outs[1] = outs[1] or gb.fresh(f"{y}/mean")
    outs[2] = outs[2] or gb.fresh(f"{y}/invstd")
    gb.add(_copy(gb, node, outs))


@backward_rule("LayerNormalization", "RMSNormalization")
def layer_norm_backward(gb, node, dys):
    x, scale = node.inputs[:2]
    bias = node.inputs[2] if node.op == "LayerNormalization" and len(node.inputs) > 2 else ""
    _float32(node, gb.dtype(x))
    for p, what in ((scale, "Scale"), (bias, "B")):
        if p:
            _float32(node, gb.dtype(p), what)
    outs = (list(node.outputs) + ["", ""])[:3]
    rms = node.op == "RMSNormalization"
    if not outs[2] or (not rms and not outs[1]):
        raise ShapeError(f"{where(node)}: the backward needs the forward's per-row statistics (its training form "
                         "was not applied)")
    if any(d is not None for d in dys[1:]):
        raise ShapeError(f"{where(node)}: gradients through the Mean / InvStdDev outputs are not supported")
    shape = gb.shape(x)
    axis = axis_of(node, int_attr(node, "axis", -1), len(shape))
    want = [gb.needs(x), gb.needs(scale), bool(bias) and gb.needs(bias)]
    if not any(want):
        return [None, None, None]
    base = f"grad/{node.outputs[0]}"
    names = [gb.fresh(f"{base}/{k}") if w else "" for k, w in zip(("dx", "dscale", "dbias"), want)]
    gb.node("LayerNormGrad", [dys[0], x, scale, "" if rms else outs[1], outs[2]], names,
            {"axis": axis, "rms": int(rms)})
    grads = [n or None for n in names]
    for k, p in ((1, scale), (2, bias)):
        if grads[k] is not None:
            grads[k] = _to_param(gb, grads[k], gb.shape(p), len(shape) - axis)
    return grads


def _to_param(gb, grad: str, pshape: tuple, inner_rank: int) -> str:
    """A gradient over x.shape[axis:] summed to a parameter of shape `pshape` that broadcasts
    to it (leading dims of pshape beyond inner_rank are 1)."""
    core = ((1,) * inner_rank + tuple(pshape))[-inner_rank:] if inner_rank else ()
    g = gb.sum_to(grad, core)
    if gb.shape(g) != tuple(pshape):
        g = gb.node("Reshape", [g], attrs={"shape": list(pshape)})
    return g

