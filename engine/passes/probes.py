"""The graph at two concrete input sizes, for passes that must tell the batch from the sequence.

`probe_types` (shapes.py) gives every unknown dim one size, so a value of shape (batch, seq)
cannot be told from (seq, batch). Here each distinct unknown dim of the graph inputs (a dim
name, or an unnamed None) gets its own size, different from every other's and different between
the two probes; inferring at both gives every value's concrete type, and the values fixed by the
shapes (masks and index ranges computed from Shape ops), at each. A property that holds at both
probes and is a function of the shapes only (how a Reshape regroups a tensor's elements, say)
holds for every size whose dims are as distinct.

    >>> p = Probes.of(graph)
    >>> p.shapes("scores")      # ((3, 4, 7, 7), (5, 4, 6, 6)): batch 3 / 5, sequence 7 / 6
"""

from __future__ import annotations

import numpy as np

from ..errors import EngineError
from ..graph import Graph
from .shapes import infer

# The sizes the unknown dims take, in order of first appearance: small (inference also computes
# the shape-derived values), distinct within a probe, different between the probes, and with no
# simple relation (s = b + c, s = 2b ± 1) holding at both.
_SIZES = ((3, 7, 11, 13, 17, 19), (5, 6, 8, 12, 14, 18))


class Probes:
    def __init__(self, types: list, values: list):
        self.types, self.values = types, values

    @staticmethod
    def of(graph: Graph) -> "Probes | None":
        """The two probes, or None when the graph has more unknown dims than probe sizes, an
        input of unknown rank, or a rule that needs data (or rejects these sizes). Dims are told
        apart by name; if the graph rejects that (inputs whose dims carry different names but
        must be equal, as exporters that name each input's axes write), by axis position."""
        if any(v.shape is None for v in graph.inputs):
            return None
        for key in (lambda v, k, d: d if isinstance(d, str) else (v.name, k), lambda v, k, d: k):
            dims: dict = {}
            for v in graph.inputs:
                for k, d in enumerate(v.shape):
                    if not isinstance(d, int):
                        dims.setdefault(key(v, k, d), len(dims))
            if len(dims) > len(_SIZES[0]):
                continue
            types, values = [], []
            for sizes in _SIZES:
                shapes = {v.name: tuple(d if isinstance(d, int) else sizes[dims[key(v, k, d)]]
                                        for k, d in enumerate(v.shape)) for v in graph.inputs}
                try:
                    found = infer(graph, shapes)
                except EngineError:
                    break
                types.append(found.types)
                values.append(found.values)
            else:
                return Probes(types, values)
        return None

    def shapes(self, name: str):
        """(shape at probe 1, shape at probe 2), or None for a name without a type."""
        if name not in self.types[0]:
            return None
        return tuple(t[name].shape for t in self.types)

    def dtype(self, name: str):
        t = self.types[0].get(name)
        return None if t is None else t.dtype

    def known(self, name: str):
        """The value at each probe when the shapes fix it (a weight, a shape-derived mask),
        else None."""
        vals = tuple(v.get(name) for v in self.values)
        return None if any(v is None for v in vals) else vals

    def static_shape(self, name: str):
        """The shape as a Reshape target: the dims equal at both probes as they are, the one
        that differs as -1; None if more than one differs (or the name is unknown)."""
        s = self.shapes(name)
        if s is None or len(s[0]) != len(s[1]):
            return None
        out = [a if a == b else -1 for a, b in zip(*s)]
        return None if out.count(-1) > 1 else np.asarray(out, np.int64)
