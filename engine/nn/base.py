"""The base of engine.nn: `Layer` (weights in Keras's order and layouts, symbolic calls,
Keras masks) and the `GraphBuilder` that layers emit engine graph nodes into.

A layer call `layer(x, mask=..., initial_state=...)` on symbolic tensors records a `Call`;
a model emits every call once, in topological order, through `Layer.emit_call`, which for
the common one-in-one-out layer is `emit(g, x, out)`. Masks follow Keras: a tensor carries
the mask of the call that made it (`KerasTensor.mask`); a call reads the mask of its input
unless one is passed explicitly (and only when the call has one tensor argument), and a
layer with `supports_masking` hands a mask on through `compute_mask`.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import re
from collections import defaultdict
from typing import Optional

import numpy as np

from ..errors import EngineError, ShapeError, UnsupportedOpError
from ..graph import Node
from .tensor import KerasTensor

_name_counts: dict[str, itertools.count] = defaultdict(itertools.count)

# Weight values layers may still create (None: no limit); see weight_budget().
_budget: list = [None]


@contextlib.contextmanager
def weight_budget(values: int):
    """Within this block, layers may create at most `values` weight values in all (the Keras
    reader: every weight must come from the file, so the file's size bounds them)."""
    old, _budget[0] = _budget[0], values
    try:
        yield
    finally:
        _budget[0] = old

# Incremented whenever any layer's weights change: a model compares it with the value it saw
# when it built its runtime, and only then looks at its own layers' versions.
_weights_epoch = [0]


def _bump_weights_epoch() -> None:
    _weights_epoch[0] += 1


def weights_epoch() -> int:
    return _weights_epoch[0]


def snake_case(name: str) -> str:
    """Keras's `to_snake_case` (auto names, and the folder names of .keras weight files)."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def _auto_name(base: str) -> str:
    n = next(_name_counts[base])
    return base if n == 0 else f"{base}_{n}"


def int_tuple(v, n: int, what: str, minimum: int = 1) -> tuple:
    """Keras's standardize_tuple: an int or n ints, each >= minimum."""
    t = (v,) * n if isinstance(v, int) and not isinstance(v, bool) else tuple(v) if isinstance(v, (list, tuple)) else None
    if t is None or len(t) != n or not all(isinstance(i, int) and not isinstance(i, bool) and i >= minimum
                                           for i in t):
        raise EngineError(f"{what} must be an int or {n} ints >= {minimum}, got {v!r}")
    return t


def check_data_format(data_format, where: str) -> None:
    if data_format not in (None, "channels_last"):
        raise UnsupportedOpError(f"{where}: data_format={data_format!r} is not supported; engine.nn "
                                 "layers are channels_last (NHWC), Keras's default")


# Keras dtype policies: weights and computation are float32 here whatever the policy says.
_POLICIES = ("float32", "float16", "bfloat16", "float64", "mixed_float16", "mixed_bfloat16")


def dtype_policy(dtype, where: str) -> str:
    if dtype is None:
        return "float32"
    if isinstance(dtype, dict):  # {"class_name": "DTypePolicy", "config": {"name": ...}}
        if dtype.get("class_name") not in (None, "DTypePolicy", "Policy", "FloatDTypePolicy"):
            raise UnsupportedOpError(f"{where}: dtype policy {dtype.get('class_name')!r} (quantized "
                                     "layers) is not supported")
        dtype = dtype.get("config", {}).get("name")
    name = getattr(dtype, "name", dtype)
    if name not in _POLICIES:
        raise UnsupportedOpError(f"{where}: dtype {dtype!r} is not supported (supported: {', '.join(_POLICIES)}; "
                                 "weights and computation are float32)")
    return name


class GraphBuilder:
    """Collects the nodes and weights that layers emit."""

    def __init__(self, training: bool = False):
        # training: emit the training graph's forward. Weights are then trained values, not
        # constants: a layer expresses any transform of its weights (a reshape, a gate
        # reorder) as nodes, and layers that act differently in training (Dropout,
        # BatchNormalization) emit their training ops.
        self.training = training
        self.nodes: list[Node] = []
        self.weights: dict[str, np.ndarray] = {}
        self.dtypes: dict[str, str] = {}  # element types of values known while emitting (inputs)
        self._names: set = set()

    def node(self, op: str, inputs: list, output, attrs: Optional[dict] = None,
             name: Optional[str] = None):
        """Add a node; `output` is a value name (returned) or a list of them (returned).
        Node names stay unique (passes key rewrites by them)."""
        outs = [output] if isinstance(output, str) else list(output)
        name = name or next(o for o in outs if o)
        base, k = name, 1
        while name in self._names:
            name, k = f"{base}#{k}", k + 1
        self._names.add(name)
        self.nodes.append(Node(op, list(inputs), outs, attrs or {}, name))
        return output

    def const(self, name: str, value) -> str:
        """A constant value (a shape, pads, a scalar) as a graph weight named `name`."""
        self.weights[name] = np.asarray(value)
        return name


class Call:
    """One call of a layer on symbolic tensors."""

    def __init__(self, layer, inputs: list, single: bool, masks: list, input_masks: list,
                 extra: dict):
        self.layer = layer
        self.inputs = inputs            # positional tensors (one, or the list a merge layer takes)
        self.single = single            # called on one tensor rather than a list
        self.masks = masks              # per input: the mask the call uses (explicit or the input's)
        self.input_masks = input_masks  # per input: the input's own mask (Keras's previous_mask)
        self.extra = extra              # name -> tensor or list of tensors (initial_state, ...)
        self.outputs: list[KerasTensor] = []

    @property
    def parents(self) -> list:
        seen, out = set(), []
        extra = [t for v in self.extra.values() for t in (v if isinstance(v, list) else [v])]
        for t in list(self.inputs) + list(self.masks) + list(self.input_masks) + extra:
            if t is not None and id(t) not in seen:
                seen.add(id(t))
                out.append(t)
        return out


class Layer:
    """Base class: subclasses define build(), compute_output_shape() and emit().

    Weights: `build` creates them with `self._create([(name, shape, initializer), ...])`; layers made of
    other layers (Bidirectional, TimeDistributed) list them in `_sublayers`, whose weights
    follow the layer's own, in Keras's order.
    """

    supports_masking = False   # hand the input's mask on (compute_mask)
    consumes_mask = False      # emit() takes the mask the call uses
    is_op = False              # a Keras op (NotEqual, ...), not a layer: no weights, not in model.layers
    accepts_ids = False        # reads integer ids (an Input it alone reads becomes int64)

    def __init__(self, name: Optional[str] = None, trainable: bool = True, dtype=None,
                 autocast: bool = True, activity_regularizer=None, input_shape=None,
                 input_dim: Optional[int] = None, batch_input_shape=None,
                 batch_size: Optional[int] = None, weights=None, **unsupported):
        if unsupported:
            raise EngineError(f"{type(self).__name__}: unsupported argument(s) {sorted(unsupported)}")
        if name is not None and (not isinstance(name, str) or not name):
            raise EngineError(f"{type(self).__name__}: name must be a non-empty string, got {name!r}")
        self.name = name or _auto_name(snake_case(type(self).__name__))
        self.dtype_policy = dtype_policy(dtype, self.name)
        if input_dim is not None and input_shape is None:
            input_shape = (input_dim,)
        if batch_input_shape is not None:
            self.input_shape_arg = tuple(batch_input_shape)
        elif input_shape is not None:
            shape = (input_shape,) if isinstance(input_shape, int) else tuple(input_shape)
            self.input_shape_arg = (batch_size,) + shape
        else:
            self.input_shape_arg = None
        self.trainable = trainable
        self.activity_regularizer = activity_regularizer  # training only
        self._weights: list[np.ndarray] = []
        self.weight_names: tuple = ()
        self._sublayers: list[Layer] = []
        self._own_version = 0  # bumped on every change, so models holding a plan rebuild it
        self._initial_weights = weights
        self.built = False
        self.input_shape: Optional[tuple] = None
        self.output_shape: Optional[tuple] = None

    # -- subclass API -------------------------------------------------------------------
    def build(self, input_shape) -> None:
        """Create weights for this input shape (batch dim None; a list for a merge layer)."""

    def compute_output_shape(self, input_shape):
        """The output shape, or a list of them for a layer with several outputs."""
        return input_shape

    def compute_output_dtype(self, input_dtype: str) -> str:
        return "float32"

    def compute_mask(self, inputs, mask):
        """The output mask(s) from the inputs' own masks (called when supports_masking);
        may call op layers (engine.nn.ops) on symbolic tensors to make a new mask."""
        return mask

    def emit(self, g: GraphBuilder, x, out: str, mask: Optional[str] = None):
        """Add this layer's nodes reading value `x` (a list for a merge layer); return the
        output value (named `out`: the layer's name, or a derived one for a shared layer's
        later calls), or a list of them. `mask` is passed when `consumes_mask`."""
        raise NotImplementedError

    def emit_call(self, g: GraphBuilder, call: Call, name_of, out: str) -> list:
        """Emit one call; `name_of(tensor)` is the value of an already emitted tensor."""
        x = name_of(call.inputs[0]) if call.single else [name_of(t) for t in call.inputs]
        if self.consumes_mask:
            masks = [None if m is None else name_of(m) for m in call.masks]
            y = self.emit(g, x, out, mask=masks[0] if call.single else masks)
        else:
            y = self.emit(g, x, out)
        return y if isinstance(y, list) else [y]

    def _call_extra(self, kwargs: dict) -> dict:
        """Tensor arguments besides the inputs and mask (RNN initial_state); none by default."""
        if kwargs:
            raise EngineError(f"{self.name}: unsupported call argument(s) {sorted(kwargs)}")
        return {}

    # -- calling on symbolic tensors -------------------------------------------------------
    def __call__(self, inputs, mask=None, training=None, **kwargs):
        single = isinstance(inputs, KerasTensor)
        xs = [inputs] if single else list(inputs) if isinstance(inputs, (list, tuple)) else None
        if not xs or not all(isinstance(t, KerasTensor) for t in xs):
            raise EngineError(f"{self.name}: call a layer on a symbolic tensor from Input() (or a list "
                              f"of them), got {type(inputs).__name__}; to run a model use model.predict(x)")
        extra = self._call_extra(dict(kwargs))
        input_masks = [t.mask for t in xs]
        if mask is not None:
            masks = [mask] if single else list(mask)
            if len(masks) != len(xs) or not all(m is None or isinstance(m, KerasTensor) for m in masks):
                raise EngineError(f"{self.name}: mask must be a symbolic tensor per input")
        elif extra:  # Keras fills `mask` in only when the call has a single tensor argument
            masks = [None] * len(xs)
        else:
            masks = list(input_masks)
        shape = xs[0].shape if single else [t.shape for t in xs]
        self._build_for(shape)
        out_shapes = self.compute_output_shape(shape)
        multi = isinstance(out_shapes, list)
        out_shapes = out_shapes if multi else [out_shapes]
        call = Call(self, xs, single, masks, input_masks, extra)
        dtype = self.compute_output_dtype(xs[0].dtype)
        call.outputs = [KerasTensor(s, dtype, call, i, self.name) for i, s in enumerate(out_shapes)]
        self.output_shape = tuple(out_shapes[0]) if not multi else [tuple(s) for s in out_shapes]
        if self.supports_masking:
            out_masks = self.compute_mask(inputs, input_masks[0] if single else input_masks)
            if not isinstance(out_masks, (list, tuple)):
                out_masks = [out_masks] + [None] * (len(call.outputs) - 1)
            for t, m in zip(call.outputs, out_masks):
                t.mask = m
        return call.outputs if multi else call.outputs[0]

    def _build_for(self, input_shape) -> None:
        def norm(s):
            return [tuple(i) for i in s] if isinstance(s, list) else tuple(s)

        if self.built:
            a, b = norm(input_shape), self.input_shape
            same = (len(a) == len(b) and all(tuple(x[1:]) == tuple(y[1:]) for x, y in zip(a, b))
                    if isinstance(a, list) else tuple(a[1:]) == tuple(b[1:]))
            if not same:
                raise ShapeError(f"{self.name}: built for input shape {self.input_shape}, called on {input_shape}")
            return
        self.build(norm(input_shape))
        self.input_shape = norm(input_shape)
        self.built = True
        if self._initial_weights is not None:
            self.set_weights(self._initial_weights)
            self._initial_weights = None

    # -- weights --------------------------------------------------------------------------
    def _create(self, named: list) -> None:
        """Create the layer's own weights at build: [(name, shape, initializer), ...] in
        Keras's order. Inside weight_budget(n), creating more than n values in all is refused
        before anything is allocated (a file's config cannot ask for more than the file holds)."""
        total = sum(math.prod(shape) for _, shape, _ in named)
        if _budget[0] is not None:
            if total > _budget[0]:
                raise ShapeError(f"{self.name}: its configuration asks for {total:,} weight values, more than "
                                 "the file holds")
            _budget[0] -= total
        self.weight_names = tuple(n for n, _, _ in named)
        self._store([init(tuple(shape)) for _, shape, init in named])

    def _store(self, arrays) -> None:
        frozen = []
        for w in arrays:
            w = np.array(w, dtype=np.float32, order="C", copy=True)
            w.flags.writeable = False
            frozen.append(w)
        self._weights = frozen
        self._own_version += 1
        _bump_weights_epoch()

    @property
    def weights_version(self) -> int:
        return self._own_version + sum(s.weights_version for s in self._sublayers)

    @property
    def weights(self) -> list[np.ndarray]:
        """The layer's weight arrays in Keras's order (read-only: change them with
        set_weights, which every model using this layer notices)."""
        owner = self.__dict__.get("_training_owner")
        if owner is not None and owner() is not None:
            owner()._flush_training()  # values train_on_batch has not written back yet
        return list(self._weights) + [w for s in self._sublayers for w in s.weights]

    @weights.setter
    def weights(self, arrays) -> None:
        self._assign(list(arrays))

    def _assign(self, arrays: list) -> None:
        # all but the sublayers' arrays are the layer's own (so `layer.weights = [...]` in a
        # build() sets them, as before weights had sublayers)
        n = len(arrays) - sum(len(s.weights) for s in self._sublayers)
        self._store(arrays[:n])
        for s in self._sublayers:
            k = len(s.weights)
            s._assign(arrays[n:n + k])
            n += k

    def all_weight_names(self) -> list:
        return list(self.weight_names) + [f"{s.name}/{w}" for s in self._sublayers for w in s.all_weight_names()]

    def get_weights(self) -> list[np.ndarray]:
        return [w.copy() for w in self.weights]

    def set_weights(self, weights) -> None:
        self._assign(self._checked(weights))

    def _checked(self, weights) -> list:
        """`weights` if they fit this layer (count and shapes), else ShapeError."""
        weights = list(weights)
        current = self.weights
        if len(weights) != len(current):
            raise ShapeError(f"{self.name}: expected {len(current)} weight arrays "
                             f"{[w.shape for w in current]}, got {len(weights)}")
        names = self.all_weight_names()
        for i, (old, w) in enumerate(zip(current, weights)):
            w = np.asarray(w)
            if w.shape != old.shape:
                raise ShapeError(f"{self.name}: weight {i} ({names[i]}) must have shape {old.shape}, got {w.shape}")
        return weights

    def count_params(self) -> int:
        return sum(w.size for w in self.weights)

    non_trainable_names: tuple = ()  # weights training never changes (BatchNorm's moving statistics)

    def count_non_trainable(self) -> int:
        if not self.trainable:
            return self.count_params()
        own = sum(w.size for n, w in zip(self.weight_names, self._weights) if n in self.non_trainable_names)
        return own + sum(s.count_non_trainable() for s in self._sublayers)

    def _weight_refs(self, g: GraphBuilder) -> list[str]:
        refs = []
        for wname, w in zip(self.weight_names, self._weights):
            key = f"{self.name}/{wname}"
            g.weights[key] = w
            refs.append(key)
        return refs

    def __repr__(self) -> str:
        return f"<{type(self).__name__} name={self.name}>"
