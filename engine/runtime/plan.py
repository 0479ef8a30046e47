"""A plan: for one input signature, every buffer decided and every node bound to a native
kernel call, once. Running it is one call into C++ (engine._C.Program.run) with an execution
context (arena + slot table) borrowed from the model's ContextPool, so a plan is immutable
and many threads can run it at once.

Making a plan: infer every value's type for the signature (passes/shapes.py), which also
computes the values the signature fixes (Shape outputs and the arithmetic on them) so those
nodes need no kernel; give each remaining intermediate a byte range in the arena by liveness
(in place where an op allows); then let each op's lowering add its kernel steps. Pre-packed
weights live in the model-wide cache that every plan shares.
"""

from __future__ import annotations

import math

import numpy as np

from .. import _C, dtypes
from ..errors import GraphError, UnsupportedOpError
from ..graph import Graph
from ..ops import get_op
from ..ops.registry import TensorType
from ..passes.shapes import infer, weight_types
from .arena import ArenaAllocator


class Schedule:
    """What does not depend on the signature: the graph's nodes with their op definitions."""

    def __init__(self, graph: Graph):
        self.graph = graph
        self.nodes = graph.nodes
        self.ops = [get_op(n.op, n.name) for n in self.nodes]
        self.input_names = [v.name for v in graph.inputs]
        self.output_names = [v.name for v in graph.outputs]
        self.weight_types = weight_types(graph)
        for node, op in zip(self.nodes, self.ops):
            if op.lower is None and not op.alias and op.evaluate is None and op.execute is None:
                raise UnsupportedOpError(f"node '{node.name}': op {node.op} has no kernel")


class EmitContext:
    """What an op's lowering sees: types, known values, slots, the kernel call builder and the
    model-wide cache of pre-packed weights. The CPU backend's side of the op layer."""

    def __init__(self, program, types, values, slots, cache, scratch_base: int):
        self.program, self.types, self.values, self.slots, self._cache = (
            program, types, values, slots, cache)
        # Scratch lives past the intermediates: every node's scratch starts at the same
        # offset (a node's scratch is dead once it ran), so the region is the largest ask.
        self._scratch_base = scratch_base
        self._scratch_used = 0
        self.scratch_bytes = 0
        self._n_made = 0  # plan constants and scratch buffers made so far (their names)
        self.node = None  # the node being lowered; each step is attributed to it (profiling)
        self.step_nodes: list = []

    # -- what the graph says about a value --
    def shape(self, name: str) -> tuple:
        return self.types[name].shape

    def dtype(self, name: str) -> str:
        return self.types[name].dtype

    def value(self, name: str):
        """The value if it is known when planning (a weight, or fixed by the shapes), else None."""
        return self.values.get(name)

    def const(self, name: str) -> np.ndarray:
        v = self.values.get(name)
        if v is None:
            raise GraphError(f"'{name}' must be a constant (a weight, or computed from input shapes), "
                             "not a value computed from the inputs' data")
        return v

    def constant(self, value: np.ndarray) -> str:
        """A plan constant holding `value` (parameters kernels read from memory, fill values)."""
        self._n_made += 1
        name = f"\0const{self._n_made}"
        value = dtypes.contiguous(value)
        self.values[name] = value
        self.types[name] = TensorType(tuple(value.shape), dtypes.from_numpy(value.dtype))
        return name

    def slot(self, name: str) -> int:
        slot = self.slots.get(name)
        if slot is None:  # a known value read directly by a kernel: bound on first use
            slot = self.slots[name] = self.program.new_slot()
            self.program.bind_const(slot, self.const(name))
        return slot

    # -- adding work --
    def kernel(self, name: str, inputs, outputs, ints=(), floats=(), state=None, dtype=None) -> None:
        """Append the registry's step `name` for `dtype` (default: the first output's type).
        Inputs given as "" are absent optional inputs (slot -1)."""
        if dtype is None:
            dtype = self.dtype(outputs[0]) if outputs else self.dtype(inputs[0])
        self.step_nodes.append((self.node.name if self.node else "", self.node.op if self.node else "", name))
        self.program.add_step(
            name, 0 if dtype == "any" else dtypes.code(dtype),
            [self.slot(i) if i else -1 for i in inputs], [self.slot(o) for o in outputs],
            [dtypes.code(self.dtype(i)) if i else 0 for i in inputs], [dtypes.code(self.dtype(o)) for o in outputs],
            [int(v) for v in ints], [float(v) for v in floats], state)

    def scratch(self, shape, dtype: str) -> str:
        """A temporary buffer for the node being lowered (valid until its last kernel has run);
        returns a value name to pass to kernel()."""
        nbytes = math.prod(shape) * dtypes.itemsize(dtype)
        offset = self._scratch_base + self._scratch_used
        self._scratch_used += -(-max(nbytes, 1) // 64) * 64
        self.scratch_bytes = max(self.scratch_bytes, self._scratch_used)
        self._n_made += 1
        name = f"\0scratch{self._n_made}"
        self.types[name] = TensorType(tuple(shape), dtype)
        self.slots[name] = self.program.new_slot()
        self.program.bind_arena(self.slots[name], offset)
        return name

    def end_node(self) -> None:
        self._scratch_used = 0

    def cached(self, key, factory):
        if key not in self._cache:
            self._cache[key] = factory()
        return self._cache[key]

    # -- packed weights (the native kernels' prepared layouts) --
    @staticmethod
    def pack_gemm_b(w: np.ndarray, transposed: bool = False):
        """B (K×N, or N×K when transposed) packed for gemm_packed."""
        return _C.PackedMatrixB(dtypes.contiguous(w, np.float32), transposed)

    @staticmethod
    def pack_conv2d(window, w: np.ndarray, b):
        """An HWIO filter (+ bias) packed for conv2d; `window` is ops.spatial.Window2D."""
        s = _C.Conv2DShape()
        for field in ("N", "H", "W", "C", "OC", "KH", "KW", "stride_h", "stride_w", "dil_h", "dil_w",
                      "pad_top", "pad_left", "pad_bottom", "pad_right", "groups"):
            setattr(s, field, getattr(window, field))
        s.N = max(1, s.N)  # packing does not depend on the batch (which may be 0)
        return _C.PackedConv2D(s, dtypes.contiguous(w, np.float32),
                               None if b is None else dtypes.contiguous(b, np.float32))


class Plan:
    def __init__(self, schedule: Schedule, input_shapes: dict[str, tuple], cache: dict,
                 input_dtypes: dict | None = None, input_values: dict | None = None):
        self.input_names = schedule.input_names
        self.output_names = schedule.output_names
        inferred = infer(schedule.graph, input_shapes, input_dtypes=input_dtypes, input_values=input_values,
                         known_types=schedule.weight_types, ops=schedule.ops)
        self.types = inferred.types
        self.output_types = [self.types[n] for n in self.output_names]
        self.output_shapes = [t.shape for t in self.output_types]
        self._out_np = [dtypes.to_numpy(t.dtype) for t in self.output_types]
        self.program = _C.Program()
        self._build(schedule, inferred, cache)
        if len(self.output_shapes) == 1:
            self.program.set_output_shape(list(self.output_shapes[0]))

    @property
    def arena_bytes(self) -> int:
        return self.program.arena_bytes

    def run(self, inputs: list[np.ndarray], pool) -> list[np.ndarray]:
        outputs = [np.empty(s, dt) for s, dt in zip(self.output_shapes, self._out_np)]
        self.program.run(inputs, outputs, pool)
        return outputs

    # -- building ---------------------------------------------------------------------

    def _build(self, sch: Schedule, inferred, cache: dict) -> None:
        prog, types, values = self.program, inferred.types, inferred.values
        nbytes = {k: math.prod(t.shape) * dtypes.itemsize(t.dtype) for k, t in types.items()}
        work = [(n, op) for n, op in zip(sch.nodes, sch.ops) if id(n) not in inferred.folded]

        # Storage roots: an alias op's output lives in its input's buffer.
        root: dict[str, str] = {}
        for node, op in work:
            if op.alias:
                root[node.outputs[0]] = root.get(node.inputs[0], node.inputs[0])

        def root_of(name):
            return root.get(name, name)

        # Graph outputs are written straight into the caller's arrays when a kernel produces
        # them; otherwise (alias, input, known value, repeated) they are copied at the end.
        produced = {o for n, op in work if not op.alias for o in n.outputs if o}
        direct: dict[str, int] = {}
        copied: list[tuple[int, str]] = []
        for i, name in enumerate(self.output_names):
            if name in produced and name not in direct:
                direct[name] = i
            else:
                copied.append((i, name))

        # Liveness of each root: index of the last node that reads it (or the end).
        last_use: dict[str, int] = {}
        for idx, (node, _) in enumerate(work):
            for i in node.inputs:
                if i:
                    last_use[root_of(i)] = idx
        for _, name in copied:
            last_use[root_of(name)] = len(work)

        slots: dict[str, int] = {}
        for name in self.input_names:
            slots[name] = prog.new_slot()
        output_slots: list = [None] * len(self.output_names)
        for name, i in direct.items():
            slots[name] = output_slots[i] = prog.new_slot()

        offsets, arena_size = _assign_offsets(work, root_of, last_use, nbytes, set(slots) | set(values))

        ctx = EmitContext(prog, types, values, slots, cache, scratch_base=arena_size)
        for node, op in work:
            if op.alias:
                slots[node.outputs[0]] = ctx.slot(root_of(node.inputs[0]))
                continue
            for out in node.outputs:
                if out and out not in slots:
                    slots[out] = prog.new_slot()
                    prog.bind_arena(slots[out], offsets[out])
            ctx.node = node
            op.lower(ctx, node)
            ctx.end_node()
        prog.arena_bytes = arena_size + ctx.scratch_bytes
        for i, name in copied:
            output_slots[i] = prog.new_slot()
            prog.add_step("copy", 0, [ctx.slot(root_of(name))], [output_slots[i]], [0], [0], [nbytes[name]], [])
            ctx.step_nodes.append((name, "output copy", "copy"))
        self.step_nodes = ctx.step_nodes

        def io(name, slot):
            t = types[name]
            return (slot, dtypes.code(t.dtype), nbytes[name])

        prog.set_io([io(n, slots[n]) for n in self.input_names],
                    [io(n, s) for n, s in zip(self.output_names, output_slots)])


def _assign_offsets(work, root_of, last_use, nbytes, preassigned):
    """Arena offset of every intermediate a kernel writes, reusing a buffer once its last
    reader has run; an in-place op takes over its dying input's buffer."""
    arena = ArenaAllocator()
    offsets: dict[str, int] = {}
    live: dict[str, int] = {}
    for idx, (node, op) in enumerate(work):
        if op.alias:
            continue
        for out in node.outputs:
            if not out or out in preassigned:
                continue
            src = root_of(node.inputs[0]) if node.inputs and node.inputs[0] else None
            if (op.inplace and src in live and last_use.get(src) == idx
                    and nbytes[src] == nbytes[out]):
                live[out] = live.pop(src)
            else:
                live[out] = arena.alloc(nbytes[out])
            offsets[out] = live[out]
        for i in set(node.inputs):
            r = root_of(i) if i else None
            if r in live and last_use.get(r) == idx:
                arena.free(live.pop(r), nbytes[r])
        for out in node.outputs:  # written but never read
            if out in live and out not in last_use:
                arena.free(live.pop(out), nbytes[out])
    return offsets, arena.size
