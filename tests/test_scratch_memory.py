"""Kernel scratch (csrc/cpu/scratch.cpp): counted, bounded per thread between calls, released on
demand and when a thread exits, and never changing results."""

from __future__ import annotations

import threading
import time
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import engine
from engine import _C
from engine.config import apply_environment
from engine.graph import Graph, Node, Value


def conv3d_model():
    """An ONNX Conv on 5-D input: runs on the N-d conv kernel, whose column buffer is scratch."""
    w = np.random.default_rng(1).standard_normal((8, 4, 3, 3, 3)).astype(np.float32)
    graph = Graph([Value("x", (2, 4, 10, 12, 12))], [Value("y", ())],
                  [Node("Conv", ["x", "w"], ["y"], {"pads": [1] * 6})], {"w": w})
    return engine.Model(graph), w


def wait_for(predicate, seconds=5.0):
    deadline = time.monotonic() + seconds
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.01)
    return predicate()


@pytest.fixture
def keep_limit():
    saved = _C.scratch_keep()
    yield
    engine.set_scratch_keep(saved)


def test_scratch_is_counted_released_and_results_do_not_change():
    model, w = conv3d_model()
    x = np.random.default_rng(2).standard_normal((2, 4, 10, 12, 12)).astype(np.float32)
    want = F.conv3d(torch.from_numpy(x).double(), torch.from_numpy(w).double(), padding=1).numpy()
    first = model.run({"x": x})["y"]
    np.testing.assert_allclose(first, want, rtol=1e-4, atol=1e-4)
    held = engine.memory_info()["scratch_bytes"]
    assert held > 0 and _C.thread_scratch_bytes() > 0
    engine.release_memory()
    assert engine.memory_info()["scratch_bytes"] == 0, "release_memory must free every pool thread's scratch"
    again = model.run({"x": x})["y"]
    np.testing.assert_array_equal(again, first)
    # Regrown by whichever threads took the tasks this time: at most one buffer set per thread.
    assert 0 < engine.memory_info()["scratch_bytes"] <= held * engine.get_num_threads()
    engine.release_memory()


# 2-D conv paths that hold scratch (their calls hand the same scratch to the pool's threads):
# (N, H, W, C, OC, KH, KW, stride, pads, groups, isa to pack under)
CONV2D = {
    "im2col+gemm": (2, 12, 12, 8, 16, 3, 3, (1, 1), (1, 1, 1, 1), 2, None),
    "direct_padded": (2, 12, 12, 3, 16, 3, 3, (1, 1), (1, 1, 1, 1), 1, None),
    "indirect": (2, 12, 12, 16, 40, 3, 3, (2, 2), (1, 1, 1, 1), 1, "avx512"),
    "winograd": (2, 24, 24, 16, 40, 3, 3, (1, 1), (1, 1, 1, 1), 1, "avx512"),
}


@pytest.mark.parametrize("kind", CONV2D)
def test_conv2d_scratch_is_counted_and_released(kind):
    from test_conv import make_shape, reference
    N, H, W, C, OC, KH, KW, stride, pads, groups, isa = CONV2D[kind]
    if isa and _C.cpu_isa() != isa:
        pytest.skip(f"{kind} is packed on {isa} only")
    rng = np.random.default_rng(3)
    x = rng.standard_normal((N, H, W, C), dtype=np.float32)
    w = rng.standard_normal((KH, KW, C // groups, OC), dtype=np.float32)
    s = make_shape(N, H, W, C, OC, KH, KW, stride, (1, 1), pads, groups)
    p = _C.PackedConv2D(s, w, None)
    engine.release_memory()
    assert engine.memory_info()["scratch_bytes"] == 0
    y = np.empty((N, s.OH, s.OW, OC), np.float32)
    _C.conv2d_nhwc(y, x, p, _C.Act.none, 0.0, 0.0, None)
    assert engine.memory_info()["scratch_bytes"] > 0
    engine.release_memory()
    assert engine.memory_info()["scratch_bytes"] == 0
    again = np.empty_like(y)
    _C.conv2d_nhwc(again, x, p, _C.Act.none, 0.0, 0.0, None)
    np.testing.assert_array_equal(again, y)
    np.testing.assert_allclose(y, reference(x, w, None, stride, (1, 1), pads, groups, "none", 0, 0), rtol=1e-3, atol=1e-3)
    engine.release_memory()


def test_a_thread_keeps_at_most_the_limit_between_calls(keep_limit):
    model, _ = conv3d_model()
    x = np.ones((2, 4, 10, 12, 12), np.float32)
    model.run({"x": x})
    needed = engine.memory_info()["scratch_bytes"]
    engine.set_scratch_keep(0)
    out = model.run({"x": x})["y"]
    assert _C.thread_scratch_bytes() == 0, "the calling thread trims at the end of its call"
    # Workers trim right after their part of a job, which may finish just after the call returns.
    assert wait_for(lambda: engine.memory_info()["scratch_bytes"] == 0)
    engine.set_scratch_keep(needed * 4)
    np.testing.assert_array_equal(model.run({"x": x})["y"], out)
    assert engine.memory_info()["scratch_bytes"] > 0, "under the limit, scratch is kept for the next call"
    engine.release_memory()


def test_scratch_of_a_thread_that_exits_is_freed():
    model, _ = conv3d_model()
    engine.release_memory()
    threads_before = engine.get_num_threads()
    engine.set_num_threads(1)  # every kernel runs on its calling thread: no worker holds scratch
    try:
        x = np.ones((2, 4, 10, 12, 12), np.float32)
        held = []

        def call():
            model.run({"x": x})
            held.append(_C.thread_scratch_bytes())

        threads = [threading.Thread(target=call) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert len(held) == 3 and all(b > 0 for b in held)
        # join() returns once Python is done with a thread, a moment before the OS thread
        # runs its thread-local destructors.
        assert wait_for(lambda: engine.memory_info()["scratch_bytes"] == 0), "an exiting thread frees its scratch"
    finally:
        engine.set_num_threads(threads_before)


def test_set_scratch_keep_and_environment_are_checked(keep_limit):
    for bad in (-1, 1.5, "1", True):
        with pytest.raises(engine.EngineError, match="set_scratch_keep"):
            engine.set_scratch_keep(bad)
    with pytest.warns(RuntimeWarning, match="ENGINE_SCRATCH_KEEP_MB"):
        apply_environment({"ENGINE_SCRATCH_KEEP_MB": "lots"})
    with pytest.warns(RuntimeWarning, match="ENGINE_SCRATCH_KEEP_MB"):
        apply_environment({"ENGINE_SCRATCH_KEEP_MB": "nan"})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        apply_environment({"ENGINE_SCRATCH_KEEP_MB": "64"})
    assert engine.memory_info()["scratch_keep_bytes"] == 64 << 20
