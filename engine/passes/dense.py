"""Linear layers as exporters write them -> the engine's Dense (weights packed once, bias and
activation in the GEMM epilogue): Gemm(x, W, c) with constant W and a bias-shaped C, and
MatMul(x, W) with a constant 2-D W, optionally followed by Add(·, b) with a constant 1-D b."""

from __future__ import annotations

import numpy as np

from .. import dtypes
from ..graph import Graph, Node
from .rewrite import Names, consumers, producers
from .stats import record


def to_dense(graph: Graph) -> Graph:
    weights = dict(graph.initializers)
    names = Names(graph)
    out, changed = [], False
    for n in graph.nodes:
        d = _gemm(n, weights, names) if n.op == "Gemm" else _matmul(n, weights) if n.op == "MatMul" else None
        if d is None:
            out.append(n)
        else:
            out.append(d)
            changed = True
    if not changed:
        return graph
    return _fold_bias(graph.replace(nodes=out, initializers=weights))


def _float_const(weights, name, ndim=None):
    w = weights.get(name) if name else None
    if w is None or w.dtype != np.float32 or (ndim is not None and w.ndim != ndim):
        return None
    return w


def _gemm(n: Node, weights: dict, names: Names):
    a = n.attrs
    if a.get("transA", 0) or len(n.inputs) < 2:
        return None
    w = _float_const(weights, n.inputs[1], 2)
    if w is None:
        return None
    alpha, beta = float(a.get("alpha", 1.0)), float(a.get("beta", 1.0))
    w = w.T if a.get("transB", 0) else w
    if alpha != 1.0:
        w = w * np.float32(alpha)
    w_name = names.fresh(f"{n.name}/kernel")
    weights[w_name] = dtypes.contiguous(w, np.float32)
    inputs = [n.inputs[0], w_name]
    if len(n.inputs) > 2 and n.inputs[2]:
        c = _float_const(weights, n.inputs[2])
        if c is None or c.size != w.shape[1] or (c.ndim == 2 and c.shape[0] != 1) or c.ndim > 2:
            return None  # a full (M, N) C or a runtime C: stays a Gemm
        b_name = names.fresh(f"{n.name}/bias")
        weights[b_name] = (c.reshape(-1) * np.float32(beta)).astype(np.float32)
        inputs.append(b_name)
        record("dense_bias")
    return Node("Dense", inputs, list(n.outputs), {}, n.name)


def _matmul(n: Node, weights: dict):
    if _float_const(weights, n.inputs[1], 2) is None:
        return None
    return Node("Dense", [n.inputs[0], n.inputs[1]], list(n.outputs), {}, n.name)


def _fold_bias(graph: Graph) -> Graph:
    """Dense without bias (from MatMul) followed by Add of a constant (N,) vector: one Dense."""
    outputs = {v.name for v in graph.outputs}
    uses, prod = consumers(graph.nodes), producers(graph.nodes)
    weights = dict(graph.initializers)
    names = Names(graph)
    replaced, dropped = {}, set()
    for add in graph.nodes:
        if add.op != "Add" or len(add.inputs) != 2:
            continue
        for k in (0, 1):
            d = prod.get(add.inputs[k])
            b = graph.initializers.get(add.inputs[1 - k])
            if (d is None or d.op != "Dense" or len(d.inputs) != 2 or id(d) in dropped or b is None
                    or b.dtype != np.float32 or d.outputs[0] in outputs or len(uses.get(d.outputs[0], [])) != 1):
                continue
            n_out = graph.initializers[d.inputs[1]].shape[1]
            if b.size != n_out or any(s != 1 for s in b.shape[:-1]) or b.shape[-1:] != (n_out,):
                continue
            bias = add.inputs[1 - k]
            if b.ndim != 1:  # (1, N) and the like: a (N,) copy under a new name
                bias = names.fresh(f"{d.name}/bias")
                weights[bias] = dtypes.contiguous(b.reshape(-1))
            replaced[id(d)] = Node("Dense", [d.inputs[0], d.inputs[1], bias], list(add.outputs), {}, d.name)
            dropped.add(id(add))
            record("dense_bias")
            break
    if not replaced:
        return graph
    nodes = [replaced.get(id(n), n) for n in graph.nodes if id(n) not in dropped]
    return graph.replace(nodes=nodes, initializers=weights)
