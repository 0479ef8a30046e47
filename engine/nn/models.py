"""Sequential and functional models. Both become an engine Graph; predict() runs it on the
native runtime (the graph is planned once per input signature and reused)."""

from __future__ import annotations

from collections import defaultdict
from typing import Optional

import numpy as np

from ..errors import EngineError, ShapeError
from ..graph import Graph, Value
from ..model import Model as RuntimeModel
from .base import GraphBuilder, Layer, _auto_name, weights_epoch
from .tensor import Input, KerasTensor
from .training import NetworkTraining


class _Network(NetworkTraining):
    """What Sequential and Model share: weights, graph, predict, save, summary."""

    name: str

    def __init__(self, name: Optional[str]):
        self.name = name or _auto_name(self._default_name)
        self._runtime: Optional[RuntimeModel] = None
        self._runtime_epoch = -1
        self._runtime_versions: tuple = ()

    # subclasses provide the traced structure
    def _trace(self) -> tuple[list[KerasTensor], list[KerasTensor]]:
        raise NotImplementedError

    @property
    def layers(self) -> list[Layer]:
        raise NotImplementedError

    def get_layer(self, name: Optional[str] = None, index: Optional[int] = None) -> Layer:
        """A layer by name or by index in `layers` (Keras's get_layer)."""
        if index is not None:
            return self.layers[index]
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise EngineError(f"{self.name}: no layer named {name!r}; layers: {[l.name for l in self.layers]}")

    # -- weights -----------------------------------------------------------------------
    @property
    def weights(self) -> list[np.ndarray]:
        return [w for layer in self.layers for w in layer.weights]

    def get_weights(self) -> list[np.ndarray]:
        """All weights, layer by layer, in Keras's order and layouts (copies)."""
        self._ensure_built()
        return [w for layer in self.layers for w in layer.get_weights()]

    def set_weights(self, weights) -> None:
        self._dirty = False  # values a train_on_batch left pending are replaced, not written back
        self._ensure_built()
        weights = list(weights)
        expected = sum(len(layer.weights) for layer in self.layers)
        if len(weights) != expected:
            raise ShapeError(f"{self.name}: expected {expected} weight arrays, got {len(weights)}")
        i, checked = 0, []
        for layer in self.layers:  # all checked before any changes
            n = len(layer.weights)
            checked.append(layer._checked(weights[i:i + n]))
            i += n
        for layer, ws in zip(self.layers, checked):
            layer._assign(ws)

    def load_state_dict(self, state_dict, strict: bool = True):
        """Set the weights from a PyTorch state dict: a .pth/.pt file written by
        torch.save(model.state_dict(), path) (read without torch), a .safetensors file, or a
        mapping of names to tensors/arrays. Torch modules are matched to this model's layers by
        order and shape (or by name, when a key's module path is a layer's name) and their
        layouts converted to Keras's (engine/nn/torch_mapping.py). Returns (missing_keys,
        unexpected_keys), which strict=True (the default) requires to be empty.

        >>> net = Sequential([Input((1000,)), Dense(500, activation="relu"), Dense(100, activation="relu"), Dense(1)])
        >>> net.load_state_dict("model.pth")
        """
        from .torch_mapping import load_state_dict

        return load_state_dict(self, state_dict, strict=strict)

    def count_params(self) -> int:
        self._ensure_built()
        return sum(layer.count_params() for layer in self.layers)

    # -- graph and running ----------------------------------------------------------------
    def to_graph(self, training: bool = False) -> Graph:
        """The engine Graph of this model, weights included (training: the forward a
        training graph is built on, see GraphBuilder)."""
        self._flush_training()
        inputs, outputs = self._trace()
        calls = _calls_in_order(outputs)
        seen: dict[str, Layer] = {}
        for c in calls:  # layer names name the graph's values and weights
            other = seen.setdefault(c.layer.name, c.layer)
            if other is not c.layer:
                raise EngineError(f"{self.name}: two layers are named '{c.layer.name}'")
        g = GraphBuilder(training)
        names: dict[int, str] = {}
        graph_inputs = []
        for t in inputs:
            if t.name in seen:
                raise EngineError(f"{self.name}: input '{t.name}' has the name of a layer")
            names[id(t)] = t.name
            graph_inputs.append(Value(t.name, t.shape, _input_type(t, calls)))
        dtypes = g.dtypes
        dtypes.update({v.name: v.dtype for v in graph_inputs})

        def name_of(t: KerasTensor) -> str:
            if id(t) not in names:
                raise EngineError(f"{self.name}: tensor {t.name} is not computed from the model's inputs")
            return names[id(t)]

        count: dict[int, int] = defaultdict(int)
        for c in calls:
            k = count[id(c.layer)]
            count[id(c.layer)] += 1
            out = c.layer.name if k == 0 else f"{c.layer.name}/call_{k}"
            outs = c.layer.emit_call(g, c, name_of, out)
            if len(outs) != len(c.outputs):
                raise EngineError(f"{c.layer.name}: emitted {len(outs)} outputs for {len(c.outputs)} tensors")
            for t, n in zip(c.outputs, outs):
                names[id(t)] = n
                dtypes.setdefault(n, t.dtype)
        out_values, used = [], {v.name for v in graph_inputs}
        for t in outputs:
            n = name_of(t)
            if n in used:  # an output listed twice, or an input passed through: a value of its own
                n = g.node("Identity", [n], f"{n}/output_{len(out_values)}")
            used.add(n)
            out_values.append(Value(n, t.shape, t.dtype))
        return Graph(graph_inputs, out_values, g.nodes, g.weights, {"format": "engine.nn", "name": self.name})

    def compile_runtime(self) -> RuntimeModel:
        """The runtime Model for the current weights (rebuilt after any weight change)."""
        self._flush_training()
        epoch = weights_epoch()
        if self._runtime is not None and self._runtime_epoch != epoch:
            if self._layer_versions() != self._runtime_versions:
                self._runtime = None
            else:
                self._runtime_epoch = epoch
        if self._runtime is None:
            self._runtime_versions = self._layer_versions()
            self._runtime = RuntimeModel(self.to_graph())
            self._runtime_epoch = epoch
        return self._runtime

    def _layer_versions(self) -> tuple:
        return tuple((id(layer), layer.weights_version) for layer in self.layers)

    def predict(self, x, batch_size: Optional[int] = None, verbose=0):
        """Run the model on numpy input(s): an array, a list in input order or {name: array}.
        Returns an array, or a list of arrays for a model with several outputs."""
        return self.compile_runtime().predict(x, batch_size=batch_size)

    __call__ = predict

    def save(self, path, overwrite: bool = True, **kwargs) -> None:
        """Save the model: a native .engine (graph + weights; once trained, the History and the
        optimizer state too, so it is also a checkpoint), or a Keras file for a path ending in
        .h5 / .keras. Every form loads with engine.load."""
        from ..formats import native

        if str(path).lower().endswith((".h5", ".hdf5", ".keras")):
            from ..formats.keras_writer import save_keras
            return save_keras(self, path)
        meta, extra = self._training_metadata()
        graph = self.to_graph()
        if meta:
            graph.metadata = {**graph.metadata, "training": meta}
        graph.validate()
        native.save(graph, path, extra=extra)

    def summary(self, print_fn=print) -> None:
        """Layers, output shapes and parameter counts, as Keras prints them."""
        self._ensure_built()
        rows = [(f"{layer.name} ({type(layer).__name__})", _shape_text(layer.output_shape),
                 f"{layer.count_params():,}") for layer in self.layers]
        w0 = max([len("Layer (type)")] + [len(r[0]) for r in rows]) + 2
        w1 = max([len("Output Shape")] + [len(r[1]) for r in rows]) + 2
        w2 = max([len("Param #")] + [len(r[2]) for r in rows])
        line = "─" * (w0 + w1 + w2)
        out = [f'Model: "{self.name}"', line,
               "Layer (type)".ljust(w0) + "Output Shape".ljust(w1) + "Param #".rjust(w2), line]
        out += [a.ljust(w0) + b.ljust(w1) + c.rjust(w2) for a, b, c in rows]
        total = self.count_params()
        fixed = sum(layer.count_non_trainable() for layer in self.layers)
        out += [line, f" Total params: {total:,} ({_memory(total * 4)})",
                f" Trainable params: {total - fixed:,} ({_memory((total - fixed) * 4)})",
                f" Non-trainable params: {fixed:,} ({_memory(fixed * 4)})", line]
        print_fn("\n".join(out))

    def _ensure_built(self):
        self._trace()

    @property
    def inputs(self) -> list[KerasTensor]:
        return list(self._trace()[0])

    @property
    def outputs(self) -> list[KerasTensor]:
        return list(self._trace()[1])

    @property
    def input_shape(self):
        ins = self._trace()[0]
        return ins[0].shape if len(ins) == 1 else [t.shape for t in ins]

    @property
    def output_shape(self):
        outs = self._trace()[1]
        return outs[0].shape if len(outs) == 1 else [t.shape for t in outs]


def _shape_text(shape) -> str:
    return ", ".join(str(s) for s in shape) if isinstance(shape, list) else str(shape)


def _memory(nbytes: float) -> str:
    """Keras's readable_memory_size."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if nbytes / 1024 < 1:
            return f"{nbytes:.2f} {unit}"
        nbytes /= 1024
    return f"{nbytes:.2f} PB"


def _input_type(t: KerasTensor, calls: list) -> str:
    """A float input that only id-reading layers read (an Embedding, its mask) holds token
    ids: it becomes int64, since the engine never rounds floats into indices silently."""
    readers = [c for c in calls if any(p is t for p in c.parents)]
    if (t.dtype.startswith("float") and readers and all(c.layer.accepts_ids for c in readers)
            and any(not c.layer.is_op for c in readers)):
        return "int64"
    return t.dtype


def _calls_in_order(outputs: list) -> list:
    """Every call the outputs depend on, each after the calls it reads from."""
    order, done, active = [], set(), set()

    def visit(t):
        c = t.call
        if c is None or id(c) in done:
            return
        if id(c) in active:
            raise EngineError(f"layer '{c.layer.name}' is part of a cycle")
        active.add(id(c))
        for p in c.parents:
            visit(p)
        active.discard(id(c))
        done.add(id(c))
        order.append(c)

    for t in outputs:
        visit(t)
    return order


def _keras_layer_order(inputs: list, outputs: list) -> list:
    """The layers of a functional model in Keras's order (ops.function.map_graph): by depth
    from the inputs, ties broken by depth-first traversal order from the outputs."""
    calls = _calls_in_order(outputs)
    first_seen: dict[int, int] = {}
    visited: set = set()

    def visit(t):
        c = t.call
        if c is None or id(c) in visited:
            return
        visited.add(id(c))
        first_seen.setdefault(id(c.layer), len(first_seen))
        for p in c.parents:
            visit(p)

    for t in outputs:
        visit(t)
    depth: dict[int, int] = {}
    layer_depth: dict[int, int] = {}
    for c in reversed(calls):
        d = depth.setdefault(id(c), 0)
        d = max(d, layer_depth.get(id(c.layer), 0))
        layer_depth[id(c.layer)] = depth[id(c)] = d
        for p in c.parents:
            if p.call is not None:
                depth[id(p.call)] = max(d + 1, depth.get(id(p.call), 0))
    by_depth: dict[int, list] = defaultdict(list)
    layers = {id(c.layer): c.layer for c in calls}
    for lid, d in layer_depth.items():
        by_depth[d].append(layers[lid])
    out = []
    for d in sorted(by_depth, reverse=True):
        out += sorted(by_depth[d], key=lambda layer: first_seen[id(layer)])
    return [layer for layer in out if not layer.is_op]


class Sequential(_Network):
    """A linear stack of layers, as in Keras.

    >>> m = Sequential([Input((28, 28, 1)), Conv2D(32, (3, 3), activation="relu"),
    ...                 Flatten(), Dense(10, activation="softmax")])
    >>> m.add(Dense(...))          # or build incrementally, input_shape= on the first layer
    >>> m.predict(x)
    """

    _default_name = "sequential"

    def __init__(self, layers=None, name: Optional[str] = None, trainable: bool = True, **kw):
        if kw.get("dtype") is not None:
            from .base import dtype_policy
            dtype_policy(kw.pop("dtype"), "Sequential")
        kw.pop("dtype", None)
        if kw:
            raise EngineError(f"Sequential: unsupported argument(s) {sorted(kw)}")
        super().__init__(name)
        self._layers: list[Layer] = []
        self._input: Optional[KerasTensor] = None
        self._outputs: Optional[KerasTensor] = None
        for layer in layers or []:
            self.add(layer)

    @property
    def layers(self) -> list[Layer]:
        return list(self._layers)

    def add(self, layer) -> None:
        if isinstance(layer, KerasTensor) and layer.call is None:
            if self._layers or self._input is not None:
                raise EngineError(f"{self.name}: an Input must come first")
            self._input = layer
            return
        if not isinstance(layer, (Layer, _Network)):
            raise EngineError(f"{self.name}: add() takes a layer, got {type(layer).__name__}")
        if isinstance(layer, _Network):
            raise EngineError(f"{self.name}: nesting a model inside a model is not supported")
        if self._input is None and not self._layers and layer.input_shape_arg is not None:
            self._input = Input(batch_shape=layer.input_shape_arg)
        self._layers.append(layer)
        self._outputs = None
        self._runtime = None
        if self._input is not None:
            self._trace()  # build now, as Keras does when the input shape is known

    def pop(self) -> Layer:
        if not self._layers:
            raise EngineError(f"{self.name}: no layer to pop")
        layer = self._layers.pop()
        self._outputs, self._runtime = None, None
        return layer

    def build(self, input_shape=None) -> None:
        if input_shape is not None and self._input is None:
            self._input = Input(batch_shape=tuple(input_shape))
        self._trace()

    def _trace(self):
        if self._input is None:
            raise EngineError(f"{self.name}: the input shape is unknown; start with "
                              "Input(shape) or pass input_shape= to the first layer")
        if self._outputs is None:
            t = self._input
            for layer in self._layers:
                t = layer(t)
                if isinstance(t, list):
                    raise EngineError(f"{self.name}: layer '{layer.name}' has several outputs; "
                                      "a Sequential layer must have one")
            self._outputs = t
        return [self._input], [self._outputs]


class Model(_Network):
    """Functional model: Model(inputs=Input(...), outputs=layer(...)(...))."""

    _default_name = "functional"

    def __init__(self, inputs, outputs, name: Optional[str] = None, trainable: bool = True):
        super().__init__(name)
        self._inputs = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
        self._outs = list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]
        for t in self._inputs + self._outs:
            if not isinstance(t, KerasTensor):
                raise EngineError(f"{self.name}: inputs/outputs must be symbolic tensors "
                                  f"from Input() and layer calls, got {type(t).__name__}")
        for t in self._inputs:
            if t.call is not None:
                raise EngineError(f"{self.name}: input '{t.name}' is not an Input() but a layer's output")
        leaves = _leaves(self._outs)
        listed = {id(i) for i in self._inputs}
        for t in self._inputs:
            if id(t) not in {id(x) for x in leaves}:
                raise EngineError(f"{self.name}: input '{t.name}' does not lead to any output")
        missing = [t.name for t in leaves if id(t) not in listed]
        if missing:
            raise EngineError(f"{self.name}: outputs depend on input(s) {missing} not listed in inputs=")
        self._layer_list = _keras_layer_order(self._inputs, self._outs)

    @property
    def layers(self) -> list[Layer]:
        return list(self._layer_list)

    def _trace(self):
        return self._inputs, self._outs


def _leaves(outputs: list) -> list:
    out, seen = [], set()
    for c in _calls_in_order(outputs):
        for p in c.parents:
            if p.call is None and id(p) not in seen:
                seen.add(id(p))
                out.append(p)
    for t in outputs:
        if t.call is None and id(t) not in seen:
            seen.add(id(t))
            out.append(t)
    return out


def load_model(filepath, custom_objects=None, compile=True, safe_mode=True):
    """Keras's load_model: a saved model (.engine, .h5, .keras, .onnx, ...) as an engine model
    with predict / evaluate / fit (engine.load). custom_objects are refused: code found in a
    model file never runs."""
    from .. import load

    if custom_objects:
        raise EngineError("load_model: custom_objects are not supported (layers are rebuilt from their "
                          "configs; custom code is never run)")
    return load(filepath)

