"""Ops that run between native segments (runtime/dynamic.py): NonZero, whose output shape is
its data's, and the control-flow ops If, Loop and Scan, which run their subgraphs as nested
models (planned once per signature like any model, so their bodies are native programs).

A subgraph reads values of the enclosing graph by name; the importer lists those values as
extra inputs of the node (after its own), so liveness sees them, and the subgraph declares
them as inputs too. Nested models are built on first use and kept with the op.
"""

from __future__ import annotations

import numpy as np

from .. import dtypes
from ..errors import EngineError, GraphError, ShapeError
from .registry import register


def _dynamic_type(node, ins):
    raise ShapeError(f"node '{node.name}' ({node.op}): output shape depends on the data")


# -- NonZero ------------------------------------------------------------------------------

def _nonzero(node, args):
    from .. import _C
    return [_C.nonzero(dtypes.contiguous(args[0]))]


register("NonZero", _dynamic_type, None, execute=_nonzero, fold=False)


# -- nested models ----------------------------------------------------------------------------

_MODELS: dict = {}  # (id(subgraph), input dtypes) -> (subgraph, Model)


def _model(graph, values: list):
    """The nested model of a subgraph, its inputs typed like the values it is called with
    (values read from the enclosing graph are not typed in the subgraph itself)."""
    from .. import dtypes
    from ..graph import Value

    types = tuple(dtypes.from_numpy(np.asarray(a).dtype) for a in values)
    key = (id(graph), types)
    m = _MODELS.get(key)
    if m is None or m[0] is not graph:
        from ..model import Model
        # Body input shapes in files are hints (onnxruntime does not enforce them either).
        typed = graph.replace(inputs=[Value(v.name, None, t) for v, t in zip(graph.inputs, types)])
        m = _MODELS[key] = (graph, Model(typed))
    return m[1]


def _run(graph, values: list) -> list:
    """Run a subgraph on values for its inputs, in order; returns its outputs in order."""
    model = _model(graph, values)
    out = model.run({v.name: a for v, a in zip(graph.inputs, values)})
    return [out[v.name] for v in graph.outputs]


def _outer(node, n_own: int) -> list:
    return list(node.inputs[n_own:])


def _check_subgraph(node, attr):
    from ..graph import Graph
    if not isinstance(node.attrs.get(attr), Graph):
        raise GraphError(f"node '{node.name}' ({node.op}): attribute '{attr}' must be a graph")


def _scalar_bool(a, node, what) -> bool:
    a = np.asarray(a)
    if a.size != 1:
        raise ShapeError(f"node '{node.name}' ({node.op}): {what} must hold one value, got shape {a.shape}")
    return bool(a.reshape(-1)[0])


# -- If -------------------------------------------------------------------------------------------

def _if(node, args):
    branch = node.attrs["then_branch"] if _scalar_bool(args[0], node, "cond") else node.attrs["else_branch"]
    n_outer = len(branch.inputs)
    return _run(branch, args[len(args) - n_outer:] if n_outer else [])


register("If", _dynamic_type, None, execute=_if, fold=False,
         check=lambda node: (_check_subgraph(node, "then_branch"), _check_subgraph(node, "else_branch")))


# -- Loop -----------------------------------------------------------------------------------------

def _loop(node, args):
    body = node.attrs["body"]
    n_carried = int(node.attrs.get("num_carried", len(body.inputs) - 2))
    m_in, cond_in = args[0], args[1]
    carried = list(args[2:2 + n_carried])
    outer = args[2 + n_carried:]
    max_trips = None if m_in is None else int(np.asarray(m_in).reshape(-1)[0])
    cond = True if cond_in is None else _scalar_bool(cond_in, node, "cond")
    if max_trips is None and cond_in is None:
        raise EngineError(f"node '{node.name}' (Loop): neither a trip count nor a condition: it would never end")
    scans: list = []
    i = 0
    while cond and (max_trips is None or i < max_trips):
        outs = _run(body, [np.array(i, np.int64), np.array(cond)] + carried + outer)
        cond = _scalar_bool(outs[0], node, "the body's condition")
        carried = outs[1:1 + n_carried]
        scans.append(outs[1 + n_carried:])
        i += 1
    n_scan = len(body.outputs) - 1 - n_carried
    stacked = [np.stack([s[k] for s in scans]) if scans else np.zeros((0,), np.float32) for k in range(n_scan)]
    return [np.array(c) for c in carried] + stacked


register("Loop", _dynamic_type, None, execute=_loop, fold=False, check=lambda node: _check_subgraph(node, "body"))


# -- Scan -----------------------------------------------------------------------------------------

def _scan(node, args):
    if node.attrs.get("batch_major"):
        return _scan_batched(node, args)
    body = node.attrs["body"]
    n_scan_in = int(node.attrs["num_scan_inputs"])
    n_own = int(node.attrs.get("num_own_inputs", len(args)))
    own, outer = args[:n_own], args[n_own:]
    n_state = n_own - n_scan_in
    state, xs = list(own[:n_state]), own[n_state:]
    in_axes = list(node.attrs.get("scan_input_axes", [0] * n_scan_in))
    in_dirs = list(node.attrs.get("scan_input_directions", [0] * n_scan_in))
    xs = [np.moveaxis(np.asarray(x), ax % np.ndim(x), 0) for x, ax in zip(xs, in_axes)]
    xs = [x[::-1] if d else x for x, d in zip(xs, in_dirs)]
    steps = {len(x) for x in xs}
    if len(steps) != 1:
        raise ShapeError(f"node '{node.name}' (Scan): scan inputs differ in length along their scan axes: {steps}")
    n = steps.pop()
    ys: list = []
    for t in range(n):
        outs = _run(body, state + [x[t] for x in xs] + outer)
        state = outs[:n_state]
        ys.append(outs[n_state:])
    n_out = len(body.outputs) - n_state
    out_axes = list(node.attrs.get("scan_output_axes", [0] * n_out))
    out_dirs = list(node.attrs.get("scan_output_directions", [0] * n_out))
    stacked = []
    for k in range(n_out):
        y = np.stack([s[k] for s in ys])
        if out_dirs[k]:
            y = y[::-1]
        stacked.append(dtypes.contiguous(np.moveaxis(y, 0, out_axes[k] % y.ndim)))
    return [np.array(s) for s in state] + stacked


def _scan_batched(node, args):
    """Scan as in opset 8: input 0 is the optional sequence lengths; every other input and
    output has a batch dim first and (scan values) time second; each batch row is scanned on
    its own for its length, outputs past it are zero."""
    n_own = int(node.attrs["num_own_inputs"])
    lens, own, outer = args[0], args[1:n_own], args[n_own:]
    n_scan_in = int(node.attrs["num_scan_inputs"])
    n_state = len(own) - n_scan_in
    body = node.attrs["body"]
    dirs = list(node.attrs.get("directions", [0] * n_scan_in))
    batch, steps = np.shape(own[n_state])[:2]
    finals, outs = [], []
    for b in range(batch):
        n = steps if lens is None else int(np.asarray(lens).reshape(-1)[b])
        state = [np.asarray(s)[b] for s in own[:n_state]]
        xs = [np.asarray(x)[b, :n][::-1] if d else np.asarray(x)[b, :n] for x, d in zip(own[n_state:], dirs)]
        ys = []
        for t in range(n):
            res = _run(body, state + [x[t] for x in xs] + outer)
            state, ys = res[:n_state], ys + [res[n_state:]]
        finals.append(state)
        outs.append(ys)
    n_out = len(body.outputs) - n_state
    result = [np.stack([f[k] for f in finals]) for k in range(n_state)]
    for k in range(n_out):
        shape = next((np.shape(ys[0][k]) for ys in outs if ys), ())
        dt = next((np.asarray(ys[0][k]).dtype for ys in outs if ys), np.float32)
        y = np.zeros((batch, steps) + tuple(shape), dt)
        for b, ys in enumerate(outs):
            for t, step in enumerate(ys):
                y[b, t] = step[k]
        result.append(y)
    return result


register("Scan", _dynamic_type, None, execute=_scan, fold=False, check=lambda node: _check_subgraph(node, "body"))
