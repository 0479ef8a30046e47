"""Attention in training (engine/ops/attention_grad.py; csrc/cpu/attention_grad*.cpp): the
training program of one Attention node — Y from the flash forward and dQ, dK, dV from the
backward — against torch autograd of scaled_dot_product_attention in float64 over sequence
lengths, heads, head sizes, masks (bool padding, additive bias, causal, windows), grouped- and
multi-query heads, 3-D and 4-D layouts and batches, on every ISA and thread count (batch-1
multi-query cases split the keys into ranges); attention dropout against the same function
with the mask the `attention_dropout_mask` step draws; a Dense → Attention → Dense model
trained with compile / train_on_batch against torch; errors that name the node.

The kernels are float32 only, so there is no float64 finite-difference check: torch's float64
autograd is the reference."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import engine
from engine import _C, dtypes, optimizers
from engine.autograd import differentiate, training_graph
from engine.errors import DTypeError, GraphError, UnsupportedOpError
from engine.graph import Graph, Node, Value
from engine.ops.registry import TensorType
from engine.runtime.plan import Plan, Schedule
from grad_helpers import empty, run_step

torch = pytest.importorskip("torch")
F = torch.nn.functional


def to3d(a):
    """(B, H, S, D) -> (B, S, H·D)."""
    B, H, S, D = a.shape
    return np.ascontiguousarray(a.transpose(0, 2, 1, 3).reshape(B, S, H * D))


def to4d(a, H):
    B, S, HD = a.shape
    return a.reshape(B, S, H, HD // H).transpose(0, 2, 1, 3)


def make_case(B, S, Hq, Hkv, D, mask, seed, L=None):
    """Random (B, H, S, D) inputs and an attn_mask ("padding": bool, the last keys of each batch
    row off, at least one key on; "bias": additive, broadcast over the batch)."""
    rng = np.random.default_rng(seed)
    L = S if L is None else L
    c = {"q": rng.standard_normal((B, Hq, S, D)), "k": rng.standard_normal((B, Hkv, L, D)),
         "v": rng.standard_normal((B, Hkv, L, D)), "dy": rng.standard_normal((B, Hq, S, D))}
    c = {n: a.astype(np.float32) for n, a in c.items()}
    if mask == "padding":
        keep = np.ones((B, 1, 1, L), np.bool_)
        for b in range(B):
            keep[b, ..., max(1, L - 1 - (L * (b + 1)) // 5):] = False
        c["mask"] = keep
    elif mask == "bias":
        c["mask"] = rng.standard_normal((Hq, S, L)).astype(np.float32)
    return c


def engine_attention(c, attrs, in3d=False, settings=None, extra=None):
    """{"y", "q", "k", "v"}: Y and the gradients of one Attention node's training program (its
    training form and backward rule, planned and run once), 4-D whatever the layout."""
    Hq, Hkv = c["q"].shape[1], c["k"].shape[1]
    feeds = {n: (to3d(a) if in3d and n != "mask" else a) for n, a in c.items()}
    feeds.update(extra or {})
    attrs = dict(attrs, **({"q_num_heads": Hq, "kv_num_heads": Hkv} if in3d else {}))
    inputs = ["q", "k", "v"] + (["mask"] if "mask" in c else [])
    vals = {n: Value(n, a.shape, dtypes.from_numpy(a.dtype)) for n, a in feeds.items()}
    graph = Graph([vals[n] for n in inputs], [Value("y", None)], [Node("Attention", inputs, ["y"], attrs, "att")], {})
    types = {n: TensorType(v.shape, v.dtype) for n, v in vals.items()}
    gb, _, grads = differentiate(graph, types, ["q", "k", "v"], settings=settings, output_grads={"y": "dy"})
    outs = {n: gb.node("Identity", [g], base=f"out/{n}") for n, g in (("y", "y"), *((n, grads[n]) for n in "qkv"))}
    g = training_graph(gb, list(vals.values()), list(outs.values()), {})
    plan = Plan(Schedule(g), {n: a.shape for n, a in feeds.items()}, {},
                input_dtypes={n: dtypes.from_numpy(a.dtype) for n, a in feeds.items()})
    res = dict(zip(outs, plan.run([feeds[v.name] for v in g.inputs], _C.ContextPool())))
    return {n: to4d(a, Hq if n in "yq" else Hkv) if in3d else a for n, a in res.items()}


def torch_attention(c, causal=False, scale=None, keep=None, drop=None):
    """Y, dQ, dK, dV in float64: SDPA, or (keep: a bool mask, drop: dropout multipliers) the
    same function written out."""
    q, k, v = (torch.tensor(c[n], dtype=torch.float64, requires_grad=True) for n in "qkv")
    mask = c.get("mask")
    tmask = None if mask is None else torch.tensor(mask if mask.dtype == np.bool_ else mask.astype(np.float64))
    gqa = q.shape[1] != k.shape[1]
    if keep is None and drop is None:
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=tmask, is_causal=causal, scale=scale, enable_gqa=gqa)
    else:
        g = q.shape[1] // k.shape[1]
        s = q @ k.repeat_interleave(g, 1).transpose(-1, -2) * (scale or q.shape[-1] ** -0.5)
        if tmask is not None:
            s = s.masked_fill(~tmask, -np.inf) if tmask.dtype == torch.bool else s + tmask
        if causal:
            s = s.masked_fill(torch.ones(s.shape[-2:], dtype=torch.bool).triu(1), -np.inf)
        if keep is not None:
            s = s.masked_fill(~torch.tensor(keep), -np.inf)
        p = torch.softmax(s, -1)
        if drop is not None:
            p = p * torch.tensor(drop, dtype=torch.float64)
        y = p @ v.repeat_interleave(g, 1)
    y.backward(torch.tensor(c["dy"], dtype=torch.float64))
    return {"y": y, "q": q.grad, "k": k.grad, "v": v.grad}


def assert_matches(got, want, tol=1e-4):
    """|got − want| <= tol·(|want| + max(max|want|, 0.1)) for Y and each gradient (inputs are
    O(1); a gradient that is 0 in theory, dQ or dK with a single key, comes out as rounding noise)."""
    for n in ("y", "q", "k", "v"):
        w = want[n].detach().numpy()
        assert got[n].shape == w.shape, f"{n}: shape {got[n].shape} != {w.shape}"
        np.testing.assert_allclose(got[n], w, rtol=tol, atol=tol * max(float(np.abs(w).max()), 0.1), err_msg=n)


def check(B, S, Hq, Hkv, D, mask, in3d, seed=0, attrs=None, **ref):
    c = make_case(B, S, Hq, Hkv, D, mask, seed)
    attrs = dict(attrs or {}, **({"is_causal": 1} if mask == "causal" else {}))
    assert_matches(engine_attention(c, attrs, in3d), torch_attention(c, causal=mask == "causal", **ref))


CASES = [  # (S, Hq, Hkv, D, mask, batch, in3d)
    (1, 4, 4, 64, "none", 1, False), (1, 8, 2, 32, "bias", 2, True), (1, 3, 1, 80, "causal", 1, False),
    (7, 1, 1, 32, "none", 1, True), (7, 6, 3, 64, "padding", 2, False), (7, 4, 1, 128, "causal", 1, False),
    (7, 16, 4, 80, "bias", 1, True),
    (128, 2, 2, 64, "causal", 2, True), (128, 8, 2, 32, "padding", 1, False), (128, 4, 1, 80, "none", 2, False),
    (128, 3, 3, 128, "bias", 1, False), (128, 16, 16, 64, "causal", 1, True),
    (512, 12, 12, 64, "causal", 1, False), (512, 4, 1, 128, "padding", 1, True), (512, 8, 2, 80, "bias", 1, False),
    (512, 2, 2, 32, "none", 2, False), (512, 1, 1, 64, "causal", 1, True),
    pytest.param(2048, 4, 1, 64, "causal", 1, False, marks=pytest.mark.slow),
]


@pytest.mark.parametrize("S,Hq,Hkv,D,mask,B,in3d", CASES)
def test_attention_grad_vs_torch_sdpa(S, Hq, Hkv, D, mask, B, in3d):
    check(B, S, Hq, Hkv, D, mask, in3d, seed=S + Hq + D)


@pytest.mark.parametrize("S", [17, 95, 200])  # odd row and key counts: tails of every tile and block
def test_attention_grad_every_isa(S, isa):
    for k, mask in enumerate(("none", "padding", "bias", "causal")):
        check(2, S, 6, 2, 40, mask, in3d=k % 2 == 1, seed=S + k)


@pytest.mark.parametrize("B,Hkv", [(1, 1), (1, 2), (3, 1)])
def test_attention_grad_key_ranges(B, Hkv, threads):
    """Fewer (batch, kv head) pairs than twice the threads: the keys split into ranges whose dQ
    partials are summed (multi-query, causal and padding, batch 1 and 3)."""
    check(B, 384, 4, Hkv, 64, "causal", False, seed=B)
    check(B, 300, 2 * Hkv, Hkv, 48, "padding", True, seed=B + 1)


def test_attention_grad_windows_and_scale():
    """left/right windows (with and without causal) and an explicit scale: torch with the
    windows as a bool mask."""
    S = 150
    i, j = np.arange(S)[:, None], np.arange(S)[None, :]
    for causal, left, right in ((1, 20, -1), (0, 7, 33)):
        keep = j >= i - left
        if right >= 0:
            keep &= j <= i + right
        c = make_case(2, S, 4, 2, 32, "none", seed=left)
        attrs = {"is_causal": causal, "left_window_size": left, "right_window_size": right, "scale": 0.3}
        assert_matches(engine_attention(c, attrs), torch_attention(c, causal=bool(causal), scale=0.3, keep=keep))


def dropout_mask(B, H, S, L, seed, rate, counter):
    return run_step("attention_dropout_mask", [counter], [empty(B, H, S, L)], [B, H, S, L, seed], [rate])[0]


@pytest.mark.parametrize("step", [None, 5])
@pytest.mark.parametrize("in3d", [False, True])
def test_dropout_backward_uses_the_forward_mask(in3d, step, isa, threads):
    """rate 0.3: Y and the gradients equal the dropped-out function with the mask the
    attention_dropout_mask step draws for the node's seed and the step (0 without a counter;
    else read from the optimizers' hyper buffer)."""
    B, S, Hq, Hkv, D, rate, seed = 2, 70, 4, 2, 32, 0.3, 1234
    c = make_case(B, S, Hq, Hkv, D, "padding", seed=3)
    settings, extra, counter = None, None, np.zeros(1, np.int64)
    if step is not None:
        counter = np.array([0.01, step, 1.0])
        settings, extra = {"step_counter": "hyper"}, {"hyper": counter}
    got = engine_attention(c, {"dropout": rate, "seed": seed, "is_causal": 1}, in3d, settings, extra)
    drop = dropout_mask(B, Hq, S, S, seed, rate, counter)
    assert set(np.unique(drop)) == {0, np.float32(1 / (1 - rate))}
    assert abs((drop == 0).mean() - rate) < 0.02
    assert_matches(got, torch_attention(c, causal=True, drop=drop))


def test_dropout_mask_statistics():
    """~30% dropped in every head and at every key position, no correlation between
    neighbouring keys or rows; the same (seed, step) gives the same mask, another seed or step
    another."""
    B, H, S, L, rate = 2, 4, 256, 256, 0.3
    m = dropout_mask(B, H, S, L, 9, rate, np.array([3], np.int64)) == 0
    assert abs(m.mean() - rate) < 0.005
    assert np.abs(m.mean((0, 2, 3)) - rate).max() < 0.01  # per head
    assert np.abs(m.mean((0, 1, 2)) - rate).max() < 0.06  # per key (2048 draws each)
    x = m.astype(np.float64) - m.mean()
    for a, b in ((x[..., 1:], x[..., :-1]), (x[:, :, 1:], x[:, :, :-1])):
        assert abs((a * b).mean() / x.var()) < 0.01
    same = dropout_mask(B, H, S, L, 9, rate, np.array([3], np.int64)) == 0
    assert np.array_equal(m, same)
    for seed, step in ((10, 3), (9, 4)):
        other = dropout_mask(B, H, S, L, seed, rate, np.array([step], np.int64)) == 0
        assert abs((m != other).mean() - 2 * rate * (1 - rate)) < 0.01  # independent draws


def test_errors_name_the_node():
    c = make_case(1, 5, 2, 2, 8, "none", seed=0)
    past = np.zeros((1, 2, 3, 8), np.float32)

    def run(attrs=None, outputs=("y",), past_kv=False, dtype=np.float32, wrt=("q",), mask=None):
        feeds = {n: c[n].astype(dtype) for n in "qkv"}
        names = ["q", "k", "v", "mask" if mask is not None else ""]
        if mask is not None:
            feeds["mask"] = mask
        if past_kv:
            feeds.update(pk=past, pv=past)
            names += ["pk", "pv"]
        g = Graph([Value(n, a.shape, dtypes.from_numpy(a.dtype)) for n, a in feeds.items()], [Value("y", None)],
                  [Node("Attention", names, list(outputs), attrs or {}, "att")], {})
        types = {n: TensorType(a.shape, dtypes.from_numpy(a.dtype)) for n, a in feeds.items()}
        types["dy"] = TensorType(c["dy"].shape, "float32")
        differentiate(g, types, list(wrt), output_grads={"y": "dy"})

    with pytest.raises(UnsupportedOpError, match=r"node 'att' \(Attention\): training does not support the past_key"):
        run(outputs=("y", "pk_out", "pv_out"), past_kv=True)
    with pytest.raises(UnsupportedOpError, match="training does not support the qk_matmul_output output"):
        run(outputs=("y", "", "", "qk"))
    with pytest.raises(UnsupportedOpError, match="training does not support softcap"):
        run({"softcap": 5.0})
    with pytest.raises(DTypeError, match=r"node 'att' \(Attention\): training needs float32, Q is float64"):
        run(dtype=np.float64)
    with pytest.raises(GraphError, match=r"attribute 'dropout' .* must be in \[0, 1\), got 1.0"):
        run({"dropout": 1.0})
    with pytest.raises(UnsupportedOpError, match="additive attn_mask 'mask' depends on a trained value"):
        run(mask=np.zeros((5, 5), np.float32), wrt=("q", "mask"))
    run(mask=np.ones((5, 5), np.bool_), wrt=("q",))  # a bool mask: fine


def dense_attention_dense_onnx(weights: dict, S: int, E: int, heads: int, kv_heads: int) -> bytes:
    """x (B, S, E) → q, k, v projections → causal Attention (3-D, grouped-query) → output
    projection; the weights are initializers."""
    nodes = []
    for n in ("q", "k", "v"):
        nodes += [helper.make_node("MatMul", ["x", f"w{n}"], [f"{n}0"]),
                  helper.make_node("Add", [f"{n}0", f"b{n}"], [n])]
    nodes += [helper.make_node("Attention", ["q", "k", "v"], ["a"], q_num_heads=heads, kv_num_heads=kv_heads,
                               is_causal=1),
              helper.make_node("MatMul", ["a", "wo"], ["y0"]), helper.make_node("Add", ["y0", "bo"], ["y"])]
    g = helper.make_graph(nodes, "dense_attention_dense",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", S, E])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          initializer=[numpy_helper.from_array(a, n) for n, a in weights.items()])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 23)]).SerializeToString()


def test_dense_attention_dense_trains_like_torch(rng):
    """Three SGD steps of an imported ONNX model (engine.load, compile, train_on_batch) equal
    torch's on the same function: the losses and every weight."""
    B, S, E, H, Hkv, D, Out = 4, 6, 16, 4, 2, 4, 3
    w = {"wq": (E, H * D), "bq": (H * D,), "wk": (E, Hkv * D), "bk": (Hkv * D,), "wv": (E, Hkv * D),
         "bv": (Hkv * D,), "wo": (H * D, Out), "bo": (Out,)}
    w = {n: rng.normal(0, 0.4, s).astype(np.float32) for n, s in w.items()}
    x = rng.standard_normal((B, S, E)).astype(np.float32)
    target = rng.standard_normal((B, S, Out)).astype(np.float32)
    m = engine.load(dense_attention_dense_onnx(w, S, E, H, Hkv))
    m.compile(optimizer=optimizers.SGD(0.1), loss="mse")

    tw = {n: torch.tensor(a, requires_grad=True) for n, a in w.items()}
    opt = torch.optim.SGD(list(tw.values()), lr=0.1)
    tx = torch.tensor(x)

    def heads(t, h):
        return t.reshape(B, S, h, D).transpose(1, 2)

    for _ in range(3):
        opt.zero_grad()
        q, k, v = (heads(tx @ tw[f"w{n}"] + tw[f"b{n}"], h) for n, h in (("q", H), ("k", Hkv), ("v", Hkv)))
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        y = a.transpose(1, 2).reshape(B, S, H * D) @ tw["wo"] + tw["bo"]
        loss = F.mse_loss(y, torch.tensor(target))
        loss.backward()
        opt.step()
        assert m.train_on_batch(x, target) == pytest.approx(loss.item(), rel=1e-5)
    ours = m.get_weights()
    for n, t in tw.items():
        np.testing.assert_allclose(ours[n], t.detach().numpy(), rtol=1e-4, atol=1e-6, err_msg=n)
