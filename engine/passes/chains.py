"""Chains of data-movement nodes (Reshape, Transpose, Unsqueeze, Squeeze, Flatten, Expand,
Identity) between two values, and what they do to the elements.

Exporters spell one layout change in many ways — (B, S, H·D) to (B, H, S, D) is a Reshape and a
Transpose, but the SDPA decomposition adds Reshape(-1, L, D), Transpose(0, 2, 1), Reshape back,
and grouped-query heads add Unsqueeze, Expand, Reshape — and the Reshape targets are computed
from Shape ops. Rather than match spellings, a chain is run on an index tensor (element k holds
k) at both probes (probes.py) and compared with the layout a fusion wants: equal at both, the
chain moves every element where the fused op would read it, whatever its spelling.

Scalar Mul/Div by a constant (a softmax scale folded onto Q or K) and a RotaryEmbedding may sit
in a chain: neither moves elements; the caller decides what they mean."""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

from ..graph import Node
from .probes import Probes

MOVES = {"Reshape", "Transpose", "Unsqueeze", "Squeeze", "Flatten", "Expand", "Identity"}


def scalar_factor(node: Node, weights: dict):
    """(data input, factor) when node is Mul by a scalar float constant (either side) or Div
    by one (right side): x·c or x/c; else None."""
    if node.op not in ("Mul", "Div") or len(node.inputs) != 2:
        return None
    for k in ((0, 1) if node.op == "Mul" else (0,)):
        c = weights.get(node.inputs[1 - k])
        if c is not None and c.size == 1 and c.dtype.kind == "f":
            v = float(c.reshape(-1)[0])
            if node.op == "Div":
                return (node.inputs[0], 1.0 / v) if v != 0 else None
            return node.inputs[k], v
    return None


def data_input(node: Node, weights: dict):
    """The input a chain follows through node, or None if node is not a chain link."""
    if node.op in MOVES or node.op == "RotaryEmbedding":
        return node.inputs[0] if node.inputs else None
    s = scalar_factor(node, weights)
    return s[0] if s else None


def trace_back(value: str, producers: dict, weights: dict, links: set) -> list:
    """The nodes before `value` along chain links whose op is in `links` (plus "Scale" for the
    scalar Mul/Div), nearest last: [n_1, ..., n_k] with n_k producing value."""
    nodes = []
    while True:
        n = producers.get(value)
        if n is None:
            break
        kind = "Scale" if n.op in ("Mul", "Div") else n.op
        src = data_input(n, weights) if kind in links else None
        if src is None:
            break
        nodes.append(n)
        value = src
    nodes.reverse()
    return nodes


def chain_source(nodes: list, weights: dict, target: str) -> str:
    return data_input(nodes[0], weights) if nodes else target


def scale_of(nodes: list, weights: dict) -> float:
    return math.prod(scalar_factor(n, weights)[1] for n in nodes if n.op in ("Mul", "Div"))


def _step(node: Node, a: np.ndarray, out_shape) -> np.ndarray | None:
    if node.op == "Transpose":
        perm = node.attrs.get("perm") or list(range(a.ndim))[::-1]
        b = a.transpose([int(p) for p in perm]) if len(perm) == a.ndim else None
    elif node.op == "Expand":
        try:
            b = np.broadcast_to(a, out_shape)
        except ValueError:
            return None
    elif node.op in MOVES:
        b = a.reshape(out_shape) if a.size == math.prod(out_shape) else None
    else:  # a scale or a rotary: elements stay in place
        b = a
    return b if b is not None and b.shape == tuple(out_shape) else None


def runs_as(probes: Probes, source: str, nodes: list, want: Callable, checkpoints: dict | None = None,
            flat: bool = False) -> bool:
    """Whether the chain `nodes` from `source` moves elements as `want(index, probe)` does at both
    probes (`index`: np.arange over source's shape at that probe). `checkpoints` {id(node): fn}
    also checks the elements arriving at a node; flat compares in row-major order only (the
    chain's end may group dims differently from `want`)."""
    for k in range(2):
        shape = probes.types[k][source].shape
        index = np.arange(math.prod(shape)).reshape(shape)
        a = index
        for n in nodes:
            check = (checkpoints or {}).get(id(n))
            if check is not None:
                expect = check(index, k)
                if expect is None or a.shape != expect.shape or not np.array_equal(a, expect):
                    return False
            a = _step(n, a, probes.types[k][n.outputs[0]].shape)
            if a is None:
                return False
        expect = want(index, k)
        if expect is None:
            return False
        if flat:
            if a.size != expect.size or not np.array_equal(a.reshape(-1), expect.reshape(-1)):
                return False
        elif a.shape != expect.shape or not np.array_equal(a, expect):
            return False
    return True
