"""Graph IR: values, nodes and constant weights, independent of any file format.

A `Graph` is what every importer produces and what the planner consumes:

    >>> g = Graph(inputs=[Value("x", (None, 4))], outputs=[Value("y", (None, 3))],
    ...           nodes=[Node("Dense", ["x", "w", "b"], ["y"], {"activation": "relu"})],
    ...           initializers={"w": w, "b": b})

Shapes use None (or a name, like ONNX's dim_param) for dimensions fixed only at run time
(the batch); a shape of None means not even the rank is declared. Nodes are kept in
topological order; `validate()` checks that and every reference.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import GraphError

Shape = tuple  # of int | None


@dataclass
class Value:
    name: str
    shape: Shape  # ints, None or dim names; or None: unknown rank
    dtype: str = "float32"  # an engine.dtypes name

    def to_json(self) -> dict:
        return {"name": self.name, "shape": None if self.shape is None else list(self.shape), "dtype": self.dtype}

    @staticmethod
    def from_json(d: dict) -> "Value":
        shape = d["shape"]
        return Value(d["name"], None if shape is None else tuple(shape), d.get("dtype", "float32"))


@dataclass
class Node:
    op: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Any] = field(default_factory=dict)
    name: str = ""

    def __post_init__(self):
        if not self.name:
            self.name = f"{self.op}:{self.outputs[0] if self.outputs else '?'}"

    def to_json(self) -> dict:
        return {"op": self.op, "name": self.name, "inputs": list(self.inputs),
                "outputs": list(self.outputs), "attrs": self.attrs}

    @staticmethod
    def from_json(d: dict) -> "Node":
        return Node(d["op"], list(d["inputs"]), list(d["outputs"]), dict(d.get("attrs", {})),
                    d.get("name", ""))


@dataclass
class Graph:
    inputs: list[Value]
    outputs: list[Value]
    nodes: list[Node]
    initializers: dict[str, np.ndarray] = field(default_factory=dict)
    metadata: dict = field(default_factory=dict)  # where the model came from (producer, opsets, ...)

    def replace(self, **changes) -> "Graph":
        """A copy with some fields replaced (passes use it; metadata travels along)."""
        fields = {"inputs": self.inputs, "outputs": self.outputs, "nodes": self.nodes,
                  "initializers": self.initializers, "metadata": self.metadata}
        fields.update(changes)
        return Graph(**fields)

    def producers(self) -> dict[str, Node]:
        return {out: n for n in self.nodes for out in n.outputs}

    def consumers(self) -> dict[str, list[Node]]:
        uses: dict[str, list[Node]] = {}
        for n in self.nodes:
            for i in n.inputs:
                if i:
                    uses.setdefault(i, []).append(n)
        return uses

    def validate(self) -> None:
        """Raise GraphError unless every name is defined once, before use."""
        from .ops import get_op  # late: ops import graph types

        defined: set[str] = set()
        for v in self.inputs:
            if v.name in defined:
                raise GraphError(f"graph input '{v.name}' is declared twice")
            defined.add(v.name)
        for name in self.initializers:
            if name in defined:
                raise GraphError(f"'{name}' is both a graph input and a weight")
            defined.add(name)
        for node in self.nodes:
            op = get_op(node.op, node=node.name)
            if not isinstance(node.attrs, dict):
                raise GraphError(f"node '{node.name}' ({node.op}): attrs must be a mapping")
            if op.check is not None:
                op.check(node)
            for v in node.attrs.values():  # bodies of If/Loop/Scan: the same checks, at load
                if isinstance(v, Graph):
                    v.validate()
            for i in node.inputs:
                if i and i not in defined:
                    raise GraphError(f"node '{node.name}' ({node.op}) reads '{i}', which is not "
                                     "defined before it (missing weight, or nodes out of order)")
            for o in node.outputs:
                if not o:  # an optional output nobody wants
                    continue
                if o in defined:
                    raise GraphError(f"node '{node.name}' ({node.op}) redefines '{o}'")
                defined.add(o)
        for v in self.outputs:
            if v.name not in defined:
                raise GraphError(f"graph output '{v.name}' is never produced")
        if not self.outputs:
            raise GraphError("graph has no outputs")

    def to_json(self) -> dict:
        d = {"inputs": [v.to_json() for v in self.inputs],
             "outputs": [v.to_json() for v in self.outputs],
             "nodes": [n.to_json() for n in self.nodes]}
        if self.metadata:
            d["metadata"] = self.metadata
        return d

    @staticmethod
    def from_json(d: dict, initializers: dict[str, np.ndarray]) -> "Graph":
        return Graph([Value.from_json(v) for v in d["inputs"]],
                     [Value.from_json(v) for v in d["outputs"]],
                     [Node.from_json(n) for n in d["nodes"]], dict(initializers),
                     dict(d.get("metadata", {})))
