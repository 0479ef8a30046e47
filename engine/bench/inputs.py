"""Bench inputs: generated from a model's signature, or read from a .npz.

    sig = [("x", (None, 8, 8, 1), "float32")]
    feeds = make_inputs(sig, batch=8, shapes=parse_shapes(["x=1x8x8x1"]), seed=0)   # {"x": (8, 8, 8, 1)}

Rules: a symbolic first dimension is the batch and follows --batch; every other symbolic
dimension must be given with --shape NAME=D0xD1x... (the whole shape; its first entry may be
`?` when it is the batch). Values: floats uniform in [0, 1), integers uniform in [0, 10) (small
enough to index any embedding or gather), booleans fair coins; one seed for all.
"""

from __future__ import annotations

import numpy as np

from ..array_files import read_input_arrays
from ..errors import EngineError


def parse_shapes(specs) -> dict:
    """["x=1x128", "mask=?x128"] -> {"x": (1, 128), "mask": (None, 128)}."""
    out = {}
    for spec in specs or ():
        name, sep, dims = spec.partition("=")
        try:
            if not sep or not name:
                raise ValueError
            shape = tuple(None if d in ("?", "-1") else int(d) for d in dims.lower().split("x"))
            if any(d is not None and d < 0 for d in shape):
                raise ValueError
        except ValueError:
            raise EngineError(f"bench: --shape {spec!r}: expected NAME=D0xD1x... with whole numbers "
                              "(e.g. x=1x128; '?' for the batch)") from None
        out[name] = shape
    return out


def resolve_shape(name: str, model_shape: tuple, batch: int, given: tuple | None) -> tuple:
    """The concrete shape of one input for one batch size."""
    if given is not None:
        if len(given) != len(model_shape):
            raise EngineError(f"bench: --shape {name}: {len(given)} dimensions, but the model's input "
                              f"{name!r} has {len(model_shape)} {_fmt(model_shape)}")
        for i, (g, m) in enumerate(zip(given, model_shape)):
            if m is not None and g is not None and g != m and i > 0:
                raise EngineError(f"bench: --shape {name}: dimension {i} is {g}, but the model fixes it "
                                  f"at {m} {_fmt(model_shape)}")
    shape = []
    for i, m in enumerate(model_shape):
        g = given[i] if given is not None else None
        if i == 0 and (m is None or isinstance(m, str)):
            shape.append(batch)
        elif m is not None and not isinstance(m, str):
            shape.append(int(m))
        elif g is not None:
            shape.append(g)
        else:
            raise EngineError(f"bench: input {name!r} {_fmt(model_shape)} has a symbolic dimension {i}; "
                              f"give it with --shape {name}=" + "x".join(
                                  "?" if j == 0 else str(d if d is not None else 128)
                                  for j, d in enumerate(model_shape)))
    return tuple(shape)


def make_inputs(signature, batch: int, shapes: dict, seed: int) -> dict:
    """{input name: array} for one batch size from [(name, shape, dtype)]."""
    unknown = sorted(set(shapes) - {n for n, _, _ in signature})
    if unknown:
        raise EngineError(f"bench: --shape names {unknown}, but the model's inputs are "
                          f"{[n for n, _, _ in signature]}")
    rng = np.random.default_rng(seed)
    feeds = {}
    for name, model_shape, dtype in signature:
        shape = resolve_shape(name, model_shape, batch, shapes.get(name))
        dt = np.dtype(dtype)
        if dt.kind == "f":
            a = rng.random(shape, dtype=np.float64).astype(dt)
        elif dt.kind in "iu":
            a = rng.integers(0, 10, size=shape).astype(dt)
        elif dt.kind == "b":
            a = rng.random(shape) < 0.5
        else:
            raise EngineError(f"bench: cannot generate input {name!r} of dtype {dtype}; give --input file.npz")
        feeds[name] = a
    return feeds


def read_inputs(path: str, signature) -> dict:
    """{input name: array} from a .npz (or .npy for a one-input model). Never unpickles."""
    return read_input_arrays(path, [n for n, _, _ in signature], "bench: --input ")


def _fmt(shape) -> str:
    return "(" + ", ".join("?" if d is None else str(d) for d in shape) + ")"
