"""Sequential and functional models. Both become an engine Graph; predict() runs it on the
native runtime (the graph is planned once per input signature and reused)."""

from __future__ import annotations

from typing import Optional

import numpy as np

from ..errors import EngineError, ShapeError
from ..graph import Graph, Value
from ..model import Model as RuntimeModel
from .layers import GraphBuilder, Layer, _auto_name, weights_epoch
from .tensor import Input, KerasTensor


class _Network:
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

    # -- weights -----------------------------------------------------------------------
    @property
    def weights(self) -> list[np.ndarray]:
        return [w for layer in self.layers for w in layer.weights]

    def get_weights(self) -> list[np.ndarray]:
        """All weights, layer by layer, in Keras's order and layouts (copies)."""
        self._ensure_built()
        return [w for layer in self.layers for w in layer.get_weights()]

    def set_weights(self, weights) -> None:
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
            layer.weights = ws

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
    def to_graph(self) -> Graph:
        """The engine Graph of this model, weights included."""
        inputs, outputs = self._trace()
        seen: set[str] = set()
        for layer in self.layers:  # layer names name the graph's values and weights
            if layer.name in seen:
                raise EngineError(f"{self.name}: two layers are named '{layer.name}'")
            seen.add(layer.name)
        g = GraphBuilder()
        names: dict[int, str] = {id(t): t.name for t in inputs}
        calls: dict[int, int] = {}  # a shared layer's later calls get their own value names
        for t in _topological(outputs):
            if id(t) not in names:
                k = calls[id(t.layer)] = calls.get(id(t.layer), -1) + 1
                out = t.layer.name if k == 0 else f"{t.layer.name}/call_{k}"
                names[id(t)] = t.layer.emit(g, names[id(t.parents[0])], out)
        return Graph([Value(t.name, t.shape) for t in inputs],
                     [Value(names[id(t)], t.shape) for t in outputs], g.nodes, g.weights)

    def compile_runtime(self) -> RuntimeModel:
        """The runtime Model for the current weights (rebuilt after any weight change)."""
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

    def save(self, path) -> None:
        """Save as a native .engine model (graph + weights), loadable with engine.load."""
        self.compile_runtime().save(path)

    def summary(self, print_fn=print) -> None:
        self._ensure_built()
        rows = [(f"{layer.name} ({type(layer).__name__})", str(layer.output_shape),
                 f"{layer.count_params():,}") for layer in self.layers]
        w0 = max([len("Layer (type)")] + [len(r[0]) for r in rows]) + 2
        w1 = max([len("Output Shape")] + [len(r[1]) for r in rows]) + 2
        w2 = max([len("Param #")] + [len(r[2]) for r in rows])
        line = "─" * (w0 + w1 + w2)
        out = [f'Model: "{self.name}"', line,
               "Layer (type)".ljust(w0) + "Output Shape".ljust(w1) + "Param #".rjust(w2), line]
        out += [a.ljust(w0) + b.ljust(w1) + c.rjust(w2) for a, b, c in rows]
        total = self.count_params()
        out += [line, f" Total params: {total:,} ({total * 4 / 1024:.2f} KB)", line]
        print_fn("\n".join(out))

    def _ensure_built(self):
        self._trace()

    @property
    def input_shape(self):
        ins = self._trace()[0]
        return ins[0].shape if len(ins) == 1 else [t.shape for t in ins]

    @property
    def output_shape(self):
        outs = self._trace()[1]
        return outs[0].shape if len(outs) == 1 else [t.shape for t in outs]


def _topological(outputs: list[KerasTensor]) -> list[KerasTensor]:
    order, seen = [], set()

    def visit(t):
        if id(t) in seen:
            return
        seen.add(id(t))
        for p in t.parents:
            visit(p)
        order.append(t)

    for t in outputs:
        visit(t)
    return order


class Sequential(_Network):
    """A linear stack of layers, as in Keras.

    >>> m = Sequential([Input((28, 28, 1)), Conv2D(32, (3, 3), activation="relu"),
    ...                 Flatten(), Dense(10, activation="softmax")])
    >>> m.add(Dense(...))          # or build incrementally, input_shape= on the first layer
    >>> m.predict(x)
    """

    _default_name = "sequential"

    def __init__(self, layers=None, name: Optional[str] = None):
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
        if isinstance(layer, KerasTensor) and layer.layer is None:
            if self._layers or self._input is not None:
                raise EngineError(f"{self.name}: an Input must come first")
            self._input = layer
            return
        if not isinstance(layer, Layer):
            raise EngineError(f"{self.name}: add() takes a layer, got {type(layer).__name__}")
        if self._input is None and not self._layers and layer.input_shape_arg is not None:
            self._input = Input(batch_shape=layer.input_shape_arg)
        self._layers.append(layer)
        self._outputs = None
        self._runtime = None
        if self._input is not None:
            self._trace()  # build now, as Keras does when the input shape is known

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
            self._outputs = t
        return [self._input], [self._outputs]


class Model(_Network):
    """Functional model: Model(inputs=Input(...), outputs=layer(...)(...))."""

    _default_name = "functional"

    def __init__(self, inputs, outputs, name: Optional[str] = None):
        super().__init__(name)
        self._inputs = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
        self._outs = list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]
        for t in self._inputs + self._outs:
            if not isinstance(t, KerasTensor):
                raise EngineError(f"{self.name}: inputs/outputs must be symbolic tensors "
                                  f"from Input() and layer calls, got {type(t).__name__}")
        reachable = {id(t) for t in _topological(self._outs) if t.layer is None}
        for t in self._inputs:
            if id(t) not in reachable:
                raise EngineError(f"{self.name}: input '{t.name}' does not lead to any output")
        missing = [t.name for t in _topological(self._outs)
                   if t.layer is None and id(t) not in {id(i) for i in self._inputs}]
        if missing:
            raise EngineError(f"{self.name}: outputs depend on input(s) {missing} not listed "
                              "in inputs=")

    @property
    def layers(self) -> list[Layer]:
        seen, out = set(), []
        for t in _topological(self._outs):
            if t.layer is not None and id(t.layer) not in seen:
                seen.add(id(t.layer))
                out.append(t.layer)
        return out

    def _trace(self):
        return self._inputs, self._outs
