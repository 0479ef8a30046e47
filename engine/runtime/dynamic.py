"""Graphs with ops whose output shapes depend on input *values* (NonZero, Unique, ...) or that
run subgraphs (If, Loop, Scan).

Such a graph is cut at those ops into segments. A static segment (a run of ordinary nodes) is
planned and run like any graph, once per signature of *its* inputs, so the plans are cached
and the work is native; a dynamic op runs between segments through its `execute` function,
which sees real arrays (NonZero counts, then fills an exactly-sized output; If runs one of its
branches as a nested model). Values that cross a cut are materialised as arrays. A graph
without such ops never comes here: it keeps the single-program fast path.
"""

from __future__ import annotations

import numpy as np

from .. import dtypes
from ..graph import Graph, Value
from ..ops import get_op

MAX_SEGMENT_PLANS = 64  # per segment, least recently used dropped first


def is_dynamic(graph: Graph) -> bool:
    return any(get_op(n.op, n.name).execute is not None for n in graph.nodes)


class _StaticSegment:
    """A run of ordinary nodes between cuts: a nested model (built on first use, its inputs
    typed like the arrays it gets), so it plans and caches like any model — per signature, and
    per value for inputs that decide shapes."""

    def __init__(self, graph: Graph, nodes: list, needed_later: set):
        produced = {o for n in nodes for o in n.outputs if o}
        reads = [i for n in nodes for i in n.inputs if i]
        self.inputs = list(dict.fromkeys(i for i in reads if i not in produced and i not in graph.initializers))
        self.outputs = [o for o in dict.fromkeys(o for n in nodes for o in n.outputs if o) if o in needed_later]
        self.graph = Graph([Value(i, None) for i in self.inputs], [Value(o, None) for o in self.outputs], nodes,
                           {k: v for k, v in graph.initializers.items() if k in set(reads)})
        self.model = None

    def run(self, env: dict, pool) -> None:
        arrays = [env[i] for i in self.inputs]
        if self.model is None:
            from ..model import Model
            typed = [Value(i, None, dtypes.from_numpy(a.dtype)) for i, a in zip(self.inputs, arrays)]
            self.model = Model(self.graph.replace(inputs=typed), plan_cache_size=MAX_SEGMENT_PLANS, optimize=False)
        out = self.model.run(dict(zip(self.inputs, arrays)))
        env.update((o, out[o]) for o in self.outputs)


class SegmentedPlan:
    """The per-model executor of a graph with dynamic ops (one for all signatures: each
    static segment caches its own plans)."""

    program = None  # no single native program: predict()'s fast path does not apply

    def __init__(self, graph: Graph):
        self.graph = graph
        self.input_names = [v.name for v in graph.inputs]
        self.output_names = [v.name for v in graph.outputs]
        later = _reads_after(graph)
        self.steps: list = []
        run: list = []
        for idx, node in enumerate(graph.nodes):
            op = get_op(node.op, node.name)
            if op.execute is None:
                run.append(node)
                continue
            if run:
                self.steps.append(_StaticSegment(graph, run, later[idx - 1]))
                run = []
            self.steps.append((node, op))
        if run:
            self.steps.append(_StaticSegment(graph, run, later[len(graph.nodes) - 1]))

    def run(self, inputs: list, pool) -> list:
        env = dict(zip(self.input_names, inputs))
        weights = self.graph.initializers
        for step in self.steps:
            if isinstance(step, _StaticSegment):
                step.run(env, pool)
                continue
            node, op = step
            args = [None if not i else env[i] if i in env else weights[i] for i in node.inputs]
            for name, value in zip(node.outputs, op.execute(node, args)):
                if name:
                    env[name] = value
        return [np.array(env[o] if o in env else weights[o]) for o in self.output_names]


def _reads_after(graph: Graph) -> list:
    """For each node index i, the values read by nodes after i or by the graph's outputs."""
    later, acc = [set() for _ in graph.nodes], {v.name for v in graph.outputs}
    for idx in range(len(graph.nodes) - 1, -1, -1):
        later[idx] = set(acc)
        acc.update(i for i in graph.nodes[idx].inputs if i)
    return later
