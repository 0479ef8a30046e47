"""Bad input to predict/run: a clear EngineError naming what is wrong, never a crash."""

import numpy as np
import pytest

import engine
from engine import nn
from helpers import rand


@pytest.fixture(scope="module")
def cnn():
    return nn.Sequential([nn.Input((8, 8, 1)), nn.Conv2D(2, 3), nn.Flatten(), nn.Dense(3)])


def test_wrong_rank(cnn):
    with pytest.raises(engine.ShapeError, match=r"expected rank 4 .*\(None, 8, 8, 1\).*got rank 3"):
        cnn.predict(rand(8, 8, 1))


def test_wrong_shape(cnn):
    with pytest.raises(engine.ShapeError, match=r"dim 2 must be 8"):
        cnn.predict(rand(1, 8, 9, 1))


def test_float64_exact_is_converted_inexact_refused(cnn):
    exact = np.round(rand(2, 8, 8, 1).astype(np.float64) * 8) / 8
    np.testing.assert_array_equal(cnn.predict(exact), cnn.predict(exact.astype(np.float32)))
    with pytest.raises(engine.DTypeError, match="float64"):
        cnn.predict(np.random.default_rng(0).random((2, 8, 8, 1)))


def test_integers_and_bools_convert_losslessly(cnn):
    x = np.random.default_rng(0).integers(0, 255, (2, 8, 8, 1))
    np.testing.assert_array_equal(cnn.predict(x), cnn.predict(x.astype(np.float32)))
    assert cnn.predict(x > 100).shape == (2, 3)
    with pytest.raises(engine.DTypeError, match="2\\*\\*24"):
        cnn.predict(np.full((1, 8, 8, 1), 2 ** 30, np.int64))


@pytest.mark.parametrize("bad", [np.zeros((1, 8, 8, 1), np.complex64),
                                 np.array([["a"] * 8] * 8).reshape(1, 8, 8, 1), [[1, 2], [3]]])
def test_unconvertible_dtypes(cnn, bad):
    with pytest.raises(engine.EngineError):
        cnn.predict(bad)


def test_run_names(cnn):
    rt = cnn.compile_runtime()
    name = rt.inputs[0].name
    with pytest.raises(engine.ShapeError, match="missing input"):
        rt.run({})
    with pytest.raises(engine.ShapeError, match="unknown input"):
        rt.run({name: rand(1, 8, 8, 1), "extra": rand(1)})
    with pytest.raises(engine.EngineError, match="must be a dict"):
        rt.run([rand(1, 8, 8, 1)])
    with pytest.raises(engine.ShapeError, match="unknown output"):
        rt.run({name: rand(1, 8, 8, 1)}, ["nope"])


def test_predict_on_multi_output_model_points_to_run():
    x = nn.Input((2,))
    m = nn.Model(x, [nn.Dense(1)(x), nn.Dense(2)(x)]).compile_runtime()
    with pytest.raises(engine.EngineError, match="use run"):
        m.predict(rand(1, 2))


def test_empty_batch_is_fine(cnn):
    assert cnn.predict(np.zeros((0, 8, 8, 1), np.float32)).shape == (0, 3)


def test_model_survives_bad_calls(cnn):
    x = rand(3, 8, 8, 1)
    want = cnn.predict(x)
    for bad in (rand(3, 8, 8), rand(3, 7, 8, 1), np.random.rand(3, 8, 8, 1)):
        with pytest.raises(engine.EngineError):
            cnn.predict(bad)
    np.testing.assert_array_equal(cnn.predict(x), want)


def test_kernel_level_checks_raise_not_crash():
    C = engine._C
    with pytest.raises(engine.KernelError, match="inner dimensions"):
        C.sgemm(np.zeros((2, 2), np.float32), np.zeros((2, 3), np.float32), np.zeros((2, 2), np.float32))
    with pytest.raises(engine.KernelError, match="float32"):
        C.sgemm(np.zeros((2, 2), np.float32), np.zeros((2, 2)), np.zeros((2, 2), np.float32))
    with pytest.raises(engine.KernelError, match="read-only"):
        out = np.zeros((2, 2), np.float32)
        out.flags.writeable = False
        C.sgemm(out, np.zeros((2, 2), np.float32), np.zeros((2, 2), np.float32))
    with pytest.raises(engine.KernelError, match="C-contiguous"):
        C.sgemm(np.zeros((2, 2), np.float32), np.zeros((2, 4), np.float32)[:, ::2],
                np.zeros((2, 2), np.float32))
    p = C.Program()
    s = p.new_slot()
    p.set_io([s], [4], [s], [4])
    with pytest.raises(engine.KernelError, match="expected 4 elements"):
        p.run([np.zeros(3, np.float32)], [np.zeros(4, np.float32)])
