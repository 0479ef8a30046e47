"""Reverse-mode differentiation of an engine Graph.

`differentiate` turns a forward graph plus a loss into one training graph: the forward nodes
(ops with a training form, such as Dropout or BatchNormalization, swapped for it), the loss,
then the reverse pass, built node by node from each op's backward rule, in reverse order. The
result is an ordinary Graph, optimised and planned by the same passes and planner as
inference, so buffers are assigned by liveness and a step allocates nothing.

The graph is built for concrete input shapes (a training program is planned per batch shape,
like a plan), so rules can read every shape.

Rules live next to their ops (engine/ops/*_grad.py) and are registered with:

    @backward_rule("Dense")
    def dense_backward(gb: GradBuilder, node: Node, dys: list[str | None]) -> list[str | None]:
        ...  # one gradient name (or None) per input of `node`

`dys[k]` is the gradient of node.outputs[k], or None when no output gradient reaches it (at
least one is not None). A rule returns a gradient for each input whose `gb.needs(name)` is
true; others may be None. Ops used in training with a different forward (Dropout,
BatchNormalization in training mode, recurrent layers that keep a tape) register a
`training_form(gb, node)` that emits replacement nodes producing node.outputs' names.
"""

from __future__ import annotations

import itertools
from typing import Callable, Optional

import numpy as np

from . import dtypes
from .errors import EngineError, ShapeError
from .graph import Graph, Node, Value
from .ops import get_op
from .ops.grad_registry import BACKWARD, TRAINING_FORMS, backward_rule, training_form  # noqa: F401
from .ops.registry import TensorType
from .passes.shapes import infer_node


class NoGradientError(EngineError):
    """A model compiled for training uses an op that has no backward rule."""


class GradBuilder:
    """The training graph being built: nodes with their types inferred as they are added, and
    constants. Rules use it to emit the reverse pass."""

    def __init__(self, types: dict, values: dict, settings: Optional[dict] = None):
        self.types: dict[str, TensorType] = dict(types)
        self.values: dict[str, np.ndarray] = dict(values)
        self.nodes: list[Node] = []
        self.constants: dict[str, np.ndarray] = {}
        self.requires: set[str] = set()  # values that depend on a trained parameter
        self.settings = dict(settings or {})  # e.g. {"seed": int, "step": hyper buffer name}
        self._ids = itertools.count()
        self._names: set[str] = set(types)

    # -- what rules read --
    def shape(self, name: str) -> tuple:
        return self.types[name].shape

    def dtype(self, name: str) -> str:
        return self.types[name].dtype

    def value(self, name: str):
        """A value known when the graph is built (a constant), else None."""
        return self.values.get(name) if name else None

    def needs(self, name: str) -> bool:
        """Whether the gradient of `name` is wanted (it depends on a trained parameter)."""
        return bool(name) and name in self.requires

    # -- what rules emit --
    def fresh(self, base: str) -> str:
        base = base.lstrip("\0") or "v"
        name = base
        while name in self._names:
            name = f"{base}#{next(self._ids)}"
        self._names.add(name)
        return name

    def const(self, value, base: str = "grad/const") -> str:
        value = dtypes.contiguous(np.asarray(value))
        name = self.fresh(base)
        self.constants[name] = value
        self.values[name] = value
        self.types[name] = TensorType(tuple(value.shape), dtypes.from_numpy(value.dtype))
        return name

    def node(self, op: str, inputs: list, outputs=1, attrs: Optional[dict] = None, base: str = ""):
        """Add a node. `outputs` is a count (fresh names from `base` or the op) or a list of
        names ("" for an unwanted optional output). Returns the output name, or the list of
        names when `outputs` is a list or a count other than 1."""
        single = outputs == 1
        if isinstance(outputs, int):
            stem = base or f"grad/{op}"
            outputs = [self.fresh(stem if k == 0 else f"{stem}:{k}") for k in range(outputs)]
        else:
            outputs = list(outputs)
            self._names.update(o for o in outputs if o)
        node = Node(op, [i or "" for i in inputs], outputs, dict(attrs or {}), self.fresh(f"node/{(outputs[0] if outputs else '') or op}"))
        self.add(node)
        return outputs[0] if single else outputs

    def add(self, node: Node) -> None:
        """Append a node (infers its output types; evaluates it when its inputs are constants)."""
        op = get_op(node.op, node.name)
        if op.check is not None:
            op.check(node)
        infer_node(op, node, self.types, self.values)  # values fixed by the shapes are evaluated
        if any(i in self.requires for i in node.inputs if i):
            self.requires.update(o for o in node.outputs if o)
        self.nodes.append(node)

    # -- common pieces of rules --
    def sum_to(self, grad: str, shape: tuple) -> str:
        """`grad` summed back to `shape`, the shape of an input broadcast to grad's shape."""
        gs = self.shape(grad)
        shape = tuple(shape)
        if gs == shape:
            return grad
        padded = (1,) * (len(gs) - len(shape)) + shape
        out = self.node("SumToShape", [grad], attrs={"shape": list(padded)})
        if padded != shape:
            out = self.node("Reshape", [out], attrs={"shape": list(shape) or []})
        return out

    def add_grads(self, grads: list) -> str:
        total = grads[0]
        for g in grads[1:]:
            total = self.node("Add", [total, g], base="grad/sum")
        return total


# Ops whose outputs carry no gradient (comparisons, shapes, indices): the reverse pass stops there.
NOT_DIFFERENTIABLE = {"Shape", "Size", "Equal", "Greater", "GreaterOrEqual", "Less", "LessOrEqual", "Not", "And",
                      "Or", "Xor", "IsNaN", "IsInf", "ArgMax", "ArgMin", "NonZero", "Sign", "Floor", "Ceil", "Round",
                      "OneHot", "EyeLike", "Range", "ConstantOfShape"}


def check_trainable(graph: Graph, params) -> None:
    """NoGradientError naming the first op (from the outputs back) that a gradient must cross
    to reach a trained value but that has no backward rule; for compile(), before any data."""
    requires = set(params)
    for node in graph.nodes:
        if any(i in requires for i in node.inputs if i) and node.op not in NOT_DIFFERENTIABLE:
            requires.update(o for o in node.outputs if o)
    wanted = {v.name for v in graph.outputs}
    for node in reversed(graph.nodes):
        if not any(o in wanted for o in node.outputs if o) or node.op in NOT_DIFFERENTIABLE:
            continue
        if not any(i in requires for i in node.inputs if i):
            continue
        if node.op not in BACKWARD and node.op not in TRAINING_FORMS:
            raise NoGradientError(f"node '{node.name}': op {node.op} has no backward rule, so a model that uses it "
                                  "cannot be trained (freeze the layers before it, or remove it)")
        wanted.update(i for i in node.inputs if i)


def differentiate(graph: Graph, input_types: dict[str, TensorType], params: list[str],
                  loss: Optional[Callable] = None, settings: Optional[dict] = None,
                  output_grads: Optional[dict] = None):
    """The training graph of `graph` for inputs of `input_types` (concrete shapes).

    `params`: names of graph initializers (or inputs) that are trained; initializers among
    them become inputs of the training graph (the caller binds its own arrays, updated in
    place). Either `loss(gb, output_names) -> name` emits a scalar loss from the forward's
    outputs (adding the inputs it needs, such as targets, to gb.extra_inputs), or
    `output_grads` maps output names to the names of their given gradients (values the
    caller feeds; a vector-Jacobian product). Returns (builder, loss name or None,
    {param: gradient name or None}); `training_graph` makes the Graph.
    """
    values = {k: v for k, v in graph.initializers.items() if k not in params}
    types = {k: TensorType(tuple(v.shape), dtypes.from_numpy(v.dtype)) for k, v in graph.initializers.items()}
    types.update(input_types)
    gb = GradBuilder(types, values, settings)
    gb.extra_inputs = []
    gb.requires.update(params)
    for node in graph.nodes:  # the forward pass, in training form
        form = TRAINING_FORMS.get(node.op)
        if form is not None:
            form(gb, node)
        else:
            gb._names.add(node.name)
            gb.add(Node(node.op, list(node.inputs), list(node.outputs), dict(node.attrs), node.name))
    if loss is not None:
        loss_name = loss(gb, [v.name for v in graph.outputs])
        if gb.shape(loss_name) not in ((), (1,)):
            raise ShapeError(f"the loss must be a scalar, got shape {gb.shape(loss_name)}")
        seeds = {loss_name: [gb.const(np.ones(gb.shape(loss_name), np.float32), "grad/seed")]}
    else:
        loss_name = None
        seeds = {out: [g] for out, g in (output_grads or {}).items()}
    grads = _reverse(gb, seeds)
    return gb, loss_name, {p: grads.get(p) for p in params}


def _reverse(gb: GradBuilder, pending: dict[str, list[str]]) -> dict[str, str]:
    """Emit the reverse pass of every node so far, from the gradients in `pending` (value ->
    contributions); returns {value: gradient name}."""
    for node in list(reversed(gb.nodes)):
        outs = [o for o in node.outputs if o in pending]
        if not outs or not any(gb.needs(i) for i in node.inputs):
            continue
        rule = BACKWARD.get(node.op)
        if rule is None:
            raise NoGradientError(f"node '{node.name}': op {node.op} has no backward rule, so a model that "
                                  "uses it cannot be trained (freeze the layers before it, or remove it)")
        dys = [_total(gb, pending.pop(o)) if o in pending else None for o in node.outputs]
        dxs = rule(gb, node, dys)
        if len(dxs) < len(node.inputs):
            dxs = list(dxs) + [None] * (len(node.inputs) - len(dxs))
        for name, dx in zip(node.inputs, dxs):
            if dx is None or not gb.needs(name):
                continue
            if gb.shape(dx) != gb.shape(name):
                raise ShapeError(f"backward rule of {node.op} (node '{node.name}') gave a gradient of shape "
                                 f"{gb.shape(dx)} for '{name}' of shape {gb.shape(name)}")
            pending.setdefault(name, []).append(dx)
    return {k: _total(gb, v) for k, v in pending.items()}


def _total(gb: GradBuilder, grads: list[str]) -> str:
    return gb.add_grads(grads) if len(grads) > 1 else grads[0]


def training_graph(gb: GradBuilder, inputs: list[Value], outputs: list[str], initializers: dict) -> Graph:
    """The Graph of everything `gb` holds: `inputs` (data, targets, parameters, optimizer state)
    and `outputs`; `initializers` the forward's constants (parameters excluded)."""
    consts = dict(initializers)
    consts.update(gb.constants)
    outs = [Value(n, gb.shape(n), gb.dtype(n)) for n in outputs]
    g = Graph(list(inputs), outs, list(gb.nodes), consts)
    g.validate()
    return g


def vjp(graph: Graph, feeds: dict, params: list[str], output_grads: dict, wrt_inputs: tuple = (),
        optimize: bool = False) -> dict:
    """Gradients of `params` (initializers) and `wrt_inputs` (graph inputs) given the
    gradients of the graph's outputs (`output_grads`: {output name: array}), computed by
    planning and running the training graph once. Gradients that nothing reaches are zeros.
    The tool the backward rules are tested with (against torch's autograd); optimize=True
    also runs the training passes."""
    from . import _C
    from .runtime.plan import Plan, Schedule

    feeds = {k: dtypes.contiguous(np.asarray(v)) for k, v in feeds.items()}
    trained = list(params) + list(wrt_inputs)
    weights = {p: dtypes.contiguous(graph.initializers[p]) for p in params}
    types = {v.name: TensorType(tuple(feeds[v.name].shape), dtypes.from_numpy(feeds[v.name].dtype))
             for v in graph.inputs}
    dy_names = {o: f"grad_in/{o}" for o in output_grads}
    for o, dy in output_grads.items():
        types[dy_names[o]] = TensorType(tuple(np.shape(dy)), "float32")
    gb, _, grads = differentiate(graph, types, trained, output_grads=dy_names)
    outs, zeros = [], {}
    for p in trained:
        if grads[p] is None:
            zeros[p] = np.zeros(gb.shape(p), np.float32)
        else:
            outs.append(p)
    out_names = []
    for p in outs:  # an output must be a value of its own
        out_names.append(gb.node("Identity", [grads[p]], base=f"grad_out/{p}"))
    if not out_names:
        return zeros
    feeds_all = dict(feeds)
    feeds_all.update(weights)
    feeds_all.update({dy_names[o]: dtypes.contiguous(np.asarray(v, np.float32)) for o, v in output_grads.items()})
    ins = [Value(k, gb.shape(k), gb.dtype(k)) for k in feeds_all]
    g = training_graph(gb, ins, out_names, {k: v for k, v in graph.initializers.items() if k not in params})
    if optimize:  # the training passes a Trainer runs (fusions of the reverse pass)
        from .passes import optimize_training
        g = optimize_training(g)
    plan = Plan(Schedule(g), {k: v.shape for k, v in feeds_all.items()}, {},
                input_dtypes={k: dtypes.from_numpy(v.dtype) for k, v in feeds_all.items()})
    results = plan.run([feeds_all[v.name] for v in g.inputs], _C.ContextPool())
    out = dict(zeros)
    out.update(zip(outs, results))
    return out
