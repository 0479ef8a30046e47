"""One helper to check a graph op against an independent reference: a new op's test is one
line per case (inspired by tinygrad's helper_test_op)."""

from __future__ import annotations

import numpy as np

import engine
from engine.graph import Graph, Node, Value


def run_op(op: str, inputs: list[np.ndarray], attrs: dict | None = None,
           weights: list[np.ndarray] | None = None) -> np.ndarray:
    """Run one node: `inputs` are graph inputs, `weights` constant initializers after them."""
    names = [f"x{i}" for i in range(len(inputs))]
    wnames = [f"w{i}" for i in range(len(weights or []))]
    graph = Graph([Value(n, a.shape) for n, a in zip(names, inputs)], [Value("y", ())],
                  [Node(op, names + wnames, ["y"], attrs or {})],
                  {n: np.ascontiguousarray(w, np.float32) for n, w in zip(wnames, weights or [])})
    model = engine.Model(graph)
    return model.run(dict(zip(names, inputs)))["y"]


def check_op(op: str, inputs, reference, attrs=None, weights=None, atol=1e-5, rtol=1e-5):
    """Assert the engine's op matches `reference(*inputs, *weights)` (numpy or torch)."""
    got = run_op(op, inputs, attrs, weights)
    want = reference(*inputs, *(weights or []))
    if hasattr(want, "detach"):
        want = want.detach().numpy()
    want = np.asarray(want, np.float32)
    assert got.shape == want.shape, f"{op}: shape {got.shape} != reference {want.shape}"
    np.testing.assert_allclose(got, want, atol=atol, rtol=rtol, err_msg=f"{op} {attrs}")
    return got


def rand(*shape, seed=0, low=-1.0, high=1.0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(low, high, shape).astype(np.float32)
