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


def test_small_integers_and_bools_convert_wide_integers_are_refused(cnn):
    x = np.random.default_rng(0).integers(0, 255, (2, 8, 8, 1))
    for small in (np.uint8, np.int16, np.uint16, np.int8):
        xs = x.astype(small) if small != np.int8 else (x // 2).astype(np.int8)
        np.testing.assert_array_equal(cnn.predict(xs), cnn.predict(xs.astype(np.float32)))
    assert cnn.predict(x > 100).shape == (2, 3)
    for wide in (np.int32, np.int64, np.uint32, np.uint64):  # token ids in a float input, likely
        with pytest.raises(engine.DTypeError, match=f"expected float32, got {np.dtype(wide)}"):
            cnn.predict(x.astype(wide))


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


def test_predict_on_multi_output_model_returns_a_list_like_keras():
    x = nn.Input((2,))
    net = nn.Model(x, [nn.Dense(1)(x), nn.Dense(2)(x)])
    loaded = net.compile_runtime()
    xs = rand(3, 2)
    got, want = loaded.predict(xs), net.predict(xs)
    assert isinstance(got, list) and [a.shape for a in got] == [(3, 1), (3, 2)]
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)


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
    p.set_io([(s, 1, 16)], [(s, 1, 16)])  # float32, 4 elements
    with pytest.raises(engine.KernelError, match="expected 4 elements"):
        p.run([np.zeros(3, np.float32)], [np.zeros(4, np.float32)], C.ContextPool())
    with pytest.raises(engine.KernelError, match="expected a float32 array, got int32"):
        p.run([np.zeros(4, np.int32)], [np.zeros(4, np.float32)], C.ContextPool())
    with pytest.raises(engine.KernelError, match="no kernel 'nope'"):
        p.add_step("nope", 1, [s], [s], [1], [1], [], [])
    with pytest.raises(engine.KernelError, match="expected 1 inputs and 1 outputs"):
        p.add_step("activation", 1, [s, s], [s], [1, 1], [1], [4, 1], [0.0, 0.0])
    with pytest.raises(engine.KernelError, match="bad activation code|bad code"):
        p.add_step("activation", 1, [s], [s], [1], [1], [4, 99], [0.0, 0.0])


# -- arrays a service receives: pickled, through multiprocessing -----------------------------

def test_pickled_float32_arrays_are_accepted(cnn):
    import pickle

    x = rand(2, 8, 8, 1)
    xp = pickle.loads(pickle.dumps(x))
    assert xp.dtype == np.float32 and xp.dtype is not np.dtype(np.float32)  # equal, not identical
    want = cnn.predict(x)
    np.testing.assert_array_equal(cnn.predict(xp), want)
    loaded = cnn.compile_runtime()
    np.testing.assert_array_equal(loaded.predict(xp), want)          # the fast path
    np.testing.assert_array_equal(loaded.run({loaded.inputs[0].name: xp})[loaded.outputs[0].name], want)
    d = nn.Dense(2)
    m = nn.Sequential([nn.Input((3,)), d])
    d.set_weights([pickle.loads(pickle.dumps(np.ones((3, 2), np.float32))),
                   pickle.loads(pickle.dumps(np.zeros(2, np.float32)))])
    np.testing.assert_array_equal(m.predict(np.ones((1, 3), np.float32)), [[3, 3]])
    engine._C.activation(xp.copy(), xp, engine._C.Act.relu, 0.0, 0.0)  # kernel-level check too


def test_arrays_from_a_multiprocessing_queue_are_accepted(cnn):
    import multiprocessing as mp

    q = mp.get_context("spawn").Queue()
    x = rand(3, 8, 8, 1)
    q.put(x)
    got = q.get(timeout=30)
    q.close()
    np.testing.assert_array_equal(cnn.predict(got), cnn.predict(x))


def test_non_native_byte_order_is_converted(cnn):
    x = rand(2, 8, 8, 1)
    np.testing.assert_array_equal(cnn.predict(x.astype(">f4")), cnn.predict(x))
    with pytest.raises(engine.KernelError, match="float32"):
        engine._C.activation(x.copy(), x.astype(">f4"), engine._C.Act.relu, 0.0, 0.0)
