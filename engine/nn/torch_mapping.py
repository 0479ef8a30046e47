"""A PyTorch state dict onto an engine.nn model: `net.load_state_dict("model.pth")`.

Torch names parameters by module path ('layer1.weight', 'features.0.bias'); engine.nn layers
have their own names. So parameters are grouped by module (one group per layer of a
multi-layer RNN), and groups are matched to the model's layers that have weights: a group
whose module path is a layer's name goes to that layer; the others in order (registration
order = the order torch writes them), each layer taking the first remaining group whose
parameters fit its weights. Each mapping converts torch's layout to Keras's, which is what
`layer.set_weights` takes (see docs/torch.md for the table):

    Linear (out, in)            -> Dense kernel (in, out); rows permuted after a Flatten of
                                   a conv feature map (torch flattens C,H,W; engine H,W,C)
    Conv{1,2,3}d (O, I, *K)     -> Conv{1,2,3}D kernel (*K, I, O)
    ConvTranspose (I, O, *K)    -> Conv{1,2,3}DTranspose kernel (*K, O, I)
    BatchNorm weight, bias, running_mean, running_var -> gamma, beta, moving_mean, moving_variance
    LSTM gates i,f,g,o          -> kernel/recurrent_kernel transposed (Keras i,f,c,o: same
                                   order), bias_ih + bias_hh summed
    GRU gates r,z,n             -> Keras z,r,h; bias rows [input, recurrent] (reset_after=True)
    RNN                         -> SimpleRNN, biases summed
    LayerNorm, GroupNorm, Embedding, PReLU: same values, PReLU broadcast to Keras's alpha

Layers are looked up by class name, so a layer class that arrives later maps as soon as it
exists. Nothing changes unless every layer maps: weights are set only at the end.
"""

from __future__ import annotations

import math
import os
import re
import warnings
from collections import OrderedDict, namedtuple
from typing import Callable, Optional

import numpy as np

from ..errors import EngineError, ModelFormatError, ShapeError

IncompatibleKeys = namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])

# weight_ih_l0, bias_hh_l1_reverse, weight_hr_l0 (projections): one group per RNN layer
_RNN_PARAM = re.compile(r"^(weight|bias)_(ih|hh|hr)_l(\d+)(_reverse)?$")
_IGNORED = ("num_batches_tracked",)  # BatchNorm's step counter: no meaning at inference
_TORCH_EPS = 1e-5  # torch's BatchNorm/LayerNorm/GroupNorm default (Keras's is 1e-3)


class _NoFit(Exception):
    """This group's parameters do not fit this layer (message: key, expected vs got)."""


class _Group:
    """The parameters of one torch module: local name ('weight', 'bias_hh_reverse') -> array."""

    def __init__(self, prefix: str):
        self.prefix = prefix
        self.params: dict[str, np.ndarray] = {}
        self.keys: dict[str, str] = {}     # local name -> the state dict's key
        self.ignored: list[str] = []
        self.used: set[str] = set()

    def key(self, local: str) -> str:
        return self.keys.get(local, f"{self.prefix}.{local}" if self.prefix else local)

    def take(self, local: str, shape: tuple, default: Optional[float] = None) -> np.ndarray:
        """The parameter `local`, which must have `shape` (torch layout); `default` fills a
        parameter the module does not have (bias=False, affine=False: exactly equivalent)."""
        if local not in self.params:
            if default is not None:
                return np.full(shape, default, np.float32)
            raise _NoFit(f"no parameter '{self.key(local)}' (expected shape {tuple(shape)})")
        a = self.params[local]
        if a.shape != tuple(shape):
            raise _NoFit(f"'{self.key(local)}' has shape {a.shape}, expected {tuple(shape)}")
        self.used.add(local)
        return a

    def leftover(self) -> list[str]:
        return [self.keys[k] for k in self.params if k not in self.used]

    def __repr__(self) -> str:
        return f"<torch module '{self.prefix}': {sorted(self.params)}>"


class _Expected(_Group):
    """Records what a mapping asks for (to say which torch parameters a layer expects)."""

    def __init__(self):
        super().__init__("<module>")
        self.asked: list[str] = []

    def take(self, local, shape, default=None):
        self.asked.append(f"{local} {tuple(shape)}")
        return np.zeros(shape, np.float32)


# -- the state dict -----------------------------------------------------------------------------

def _as_array(v, key: str, source: str) -> np.ndarray:
    if isinstance(v, np.ndarray):
        return v
    if hasattr(v, "detach") and hasattr(v, "numpy"):  # a torch tensor (torch is not imported here)
        t = v.detach().cpu()
        if str(t.dtype) == "torch.bfloat16":
            t = t.float()
        return t.numpy()
    if isinstance(v, dict):
        raise EngineError(f"{source}: '{key}' holds a nested dict ({list(v)[:4]}...), not a tensor: "
                          f"this looks like a checkpoint; pass its state dict (e.g. checkpoint[{key!r}])")
    a = np.asarray(v)
    if a.dtype.kind not in "biuf":
        raise EngineError(f"{source}: '{key}' holds a {type(v).__name__}, not a tensor")
    return a


def _read(state_dict) -> tuple[str, "OrderedDict[str, np.ndarray]"]:
    from ..formats import torch as torch_format

    if isinstance(state_dict, (str, os.PathLike, bytes, bytearray, memoryview)) or hasattr(state_dict, "read"):
        name = os.fspath(state_dict) if isinstance(state_dict, (str, os.PathLike)) else "<bytes>"
        if isinstance(state_dict, (str, os.PathLike)) and not os.path.exists(name):
            raise ModelFormatError(f"{name}: no such file or directory")
        return str(name), torch_format.read_state_dict(state_dict)
    if not hasattr(state_dict, "items"):
        raise EngineError(f"load_state_dict: expected a path, bytes or a mapping of names to tensors, "
                          f"got {type(state_dict).__name__}")
    out = OrderedDict()
    for k, v in state_dict.items():
        if not isinstance(k, str):
            raise EngineError(f"load_state_dict: key {k!r} is not a string")
        out[k] = _as_array(v, k, "state dict")
    return "state dict", out


def _groups(state: "OrderedDict[str, np.ndarray]") -> list[_Group]:
    groups: "OrderedDict[tuple, _Group]" = OrderedDict()
    for key, value in state.items():
        prefix, _, local = key.rpartition(".")
        m = _RNN_PARAM.match(local)
        gkey = (prefix, int(m.group(3)) if m else None)
        if m:
            local = f"{m.group(1)}_{m.group(2)}{m.group(4) or ''}"
        g = groups.get(gkey)
        if g is None:
            g = groups[gkey] = _Group(prefix)
        if local in _IGNORED:
            g.ignored.append(key)
        else:
            g.params[local], g.keys[local] = value, key
    return [g for g in groups.values() if g.params]


# -- Flatten after convolutions -----------------------------------------------------------------
# torch flattens (C, H, W) feature maps; engine.nn (like Keras) flattens (H, W, C). A Dense (or
# BatchNormalization) reading a flattened conv feature map gets its input features permuted.

_PASS_THROUGH = {"Activation", "ReLU", "LeakyReLU", "PReLU", "ELU", "Softmax", "Dropout",
                 "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D", "GaussianNoise",
                 "GaussianDropout", "AlphaDropout", "BatchNormalization", "LayerNormalization",
                 "GroupNormalization", "Rescaling", "Add", "Subtract", "Multiply", "Average",
                 "Maximum", "Minimum", "ActivityRegularization"}


def _is_conv_map(t) -> bool:
    """Whether tensor `t` is a channels-last feature map that torch holds channels-first."""
    while True:
        layer = t.layer
        if layer is None:  # a model input: image-like (N, H, W, C) inputs are NCHW in torch
            return len(t.shape) >= 4
        kind = type(layer).__name__
        if "Conv" in kind or ("Pooling" in kind and not kind.startswith("Global")) or \
                kind.startswith(("ZeroPadding", "Cropping", "UpSampling")):
            return True
        if kind not in _PASS_THROUGH or not t.parents:
            return False
        t = t.parents[0]


def _flatten_perms(model) -> dict[int, np.ndarray]:
    """layer id -> permutation of its input features (engine feature j = torch feature perm[j])
    for layers that read a flattened conv feature map."""
    from .models import _calls_in_order

    perms: dict[int, np.ndarray] = {}
    for call in _calls_in_order(model._trace()[1]):
        t = call.outputs[0]
        if not t.parents or id(t.layer) in perms:
            continue
        src = t.parents[0]
        while src.layer is not None and type(src.layer).__name__ in _PASS_THROUGH and src.parents:
            src = src.parents[0]
        if src.layer is None or not _flattens(src.layer) or not src.parents:
            continue
        fmap = src.parents[0]
        spatial, c = tuple(fmap.shape[1:-1]), fmap.shape[-1]
        if not spatial or None in spatial or c is None or not _is_conv_map(fmap) or math.prod(spatial) == 1:
            continue
        idx = np.arange(c * math.prod(spatial)).reshape((c,) + spatial)
        perms[id(t.layer)] = idx.transpose(tuple(range(1, len(spatial) + 1)) + (0,)).reshape(-1)
    return perms


def _flattens(layer) -> bool:
    kind = type(layer).__name__
    return kind == "Flatten" or (kind == "Reshape" and len(getattr(layer, "target_shape", ())) == 1)


# -- mappings: (layer, group, Keras weight shapes, input permutation) -> Keras weights ------------

def _dense(layer, g, shapes, perm):
    n_in, n_out = shapes[0]
    w = g.take("weight", (n_out, n_in))
    if perm is not None and len(perm) == n_in:
        w = w[:, perm]
    return [w.T] + ([g.take("bias", (n_out,), 0.0)] if len(shapes) > 1 else [])


def _conv(layer, g, shapes, perm):
    # Keras (*K, a, b) <- torch (b, a, *K): Conv (*K, in, out) <- (out, in, *K) and
    # ConvTranspose (*K, out, in) <- (in, out, *K) alike.
    k = tuple(shapes[0])
    nd = len(k) - 2
    w = g.take("weight", (k[-1], k[-2]) + k[:nd])
    out = [np.transpose(w, tuple(range(2, 2 + nd)) + (1, 0))]
    return out + ([g.take("bias", tuple(shapes[1]), 0.0)] if len(shapes) > 1 else [])


def _depthwise(layer, g, shapes, perm):
    # torch Conv with groups=C: (C*m, 1, *K), output channel c*m + j -> Keras (*K, C, m)
    k = tuple(shapes[0])
    nd = len(k) - 2
    c, m = k[-2], k[-1]
    w = g.take("weight", (c * m, 1) + k[:nd]).reshape((c, m) + k[:nd])
    out = [np.transpose(w, tuple(range(2, 2 + nd)) + (0, 1))]
    return out + ([g.take("bias", (c * m,), 0.0)] if len(shapes) > 1 else [])


def _norm_affine(layer, shapes, n_stats: int):
    """Which of gamma/beta the layer has (Keras's `scale`/`center`), checked against its count."""
    scale, center = bool(getattr(layer, "scale", True)), bool(getattr(layer, "center", True))
    n = len(shapes) - n_stats
    if scale + center != n:  # e.g. LayerNormalization(rms_scaling=True): gamma only
        if n not in (0, 1, 2):
            raise EngineError(f"{layer.name}: cannot tell which of gamma/beta its {len(shapes)} weights are")
        scale, center = (n == 2 or (n == 1 and scale)), (n == 2 or (n == 1 and not scale))
    return scale, center


def _batch_norm(layer, g, shapes, perm):
    scale, center = _norm_affine(layer, shapes, 2)
    n = tuple(shapes[-1])
    take = (lambda a: a[perm]) if perm is not None and len(perm) == n[-1] and len(n) == 1 else (lambda a: a)
    out = []
    if scale:
        out.append(take(g.take("weight", n, 1.0)))
    if center:
        out.append(take(g.take("bias", n, 0.0)))
    return out + [take(g.take("running_mean", n)), take(g.take("running_var", n))]


def _affine_norm(layer, g, shapes, perm):  # LayerNorm, GroupNorm: weight, bias as they are
    scale, center = _norm_affine(layer, shapes, 0)
    out = []
    if scale:
        out.append(g.take("weight", tuple(shapes[0]), 1.0))
    if center:
        out.append(g.take("bias", tuple(shapes[-1]), 0.0))
    return out


def _embedding(layer, g, shapes, perm):
    return [g.take("weight", tuple(shapes[0]))]


def _prelu(layer, g, shapes, perm):
    # torch: one slope, or one per channel (dim 1 of NCHW = engine's last axis); Keras: alpha of
    # the input's shape without batch (shared axes of size 1).
    a = tuple(shapes[0])
    w = g.params.get("weight")
    if w is not None and w.ndim == 1 and w.size == 1:
        return [np.full(a, g.take("weight", (1,))[0], np.float32)]
    c = a[-1] if a else 1
    return [np.broadcast_to(g.take("weight", (c,)), a).copy()]


def _biases(g, suffix, n):
    return g.take(f"bias_ih{suffix}", (n,), 0.0) + g.take(f"bias_hh{suffix}", (n,), 0.0)


def _lstm(layer, g, shapes, perm, suffix=""):
    # torch gates i,f,g,o are Keras's i,f,c,o: same order, transposed; one bias = b_ih + b_hh
    n_in, u4 = shapes[0]
    u = u4 // 4
    out = [g.take(f"weight_ih{suffix}", (u4, n_in)).T, g.take(f"weight_hh{suffix}", (u4, u)).T]
    return out + ([_biases(g, suffix, u4)] if len(shapes) > 2 else [])


def _gru(layer, g, shapes, perm, suffix=""):
    # torch gates r,z,n -> Keras z,r,h. torch applies the reset gate to (W_hn h + b_hn), which
    # is Keras's reset_after=True with bias rows [input, recurrent].
    n_in, u3 = shapes[0]
    u = u3 // 3
    if len(shapes) > 2 and tuple(shapes[2]) != (2, u3):
        raise EngineError(f"{layer.name}: a GRU with reset_after=False computes something else than "
                          "torch's nn.GRU (which resets after the recurrent product); build it with "
                          "reset_after=True (Keras's default)")

    def zrh(a):
        return np.concatenate([a[u:2 * u], a[:u], a[2 * u:]])

    out = [zrh(g.take(f"weight_ih{suffix}", (u3, n_in))).T, zrh(g.take(f"weight_hh{suffix}", (u3, u))).T]
    if len(shapes) > 2:
        out.append(np.stack([zrh(g.take(f"bias_ih{suffix}", (u3,), 0.0)),
                             zrh(g.take(f"bias_hh{suffix}", (u3,), 0.0))]))
    return out


def _simple_rnn(layer, g, shapes, perm, suffix=""):
    n_in, u = shapes[0]
    out = [g.take(f"weight_ih{suffix}", (u, n_in)).T, g.take(f"weight_hh{suffix}", (u, u)).T]
    return out + ([_biases(g, suffix, u)] if len(shapes) > 2 else [])


_RECURRENT = {"LSTM": _lstm, "GRU": _gru, "SimpleRNN": _simple_rnn}


def _inner(layer):
    inner = getattr(layer, "forward_layer", None) or getattr(layer, "layer", None)
    if inner is None:
        raise EngineError(f"{layer.name}: cannot find the layer that {type(layer).__name__} wraps")
    return inner


def _bidirectional(layer, g, shapes, perm):
    # Keras: the forward layer's weights, then the backward layer's; torch: *_l0, *_l0_reverse
    inner = _inner(layer)
    fn = _RECURRENT.get(type(inner).__name__)
    if fn is None:
        raise EngineError(f"{layer.name}: no torch mapping for Bidirectional({type(inner).__name__})")
    half = len(shapes) // 2
    return fn(inner, g, shapes[:half], None) + fn(inner, g, shapes[half:], None, "_reverse")


def _time_distributed(layer, g, shapes, perm):  # torch applies the module to every step as is
    inner = _inner(layer)
    fn = MAPPINGS.get(type(inner).__name__)
    if fn is None:
        raise EngineError(f"{layer.name}: no torch mapping for TimeDistributed({type(inner).__name__})")
    return fn(inner, g, shapes, None)


# engine.nn class name -> mapping (the torch module it takes)
MAPPINGS: dict[str, Callable] = {
    "Dense": _dense,                                             # Linear
    "Conv1D": _conv, "Conv2D": _conv, "Conv3D": _conv,           # Conv1d/2d/3d
    "Conv1DTranspose": _conv, "Conv2DTranspose": _conv, "Conv3DTranspose": _conv,  # ConvTranspose
    "DepthwiseConv1D": _depthwise, "DepthwiseConv2D": _depthwise,  # Conv with groups=channels
    "BatchNormalization": _batch_norm,                           # BatchNorm1d/2d/3d
    "LayerNormalization": _affine_norm, "GroupNormalization": _affine_norm,  # LayerNorm, GroupNorm
    "Embedding": _embedding,                                     # Embedding
    "PReLU": _prelu,                                             # PReLU
    "LSTM": _lstm, "GRU": _gru, "SimpleRNN": _simple_rnn,        # LSTM, GRU, RNN
    "Bidirectional": _bidirectional,                             # bidirectional=True
    "TimeDistributed": _time_distributed,
}
_EPSILON_LAYERS = ("BatchNormalization", "LayerNormalization", "GroupNormalization")


def _expects(layer, fn) -> str:
    """The torch parameters (layout and shape) a layer's mapping asks for, for messages."""
    rec = _Expected()
    try:
        fn(layer, rec, [tuple(w.shape) for w in layer.weights], None)
    except EngineError:
        return "?"
    return ", ".join(rec.asked)


# -- matching -----------------------------------------------------------------------------------

def load_state_dict(model, state_dict, strict: bool = True) -> IncompatibleKeys:
    """Set `model`'s weights from a torch state dict (path, bytes or mapping); see the module
    docstring. strict=False tolerates missing and unexpected parameters (as torch does) and
    layers with no mapping (left as they are)."""
    source, state = _read(state_dict)
    model._ensure_built()
    layers = [layer for layer in model.layers if layer.weights]
    groups = _groups(state)
    perms = _flatten_perms(model)
    names = {layer.name: layer for layer in layers}
    prefixes = [g.prefix for g in groups]
    pinned = {id(names[g.prefix]): g for g in groups if g.prefix in names and prefixes.count(g.prefix) == 1}
    free = [g for g in groups if g not in pinned.values()]
    new: list[tuple] = []
    missing: list[str] = []
    for layer in layers:
        kind = type(layer).__name__
        fn = MAPPINGS.get(kind)
        shapes = [tuple(w.shape) for w in layer.weights]
        if fn is None:
            if strict:
                raise EngineError(f"{source}: layer '{layer.name}' ({kind}) has no torch mapping "
                                  f"(mapped: {', '.join(sorted(MAPPINGS))}); pass strict=False to leave it as is")
            missing += [f"{layer.name}.{n}" for n in _weight_names(layer)]
            continue
        perm = perms.get(id(layer))
        candidates = [pinned[id(layer)]] if id(layer) in pinned else free
        first: Optional[str] = None
        for g in candidates:
            g.used = set()
            try:
                weights = fn(layer, g, shapes, perm)
            except _NoFit as e:
                first = first or str(e)
                continue
            got = [tuple(np.shape(w)) for w in weights]
            if got != shapes:  # a mapping's own slip; never silently set wrong shapes
                raise ShapeError(f"{source}: {layer.name}: mapped weights have shapes {got}, expected {shapes}")
            new.append((layer, weights, g))
            if g in free:
                free.remove(g)
            break
        else:
            if first is not None:
                raise ShapeError(f"{source}: layer '{layer.name}' ({kind}) expects torch parameters "
                                 f"[{_expects(layer, fn)}]: {first}")
            if strict:
                raise EngineError(f"{source}: missing parameters for layer '{layer.name}' ({kind}): it "
                                  f"expects [{_expects(layer, fn)}] but the state dict has no module "
                                  f"left ({len(groups)} modules with parameters for {len(layers)} layers)")
            missing += [f"{layer.name}.{n}" for n in _weight_names(layer)]
    unexpected = [k for g in free for k in list(g.keys.values()) + g.ignored]
    unexpected += [k for _, _, g in new for k in g.leftover()]
    if strict and unexpected:
        shown = ", ".join(f"'{k}' {tuple(state[k].shape)}" for k in unexpected[:8])
        more = f" and {len(unexpected) - 8} more" if len(unexpected) > 8 else ""
        raise EngineError(f"{source}: unexpected keys {shown}{more}: no layer of '{model.name}' takes "
                          "them; pass strict=False to ignore them")
    for layer, weights, _ in new:
        layer.set_weights([np.asarray(w, np.float32) for w in weights])
        _check_epsilon(layer)
    return IncompatibleKeys(missing, unexpected)


def _weight_names(layer) -> list[str]:
    names = list(getattr(layer, "weight_names", ()))
    return names[:len(layer.weights)] if len(names) >= len(layer.weights) else \
        [str(i) for i in range(len(layer.weights))]


def _check_epsilon(layer) -> None:
    eps = getattr(layer, "epsilon", None)
    if type(layer).__name__ in _EPSILON_LAYERS and isinstance(eps, float) and \
            not math.isclose(eps, _TORCH_EPS, rel_tol=1e-6):
        warnings.warn(f"{layer.name}: epsilon={eps}, but torch's normalisation layers default to "
                      f"eps={_TORCH_EPS}; if the torch module used its default, build the layer with "
                      f"epsilon={_TORCH_EPS} or outputs will differ", stacklevel=3)


__all__ = ["load_state_dict", "IncompatibleKeys", "MAPPINGS"]
