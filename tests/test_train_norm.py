"""Training of normalisations, embeddings, softmax and dropout: each backward rule and
training form through engine.autograd (the training graph planned and run natively) against
torch autograd; moving statistics updated in place; dropout's mask across thread counts and
steps; engine.nn layers in training graphs; clear errors."""

import numpy as np
import pytest

import engine
from engine import dtypes, nn
from engine.autograd import differentiate, training_graph, vjp
from engine.errors import EngineError, ShapeError, UnsupportedOpError
from engine.graph import Graph, Node, Value
from engine.ops.registry import TensorType

torch = pytest.importorskip("torch")
F = torch.nn.functional

RTOL, ATOL = 2e-4, 2e-5


def close(got, want, what="", rtol=RTOL, atol=ATOL):
    want = want.detach().numpy() if hasattr(want, "detach") else np.asarray(want)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, err_msg=what)


def t(a, grad=False):
    return torch.tensor(np.asarray(a), requires_grad=grad)


def run_training(graph, feeds, params, output_grads, wrt_inputs=(), outputs=(), settings=None):
    """As autograd.vjp, plus the forward values `outputs` and builder settings; returns
    {name: array} for the gradients (params, wrt_inputs) and `outputs`."""
    from engine import _C
    from engine.runtime.plan import Plan, Schedule

    feeds = {k: np.asarray(v) for k, v in feeds.items()}
    trained = list(params) + list(wrt_inputs)
    types = {k: TensorType(tuple(v.shape), dtypes.from_numpy(v.dtype)) for k, v in feeds.items()}
    for o, dy in output_grads.items():
        feeds[f"dy/{o}"] = np.asarray(dy, np.float32)
        types[f"dy/{o}"] = TensorType(tuple(np.shape(dy)), "float32")
    gb, _, grads = differentiate(graph, types, trained, settings=settings,
                                 output_grads={o: f"dy/{o}" for o in output_grads})
    names = {p: gb.node("Identity", [grads[p]], base=f"out/{p}") for p in trained if grads[p]}
    names.update({o: gb.node("Identity", [o], base=f"out/{o}") for o in outputs})
    weights = {p: graph.initializers[p] for p in params}
    feeds.update(weights)
    ins = [Value(k, gb.shape(k), gb.dtype(k)) for k in feeds]
    g = training_graph(gb, ins, list(names.values()),
                       {k: v for k, v in graph.initializers.items() if k not in params})
    plan = Plan(Schedule(g), {k: v.shape for k, v in feeds.items()}, {},
                input_dtypes={k: dtypes.from_numpy(v.dtype) for k, v in feeds.items()})
    res = plan.run([feeds[v.name] for v in g.inputs], _C.ContextPool())
    return dict(zip(names, res))


def graph_of(op, inputs, weights, attrs, n_out=1, out_shape=None):
    """One-node graph: `inputs` {name: array} become graph inputs, `weights` initializers."""
    ins = [Value(k, v.shape, dtypes.from_numpy(v.dtype)) for k, v in inputs.items()]
    outs = [f"y{k}" if k else "y" for k in range(n_out)]
    names = list(inputs) + list(weights)
    node = Node(op, [n if n in names else "" for n in attrs.pop("_order", names)], outs, attrs)
    return Graph(ins, [Value(o, None) for o in outs], [node], dict(weights))


# -- batch normalisation ----------------------------------------------------------------------

def keras_bn_graph(x, gamma, beta, mm, mv, axis, naxes=1, momentum=0.99, eps=1e-3, frozen=0):
    """KerasBatchNorm with x and the moving statistics as inputs (updated in place), gamma /
    beta as trained initializers (None: absent)."""
    inputs = {"x": x, "mm": mm, "mv": mv}
    weights = {k: v for k, v in (("gamma", gamma), ("beta", beta)) if v is not None}
    attrs = {"axis": axis, "naxes": naxes, "momentum": momentum, "epsilon": eps, "frozen": frozen,
             "_order": ["x", "gamma", "beta", "mm", "mv"]}
    return graph_of("KerasBatchNorm", inputs, weights, attrs)


def torch_nchw(x, axis, naxes):
    """x with its channel axes flattened into dim 1 (torch's layout) and a way back."""
    shape = x.shape
    C = int(np.prod(shape[axis:axis + naxes]))
    perm = [axis + k for k in range(naxes)] + [d for d in range(x.ndim) if not axis <= d < axis + naxes]
    xt = np.transpose(x, perm).reshape((C,) + tuple(shape[d] for d in perm[naxes:]))
    xt = np.moveaxis(xt, 0, 1) if xt.ndim > 1 else xt
    inv = np.argsort(perm)

    def back(a):
        a = np.moveaxis(a, 1, 0) if a.ndim > 1 else a
        return np.transpose(a.reshape([shape[d] for d in perm]), inv)
    return xt, back


def batch_norm_ref(x, gamma, beta, eps):
    """Training batch norm of (N, C, ...) from torch ops (F.batch_norm refuses one value per
    channel, which Keras normalises to beta)."""
    red = [0] + list(range(2, x.dim()))
    bshape = [1, -1] + [1] * (x.dim() - 2)
    y = (x - x.mean(red, keepdim=True)) / torch.sqrt(x.var(red, unbiased=False, keepdim=True) + eps)
    if gamma is not None:
        y = y * gamma.reshape(bshape) + beta.reshape(bshape)
    return y


@pytest.mark.parametrize("shape,axis,naxes", [((8, 5), 1, 1), ((1, 3), 1, 1), ((4, 3, 5, 6), 3, 1),
                                              ((2, 6, 3, 5), 1, 1), ((3, 4, 2, 5), 1, 2), ((2, 7, 3), 2, 1)])
@pytest.mark.parametrize("affine", [True, False])
def test_keras_batchnorm_training(shape, axis, naxes, affine, rng, threads):
    x = rng.standard_normal(shape).astype(np.float32) * 2 + 0.5
    cs = shape[axis:axis + naxes]
    C = int(np.prod(cs))
    gamma = rng.uniform(0.5, 1.5, cs).astype(np.float32) if affine else None
    beta = rng.standard_normal(cs).astype(np.float32) if affine else None
    mm, mv = rng.standard_normal(cs).astype(np.float32), rng.uniform(0.5, 2, cs).astype(np.float32)
    mm0, mv0 = mm.copy(), mv.copy()
    dy = rng.standard_normal(shape).astype(np.float32)
    g = keras_bn_graph(x, gamma, beta, mm, mv, axis, naxes, momentum=0.9)
    params = ["gamma", "beta"] if affine else []
    r = run_training(g, {"x": x, "mm": mm, "mv": mv}, params, {"y": dy}, wrt_inputs=("x",), outputs=["y"])

    xt, back = torch_nchw(x, axis, naxes)
    tx = t(xt, True)
    tg = t(gamma.reshape(C), True) if affine else None
    tb = t(beta.reshape(C), True) if affine else None
    y = batch_norm_ref(tx, tg, tb, 1e-3)
    y.backward(t(torch_nchw(dy, axis, naxes)[0]))
    close(r["y"], back(y.detach().numpy()), "y")
    close(r["x"], back(tx.grad.numpy()), "dx")
    if affine:
        close(r["gamma"], tg.grad.numpy().reshape(cs), "dgamma")
        close(r["beta"], tb.grad.numpy().reshape(cs), "dbeta")
    # Keras's moving statistics: population variance, m·momentum + batch·(1 - momentum)
    red = tuple(d for d in range(x.ndim) if not axis <= d < axis + naxes)
    close(mm, mm0 * 0.9 + x.astype(np.float64).mean(red) * 0.1, "moving_mean", rtol=1e-5, atol=1e-6)
    close(mv, mv0 * 0.9 + x.astype(np.float64).var(red) * 0.1, "moving_variance", rtol=1e-5, atol=1e-6)


def test_keras_batchnorm_frozen_uses_moving_statistics(rng):
    x = rng.standard_normal((5, 3, 4)).astype(np.float32)
    gamma, beta = rng.uniform(0.5, 1.5, 4).astype(np.float32), rng.standard_normal(4).astype(np.float32)
    mm, mv = rng.standard_normal(4).astype(np.float32), rng.uniform(0.5, 2, 4).astype(np.float32)
    mm0, mv0 = mm.copy(), mv.copy()
    dy = rng.standard_normal(x.shape).astype(np.float32)
    g = keras_bn_graph(x, gamma, beta, mm, mv, 2, frozen=1)
    r = run_training(g, {"x": x, "mm": mm, "mv": mv}, ["gamma", "beta"], {"y": dy}, ("x",), outputs=["y"])
    tx, tg, tb = t(x.transpose(0, 2, 1), True), t(gamma, True), t(beta, True)
    y = F.batch_norm(tx, t(mm), t(mv), tg, tb, training=False, eps=1e-3)
    y.backward(t(dy.transpose(0, 2, 1)))
    close(r["y"], y.detach().numpy().transpose(0, 2, 1), "y")
    close(r["x"], tx.grad.numpy().transpose(0, 2, 1), "dx")
    close(r["gamma"], tg.grad, "dgamma")
    close(r["beta"], tb.grad, "dbeta")
    assert np.array_equal(mm, mm0) and np.array_equal(mv, mv0)


def test_keras_batchnorm_inference_lowering(rng):
    """Outside training the op runs with the moving statistics (a graph that still holds it)."""
    x = rng.standard_normal((3, 4, 5)).astype(np.float32)
    mm, mv = rng.standard_normal(4).astype(np.float32), rng.uniform(0.5, 2, 4).astype(np.float32)
    gamma = rng.uniform(0.5, 1.5, 4).astype(np.float32)
    g = keras_bn_graph(x, gamma, None, mm, mv, 1)
    g = g.replace(outputs=[Value("y", (3, 4, 5))])
    y = engine.Model(g).run({"x": x, "mm": mm, "mv": mv})["y"]
    want = F.batch_norm(t(x), t(mm), t(mv), t(gamma), None, training=False, eps=1e-3)
    close(y, want, "y")


def test_keras_batchnorm_constant_statistics_are_not_written(rng):
    """Moving statistics held as graph constants: the step updates scratch copies."""
    x = rng.standard_normal((6, 3)).astype(np.float32)
    mm, mv = np.zeros(3, np.float32), np.ones(3, np.float32)
    g = graph_of("KerasBatchNorm", {"x": x}, {"mm": mm, "mv": mv},
                 {"axis": 1, "momentum": 0.5, "epsilon": 1e-3, "_order": ["x", "gamma", "beta", "mm", "mv"]})
    dy = rng.standard_normal(x.shape).astype(np.float32)
    r = vjp(g, {"x": x}, [], {"y": dy}, wrt_inputs=("x",))
    tx = t(x, True)
    F.batch_norm(tx, None, None, training=True, eps=1e-3).backward(t(dy))
    close(r["x"], tx.grad, "dx")
    assert np.array_equal(mm, np.zeros(3)) and np.array_equal(mv, np.ones(3))


@pytest.mark.parametrize("shape", [(6, 4), (5, 3, 7), (2, 3, 5, 4), (1, 2, 3, 3)])
def test_onnx_batchnorm_trains_like_torch(shape, rng, threads):
    """ONNX BatchNormalization (NCHW) in a training graph: torch's train() BatchNorm, running
    statistics included (unbiased variance, ONNX momentum 0.9 = torch's 0.1)."""
    C = shape[1]
    x = (rng.standard_normal(shape) * 1.5 + 0.3).astype(np.float32)
    scale, bias = rng.uniform(0.5, 1.5, C).astype(np.float32), rng.standard_normal(C).astype(np.float32)
    rm, rv = rng.standard_normal(C).astype(np.float32), rng.uniform(0.5, 2, C).astype(np.float32)
    dy = rng.standard_normal(shape).astype(np.float32)
    g = graph_of("BatchNormalization", {"x": x, "rm": rm, "rv": rv}, {"scale": scale, "bias": bias},
                 {"epsilon": 1e-5, "momentum": 0.9, "_order": ["x", "scale", "bias", "rm", "rv"]})
    trm, trv = t(rm.copy()), t(rv.copy())
    r = run_training(g, {"x": x, "rm": rm, "rv": rv}, ["scale", "bias"], {"y": dy}, ("x",), outputs=["y"])
    bn = {1: torch.nn.BatchNorm1d, 2: torch.nn.BatchNorm1d, 3: torch.nn.BatchNorm2d}[len(shape) - 1](C)
    bn.train()
    with torch.no_grad():
        bn.weight.copy_(t(scale)), bn.bias.copy_(t(bias))
        bn.running_mean.copy_(trm), bn.running_var.copy_(trv)
    tx = t(x, True)
    y = bn(tx)
    y.backward(t(dy))
    close(r["y"], y, "y")
    close(r["x"], tx.grad, "dx")
    close(r["scale"], bn.weight.grad, "dscale")
    close(r["bias"], bn.bias.grad, "dbias")
    close(rm, bn.running_mean, "running_mean", rtol=1e-5, atol=1e-6)
    close(rv, bn.running_var, "running_var", rtol=1e-5, atol=1e-6)


def test_onnx_batchnorm_frozen_setting(rng):
    x = rng.standard_normal((3, 2, 4, 4)).astype(np.float32)
    s, b = rng.uniform(0.5, 1.5, 2).astype(np.float32), rng.standard_normal(2).astype(np.float32)
    rm, rv = rng.standard_normal(2).astype(np.float32), rng.uniform(0.5, 2, 2).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    g = graph_of("BatchNormalization", {"x": x}, {"s": s, "b": b, "rm": rm, "rv": rv},
                 {"epsilon": 1e-5, "_order": ["x", "s", "b", "rm", "rv"]})
    r = run_training(g, {"x": x}, ["s", "b"], {"y": dy}, ("x",), settings={"frozen_batchnorm": True})
    tx, ts, tb = t(x, True), t(s, True), t(b, True)
    F.batch_norm(tx, t(rm), t(rv), ts, tb, training=False, eps=1e-5).backward(t(dy))
    for k, want in (("x", tx), ("s", ts), ("b", tb)):
        close(r[k], want.grad, k)


def test_batchnorm_training_errors(rng):
    x = rng.standard_normal((1, 3)).astype(np.float32)
    c = np.ones(3, np.float32)
    g = graph_of("BatchNormalization", {"x": x}, {"s": c, "b": c, "m": c, "v": c},
                 {"_order": ["x", "s", "b", "m", "v"]})
    with pytest.raises(ShapeError, match="at least 2 values per channel, got 1"):
        vjp(g, {"x": x}, ["s"], {"y": x})
    g = keras_bn_graph(x, c[:2], None, c, c, 1)
    with pytest.raises(ShapeError, match="gamma must have shape"):
        vjp(g, {"x": x, "mm": c, "mv": c}, ["gamma"], {"y": x})
    xh = x.astype(np.float16)
    g = graph_of("BatchNormalization", {"x": xh}, {"s": c, "b": c, "m": c, "v": c},
                 {"_order": ["x", "s", "b", "m", "v"]})
    with pytest.raises(EngineError, match="training needs float32"):
        vjp(g, {"x": np.ones((4, 3), np.float16)}, ["s"], {"y": np.ones((4, 3), np.float32)})


# -- layer / RMS normalisation ----------------------------------------------------------------

@pytest.mark.parametrize("shape,axis,pshape", [((6, 10), -1, (10,)), ((1, 7), 1, (7,)), ((3, 5, 8), -1, (8,)),
                                               ((2, 3, 4, 5), 2, (4, 5)), ((3, 4, 6), 1, (1, 6)),
                                               ((2, 5, 6), -1, (1, 1, 6))])
@pytest.mark.parametrize("op", ["LayerNormalization", "RMSNormalization"])
def test_layer_norm_backward(op, shape, axis, pshape, rng, threads):
    x = (rng.standard_normal(shape) * 2 + 1).astype(np.float32)
    scale = rng.uniform(0.5, 1.5, pshape).astype(np.float32)
    bias = rng.standard_normal(pshape).astype(np.float32)
    dy = rng.standard_normal(shape).astype(np.float32)
    weights = {"scale": scale} if op == "RMSNormalization" else {"scale": scale, "bias": bias}
    g = graph_of(op, {"x": x}, weights, {"axis": axis, "epsilon": 1e-5})
    r = run_training(g, {"x": x}, list(weights), {"y": dy}, ("x",), outputs=["y"])
    a = axis % len(shape)
    norm_shape = shape[a:]
    tx, ts, tb = t(x, True), t(scale, True), t(bias, True)
    if op == "LayerNormalization":
        y = F.layer_norm(tx, norm_shape, eps=1e-5) * ts + tb
    else:
        y = F.rms_norm(tx, norm_shape, eps=1e-5) * ts
    y.backward(t(dy))
    close(r["y"], y, "y")
    close(r["x"], tx.grad, "dx")
    close(r["scale"], ts.grad, "dscale")
    if op == "LayerNormalization":
        close(r["bias"], tb.grad, "dbias")


def test_layer_norm_keeps_named_statistics(rng):
    """A graph that names Mean / InvStdDev keeps them; the rule reads them."""
    x = rng.standard_normal((4, 6)).astype(np.float32)
    s, b = np.ones(6, np.float32), np.zeros(6, np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    g = graph_of("LayerNormalization", {"x": x}, {"s": s, "b": b}, {"axis": 1, "epsilon": 1e-5}, n_out=3)
    r = run_training(g, {"x": x}, ["s"], {"y": dy}, ("x",), outputs=["y1", "y2"])
    close(r["y1"], x.mean(1, keepdims=True), "mean", atol=1e-6)
    close(r["y2"], 1 / np.sqrt(x.var(1, keepdims=True) + 1e-5), "invstd")
    tx = t(x, True)
    F.layer_norm(tx, (6,), eps=1e-5).backward(t(dy))
    close(r["x"], tx.grad, "dx")


# -- Gather / Embedding -----------------------------------------------------------------------

@pytest.mark.parametrize("ids_shape,itype", [((7,), np.int64), ((3, 4), np.int32), ((), np.int64), ((2, 0), np.int64)])
def test_gather_axis0_scatter_adds_duplicates(ids_shape, itype, rng):
    V, D = 5, 3
    w = rng.standard_normal((V, D)).astype(np.float32)
    ids = rng.integers(-V, V, ids_shape).astype(itype)
    if ids.size > 2:
        ids.flat[:3] = [2, 2, -3]  # duplicates, a negative one aliasing 2
    dy = rng.standard_normal(ids_shape + (D,)).astype(np.float32)
    g = graph_of("Gather", {"ids": ids}, {"w": w}, {"axis": 0, "_order": ["w", "ids"]})
    r = vjp(g, {"ids": ids}, ["w"], {"y": dy})
    tw = t(w, True)
    tw[t(np.where(ids < 0, ids + V, ids).astype(np.int64))].backward(t(dy))
    close(r["w"], tw.grad, "dw", atol=1e-6)


@pytest.mark.parametrize("shape,axis,ids_shape", [((4, 6, 3), 1, (5,)), ((3, 5), 1, (2, 4)), ((2, 3, 4), 2, (6,)),
                                                  ((3, 4, 2), -2, (3,))])
def test_gather_other_axes(shape, axis, ids_shape, rng, threads):
    x = rng.standard_normal(shape).astype(np.float32)
    a = axis % len(shape)
    ids = rng.integers(0, shape[a], ids_shape).astype(np.int64)
    ids.flat[0] = ids.flat[-1]
    y = np.take(x, ids, axis=a)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    g = graph_of("Gather", {"x": x, "ids": ids}, {}, {"axis": axis})
    r = vjp(g, {"x": x, "ids": ids}, [], {"y": dy}, wrt_inputs=("x",))
    tx = t(x, True)
    idx = [slice(None)] * a + [t(ids)]
    tx[tuple(idx)].backward(t(dy))
    close(r["x"], tx.grad, "dx", atol=1e-6)


def test_gather_index_out_of_range_is_an_error(rng):
    w = rng.standard_normal((4, 2)).astype(np.float32)
    ids = np.array([1, 9], np.int64)
    g = graph_of("Gather", {"ids": ids}, {"w": w}, {"axis": 0, "_order": ["w", "ids"]})
    with pytest.raises(EngineError, match="out of range"):
        vjp(g, {"ids": ids}, ["w"], {"y": np.ones((2, 2), np.float32)})


# -- Softmax / LogSoftmax ---------------------------------------------------------------------

@pytest.mark.parametrize("shape,axis", [((4, 7), -1), ((4, 7), 0), ((2, 3, 5), 1), ((1, 6), 1), ((3, 2, 4), 0),
                                        ((5,), 0)])
@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
def test_softmax_backward(op, shape, axis, rng):
    x = (rng.standard_normal(shape) * 3).astype(np.float32)
    dy = rng.standard_normal(shape).astype(np.float32)
    g = graph_of(op, {"x": x}, {}, {"axis": axis})
    r = vjp(g, {"x": x}, [], {"y": dy}, wrt_inputs=("x",))
    tx = t(x, True)
    (torch.softmax if op == "Softmax" else torch.log_softmax)(tx, axis).backward(t(dy))
    close(r["x"], tx.grad, "dx")


def test_softmax_coerce_2d_backward(rng):
    x = rng.standard_normal((2, 3, 4)).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    g = graph_of("Softmax", {"x": x}, {}, {"axis": 1, "coerce_2d": 1})
    r = vjp(g, {"x": x}, [], {"y": dy}, wrt_inputs=("x",))
    tx = t(x, True)
    torch.softmax(tx.reshape(2, 12), 1).reshape(2, 3, 4).backward(t(dy))
    close(r["x"], tx.grad, "dx")


# -- Dropout ----------------------------------------------------------------------------------

def dropout_graph(x, rate, seed=7, **attrs):
    return graph_of("Dropout", {"x": x}, {}, {"rate": rate, "seed": seed, **attrs})


def hyper(step):
    return np.array([1e-3, step, 1.0], np.float64)


def run_dropout(g, x, dy, step=None):
    feeds, settings = {"x": x}, None
    if step is not None:
        feeds["hyper"] = hyper(step)
        settings = {"step_counter": "hyper"}
    return run_training(g, feeds, [], {"y": dy}, ("x",), outputs=["y"], settings=settings)


def test_dropout_mask_rate_gradient_and_steps(rng, set_threads):
    x = rng.uniform(1, 2, (64, 257)).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    rate = 0.3
    g = dropout_graph(x, rate)
    masks = []
    for n in (1, 2):
        set_threads(n)
        r = run_dropout(g, x, dy)
        masks.append(r["y"] != 0)
        kept = masks[-1]
        scale = np.float32(1 / (1 - rate))
        close(r["y"], np.where(kept, x * scale, 0), "y", rtol=1e-6, atol=0)
        close(r["x"], np.where(kept, dy * scale, 0), "dx", rtol=1e-6, atol=0)
    assert np.array_equal(masks[0], masks[1]), "the mask depends on the thread count"
    drop = 1 - masks[0].mean()
    assert abs(drop - rate) < 4 * np.sqrt(rate * (1 - rate) / x.size)
    # the step (the optimizers' hyper buffer) changes the mask; the same step repeats it
    s1, s2, s1b = (run_dropout(g, x, dy, step)["y"] != 0 for step in (1, 2, 1))
    assert np.array_equal(s1, s1b)
    assert not np.array_equal(s1, s2) and not np.array_equal(s1, masks[0])
    # another seed, another mask
    assert not np.array_equal(run_dropout(dropout_graph(x, rate, seed=8), x, dy)["y"] != 0, masks[0])


@pytest.mark.parametrize("rate", [0.0, 1.0])
def test_dropout_edge_rates(rate, rng):
    x = rng.standard_normal((3, 5)).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    r = run_dropout(dropout_graph(x, rate), x, dy)
    close(r["y"], x * (rate == 0), "y", atol=0)
    close(r["x"], dy * (rate == 0), "dx", atol=0)


def test_dropout_noise_shape_shares_the_mask(rng):
    x = rng.uniform(1, 2, (4, 5, 6, 16)).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    r = run_dropout(dropout_graph(x, 0.5, noise_shape=[-1, 1, 1, -1]), x, dy, step=3)
    kept = r["y"] != 0
    assert np.array_equal(kept, np.broadcast_to(kept[:, :1, :1, :], kept.shape))
    assert 0 < kept.mean() < 1
    close(r["y"], np.where(kept, x * 2, 0), "y", rtol=1e-6, atol=0)
    close(r["x"], np.where(kept, dy * 2, 0), "dx", rtol=1e-6, atol=0)


def test_alpha_dropout_matches_keras_formula(rng):
    rate = 0.2
    x = rng.standard_normal((50, 40)).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    r = run_dropout(dropout_graph(x, rate, alpha=1), x, dy)
    alpha_p = -1.6732632423543772848170429916717 * 1.0507009873554804934193349852946
    a = ((1 - rate) * (1 + rate * alpha_p ** 2)) ** -0.5
    b = -a * alpha_p * rate
    kept = np.abs(r["y"] - (a * alpha_p + b)) > 1e-5
    close(r["y"], np.where(kept, a * x + b, a * alpha_p + b), "y", rtol=1e-5, atol=1e-5)
    close(r["x"], np.where(kept, a * dy, 0), "dx", rtol=1e-5, atol=1e-6)
    assert abs((1 - kept.mean()) - rate) < 0.03


def test_onnx_dropout_uses_its_ratio(rng):
    x = rng.uniform(1, 2, (40, 50)).astype(np.float32)
    g = graph_of("Dropout", {"x": x}, {"ratio": np.array(0.25, np.float32)}, {"_order": ["x", "ratio"]})
    r = run_dropout(g, x, np.ones_like(x))
    kept = r["y"] != 0
    close(r["y"], np.where(kept, x / np.float32(0.75), 0), "y", rtol=1e-6, atol=0)
    assert abs((1 - kept.mean()) - 0.25) < 0.03


# -- engine.nn layers in training graphs ------------------------------------------------------

def stats_as_inputs(graph, names):
    """The graph with initializers `names` turned into inputs (state a step updates)."""
    ins = list(graph.inputs) + [Value(n, graph.initializers[n].shape) for n in names]
    return graph.replace(inputs=ins, initializers={k: v for k, v in graph.initializers.items() if k not in names})


@pytest.mark.parametrize("trainable", [True, False])
def test_nn_batchnorm_training_graph(trainable, rng):
    nn.set_random_seed(3)
    bn = nn.layers.BatchNormalization(momentum=0.8, epsilon=1e-3, trainable=trainable, name="bn")
    model = nn.Sequential([nn.Input((5, 4)), bn])
    w = [rng.uniform(0.5, 1.5, 4), rng.standard_normal(4), rng.standard_normal(4), rng.uniform(0.5, 2, 4)]
    bn.set_weights([a.astype(np.float32) for a in w])
    g = model.to_graph(training=True)
    assert [n.op for n in g.nodes] == ["KerasBatchNorm"]
    assert model.to_graph().nodes[0].op == "Mul"  # inference: folded
    g = stats_as_inputs(g, ["bn/moving_mean", "bn/moving_variance"])
    x = rng.standard_normal((3, 5, 4)).astype(np.float32)
    mm, mv = bn.weights[2].copy(), bn.weights[3].copy()
    dy = rng.standard_normal(x.shape).astype(np.float32)
    out = g.outputs[0].name
    r = run_training(g, {g.inputs[0].name: x, "bn/moving_mean": mm, "bn/moving_variance": mv},
                     ["bn/gamma", "bn/beta"], {out: dy}, outputs=[out])
    tx, tg, tb = t(x.transpose(0, 2, 1), True), t(bn.weights[0], True), t(bn.weights[1], True)
    y = F.batch_norm(tx, None if trainable else t(bn.weights[2]), None if trainable else t(bn.weights[3]),
                     tg, tb, training=trainable, eps=1e-3)
    y.backward(t(dy.transpose(0, 2, 1)))
    close(r[out], y.detach().numpy().transpose(0, 2, 1), "y")
    close(r["bn/gamma"], tg.grad, "dgamma")
    close(r["bn/beta"], tb.grad, "dbeta")
    if trainable:
        close(mm, bn.weights[2] * 0.8 + x.mean((0, 1)) * 0.2, "moving_mean", rtol=1e-5, atol=1e-6)
        close(mv, bn.weights[3] * 0.8 + x.var((0, 1)) * 0.2, "moving_variance", rtol=1e-5, atol=1e-6)
    else:
        assert np.array_equal(mm, bn.weights[2])


def test_nn_layer_norm_training_graph(rng):
    ln = nn.layers.LayerNormalization(axis=-1, epsilon=1e-5, name="ln")
    model = nn.Sequential([nn.Input((3, 6)), ln])
    ln.set_weights([rng.uniform(0.5, 1.5, 6).astype(np.float32), rng.standard_normal(6).astype(np.float32)])
    g = model.to_graph(training=True)
    x = rng.standard_normal((2, 3, 6)).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    out = g.outputs[0].name
    r = vjp(g, {g.inputs[0].name: x}, ["ln/gamma", "ln/beta"], {out: dy})
    tx, tg, tb = t(x, True), t(ln.weights[0], True), t(ln.weights[1], True)
    F.layer_norm(tx, (6,), tg, tb, eps=1e-5).backward(t(dy))
    close(r["ln/gamma"], tg.grad, "dgamma")
    close(r["ln/beta"], tb.grad, "dbeta")


def test_nn_embedding_dense_trains(rng):
    """Sequential Embedding -> Dense: gradients of both weights against torch."""
    emb = nn.layers.Embedding(11, 4, name="emb")
    dense = nn.layers.Dense(3, activation="tanh", name="dense")
    model = nn.Sequential([nn.Input((6,), dtype="int64"), emb, dense])
    model.predict(np.zeros((1, 6), np.int64))  # built
    g = model.to_graph(training=True)
    ids = rng.integers(0, 11, (5, 6)).astype(np.int64)
    ids[0, :3] = 4
    dy = rng.standard_normal((5, 6, 3)).astype(np.float32)
    out = g.outputs[0].name
    r = vjp(g, {g.inputs[0].name: ids}, ["emb/embeddings", "dense/kernel", "dense/bias"], {out: dy})
    tw, tk, tb = (t(w, True) for w in (emb.weights[0], dense.weights[0], dense.weights[1]))
    torch.tanh(tw[t(ids)] @ tk + tb).backward(t(dy))
    close(r["emb/embeddings"], tw.grad, "dembeddings")
    close(r["dense/kernel"], tk.grad, "dkernel")
    close(r["dense/bias"], tb.grad, "dbias")


def test_nn_embedding_mask_zero_emits_gather(rng):
    emb = nn.layers.Embedding(5, 2, mask_zero=True, name="e")
    model = nn.Sequential([nn.Input((3,), dtype="int64"), emb])
    model.predict(np.zeros((1, 3), np.int64))
    g = model.to_graph(training=True)
    assert "Gather" in [n.op for n in g.nodes]
    ids = np.array([[0, 1, 1]], np.int64)
    r = vjp(g, {g.inputs[0].name: ids}, ["e/embeddings"], {g.outputs[0].name: np.ones((1, 3, 2), np.float32)})
    np.testing.assert_array_equal(r["e/embeddings"], [[1, 1], [2, 2], [0, 0], [0, 0], [0, 0]])


def test_nn_dropout_layers_in_training_graphs(rng):
    nn.set_random_seed(11)
    layers = nn.layers
    x = nn.Input((4, 6))
    model = nn.Sequential([x, layers.Dropout(0.5, name="d"), layers.SpatialDropout1D(0.5, name="sd"),
                           layers.AlphaDropout(0.1, name="ad"), layers.Dropout(0.0, name="d0")])
    g = model.to_graph(training=True)
    ops = [(n.op, n.attrs.get("noise_shape"), n.attrs.get("alpha")) for n in g.nodes]
    assert ops == [("Dropout", None, None), ("Dropout", [-1, 1, -1], None), ("Dropout", None, 1),
                   ("Identity", None, None)]
    seeds = [n.attrs["seed"] for n in g.nodes[:3]]
    assert len(set(seeds)) == 3
    assert [n.attrs["seed"] for n in model.to_graph(training=True).nodes[:3]] == seeds  # stable
    nn.set_random_seed(12)
    assert [n.attrs["seed"] for n in model.to_graph(training=True).nodes[:3]] != seeds
    assert layers.Dropout(0.5, seed=5, name="s5")._training_attrs()["seed"] == 5
    assert all(n.op == "Identity" for n in model.to_graph().nodes)  # inference: unchanged


@pytest.mark.parametrize("layer", [lambda: nn.layers.GaussianDropout(0.3, name="gd"),
                                   lambda: nn.layers.GaussianNoise(0.1, name="gn"),
                                   lambda: nn.layers.ActivityRegularization(l1=0.1, name="ar")])
def test_nn_noise_layers_refuse_training(layer):
    model = nn.Sequential([nn.Input((3,)), nn.layers.Dense(2, name="dd"), layer()])
    model.to_graph()  # inference is fine
    with pytest.raises(UnsupportedOpError, match="training is not supported"):
        model.to_graph(training=True)


# -- unsupported configurations: errors that name the node --------------------------------------

def test_training_errors_name_the_node(rng):
    x64 = rng.standard_normal((3, 4))
    g = graph_of("Gather", {"ids": np.array([0, 1])}, {"w": x64}, {"axis": 0, "_order": ["w", "ids"]})
    with pytest.raises(engine.DTypeError, match=r"node 'Gather:y' \(Gather\): training needs float32"):
        vjp(g, {"ids": np.array([0, 1])}, ["w"], {"y": np.ones((2, 4), np.float32)})
    for op in ("Softmax", "LayerNormalization"):
        ws = {"s": np.ones(4)} if op == "LayerNormalization" else {}
        g = graph_of(op, {"x": x64}, ws, {"axis": -1})
        with pytest.raises(engine.DTypeError, match=f"node '{op}:y' .*training needs float32"):
            vjp(g, {"x": x64}, [], {"y": np.ones((3, 4), np.float32)}, wrt_inputs=("x",))
    x16 = np.ones((3, 4), np.float16)
    with pytest.raises(engine.DTypeError, match="training dropout needs float32"):
        vjp(dropout_graph(x16, 0.5), {"x": x16}, [], {"y": np.ones((3, 4), np.float32)}, wrt_inputs=("x",))
    x = np.ones((3, 4), np.float32)
    with pytest.raises(ShapeError, match=r"node 'Dropout:y' \(Dropout\): noise_shape \[-1, 2\] does not broadcast"):
        vjp(dropout_graph(x, 0.5, noise_shape=[-1, 2]), {"x": x}, [], {"y": x}, wrt_inputs=("x",))
    with pytest.raises(UnsupportedOpError, match="non-adjacent axes"):
        bn = nn.layers.BatchNormalization(axis=[1, 3], name="bn13")
        nn.Sequential([nn.Input((2, 3, 4)), bn]).to_graph(training=True)


def test_nn_normalization_trains_like_keras(rng):
    """Three SGD steps of Dense -> BatchNormalization -> LayerNormalization -> Dense ->
    BatchNormalization(axis=1) against Keras 3 (torch backend): every weight, the moving
    statistics included."""
    from keras_util import keras

    def build(lib, layers, inp):
        return lib.Sequential([inp, layers.Dense(8, name="d1"), layers.BatchNormalization(momentum=0.9, name="bn"),
                               layers.LayerNormalization(name="ln"), layers.Dense(3, name="d2"),
                               layers.BatchNormalization(axis=1, name="bn2")])
    km = build(keras, keras.layers, keras.Input((5, 6)))
    em = build(nn, nn.layers, nn.Input((5, 6)))
    w = [rng.uniform(0.5, 1.5, v.shape) if "variance" in v.path else rng.normal(0, 0.5, v.shape) for v in km.weights]
    w = [a.astype(np.float32) for a in w]
    km.set_weights(w)
    em.set_weights(w)
    x = rng.standard_normal((4, 5, 6)).astype(np.float32)
    y = rng.standard_normal((4, 5, 3)).astype(np.float32)
    km.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    em.compile(optimizer=engine.optimizers.SGD(0.1), loss="mse")
    for _ in range(3):
        lk, le = km.train_on_batch(x, y), em.train_on_batch(x, y)
        np.testing.assert_allclose(le, lk, rtol=1e-5)
    for v, a, b in zip(km.weights, km.get_weights(), em.get_weights()):
        close(b, a, v.path, rtol=1e-5, atol=1e-6)
