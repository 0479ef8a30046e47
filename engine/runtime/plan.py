"""A plan: for one input signature, every buffer decided and every node bound to a native
kernel call, once. Running it is one call into C++ (engine._C.Program.run) with an execution
context (arena + slot table) borrowed from the model's ContextPool, so a plan is immutable
and many threads can run it at once.

What does not depend on the signature (op lookup, which buffer each value lives in, liveness,
which outputs are written in place) is worked out once per graph in a `Schedule`; a plan for
a new signature only runs the shape rules, assigns arena offsets and emits the steps.
Pre-packed weights live in the model-wide cache that every plan shares.
"""

from __future__ import annotations

import math

import numpy as np

from .. import _C
from ..errors import GraphError
from ..graph import Graph
from ..ops import get_op
from ..passes import infer_shapes
from .arena import ArenaAllocator

_F32 = 4  # bytes per element: every buffer is float32 until the runtime becomes typed


class EmitContext:
    """What an op's forward binding sees: shapes, slots, constants and the model-wide
    cache of pre-packed weights."""

    def __init__(self, program, shapes, slots, consts, cache):
        self.program, self.shapes, self.slots, self.consts, self._cache = (
            program, shapes, slots, consts, cache)

    def shape(self, name: str) -> tuple:
        return self.shapes[name]

    def slot(self, name: str) -> int:
        slot = self.slots.get(name)
        if slot is None:  # a constant read directly by a kernel: bound on first use
            slot = self.slots[name] = self.program.new_slot()
            self.program.bind_const(slot, self.const(name))
        return slot

    def const(self, name: str) -> np.ndarray:
        try:
            return self.consts[name]
        except KeyError:
            raise GraphError(f"'{name}' must be a constant weight (an initializer), "
                             "not a computed value") from None

    def cached(self, key, factory):
        if key not in self._cache:
            self._cache[key] = factory()
        return self._cache[key]


class Schedule:
    """Signature-independent facts about a graph, computed once and shared by its plans."""

    def __init__(self, graph: Graph):
        self.graph = graph
        self.nodes = graph.nodes
        self.ops = [get_op(n.op, n.name) for n in self.nodes]
        self.input_names = [v.name for v in graph.inputs]
        self.output_names = [v.name for v in graph.outputs]

        # Storage roots: an alias op's output lives in its input's buffer.
        root: dict[str, str] = {}
        for node, op in zip(self.nodes, self.ops):
            if op.alias:
                root[node.outputs[0]] = root.get(node.inputs[0], node.inputs[0])
        self.root = root

        # Graph outputs are written straight into the caller's arrays when a kernel produces
        # them; otherwise (alias, input, constant, repeated) they are copied at the end.
        produced = {o for n, op in zip(self.nodes, self.ops) if not op.alias for o in n.outputs}
        self.direct_outputs: dict[str, int] = {}
        self.copied_outputs: list[tuple[int, str]] = []
        for i, name in enumerate(self.output_names):
            if name in produced and name not in self.direct_outputs:
                self.direct_outputs[name] = i
            else:
                self.copied_outputs.append((i, name))

        # Liveness of each root: index of the last node that reads it (or the end).
        last_use: dict[str, int] = {}
        for idx, node in enumerate(self.nodes):
            for i in node.inputs:
                if i:
                    last_use[self.root_of(i)] = idx
        for _, name in self.copied_outputs:
            last_use[self.root_of(name)] = len(self.nodes)
        self.last_use = last_use

    def root_of(self, name: str) -> str:
        return self.root.get(name, name)


class Plan:
    def __init__(self, schedule: Schedule, input_shapes: dict[str, tuple], cache: dict):
        self.input_names = schedule.input_names
        self.output_names = schedule.output_names
        self.shapes = infer_shapes(schedule.graph, input_shapes)
        self.output_shapes = [self.shapes[n] for n in self.output_names]
        self.program = _C.Program()
        self._build(schedule, cache)
        if len(self.output_shapes) == 1:
            self.program.set_output_shape(list(self.output_shapes[0]))

    @property
    def arena_bytes(self) -> int:
        return self.program.arena_bytes

    def run(self, inputs: list[np.ndarray], pool) -> list[np.ndarray]:
        outputs = [np.empty(s, np.float32) for s in self.output_shapes]
        self.program.run(inputs, outputs, pool)
        return outputs

    # -- building ---------------------------------------------------------------------

    def _build(self, sch: Schedule, cache: dict) -> None:
        prog, shapes = self.program, self.shapes
        nbytes = {k: math.prod(s) * _F32 for k, s in shapes.items()}

        slots: dict[str, int] = {}
        input_slots = []
        for name in self.input_names:
            slots[name] = prog.new_slot()
            input_slots.append(slots[name])
        output_slots = [None] * len(self.output_names)
        for name, i in sch.direct_outputs.items():
            slots[name] = output_slots[i] = prog.new_slot()

        offsets, arena_size = _assign_offsets(sch, nbytes, set(slots))
        prog.arena_bytes = arena_size

        ctx = EmitContext(prog, shapes, slots, sch.graph.initializers, cache)
        for node, op in zip(sch.nodes, sch.ops):
            if op.alias:
                slots[node.outputs[0]] = ctx.slot(sch.root_of(node.inputs[0]))
                continue
            for out in node.outputs:
                if out not in slots:
                    slots[out] = prog.new_slot()
                    prog.bind_arena(slots[out], offsets[out])
            op.forward(ctx, node)
        for i, name in sch.copied_outputs:
            output_slots[i] = prog.new_slot()
            prog.copy(output_slots[i], ctx.slot(sch.root_of(name)), nbytes[name])
        prog.set_io(input_slots, [nbytes[n] for n in self.input_names], output_slots,
                    [nbytes[n] for n in self.output_names])


def _assign_offsets(sch: Schedule, nbytes: dict, preassigned: set):
    """Arena offset of every intermediate a kernel writes, reusing a buffer once its last
    reader has run; an in-place op takes over its dying input's buffer."""
    arena = ArenaAllocator()
    offsets: dict[str, int] = {}
    live: dict[str, int] = {}
    last_use = sch.last_use
    for idx, (node, op) in enumerate(zip(sch.nodes, sch.ops)):
        if op.alias:
            continue
        for out in node.outputs:
            if out in preassigned:
                continue
            src = sch.root_of(node.inputs[0]) if node.inputs and node.inputs[0] else None
            if (op.inplace and src in live and last_use.get(src) == idx
                    and nbytes[src] == nbytes[out]):
                live[out] = live.pop(src)
            else:
                live[out] = arena.alloc(nbytes[out])
            offsets[out] = live[out]
        for i in set(node.inputs):
            r = sch.root_of(i) if i else None
            if r in live and last_use.get(r) == idx:
                arena.free(live.pop(r), nbytes[r])
        for out in node.outputs:  # written but never read
            if out in live and out not in last_use:
                arena.free(live.pop(out), nbytes[out])
    return offsets, arena.size
