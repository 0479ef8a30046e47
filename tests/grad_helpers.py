"""Runs one registry step in a hand-built `_C.Program` (as a planned training step will): the
backward kernels' tests call their steps through this, never a private binding."""

from __future__ import annotations

import numpy as np

from engine import _C

CODES = {np.dtype(np.float32): 1, np.dtype(np.uint8): 2, np.dtype(np.bool_): 9, np.dtype(np.int32): 6, np.dtype(np.int64): 7,
         np.dtype(np.float64): 11}


class Alias:
    """An output written into input k's slot (in place)."""

    def __init__(self, k: int):
        self.k = k


def run_step(name, inputs, outputs, ints, floats=(), types=True):
    """inputs: arrays, or None for an absent input (-1). outputs: arrays the step writes, or
    Alias(k) to write into input k (whose array is then updated). Returns the outputs, aliased
    ones as the updated input arrays. types=False leaves the element types out of the spec."""
    prog = _C.Program()
    aliased = {o.k for o in outputs if isinstance(o, Alias)}
    ins, io_in, io_out, feeds, outs = [], [], [], [], []
    inputs = [None if a is None else np.ascontiguousarray(a) for a in inputs]
    for k, a in enumerate(inputs):
        if a is None:
            ins.append(-1)
            continue
        s = prog.new_slot()
        ins.append(s)
        if k in aliased:
            io_out.append((s, CODES[a.dtype], a.nbytes))
            outs.append(a)
        else:
            io_in.append((s, CODES[a.dtype], a.nbytes))
            feeds.append(a)
    out_slots, result = [], []
    for o in outputs:
        if isinstance(o, Alias):
            out_slots.append(ins[o.k])
            result.append(inputs[o.k])
        else:
            s = prog.new_slot()
            out_slots.append(s)
            io_out.append((s, CODES[o.dtype], o.nbytes))
            outs.append(o)
            result.append(o)
    in_types = [0 if a is None else CODES[a.dtype] for a in inputs] if types else []
    out_types = [CODES[r.dtype] for r in result] if types else []
    prog.add_step(name, 1, ins, out_slots, in_types, out_types, [int(v) for v in ints], [float(v) for v in floats])
    prog.set_io(io_in, io_out)
    prog.run(feeds, outs, _C.ContextPool(1))
    return result


def empty(*shape, dtype=np.float32, fill=np.nan):
    """An output buffer pre-filled with NaN, so a value the kernel forgets to write shows."""
    return np.full(shape, fill, dtype)


def assert_close(got, want, rtol=1e-5, atol=1e-6, what=""):
    want = np.asarray(want.detach().numpy() if hasattr(want, "detach") else want)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    np.testing.assert_allclose(got, want.astype(np.float64), rtol=rtol, atol=atol, err_msg=what)
