"""engine.losses against Keras 3 (torch backend, float64): for each loss, the value and its
gradient w.r.t. the predictions (w.r.t. the logits when the predictions come from a Softmax
node, the fused path), computed by the engine as part of a planned training graph, equal
Keras's — with and without sample weights. Also: names, bad targets and bad arguments."""

from __future__ import annotations

import os
import re
import zlib

os.environ.setdefault("KERAS_BACKEND", "torch")  # before keras is imported anywhere

import numpy as np
import pytest

from engine import _C, dtypes, losses
from engine.autograd import differentiate, training_graph
from engine.graph import Graph, Node, Value
from engine.losses import LossError
from engine.ops.registry import TensorType
from engine.passes import optimize_training
from engine.runtime.plan import Plan, Schedule

torch = pytest.importorskip("torch")
keras = pytest.importorskip("keras")
if keras.backend.backend() != "torch":
    pytest.skip("the Keras reference needs KERAS_BACKEND=torch", allow_module_level=True)

RTOL, ATOL = 2e-5, 1e-6
pytestmark = pytest.mark.filterwarnings("ignore:In loss categorical_crossentropy:SyntaxWarning")


def seed_of(*key) -> int:
    return zlib.crc32(repr(key).encode())


# -- the engine's side: a tiny forward, the loss emitted into its training graph ----------------

def engine_loss(loss, pred, target, weight=None, forward="identity", params=None):
    """(loss value, gradient w.r.t. the graph input x, {param: gradient}, ops of the training
    graph). forward: "identity" (pred = x), "softmax" (pred = softmax(x)), or a
    (nodes, initializers) pair producing "pred" from "x"."""
    params = dict(params or {})
    if forward == "identity":
        nodes, inits = [Node("Identity", ["x"], ["pred"])], {}
    elif forward == "softmax":
        nodes, inits = [Node("Softmax", ["x"], ["pred"], {"axis": -1})], {}
    else:
        nodes, inits = forward
    graph = Graph([Value("x", pred.shape)], [Value("pred", None)], nodes, {**inits, **params})
    feeds = {"x": np.ascontiguousarray(pred, np.float32), "target": np.ascontiguousarray(target)}
    if weight is not None:
        feeds["sample_weight"] = np.ascontiguousarray(weight, np.float32)
    types = {k: TensorType(tuple(v.shape), dtypes.from_numpy(v.dtype)) for k, v in feeds.items()}
    loss.check_target(target.shape, graph_pred_shape(graph, pred))

    def emit(gb, outputs):
        return loss.emit(gb, outputs[0], "target", "sample_weight" if weight is not None else None)

    trained = ["x"] + list(params)
    gb, loss_name, grads = differentiate(graph, types, trained, loss=emit)
    outs = [gb.node("Identity", [loss_name], base="out/loss")]
    for k in trained:
        outs.append(gb.node("Identity", [grads[k]], base=f"out/{k}"))
    feeds.update(params)
    ins = [Value(k, tuple(v.shape), dtypes.from_numpy(v.dtype)) for k, v in feeds.items()]
    g = optimize_training(training_graph(gb, ins, outs, inits))  # as engine.train.Trainer plans it
    plan = Plan(Schedule(g), {k: v.shape for k, v in feeds.items()}, {},
                input_dtypes={k: dtypes.from_numpy(v.dtype) for k, v in feeds.items()})
    res = plan.run([feeds[v.name] for v in g.inputs], _C.ContextPool())
    assert res[0].shape in ((), (1,)), res[0].shape
    return float(res[0].reshape(-1)[0]), res[1], dict(zip(params, res[2:])), [n.op for n in gb.nodes]


def graph_pred_shape(graph, pred):
    """The predictions' shape (the forwards here keep x's leading dims; Dense changes the last)."""
    for n in graph.nodes:
        if n.op == "Dense":
            return tuple(pred.shape[:-1]) + (graph.initializers[n.inputs[1]].shape[1],)
    return tuple(pred.shape)


# -- Keras's side ------------------------------------------------------------------------------

def keras_loss(cls, config, pred, target, weight=None, forward="identity", params=None, dtype="float64"):
    """(loss value, gradient w.r.t. x, {param: gradient}) from keras.losses.<cls>(**config) in
    float64 (or `dtype`), x -> predictions as the engine's forward."""
    x = torch.tensor(pred.astype(dtype), requires_grad=True)
    P = {k: torch.tensor(v.astype(dtype), requires_grad=True) for k, v in (params or {}).items()}
    if forward == "identity":
        p = x
    elif forward == "softmax":
        p = torch.softmax(x, -1)
    else:
        p = forward(x, P)
    t = torch.tensor(target) if target.dtype.kind in "iu" else torch.tensor(target.astype(dtype))
    kw = {}
    if weight is not None:
        kw["sample_weight"] = torch.tensor(np.asarray(weight, dtype))
    value = getattr(keras.losses, cls)(**config, dtype=dtype)(t, p, **kw)
    value.backward()
    return float(value.detach()), x.grad.numpy(), {k: v.grad.numpy() for k, v in P.items()}


def compare(name, engine_cfg, cls, keras_cfg, pred, target, weight=None, keras_weight=None, forward="identity",
            rtol=RTOL, atol=ATOL):
    loss = losses.get(name) if not engine_cfg else losses.LOSSES[name](**engine_cfg)
    got, g, _, ops = engine_loss(loss, pred, target, weight, forward)
    want, w, _ = keras_loss(cls, keras_cfg, pred, target, weight if keras_weight is None else keras_weight,
                            forward)
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, err_msg=f"{name} value")
    scale = max(1.0, float(np.abs(w).max()))
    np.testing.assert_allclose(g, w, rtol=1e-4, atol=atol * scale, err_msg=f"{name} gradient")
    return ops


def weights_for(rng, n, use):
    return rng.uniform(0.1, 2.0, n).astype(np.float32) if use else None


SHAPES = [(1, 1), (1, 4), (5, 1), (5, 3), (7, 2, 5)]
WEIGHTED = pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])


def _seq_weight(weight, shape):
    """Keras broadcasts a (N,) weight against per-sample values of (N, T) only in the form
    (N, 1) (its fit() feeds it that way for sequence outputs); the engine takes (N,)."""
    if weight is None or len(shape) < 3:
        return None
    return weight.reshape(-1, *([1] * (len(shape) - 2)))


# -- pointwise losses --------------------------------------------------------------------------

POINTWISE = {  # engine name -> (engine config, Keras class, Keras config)
    "mse": ({}, "MeanSquaredError", {}),
    "mean_squared_error": ({}, "MeanSquaredError", {}),
    "mae": ({}, "MeanAbsoluteError", {}),
    "huber": ({}, "Huber", {}),
    "huber_delta_0.3": ({"delta": 0.3}, "Huber", {"delta": 0.3}),
    "huber_delta_2.5": ({"delta": 2.5}, "Huber", {"delta": 2.5}),
}


@pytest.mark.parametrize("case", list(POINTWISE))
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@WEIGHTED
def test_pointwise(case, shape, weighted):
    cfg, cls, kcfg = POINTWISE[case]
    name = case.split("_delta")[0]
    rng = np.random.default_rng(seed_of(case, shape, weighted))
    pred = (1.5 * rng.standard_normal(shape)).astype(np.float32)
    target = (1.5 * rng.standard_normal(shape)).astype(np.float32)
    w = weights_for(rng, shape[0], weighted)
    compare(name, cfg, cls, kcfg, pred, target, w, _seq_weight(w, shape))


@pytest.mark.parametrize("name,cls", [("mse", "MeanSquaredError"), ("mae", "MeanAbsoluteError"),
                                      ("huber", "Huber")])
@WEIGHTED
def test_pointwise_rank_alignment(name, cls, weighted):
    # predictions (N, 1) with targets (N,) and the other way round: Keras drops the trailing 1
    rng = np.random.default_rng(3)
    w = weights_for(rng, 6, weighted)
    pred, target = rng.standard_normal((6, 1)).astype(np.float32), rng.standard_normal(6).astype(np.float32)
    compare(name, {}, cls, {}, pred, target, w)
    pred, target = rng.standard_normal(6).astype(np.float32), rng.standard_normal((6, 1)).astype(np.float32)
    compare(name, {}, cls, {}, pred, target, w)


# -- binary cross-entropy ------------------------------------------------------------------------

@pytest.mark.parametrize("from_logits", [False, True], ids=["probs", "logits"])
@pytest.mark.parametrize("smoothing", [0.0, 0.2])
@pytest.mark.parametrize("shape", [(1, 1), (6, 1), (5, 3), (4, 2, 3)], ids=lambda s: "x".join(map(str, s)))
@WEIGHTED
def test_binary_crossentropy(from_logits, smoothing, shape, weighted):
    soft = weighted  # 0/1 targets unweighted, soft targets weighted
    rng = np.random.default_rng(seed_of(from_logits, smoothing, shape, weighted))
    z = (2 * rng.standard_normal(shape)).astype(np.float32)
    pred = z if from_logits else (1 / (1 + np.exp(-z))).astype(np.float32)
    target = (rng.uniform(size=shape) if soft else rng.integers(0, 2, shape)).astype(np.float32)
    w = weights_for(rng, shape[0], weighted)
    cfg = {"from_logits": from_logits, "label_smoothing": smoothing}
    compare("binary_crossentropy", cfg, "BinaryCrossentropy", cfg, pred, target, w, _seq_weight(w, shape))


@WEIGHTED
def test_binary_crossentropy_labels_without_the_trailing_one(weighted):
    rng = np.random.default_rng(9)
    pred = rng.uniform(0.05, 0.95, (7, 1)).astype(np.float32)
    target = rng.integers(0, 2, 7).astype(np.float32)
    w = weights_for(rng, 7, weighted)
    compare("binary_crossentropy", {}, "BinaryCrossentropy", {}, pred, target, w)
    cfg = {"from_logits": True}
    compare("binary_crossentropy", cfg, "BinaryCrossentropy", cfg, pred * 6 - 3, target, w)


def test_binary_crossentropy_saturated_probabilities_are_clipped():
    # p of 0 and 1: Keras clips to [1e-7, 1 - 1e-7]; values agree (gradient: 0 where clipped).
    # Against Keras in float32: 1 - (1 - 1e-7) is 1.19e-7 in float32, 1e-7 in float64.
    pred = np.array([[0.0], [1.0], [0.3], [1.0]], np.float32)
    target = np.array([[1.0], [0.0], [1.0], [1.0]], np.float32)
    got, g, _, _ = engine_loss(losses.get("binary_crossentropy"), pred, target)
    want, w, _ = keras_loss("BinaryCrossentropy", {}, pred, target, dtype="float32")
    np.testing.assert_allclose(got, want, rtol=1e-5)
    np.testing.assert_allclose(g[2:], w[2:], rtol=1e-4)
    assert np.all(np.isfinite(g))


# -- categorical cross-entropy -------------------------------------------------------------------

def _probs(rng, shape, normalised=True):
    p = rng.uniform(0.05, 1.0, shape)
    return (p / p.sum(-1, keepdims=True) if normalised else p).astype(np.float32)


def _onehot(rng, shape, soft=False):
    if soft:
        return _probs(rng, shape)
    return np.eye(shape[-1], dtype=np.float32)[rng.integers(0, shape[-1], shape[:-1])]


@pytest.mark.parametrize("mode", ["probs", "probs_unnormalised", "logits", "softmax_node"])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("shape", [(1, 3), (5, 4), (6, 1), (3, 4, 5)], ids=lambda s: "x".join(map(str, s)))
@WEIGHTED
def test_categorical_crossentropy(mode, smoothing, shape, weighted):
    rng = np.random.default_rng(seed_of(mode, smoothing, shape, weighted))
    z = (1.5 * rng.standard_normal(shape)).astype(np.float32)
    pred = {"probs": _probs(rng, shape), "probs_unnormalised": _probs(rng, shape, False)}.get(mode, z)
    target = _onehot(rng, shape, soft=weighted)
    w = weights_for(rng, shape[0], weighted)
    cfg = {"from_logits": mode == "logits", "label_smoothing": smoothing}
    ops = compare("categorical_crossentropy", cfg, "CategoricalCrossentropy", cfg, pred, target, w,
                  _seq_weight(w, shape), forward="softmax" if mode == "softmax_node" else "identity")
    fused = "SoftmaxXent" in ops
    assert fused == (mode in ("logits", "softmax_node")), ops


# -- sparse categorical cross-entropy ------------------------------------------------------------

@pytest.mark.parametrize("mode", ["probs", "probs_unnormalised", "logits", "softmax_node"])
@pytest.mark.parametrize("labels", ["n", "n1"])
@pytest.mark.parametrize("shape", [(1, 3), (5, 4), (6, 1), (8, 11)], ids=lambda s: "x".join(map(str, s)))
@WEIGHTED
def test_sparse_categorical_crossentropy(mode, labels, shape, weighted):
    rng = np.random.default_rng(seed_of(mode, labels, shape, weighted))
    z = (1.5 * rng.standard_normal(shape)).astype(np.float32)
    pred = {"probs": _probs(rng, shape), "probs_unnormalised": _probs(rng, shape, False)}.get(mode, z)
    # int64 labels; int32 where the shape has 4 classes
    y = rng.integers(0, shape[-1], shape[:-1]).astype(np.int32 if shape[-1] == 4 else np.int64)
    if labels == "n1":
        y = y.reshape(-1, 1)
    w = weights_for(rng, shape[0], weighted)
    cfg = {"from_logits": mode == "logits"}
    ops = compare("sparse_categorical_crossentropy", cfg, "SparseCategoricalCrossentropy", cfg, pred, y, w,
                  forward="softmax" if mode == "softmax_node" else "identity")
    assert "SoftmaxXent" in ops


@pytest.mark.parametrize("mode", ["probs", "logits", "softmax_node"])
@pytest.mark.parametrize("labels", ["nt", "nt1"])
@WEIGHTED
def test_sparse_categorical_crossentropy_sequences(mode, labels, weighted):
    # outputs (N, T, C), labels (N, T) or (N, T, 1); the weight is per sample
    N, T, C = 3, 5, 7
    rng = np.random.default_rng(seed_of(mode, labels, weighted))
    z = (1.5 * rng.standard_normal((N, T, C))).astype(np.float32)
    pred = _probs(rng, (N, T, C)) if mode == "probs" else z
    y = rng.integers(0, C, (N, T))
    if labels == "nt1":
        y = y[..., None]
    w = weights_for(rng, N, weighted)
    cfg = {"from_logits": mode == "logits"}
    compare("sparse_categorical_crossentropy", cfg, "SparseCategoricalCrossentropy", cfg, pred, y, w,
            _seq_weight(w, (N, T, C)), forward="softmax" if mode == "softmax_node" else "identity")


def test_fused_path_through_dense_softmax_weights():
    """Dense -> Softmax -> cross-entropy: the kernel's and bias's gradients equal Keras's
    (through torch), for categorical and sparse targets."""
    rng = np.random.default_rng(21)
    x = rng.standard_normal((6, 4)).astype(np.float32)
    w, b = (0.7 * rng.standard_normal((4, 5))).astype(np.float32), (0.2 * rng.standard_normal(5)).astype(np.float32)
    nodes = [Node("Dense", ["x", "w", "b"], ["z"]), Node("Softmax", ["z"], ["pred"], {"axis": -1})]
    labels = rng.integers(0, 5, 6)
    sw = rng.uniform(0.2, 2, 6).astype(np.float32)
    for name, cls, target in [("sparse_categorical_crossentropy", "SparseCategoricalCrossentropy", labels),
                              ("categorical_crossentropy", "CategoricalCrossentropy", np.eye(5, dtype=np.float32)[labels])]:
        for weight in (None, sw):
            got, gx, gp, ops = engine_loss(losses.get(name), x, target, weight, forward=(nodes, {}),
                                           params={"w": w, "b": b})
            assert "SoftmaxXent" in ops
            want, wx, wp = keras_loss(cls, {}, x, target, weight, forward=lambda t, P: torch.softmax(
                t @ P["w"] + P["b"], -1), params={"w": w, "b": b})
            np.testing.assert_allclose(got, want, rtol=RTOL)
            np.testing.assert_allclose(gx, wx, rtol=1e-4, atol=1e-6)
            for k in ("w", "b"):
                np.testing.assert_allclose(gp[k], wp[k], rtol=1e-4, atol=1e-6, err_msg=k)


# -- KL divergence, cosine similarity ------------------------------------------------------------

@pytest.mark.parametrize("shape", [(1, 3), (5, 4), (3, 2, 6)], ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("zeros", [False, True], ids=["positive", "with_zeros"])
@WEIGHTED
def test_kl_divergence(shape, zeros, weighted):
    rng = np.random.default_rng(seed_of(shape, zeros, weighted))
    pred, target = _probs(rng, shape), _probs(rng, shape)
    if zeros:  # targets of 0 (and above 1): clipped to [1e-7, 1] by both
        target.reshape(-1)[::3] = 0.0
        target.reshape(-1)[1] = 1.5
    w = weights_for(rng, shape[0], weighted)
    for name in ("kl_divergence", "kld", "kullback_leibler_divergence"):
        compare(name, {}, "KLDivergence", {}, pred, target, w, _seq_weight(w, shape))


@pytest.mark.parametrize("shape", [(1, 3), (5, 4), (4, 1), (3, 2, 6)], ids=lambda s: "x".join(map(str, s)))
@WEIGHTED
def test_cosine_similarity(shape, weighted):
    rng = np.random.default_rng(seed_of(shape, weighted))
    pred = rng.standard_normal(shape).astype(np.float32)
    target = rng.standard_normal(shape).astype(np.float32)
    w = weights_for(rng, shape[0], weighted)
    compare("cosine_similarity", {}, "CosineSimilarity", {}, pred, target, w, _seq_weight(w, shape))


def test_cosine_similarity_tiny_vectors():
    # Keras 3 normalises x·min(rsqrt(Σx²), 1/ε), ε = 1e-7: a vector of norm above 1e-7 is
    # normalised exactly (value and gradient), like any other
    rng = np.random.default_rng(5)
    target = rng.standard_normal((3, 4)).astype(np.float32)
    pred = rng.standard_normal((3, 4)).astype(np.float32)
    pred[0] *= 3e-7 / np.linalg.norm(pred[0])
    target[1] *= 5e-7 / np.linalg.norm(target[1])
    got, g, _, _ = engine_loss(losses.get("cosine_similarity"), pred, target)
    want, w, _ = keras_loss("CosineSimilarity", {}, pred, target)
    np.testing.assert_allclose(got, want, rtol=1e-4)
    np.testing.assert_allclose(g[1:], w[1:], rtol=1e-3, atol=1e-6)
    np.testing.assert_allclose(g[0], w[0], rtol=1e-3)  # large: 1/‖p‖ ~ 3e6


# -- names and bad input ---------------------------------------------------------------------------

def test_get_names_classes_and_instances():
    expect = {"mse": losses.MeanSquaredError, "mean_squared_error": losses.MeanSquaredError,
              "mae": losses.MeanAbsoluteError, "mean_absolute_error": losses.MeanAbsoluteError,
              "huber": losses.Huber, "huber_loss": losses.Huber,
              "binary_crossentropy": losses.BinaryCrossentropy,
              "categorical_crossentropy": losses.CategoricalCrossentropy,
              "sparse_categorical_crossentropy": losses.SparseCategoricalCrossentropy,
              "kl_divergence": losses.KLDivergence, "kld": losses.KLDivergence,
              "kullback_leibler_divergence": losses.KLDivergence, "cosine_similarity": losses.CosineSimilarity,
              "MeanSquaredError": losses.MeanSquaredError, "SparseCategoricalCrossentropy":
                  losses.SparseCategoricalCrossentropy}
    for name, cls in expect.items():
        assert type(losses.get(name)) is cls, name
    inst = losses.Huber(delta=0.5)
    assert losses.get(inst) is inst
    assert isinstance(losses.get(losses.KLDivergence), losses.KLDivergence)
    assert losses.get("huber").get_config()["delta"] == 1.0
    cfg = losses.get(losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.1)).get_config()
    assert cfg["from_logits"] is True and cfg["label_smoothing"] == 0.1


@pytest.mark.parametrize("bad", ["nope", "Mse", 3, None])
def test_unknown_loss_lists_the_names(bad):
    with pytest.raises(LossError) as e:
        losses.get(bad)
    msg = str(e.value)
    assert repr(bad) in msg
    for name in ("mse", "mae", "huber", "binary_crossentropy", "categorical_crossentropy",
                 "sparse_categorical_crossentropy", "kl_divergence", "cosine_similarity"):
        assert name in msg, name


@pytest.mark.parametrize("name,y,p", [
    ("mse", (4, 3), (4, 5)), ("mae", (4, 2, 3), (4, 3)), ("huber", (5, 3), (4, 3)),
    ("binary_crossentropy", (4, 2), (4, 3)), ("kl_divergence", (4,), (4, 3)),
    ("cosine_similarity", (4, 3, 2), (4, 3)),
    ("categorical_crossentropy", (4,), (4, 3)), ("categorical_crossentropy", (4, 1), (4, 3)),
    ("categorical_crossentropy", (4, 2), (4, 3)),
    ("sparse_categorical_crossentropy", (4, 3), (4, 3)), ("sparse_categorical_crossentropy", (5,), (4, 3)),
    ("sparse_categorical_crossentropy", (4, 2), (4, 3)), ("sparse_categorical_crossentropy", (4,), (4, 2, 3)),
])
def test_check_target_refuses_wrong_shapes(name, y, p):
    with pytest.raises(LossError, match=re.escape(str(tuple(y)))):
        losses.get(name).check_target(y, p)


@pytest.mark.parametrize("name,y,p", [
    ("mse", (4, 3), (4, 3)), ("mse", (4,), (4, 1)), ("mse", (4, 1), (4,)), ("mse", (4, 1), (4, 3)),
    ("binary_crossentropy", (4,), (4, 1)), ("categorical_crossentropy", (4, 3), (4, 3)),
    ("sparse_categorical_crossentropy", (4,), (4, 3)), ("sparse_categorical_crossentropy", (4, 1), (4, 3)),
    ("sparse_categorical_crossentropy", (4, 2), (4, 2, 3)), ("sparse_categorical_crossentropy", (4, 2, 1), (4, 2, 3)),
])
def test_check_target_accepts(name, y, p):
    losses.get(name).check_target(y, p)


def test_bad_arguments():
    with pytest.raises(LossError, match="reduction"):
        losses.MeanSquaredError(reduction="sum")
    with pytest.raises(LossError, match="axis"):
        losses.CategoricalCrossentropy(axis=1)
    with pytest.raises(LossError, match="axis"):
        losses.CosineSimilarity(axis=0)
    with pytest.raises(LossError, match="label_smoothing"):
        losses.BinaryCrossentropy(label_smoothing=1.5)
    pred, y = np.full((3, 4), 0.25, np.float32), np.array([0, 1, 3])
    with pytest.raises(LossError, match="label_smoothing"):
        engine_loss(losses.SparseCategoricalCrossentropy(label_smoothing=0.1), pred, y)
    assert losses.MeanSquaredError(reduction="mean").reduction == "mean"
