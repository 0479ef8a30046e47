"""`Model`: a loaded graph with its weights, runnable like an onnxruntime session.

    >>> m = engine.load("cnn.engine")
    >>> m.inputs                      # [TensorInfo(name='input', shape=(None, 28, 28, 1), dtype='float32')]
    >>> probs = m.predict(x)          # one array per input, one per output
    >>> outs = m.run({"input": x})    # {"output": ndarray}
    >>> outs = m.run(None, {"input": x})   # onnxruntime's order: a list of arrays

Plans are cached per input signature (the shapes of all inputs), least recently used first
out, `plan_cache_size` of them (default 64). A plan holds no activation memory: intermediates
live in execution contexts that all plans of the model share, so a cached plan costs only its
step list, and a plan for a new batch size reuses the packed weights. See docs/runtime.md.
"""

from __future__ import annotations

import threading
from collections import Counter, OrderedDict
from typing import NamedTuple, Optional

import numpy as np

from . import _C, dtypes
from .errors import DTypeError, EngineError, ShapeError
from .graph import Graph
from .model_training import LoadedModelTraining
from .passes import optimize, symbolic_shapes
from .passes.stats import PlanSummary
from .runtime.dynamic import SegmentedPlan, is_dynamic
from .ops.registry import ValueNeeded
from .runtime.plan import Plan, Schedule

DEFAULT_PLAN_CACHE_SIZE = 64


class TensorInfo(NamedTuple):
    name: str
    shape: tuple  # None for dimensions chosen per call (the batch)
    dtype: str


class _Compiled:
    """Everything derived from the weights: optimised graph, schedule, packed weights and
    plans. Replaced as a whole when a weight changes, so a running call keeps a consistent
    set."""

    def __init__(self, graph: Graph, optimized: bool = True):
        self.fusions: Counter = Counter()  # what the passes rewrote (plan_summary)
        self.optimized = optimize(graph, self.fusions) if optimized else graph
        self.schedule = Schedule(self.optimized)
        # Graphs with data-dependent shapes or subgraphs run segment by segment instead.
        self.segmented = SegmentedPlan(self.optimized) if is_dynamic(self.optimized) else None
        self.packed: dict = {}  # pre-packed weights, shared by every plan
        self.plans: OrderedDict = OrderedDict()
        self.value_inputs: tuple = ()  # indices of inputs whose values are part of a plan's key


class Model(LoadedModelTraining):
    def __init__(self, graph: Graph, plan_cache_size: int = DEFAULT_PLAN_CACHE_SIZE, optimize: bool = True):
        graph.validate()
        self._optimize = optimize
        graph = graph.replace(initializers=_frozen(graph.initializers))
        self.graph = graph
        self.plan_cache_size = plan_cache_size
        self._lock = threading.Lock()
        self._contexts = _C.ContextPool()
        self._compiled = _Compiled(graph, optimize)
        sym = symbolic_shapes(self._compiled.optimized)  # output names survive the passes
        self.inputs = [TensorInfo(v.name, None if v.shape is None else tuple(v.shape), v.dtype)
                       for v in graph.inputs]
        self.outputs = [TensorInfo(v.name, _output_shape(v, sym.get(v.name)), v.dtype) for v in graph.outputs]

    @property
    def optimized_graph(self) -> Graph:
        """The graph that runs: after the passes (fusions, layout, folded constants)."""
        return self._compiled.optimized

    @property
    def metadata(self) -> dict:
        """Where the model came from: for ONNX, producer, opset imports, doc string and
        metadata_props."""
        return dict(self.graph.metadata)

    @property
    def plan_cache_size(self) -> int:
        """How many input signatures keep a plan (least recently used dropped first)."""
        return self._plan_cache_size

    @plan_cache_size.setter
    def plan_cache_size(self, n: int) -> None:
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise EngineError(f"plan_cache_size must be a positive int, got {n!r}")
        self._plan_cache_size = n

    @property
    def cached_signatures(self) -> list:
        """The input signatures (tuples of input shapes) that hold a plan, oldest first."""
        return list(self._compiled.plans)

    # -- running ----------------------------------------------------------------------

    def run(self, feeds=None, output_names=None, input_feed=None, run_options=None):
        """Run the model on named inputs.

        `run(feeds)` / `run(feeds, ["y"])` / `run(feeds, "y")` return {output name: array};
        onnxruntime's order, `run(None, feeds)` or `run(["y"], feeds)`, returns a list in
        the order asked, as onnxruntime does.
        """
        self._flush_training()
        ort_style = input_feed is not None or (isinstance(output_names, dict) and not isinstance(feeds, dict))
        if ort_style:
            names, feeds = feeds, (input_feed if input_feed is not None else output_names)
        else:
            names = output_names
        if isinstance(names, str):
            names = [names]
        results = self._run(feeds)
        names = [o.name for o in self.outputs] if names is None else list(names)
        for n in names:
            if n not in results:
                raise ShapeError(f"run: unknown output {n!r}; the model's outputs are {list(results)}")
        if ort_style:
            return [results[n] for n in names]
        return {n: results[n] for n in names}

    def _run(self, feeds) -> dict:
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
        plan = self._plan(tuple(a.shape for a in arrays), arrays)
        return dict(zip(plan.output_names, plan.run(arrays, self._contexts)))

    def predict(self, x, batch_size: Optional[int] = None):
        """x: an array (one input), a list of arrays in input order, or {name: array}.
        Returns an array (one output) or a list of arrays in output order.

        With batch_size, runs the inputs in slices of that many rows and concatenates."""
        self._flush_training()
        if batch_size is None and type(x) is np.ndarray and len(self.outputs) == 1:
            # Fast path: a cached plan exists for exactly this shape (validated when the plan
            # was made), so a contiguous float32 array needs no further checks.
            plans = self._compiled.plans
            plan = plans.get((x.shape,))
            if plan is not None and plan.program is not None:
                y = plan.program.run_one(x, self._contexts)  # None unless float32, contiguous
                if y is not None:
                    try:  # keep the LRU order (atomic under the GIL; may race an eviction)
                        plans.move_to_end((x.shape,))
                    except KeyError:
                        pass
                    return y
        feeds = self._feeds(x)
        if batch_size is None:
            outs = self._run(feeds)
        else:
            outs = self._run_in_batches(feeds, batch_size)
        vals = [outs[o.name] for o in self.outputs]
        return vals[0] if len(vals) == 1 else vals

    __call__ = predict

    def _feeds(self, x) -> dict:
        if isinstance(x, dict):
            return x
        xs = list(x) if isinstance(x, (list, tuple)) and len(self.inputs) > 1 else [x]
        if len(xs) != len(self.inputs):
            raise ShapeError(f"predict: the model has {len(self.inputs)} inputs "
                             f"{[i.name for i in self.inputs]}, got {len(xs)} arrays; pass a list "
                             "in that order or a dict {name: array}")
        return {i.name: a for i, a in zip(self.inputs, xs)}

    def _run_in_batches(self, feeds: dict, batch_size) -> dict:
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise EngineError(f"predict: batch_size must be a positive int, got {batch_size!r}")
        feeds = {k: np.asarray(v) for k, v in feeds.items()}
        lengths = {len(v) if v.ndim else 0 for v in feeds.values()}
        if len(lengths) != 1:
            raise ShapeError(f"predict: inputs differ in batch size {sorted(lengths)}")
        n = lengths.pop()
        if n <= batch_size:
            return self._run(feeds)
        parts = [self._run({k: v[i:i + batch_size] for k, v in feeds.items()})
                 for i in range(0, n, batch_size)]
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    def _plan(self, shapes: tuple, arrays: Optional[list] = None) -> Plan:
        """The plan for these input shapes (and, for the few inputs whose values decide output
        shapes, those values: a Resize whose scales are a graph input, say)."""
        compiled = self._compiled
        if compiled.segmented is not None:
            return compiled.segmented
        by_value = compiled.value_inputs
        signature = shapes if not by_value or arrays is None else \
            shapes + tuple(arrays[i].tobytes() for i in by_value)
        with self._lock:
            plan = compiled.plans.get(signature)
            if plan is not None:
                compiled.plans.move_to_end(signature)
                return plan
        try:
            plan = self._make_plan(compiled, shapes, arrays)
        except ValueNeeded as e:
            if arrays is None or not self._plan_by_value(compiled, e):
                raise
            return self._plan(shapes, arrays)
        with self._lock:
            compiled.plans[signature] = plan
            while len(compiled.plans) > self._plan_cache_size:
                compiled.plans.popitem(last=False)
        return plan

    def _make_plan(self, compiled, shapes, arrays) -> Plan:
        values = {self.inputs[i].name: arrays[i] for i in compiled.value_inputs} if arrays is not None else None
        return Plan(compiled.schedule, {i.name: s for i, s in zip(self.inputs, shapes)}, compiled.packed,
                    input_values=values)

    def _plan_by_value(self, compiled, e: ValueNeeded) -> bool:
        """Plan per value of the graph inputs that the missing value is computed from (by ops
        that can be evaluated while planning). False if it does not come from inputs only."""
        roots = _input_ancestors(compiled.optimized, e.node.inputs[e.index])
        if not roots:
            return False
        names = [i.name for i in self.inputs]
        new = sorted(set(compiled.value_inputs) | {names.index(r) for r in roots})
        if tuple(new) == compiled.value_inputs:
            return False
        with self._lock:
            compiled.value_inputs = tuple(new)
            compiled.plans.clear()
        return True

    def plan_summary(self) -> PlanSummary:
        """What the optimisation passes made of the graph: the fusions that fired and how often
        (attention, rotary, layer_norm, rms_norm, gelu, gelu_tanh, silu, dense_bias,
        dense_activation, conv_residual, ...) and the node counts by op before and after. A
        dict; print() it for a table.

            >>> m = engine.load("minilm.onnx")
            >>> m.plan_summary()["fusions"]["attention"]
            6
        """
        c = self._compiled
        return PlanSummary(c.fusions, self.graph.nodes, c.optimized.nodes)

    def profile(self, feeds: dict, repeats: int = 10) -> list:
        """Where the time of a run goes: [(node, op, kernel, mean seconds)] per kernel step, in
        plan order, averaged over `repeats` runs (after one warm-up run)."""
        names = {i.name for i in self.inputs}
        if set(feeds) != names:
            raise ShapeError(f"profile: feeds must name every input {sorted(names)}")
        arrays = [_check_input(i, feeds[i.name]) for i in self.inputs]
        plan = self._plan(tuple(a.shape for a in arrays), arrays)
        if plan.program is None:
            raise EngineError("profile: this model runs in segments (data-dependent shapes or control flow)")
        total = None
        for k in range(repeats + 1):
            outs = [np.empty(s, np.dtype(d)) for s, d in zip(plan.output_shapes, plan._out_np)]
            t = plan.program.run_timed(arrays, outs, self._contexts)
            if k:
                total = t if total is None else [a + b for a, b in zip(total, t)]
        return [(n, op, kern, s / repeats) for (n, op, kern), s in zip(plan.step_nodes, total)]

    # -- weights ------------------------------------------------------------------------

    @property
    def weights(self) -> dict:
        """{name: array} of the model's constant weights (read-only views)."""
        return dict(self.graph.initializers)

    def get_weights(self) -> dict:
        """{name: array} copies of the weights."""
        self._flush_training()
        return {k: v.copy() for k, v in self.graph.initializers.items()}

    def set_weights(self, weights: dict) -> None:
        """Replace some or all weights by name (same shapes). Cached plans and packed
        weights are rebuilt; calls already running finish with the old weights."""
        if not isinstance(weights, dict):
            raise EngineError(f"set_weights: expected a dict {{name: array}}, got {type(weights).__name__}")
        current = self.graph.initializers
        new = dict(current)
        for name, w in weights.items():
            if name not in current:
                raise EngineError(f"set_weights: the model has no weight {name!r}; its weights are "
                                  f"{sorted(current)[:20]}")
            arr = np.array(w, dtype=np.float32, order="C", copy=True)
            if arr.shape != current[name].shape:
                raise ShapeError(f"set_weights: weight {name!r} must have shape {current[name].shape}, "
                                 f"got {arr.shape}")
            new[name] = arr
        graph = self.graph.replace(initializers=_frozen(new))
        compiled = _Compiled(graph, self._optimize)
        with self._lock:
            self.graph, self._compiled = graph, compiled

    # -- persistence, display -------------------------------------------------------------

    def save(self, path) -> None:
        """Write the model as a native .engine file or directory (atomically): the optimised
        graph (fusions, layout, folded constants), so loading it again does no work twice."""
        self._flush_training()
        from .formats import native
        native.save(self._compiled.optimized.replace(metadata=self.graph.metadata), path)

    def summary(self, print_fn=print) -> None:
        """Print the inputs, outputs, nodes (op, output shape, parameters) and totals."""
        sym = symbolic_shapes(self.graph)
        params = {k: v.size for k, v in self.graph.initializers.items()}
        rows = []
        for n in self.graph.nodes:
            count = sum(params.get(i, 0) for i in n.inputs)
            rows.append((f"{n.name} ({n.op})", _fmt(sym.get(n.outputs[0], ("?",))) if n.outputs else "",
                         f"{count:,}"))
        w0 = max([len("Node (op)")] + [len(r[0]) for r in rows]) + 2
        w1 = max([len("Output Shape")] + [len(r[1]) for r in rows]) + 2
        w2 = max([len("Param #")] + [len(r[2]) for r in rows])
        line = "─" * (w0 + w1 + w2)
        total = sum(params.values())
        out = [repr(self), line, "Node (op)".ljust(w0) + "Output Shape".ljust(w1) + "Param #".rjust(w2), line]
        out += [a.ljust(w0) + b.ljust(w1) + c.rjust(w2) for a, b, c in rows]
        out += [line, f" Total params: {total:,} ({total * 4 / 1024:.2f} KB)", line]
        print_fn("\n".join(out))

    def __repr__(self) -> str:
        ins = ", ".join(f"{i.name}{_fmt(i.shape)}" for i in self.inputs)
        outs = ", ".join(f"{o.name}{_fmt(o.shape)}" for o in self.outputs)
        return f"<engine.Model {len(self.graph.nodes)} nodes: {ins} -> {outs}>"


def _input_ancestors(graph: Graph, name: str):
    """The graph inputs `name` is computed from through ops that can be evaluated while
    planning; None if it also depends on something else (a kernel's result)."""
    from .ops import get_op

    inputs = {v.name for v in graph.inputs}
    producers = {o: n for n in graph.nodes for o in n.outputs if o}
    roots, stack, seen = set(), [name], set()
    while stack:
        v = stack.pop()
        if v in seen or not v or v in graph.initializers:
            continue
        seen.add(v)
        if v in inputs:
            roots.add(v)
            continue
        node = producers.get(v)
        if node is None or get_op(node.op).evaluate is None:
            return None
        stack.extend(node.inputs)
    return roots or None


def _output_shape(v, inferred):
    """The declared shape (symbolic names kept), else what inference found (None = varies)."""
    if v.shape is not None and any(isinstance(d, str) for d in v.shape):
        return tuple(v.shape)
    if inferred is not None:
        return inferred
    return None if v.shape is None else tuple(v.shape)


def _frozen(weights: dict) -> dict:
    """Read-only views of the weights: an in-place edit through the model would bypass the
    packed copies, so it fails loudly instead (use set_weights). The caller's arrays keep
    their own flags."""
    out = {}
    for k, w in weights.items():
        v = np.asarray(w).view()
        v.flags.writeable = False
        out[k] = v
    return out


def _fmt(shape) -> str:
    return "(" + ", ".join("None" if d is None else str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"



def _check_input(info: TensorInfo, x) -> np.ndarray:
    """Validate one input against its declared shape and type; convert it to a contiguous array
    of the declared type when that loses nothing.

    Float inputs take floats whose values the declared type holds exactly, and bools and
    8/16-bit integers (pixels, masks); 32/64-bit integers are refused (token ids fed to the
    wrong input, most likely). Integer inputs take integers that fit; never floats. Anything
    else is refused rather than silently rounded.
    """
    if not isinstance(x, np.ndarray):
        try:
            x = np.asarray(x)
        except Exception as e:  # ragged lists and the like
            raise DTypeError(f"input '{info.name}': cannot convert {type(x).__name__} to an array ({e})") from None
    want = dtypes.to_numpy(info.dtype)
    if x.dtype != want or not x.dtype.isnative:
        x = _convert(info, x, want)
    if info.shape is None:  # the file declares no shape: any
        return dtypes.contiguous(x)
    if x.ndim != len(info.shape):
        raise ShapeError(f"input '{info.name}': expected rank {len(info.shape)} with shape "
                         f"{_fmt(info.shape)}, got rank {x.ndim} with shape {_fmt(x.shape)}")
    for axis, (want_dim, got) in enumerate(zip(info.shape, x.shape)):
        if isinstance(want_dim, int) and want_dim != got:
            raise ShapeError(f"input '{info.name}': expected shape {_fmt(info.shape)}, got "
                             f"{_fmt(x.shape)} (dim {axis} must be {want_dim})")
    return dtypes.contiguous(x)


def _convert(info: TensorInfo, x: np.ndarray, want: np.dtype) -> np.ndarray:
    name, kind, got = info.name, x.dtype.kind, x.dtype
    if want.kind == "f":
        if kind == "b" or (kind in "iu" and got.itemsize <= 2):
            return x.astype(want)
        if kind == "f":
            y = x.astype(want)
            if got.itemsize <= want.itemsize or np.array_equal(y.astype(got), x, equal_nan=True):
                return y
            raise DTypeError(f"input '{name}': expected {info.dtype}, got {got} whose values {info.dtype} "
                             f"cannot hold exactly; pass x.astype(np.{info.dtype}) to accept the rounding")
        raise DTypeError(f"input '{name}': expected {info.dtype}, got {got}; convert explicitly "
                         f"(x.astype(np.{info.dtype})) if that is what you mean")
    if want.kind in "iu":
        if kind in "iu":
            info_w = np.iinfo(want)
            if x.size and (x.min() < info_w.min or x.max() > info_w.max):
                raise DTypeError(f"input '{name}': expected {info.dtype}, got {got} with values outside "
                                 f"[{info_w.min}, {info_w.max}]")
            return x.astype(want)
        raise DTypeError(f"input '{name}': expected {info.dtype}, got {got}")
    if want.kind == "b" and kind == "b":
        return x.astype(want)
    raise DTypeError(f"input '{name}': expected {info.dtype}, got {got}")
