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

from collections import OrderedDict

import numpy as np

from .. import dtypes
from ..graph import Graph, Value
from ..ops import get_op
from .plan import Plan, Schedule

MAX_SEGMENT_PLANS = 64  # per segment, least recently used dropped first


def is_dynamic(graph: Graph) -> bool:
    return any(get_op(n.op, n.name).execute is not None for n in graph.nodes)


class _StaticSegment:
    def __init__(self, graph: Graph, nodes: list, needed_later: set):
        produced = {o for n in nodes for o in n.outputs if o}
        reads = [i for n in nodes for i in n.inputs if i]
        self.inputs = list(dict.fromkeys(i for i in reads if i not in produced and i not in graph.initializers))
        self.outputs = [o for o in dict.fromkeys(o for n in nodes for o in n.outputs if o) if o in needed_later]
        self.graph = Graph([Value(i, None) for i in self.inputs], [Value(o, None) for o in self.outputs], nodes,
                           {k: v for k, v in graph.initializers.items() if k in set(reads)})
        self.schedule = Schedule(self.graph)
        self.plans: OrderedDict = OrderedDict()
        self.cache: dict = {}  # packed weights of this segment, shared by its plans

    def run(self, env: dict, pool) -> None:
        arrays = [env[i] for i in self.inputs]
        key = tuple((a.shape, a.dtype.str) for a in arrays)
        plan = self.plans.get(key)
        if plan is None:
            plan = Plan(self.schedule, {i: a.shape for i, a in zip(self.inputs, arrays)}, self.cache,
                        {i: dtypes.from_numpy(a.dtype) for i, a in zip(self.inputs, arrays)})
            self.plans[key] = plan
            while len(self.plans) > MAX_SEGMENT_PLANS:
                self.plans.popitem(last=False)
        else:
            self.plans.move_to_end(key)
        env.update(zip(self.outputs, plan.run([dtypes.contiguous(a) for a in arrays], pool)))


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
