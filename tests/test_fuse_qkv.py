"""fuse_qkv: three Q/K/V projections of one input (or a three-way Split of one) feeding a 3-D
self-attention become one Dense and a PackedAttention reading the column ranges in place.
Hand-built ONNX graphs, checked against a numpy attention (every kernel path, grouped-query
heads, masks, the decode-sized and flash-sized row counts) and for what must not fuse."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import engine

E, D = 24, 6


def _graph(hq, hkv, mask=None, split=False, extra_reader=False, causal=0):
    """x (B, S, E) -> Q/K/V projections -> Attention (3-D) -> y; returns (model bytes, weights)."""
    rng = np.random.default_rng(hq * 10 + hkv)
    w = {n: rng.standard_normal((E, h * D)).astype(np.float32) * 0.4 for n, h in (("q", hq), ("k", hkv), ("v", hkv))}
    b = {n: rng.standard_normal(w[n].shape[1]).astype(np.float32) * 0.1 for n in w}
    inits, nodes = [], []
    if split:
        inits += [numpy_helper.from_array(np.concatenate([w[n] for n in "qkv"], 1), "W"),
                  numpy_helper.from_array(np.concatenate([b[n] for n in "qkv"]), "B"),
                  numpy_helper.from_array(np.array([hq * D, hkv * D, hkv * D], np.int64), "sizes")]
        nodes += [helper.make_node("MatMul", ["x", "W"], ["xw"]), helper.make_node("Add", ["xw", "B"], ["qkv"]),
                  helper.make_node("Split", ["qkv", "sizes"], ["q", "k", "v"], axis=-1)]
    else:
        for n in "qkv":
            inits += [numpy_helper.from_array(w[n], f"W{n}"), numpy_helper.from_array(b[n], f"B{n}")]
            nodes += [helper.make_node("MatMul", ["x", f"W{n}"], [f"{n}w"]),
                      helper.make_node("Add", [f"{n}w", f"B{n}"], [n])]
    ins = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", "s", E])]
    att_in = ["q", "k", "v"]
    if mask is not None:
        ins.append(helper.make_tensor_value_info("m", TensorProto.BOOL if mask == "bool" else TensorProto.FLOAT,
                                                 ["b", 1, "s", "s"]))
        att_in.append("m")
    nodes.append(helper.make_node("Attention", att_in, ["y"], q_num_heads=hq, kv_num_heads=hkv, is_causal=causal))
    outs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]
    if extra_reader:  # K read by something else too: the projections must stay
        nodes.append(helper.make_node("Identity", ["k"], ["k_out"]))
        outs.append(helper.make_tensor_value_info("k_out", TensorProto.FLOAT, None))
    g = helper.make_graph(nodes, "qkv", ins, outs, inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 23)])
    return model.SerializeToString(), w, b


def _reference(x, w, b, hq, hkv, mask, causal):
    B, S, _ = x.shape
    q, k, v = ((x @ w[n] + b[n]).reshape(B, S, -1, D).transpose(0, 2, 1, 3).astype(np.float64) for n in "qkv")
    k, v = np.repeat(k, hq // hkv, axis=1), np.repeat(v, hq // hkv, axis=1)
    s = q @ k.transpose(0, 1, 3, 2) / np.sqrt(D)
    if mask is not None:
        s = np.where(mask, s, -np.inf) if mask.dtype == bool else s + mask
    if causal:
        s = np.where(np.tril(np.ones((S, S), bool)), s, -np.inf)
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    return (p @ v).transpose(0, 2, 1, 3).reshape(B, S, hq * D)


@pytest.mark.parametrize("hq,hkv", [(4, 4), (4, 2), (3, 1)])
@pytest.mark.parametrize("mask", [None, "bool", "additive"])
@pytest.mark.parametrize("split", [False, True], ids=["three-projections", "split"])
@pytest.mark.parametrize("B,S", [(1, 1), (1, 9), (2, 37)])
def test_packed_attention_equals_reference(hq, hkv, mask, split, B, S, isa):
    data, w, b = _graph(hq, hkv, mask, split)
    m = engine.load(data)
    assert m.plan_summary()["fusions"].get("fused_qkv") == 1
    ops = [n.op for n in m.optimized_graph.nodes]
    assert "PackedAttention" in ops and "Attention" not in ops and "Split" not in ops and ops.count("Dense") == 1
    rng = np.random.default_rng(B * 100 + S)
    x = rng.standard_normal((B, S, E)).astype(np.float32)
    feeds = {"x": x}
    mk = None
    if mask == "bool":
        mk = rng.random((B, 1, S, S)) > 0.3
        mk[..., 0] = True  # no fully masked row
        feeds["m"] = mk
    elif mask == "additive":
        mk = (rng.standard_normal((B, 1, S, S)) * 2).astype(np.float32)
        feeds["m"] = mk
    got = m.run(feeds)["y"]
    np.testing.assert_allclose(got, _reference(x, w, b, hq, hkv, mk, 0), atol=2e-5, rtol=1e-4)


def test_causal_packed_attention(isa):
    data, w, b = _graph(4, 2, causal=1)
    m = engine.load(data)
    x = np.random.default_rng(1).standard_normal((2, 40, E)).astype(np.float32)
    np.testing.assert_allclose(m.run({"x": x})["y"], _reference(x, w, b, 4, 2, None, 1), atol=2e-5, rtol=1e-4)


def test_projection_read_elsewhere_is_not_fused():
    data, w, b = _graph(4, 2, extra_reader=True)
    m = engine.load(data)
    assert not m.plan_summary()["fusions"].get("fused_qkv")
    assert [n.op for n in m.optimized_graph.nodes].count("Attention") == 1
    x = np.random.default_rng(2).standard_normal((1, 5, E)).astype(np.float32)
    out = m.run({"x": x})
    np.testing.assert_allclose(out["y"], _reference(x, w, b, 4, 2, None, 0), atol=2e-5, rtol=1e-4)
    np.testing.assert_allclose(out["k_out"], x @ w["k"] + b["k"], atol=1e-5)
