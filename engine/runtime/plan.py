"""A plan: for one input signature, every buffer decided and every node bound to a native
kernel call, once. Running it is one call into C++ (engine._C.Program.run)."""

from __future__ import annotations

import math

import numpy as np

from .. import _C
from ..errors import GraphError
from ..graph import Graph
from ..ops import get_op
from ..passes import infer_shapes
from .arena import ArenaAllocator


class EmitContext:
    """What an op's forward binding sees: shapes, slots, constants and the model-wide
    cache of pre-packed weights."""

    def __init__(self, program, shapes, slots, consts, cache):
        self.program, self.shapes, self.slots, self.consts, self._cache = (
            program, shapes, slots, consts, cache)

    def shape(self, name: str) -> tuple:
        return self.shapes[name]

    def slot(self, name: str) -> int:
        return self.slots[name]

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


class Plan:
    def __init__(self, graph: Graph, input_shapes: dict[str, tuple], cache: dict):
        self.input_names = [v.name for v in graph.inputs]
        self.output_names = [v.name for v in graph.outputs]
        self.shapes = infer_shapes(graph, input_shapes)
        self.output_shapes = [self.shapes[n] for n in self.output_names]
        self.program = _C.Program()
        self._build(graph, cache)
        if len(self.output_shapes) == 1:
            self.program.set_output_shape(list(self.output_shapes[0]))

    def run(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        outputs = [np.empty(s, np.float32) for s in self.output_shapes]
        self.program.run(inputs, outputs)
        return outputs

    # -- building ---------------------------------------------------------------------

    def _build(self, graph: Graph, cache: dict) -> None:
        prog, shapes, consts = self.program, self.shapes, graph.initializers
        numel = {k: math.prod(s) for k, s in shapes.items()}
        nodes = graph.nodes
        ops = [get_op(n.op, n.name) for n in nodes]

        # Storage roots: an alias op's output lives in its input's buffer.
        root = {name: name for name in shapes}
        for node, op in zip(nodes, ops):
            if op.alias:
                root[node.outputs[0]] = root[node.inputs[0]]

        # Graph outputs are written straight into the caller's arrays when a kernel produces
        # them; otherwise (alias, input, constant, repeated) they are copied at the end.
        produced_by_kernel = {o for n, op in zip(nodes, ops) if not op.alias for o in n.outputs}
        direct_outputs, copied_outputs = {}, []
        for i, name in enumerate(self.output_names):
            if name in produced_by_kernel and name not in direct_outputs:
                direct_outputs[name] = i
            else:
                copied_outputs.append((i, name))

        # Liveness of each root: index of the last node that reads it (or the end).
        end = len(nodes)
        last_use: dict[str, int] = {}
        for idx, node in enumerate(nodes):
            for i in node.inputs:
                if i:
                    last_use[root[i]] = idx
        for _, name in copied_outputs:
            last_use[root[name]] = end

        slots: dict[str, int] = {}
        input_slots = []
        for name in self.input_names:
            slots[name] = prog.new_slot()
            input_slots.append(slots[name])
        for name, arr in consts.items():
            if name in last_use:
                slots[name] = prog.new_slot()
                prog.bind_array(slots[name], arr, 0, arr.size)
        output_slots = [None] * len(self.output_names)
        for name, i in direct_outputs.items():
            slots[name] = output_slots[i] = prog.new_slot()

        offsets, arena_size = _assign_offsets(nodes, ops, root, last_use, numel, set(slots))
        self.arena = _aligned_empty(arena_size)
        self.arena_bytes = arena_size * 4

        ctx = EmitContext(prog, shapes, slots, consts, cache)
        for node, op in zip(nodes, ops):
            if op.alias:
                slots[node.outputs[0]] = slots[root[node.inputs[0]]]
                continue
            for out in node.outputs:
                if out not in slots:
                    slots[out] = prog.new_slot()
                    prog.bind_array(slots[out], self.arena, offsets[out], numel[out])
            op.forward(ctx, node)
        for i, name in copied_outputs:
            output_slots[i] = prog.new_slot()
            prog.copy(output_slots[i], slots[root[name]], numel[name])
        prog.set_io(input_slots, [numel[n] for n in self.input_names], output_slots,
                    [numel[n] for n in self.output_names])


def _assign_offsets(nodes, ops, root, last_use, numel, preassigned):
    """Arena offset of every intermediate a kernel writes, reusing a buffer once its last
    reader has run; an in-place op takes over its dying input's buffer."""
    arena = ArenaAllocator()
    offsets: dict[str, int] = {}
    live: dict[str, int] = {}
    for idx, (node, op) in enumerate(zip(nodes, ops)):
        if op.alias:
            continue
        for out in node.outputs:
            if out in preassigned:
                continue
            src = root[node.inputs[0]] if node.inputs and node.inputs[0] else None
            if (op.inplace and src in live and last_use.get(src) == idx
                    and numel[src] == numel[out]):
                live[out] = live.pop(src)
            else:
                live[out] = arena.alloc(numel[out])
            offsets[out] = live[out]
        for i in set(node.inputs):
            r = root.get(i)
            if r in live and last_use.get(r) == idx:
                arena.free(live.pop(r), numel[r])
        for out in node.outputs:  # written but never read
            if out in live and out not in last_use:
                arena.free(live.pop(out), numel[out])
    return offsets, arena.size


def _aligned_empty(n: int) -> np.ndarray:
    """A float32 array of n elements whose data starts on a 64-byte boundary."""
    raw = np.empty(max(n, 1) + 16, np.float32)
    start = (-raw.ctypes.data % 64) // 4
    return raw[start:start + max(n, 1)]
