"""Softmax / log-softmax (engine._C.softmax) over every axis vs torch, on every ISA path."""

import numpy as np
import pytest
import torch

import engine
from engine import _C


SHAPES = [(1,), (7,), (16,), (33,), (1000,), (5, 1), (1, 5), (4, 17), (3, 64), (64, 1000),
          (2, 3, 4), (3, 1, 19), (5, 40, 1), (2, 7, 33), (2, 3, 4, 5), (1, 6, 1, 17),
          (3, 2, 1, 40), (2, 50, 70), (8, 300, 37)]


def _ref(x, axis, log):
    t = torch.from_numpy(x.astype(np.float64))
    r = torch.log_softmax(t, axis) if log else torch.softmax(t, axis)
    return r.numpy()


def _check(got, x, axis, log):
    want = _ref(x, axis, log)
    if log:
        np.testing.assert_allclose(got, want, rtol=2e-6, atol=2e-6 * max(1.0, np.abs(x[np.isfinite(x)]).max()))
    else:
        np.testing.assert_allclose(got, want, rtol=5e-6, atol=1e-7)


@pytest.mark.parametrize("log", [False, True], ids=["softmax", "log_softmax"])
@pytest.mark.parametrize("shape", SHAPES, ids=[str(s) for s in SHAPES])
def test_softmax_every_axis(isa, shape, log):
    x = (np.random.default_rng(len(shape) * 100 + shape[-1]).standard_normal(shape) * 3).astype(np.float32)
    for axis in list(range(len(shape))) + [-1]:
        y = np.full_like(x, np.nan)
        _C.softmax(y, x, axis, log)
        _check(y, x, axis, log)


@pytest.mark.parametrize("log", [False, True], ids=["softmax", "log_softmax"])
@pytest.mark.parametrize("scale", [1e4, 1e30])
def test_softmax_large_magnitudes(isa, log, scale):
    rng = np.random.default_rng(5)
    x = (rng.standard_normal((6, 37, 5)) * scale).astype(np.float32)
    x[0, :, 0] = scale  # a row of equal huge values
    x[1, :, 1] = -scale
    for axis in range(3):
        y = np.empty_like(x)
        _C.softmax(y, x, axis, log)
        assert np.all(np.isfinite(y))
        _check(y, x, axis, log)


@pytest.mark.parametrize("log", [False, True], ids=["softmax", "log_softmax"])
def test_softmax_equal_values_and_neg_inf(isa, log):
    x = np.full((3, 21), 7.5, np.float32)
    x[2, 5:] = -np.inf  # masked positions
    y = np.empty_like(x)
    _C.softmax(y, x, -1, log)
    _check(y, x, -1, log)
    if not log:
        np.testing.assert_allclose(y[0], np.full(21, 1 / 21), rtol=1e-6)
        assert np.all(y[2, 5:] == 0)


@pytest.mark.parametrize("log", [False, True])
def test_softmax_in_place(isa, log):
    x = np.random.default_rng(3).standard_normal((4, 9, 13)).astype(np.float32)
    for axis in range(3):
        y = x.copy()
        _C.softmax(y, y, axis, log)
        _check(y, x, axis, log)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_softmax_threads(set_threads, axis):
    x = np.random.default_rng(4).standard_normal((16, 129, 65)).astype(np.float32)
    set_threads(1)
    want = np.empty_like(x)
    _C.softmax(want, x, axis, False)
    for n in (2, 3):
        set_threads(n)
        y = np.empty_like(x)
        _C.softmax(y, x, axis, False)
        np.testing.assert_array_equal(y, want)
    _check(want, x, axis, False)


def test_softmax_empty():
    x = np.zeros((0, 5), np.float32)
    y = np.empty_like(x)
    _C.softmax(y, x, -1, False)
    x = np.zeros((3, 0), np.float32)
    _C.softmax(np.empty_like(x), x, 0, True)


def test_softmax_errors():
    x = np.zeros((2, 3), np.float32)
    for axis in (2, -3, 5):
        with pytest.raises(engine.EngineError):
            _C.softmax(np.empty_like(x), x, axis, False)
    with pytest.raises(engine.EngineError):
        _C.softmax(np.empty((2, 3), np.float64), x, -1, False)
    with pytest.raises(engine.EngineError):
        _C.softmax(np.empty_like(x), x.astype(np.float64), -1, False)
    with pytest.raises(engine.EngineError):
        _C.softmax(np.empty((5,), np.float32), x, -1, False)
