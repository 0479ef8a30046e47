"""Shared by the Keras tests: real Keras 3 on the torch backend (offline), weights perturbed so
that a missing bias, statistic or recurrent kernel shows, and one check that runs a model
through engine.nn (set_weights from Keras's get_weights), a .keras file and a .h5 file."""

from __future__ import annotations

import os

os.environ["KERAS_BACKEND"] = "torch"  # before keras is imported anywhere

import numpy as np  # noqa: E402
import pytest  # noqa: E402

keras = pytest.importorskip("keras")
pytest.importorskip("h5py")

import engine  # noqa: E402
from engine import nn  # noqa: E402

ATOL = 1e-4


def perturb(model, seed: int = 0) -> None:
    """Random, non-default weights; variances stay positive, counts stay counts."""
    rng = np.random.default_rng(seed)
    values = []
    for v in model.weights:
        shape, path = tuple(v.shape), v.path
        if "variance" in path:
            values.append(rng.uniform(0.5, 1.5, shape).astype(np.float32))
        elif path.endswith("count"):
            values.append(np.full(shape, 7, np.asarray(v).dtype))
        else:
            values.append(rng.normal(0, 0.5, shape).astype(np.float32))
    for v, a in zip(model.weights, values):
        v.assign(a)


def inputs_for(model, seed: int = 1, batch: int = 3) -> list:
    rng = np.random.default_rng(seed)
    xs = []
    for t in model.inputs:
        shape = (batch,) + tuple(d if d is not None else 5 for d in t.shape[1:])
        if "int" in str(t.dtype):
            x = rng.integers(1, 9, shape).astype(np.int32)
            x[0, -2:] = 0  # padding at the end, and a zero inside a row
            x[-1, 1] = 0
        else:
            x = rng.normal(0, 1, shape).astype(np.float32)
        xs.append(x)
    return xs


def keras_outputs(model, xs) -> list:
    y = model.predict(xs if len(xs) > 1 else xs[0], verbose=0)
    return [np.asarray(a) for a in (y if isinstance(y, (list, tuple)) else [y])]


def engine_outputs(model, xs) -> list:
    y = model.predict(xs if len(xs) > 1 else xs[0])
    return list(y) if isinstance(y, list) else [y]


def assert_close(got: list, want: list, what: str, atol: float = ATOL) -> None:
    assert len(got) == len(want), f"{what}: {len(got)} outputs, Keras has {len(want)}"
    for i, (g, w) in enumerate(zip(got, want)):
        assert g.shape == w.shape, f"{what}: output {i} has shape {g.shape}, Keras {w.shape}"
        np.testing.assert_allclose(g, w, atol=atol, rtol=atol, err_msg=f"{what}: output {i}")


def check_files(kmodel, tmp_path, xs=None, atol: float = ATOL, formats=("keras", "h5")) -> None:
    """The model saved by Keras as .keras and .h5, loaded by engine.load, matches Keras."""
    xs = inputs_for(kmodel) if xs is None else xs
    want = keras_outputs(kmodel, xs)
    for fmt in formats:
        path = tmp_path / f"model.{fmt}"
        kmodel.save(path)
        m = engine.load(path)
        assert_close(engine_outputs(m, xs), want, f"{kmodel.name} from .{fmt}", atol)
