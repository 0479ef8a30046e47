"""`Model`: a loaded graph with its weights, runnable like an onnxruntime session.

    >>> m = engine.load("cnn.engine")
    >>> m.inputs                      # [TensorInfo(name='input', shape=(None, 28, 28, 1), dtype='float32')]
    >>> probs = m.predict(x)          # single input and output
    >>> outs = m.run({"input": x})    # {"output": ndarray}
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import NamedTuple, Optional

import numpy as np

from .errors import DTypeError, EngineError, ShapeError
from .graph import Graph
from .passes import optimize, symbolic_shapes
from .runtime import Plan

MAX_CACHED_PLANS = 16  # one per input signature (usually: per batch size)
_EXACT_IN_F32 = 2 ** 24  # integers up to this magnitude convert to float32 without loss


class TensorInfo(NamedTuple):
    name: str
    shape: tuple  # None for dimensions chosen per call (the batch)
    dtype: str


class Model:
    def __init__(self, graph: Graph):
        graph.validate()
        self.graph = graph
        self._optimized = optimize(graph)
        self._plans: OrderedDict = OrderedDict()
        self._packed_weights: dict = {}  # shared by every plan of this model
        self._lock = threading.Lock()
        sym = symbolic_shapes(graph)
        self.inputs = [TensorInfo(v.name, tuple(v.shape), v.dtype) for v in graph.inputs]
        self.outputs = [TensorInfo(v.name, sym.get(v.name, tuple(v.shape)), v.dtype)
                        for v in graph.outputs]

    # -- running ----------------------------------------------------------------------

    def run(self, feeds: dict, output_names: Optional[list] = None) -> dict:
        """Run the model on named inputs; returns {output name: fresh float32 array}."""
        if not isinstance(feeds, dict):
            raise EngineError(f"run: feeds must be a dict {{input name: array}}, got {type(feeds).__name__}")
        unknown = set(feeds) - {i.name for i in self.inputs}
        if unknown:
            raise ShapeError(f"run: unknown input(s) {sorted(unknown)}; the model's inputs are "
                             f"{[i.name for i in self.inputs]}")
        arrays = []
        for info in self.inputs:
            if info.name not in feeds:
                raise ShapeError(f"run: missing input '{info.name}' (shape {_fmt(info.shape)})")
            arrays.append(_check_input(info, feeds[info.name]))
        plan = self._plan(tuple(a.shape for a in arrays))
        results = dict(zip(plan.output_names, plan.run(arrays)))
        names = output_names or [o.name for o in self.outputs]
        for n in names:
            if n not in results:
                raise ShapeError(f"run: unknown output '{n}'; outputs are {list(results)}")
        return {n: results[n] for n in names}

    def predict(self, x, batch_size: Optional[int] = None) -> np.ndarray:
        """Single-input, single-output models: x (batch, ...) -> output (batch, ...)."""
        if len(self.inputs) != 1 or len(self.outputs) != 1:
            raise EngineError(f"predict: the model has {len(self.inputs)} inputs and "
                              f"{len(self.outputs)} outputs; use run({{name: array}})")
        if batch_size is None:
            # Fast path: a cached plan exists for exactly this shape (validated when the plan
            # was made), so a contiguous float32 array needs no further checks.
            if type(x) is np.ndarray:
                plan = self._plans.get((x.shape,))
                if plan is not None:
                    y = plan.program.run_one(x)  # None unless float32 and contiguous
                    if y is not None:
                        return y
            return self.run({self.inputs[0].name: x})[self.outputs[0].name]
        name = self.inputs[0].name
        x = np.asarray(x)
        if batch_size < 1:
            raise EngineError(f"predict: batch_size must be >= 1, got {batch_size}")
        parts = [self.run({name: x[i:i + batch_size]})[self.outputs[0].name]
                 for i in range(0, len(x), batch_size)]
        return np.concatenate(parts) if parts else self.run({name: x})[self.outputs[0].name]

    __call__ = predict

    def _plan(self, signature: tuple) -> Plan:
        with self._lock:
            plan = self._plans.get(signature)
            if plan is None:
                shapes = {i.name: s for i, s in zip(self.inputs, signature)}
                plan = Plan(self._optimized, shapes, self._packed_weights)
                self._plans[signature] = plan
                if len(self._plans) > MAX_CACHED_PLANS:
                    self._plans.popitem(last=False)
            else:
                self._plans.move_to_end(signature)
            return plan

    # -- persistence --------------------------------------------------------------------

    def save(self, path) -> None:
        """Write the model as a native .engine file (atomically)."""
        from .formats import native
        native.save(self.graph, path)

    def __repr__(self) -> str:
        ins = ", ".join(f"{i.name}{_fmt(i.shape)}" for i in self.inputs)
        outs = ", ".join(f"{o.name}{_fmt(o.shape)}" for o in self.outputs)
        return f"<engine.Model {len(self.graph.nodes)} nodes: {ins} -> {outs}>"


def _fmt(shape) -> str:
    return "(" + ", ".join("None" if d is None else str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


def _check_input(info: TensorInfo, x) -> np.ndarray:
    """Validate one input against its declared shape and convert it to contiguous float32.

    Accepted without loss: float32 (as is), float16, bool, and integer arrays whose values
    are exactly representable (|v| <= 2**24), float64 whose values are all exactly float32.
    Anything else is refused rather than silently rounded.
    """
    if not isinstance(x, np.ndarray):
        try:
            x = np.asarray(x)
        except Exception as e:  # ragged lists and the like
            raise DTypeError(f"input '{info.name}': cannot convert {type(x).__name__} to an array ({e})") from None
    if x.dtype != np.float32:
        x = _to_float32(info.name, x)
    if x.ndim != len(info.shape):
        raise ShapeError(f"input '{info.name}': expected rank {len(info.shape)} with shape "
                         f"{_fmt(info.shape)}, got rank {x.ndim} with shape {_fmt(x.shape)}")
    for axis, (want, got) in enumerate(zip(info.shape, x.shape)):
        if want is not None and want != got:
            raise ShapeError(f"input '{info.name}': expected shape {_fmt(info.shape)}, got "
                             f"{_fmt(x.shape)} (dim {axis} must be {want})")
    return np.ascontiguousarray(x)


def _to_float32(name: str, x: np.ndarray) -> np.ndarray:
    kind = x.dtype.kind
    if kind == "f" and x.dtype.itemsize <= 4 or kind == "b":
        return x.astype(np.float32)
    if kind in "iu":
        if x.size and (x.max() > _EXACT_IN_F32 or x.min() < -_EXACT_IN_F32):
            raise DTypeError(f"input '{name}': expected float32, got {x.dtype} with values beyond "
                             f"±2**24 that float32 cannot hold exactly; convert explicitly")
        return x.astype(np.float32)
    if kind == "f":
        y = x.astype(np.float32)
        if np.array_equal(y.astype(x.dtype), x, equal_nan=True):
            return y
        raise DTypeError(f"input '{name}': expected float32, got {x.dtype} whose values float32 "
                         f"cannot hold exactly; pass x.astype(np.float32) to accept the rounding")
    raise DTypeError(f"input '{name}': expected float32, got {x.dtype}")
