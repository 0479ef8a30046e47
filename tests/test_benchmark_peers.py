"""The benchmark's reference models are themselves verified: torch, onnxruntime and OpenVINO
built from the same weights agree with each other and with a numpy forward pass.

Independent of the engine (benchmarks/models.py builds the peers only from numpy weights).
"""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # make `benchmarks` importable

from benchmarks import models as M  # noqa: E402

TOL = 1e-5
THREADS = 1


def _naive_forward(model, weights, x):
    """A second, loop-level reference for the CNN (direct conv, explicit pooling) to check the
    vectorised numpy_forward itself on a tiny batch."""
    x = x.astype(np.float64)
    w = [a.astype(np.float64) for a in weights]
    n = x.shape[0]
    conv = np.zeros((n, M.CONV_OH, M.CONV_OW, M.CONV_OC))
    for i in range(M.CONV_OH):
        for j in range(M.CONV_OW):
            patch = x[:, i:i + M.KH, j:j + M.KW, :]                       # (n, 3, 3, C)
            conv[:, i, j, :] = np.einsum("nhwc,hwco->no", patch, w[0]) + w[1]
    conv = np.maximum(conv, 0)
    pool = np.zeros((n, M.POOL_OH, M.POOL_OW, M.CONV_OC))
    for i in range(M.POOL_OH):
        for j in range(M.POOL_OW):
            pool[:, i, j, :] = conv[:, 2 * i:2 * i + 2, 2 * j:2 * j + 2, :].max(axis=(1, 2))
    h = np.maximum(pool.reshape(n, -1) @ w[2] + w[3], 0)                   # Keras HWC flatten
    z = h @ w[4] + w[5]
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_weights_are_deterministic_and_keras_shaped():
    a, b = M.make_weights("cnn"), M.make_weights("cnn")
    assert [w.shape for w in a] == [(3, 3, 1, 32), (32,), (5408, 128), (128,), (128, 10), (10,)]
    assert all(w.dtype == np.float32 for w in a)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert [w.shape for w in M.make_weights("mlp")] == [(1000, 128), (128,), (128, 10), (10,)]


def test_numpy_reference_matches_naive_cnn():
    w = M.make_weights("cnn")
    x = M.make_input("cnn", 2)
    np.testing.assert_allclose(M.numpy_forward("cnn", w, x), _naive_forward("cnn", w, x), atol=1e-6)


def test_outputs_are_not_degenerate():
    # Probabilities that are all ~0.1 or one-hot would make a 1e-4 comparison meaningless.
    for model in M.MODELS:
        y = M.numpy_forward(model, M.make_weights(model), M.make_input(model, 8))
        np.testing.assert_allclose(y.sum(axis=1), 1, atol=1e-5)
        assert 0.02 < y.std() and y.max() < 0.999


def _peer_outputs(framework, model, batch):
    w = M.make_weights(model)
    x = M.make_input(model, batch)
    return M.numpy_forward(model, w, x), np.asarray(M.build_predict(framework, model, w, THREADS, batch)(x))


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("model", M.MODELS)
@pytest.mark.parametrize("framework", ["torch", "ort", "openvino"])
def test_peer_matches_numpy(framework, model, batch):
    pytest.importorskip({"torch": "torch", "ort": "onnxruntime", "openvino": "openvino"}[framework])
    pytest.importorskip("onnx")
    ref, y = _peer_outputs(framework, model, batch)
    assert y.shape == (batch, M.CLASSES) and y.dtype == np.float32
    np.testing.assert_allclose(y, ref, atol=TOL, rtol=0)


@pytest.mark.parametrize("model", M.MODELS)
def test_peers_agree_with_each_other(model):
    outs = {}
    for fw, mod in (("torch", "torch"), ("ort", "onnxruntime"), ("openvino", "openvino")):
        try:
            __import__(mod)
            __import__("onnx")
        except ImportError:
            continue
        outs[fw] = _peer_outputs(fw, model, 3)[1]
    if len(outs) < 2:
        pytest.skip("fewer than two peers installed")
    names = list(outs)
    for a in names:
        for b in names:
            np.testing.assert_allclose(outs[a], outs[b], atol=TOL, rtol=0, err_msg=f"{a} vs {b}")


def test_onnx_graph_is_static_and_valid():
    onnx = pytest.importorskip("onnx")
    m = M.onnx_model("cnn", M.make_weights("cnn"), batch=4)
    onnx.checker.check_model(m, full_check=True)
    assert m.opset_import[0].version == 17
    dims = m.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims] == [4, 28, 28, 1]
    assert [n.op_type for n in m.graph.node][-1] == "Softmax"


def test_dense1_row_permutation_matches_hwc_flatten():
    w = np.arange(M.FLAT * 2, dtype=np.float32).reshape(M.FLAT, 2)
    p = M.dense1_rows_chw(w)
    # row of channel c, pixel (h, w) in CHW order == row h*13*32 + w*32 + c in HWC order
    c, h, ww = 5, 7, 11
    assert np.array_equal(p[c * 169 + h * 13 + ww], w[h * 13 * 32 + ww * 32 + c])
