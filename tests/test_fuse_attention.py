"""fuse_attention on hand-built graphs: the masks whose fully masked rows decide whether the
fusion keeps the graph's semantics (the kernel gives such a row zero weights; softmax of an
all -inf row is NaN, of an all finfo.min row uniform), a causal triangle, and patterns that must
stay unfused. Each graph is also run by onnxruntime, the reference."""

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper

import engine

B, S, E, H = 3, 6, 16, 2
D = E // H
FMIN = np.finfo(np.float32).min


def _rand(*shape, seed=0, scale=1.0):
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)


def _attention(mask_nodes, mask_inputs, mask_name, guard=False, extra_outputs=(), seq="s"):
    """x (B, S, E) -> BERT-style self-attention with the mask `mask_name` added to the scores."""
    w = {f"w{c}": _rand(E, E, seed=i, scale=0.5) for i, c in enumerate("qkv")}
    w.update({f"b{c}": _rand(E, seed=10 + i, scale=0.1) for i, c in enumerate("qkv")})
    w.update(split=np.array([0, 0, H, D], np.int64), merge=np.array([0, 0, E], np.int64), sqrt_d=np.float32(D ** 0.5),
             zero=np.float32(0))
    nodes = []
    for c in "qkv":
        nodes += [h.make_node("MatMul", ["x", f"w{c}"], [f"{c}m"]), h.make_node("Add", [f"{c}m", f"b{c}"], [f"{c}3"]),
                  h.make_node("Reshape", [f"{c}3", "split"], [f"{c}4"])]
    nodes += [h.make_node("Transpose", ["q4"], ["qh"], perm=[0, 2, 1, 3]),
              h.make_node("Transpose", ["k4"], ["kt"], perm=[0, 2, 3, 1]),
              h.make_node("Transpose", ["v4"], ["vh"], perm=[0, 2, 1, 3]),
              h.make_node("MatMul", ["qh", "kt"], ["qk"]), h.make_node("Div", ["qk", "sqrt_d"], ["scaled"])]
    nodes += mask_nodes
    nodes += [h.make_node("Add", ["scaled", mask_name], ["masked"]) if mask_name else
              h.make_node("Identity", ["scaled"], ["masked"]), h.make_node("Softmax", ["masked"], ["p"], axis=-1)]
    if guard:
        nodes += [h.make_node("IsNaN", ["p"], ["nan"]), h.make_node("Where", ["nan", "zero", "p"], ["pg"])]
    nodes += [h.make_node("MatMul", ["pg" if guard else "p", "vh"], ["y4"]),
              h.make_node("Transpose", ["y4"], ["yt"], perm=[0, 2, 1, 3]),
              h.make_node("Reshape", ["yt", "merge"], ["y"])]
    inputs = [h.make_tensor_value_info("x", T.FLOAT, ["b", seq, E])] + mask_inputs
    outputs = [h.make_tensor_value_info("y", T.FLOAT, None)] + [h.make_tensor_value_info(o, T.FLOAT, None)
                                                               for o in extra_outputs]
    consts = [numpy_helper.from_array(np.asarray(v), k) for k, v in w.items()]
    m = h.make_model(h.make_graph(nodes, "attention", inputs, outputs, consts), opset_imports=[h.make_opsetid("", 17)])
    m.ir_version = 8
    return m.SerializeToString()


def _padding(seq):
    """Row 0 right-padded, row 1 unpadded, row 2 fully masked."""
    keep = np.ones((B, seq), bool)
    keep[0, seq - 2:] = False
    keep[2] = False
    return keep


# Sequence lengths below and above 16 queries: the kernel's materialised block and its flash path.
SEQS = pytest.mark.parametrize("seq", [6, 40])


def _run(data, feeds):
    """(fusions, the engine's outputs), after checking them against onnxruntime (NaN where it
    has NaN)."""
    want = ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, feeds)
    m = engine.load(data)
    got = m.run(None, feeds)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, atol=1e-5, rtol=1e-5)
    return m.plan_summary()["fusions"], got


def _bool_mask_nodes(fill):
    """keep (B, S) bool -> additive (B, 1, 1, S): 0 where kept, `fill` elsewhere."""
    return [h.make_node("Unsqueeze", ["keep", "axes12"], ["keep4"]),
            h.make_node("Where", ["keep4", "zero_m", "fill"], ["mask"]),
            h.make_node("Constant", [], ["axes12"], value=numpy_helper.from_array(np.array([1, 2], np.int64))),
            h.make_node("Constant", [], ["zero_m"], value=numpy_helper.from_array(np.float32(0))),
            h.make_node("Constant", [], ["fill"], value=numpy_helper.from_array(np.float32(fill)))]


def _sorted(nodes):
    """Constants first (the graph must be in topological order)."""
    return sorted(nodes, key=lambda n: n.op_type != "Constant")


KEEP = [h.make_tensor_value_info("keep", T.BOOL, ["b", "s"])]


@SEQS
def test_finite_where_mask_is_fused_and_a_fully_masked_row_stays_uniform(seq):
    data = _attention(_sorted(_bool_mask_nodes(FMIN)), KEEP, "mask")
    fusions, (y,) = _run(data, {"x": _rand(B, seq, E, seed=5), "keep": _padding(seq)})
    assert fusions.get("attention") == 1
    assert np.isfinite(y).all()


@SEQS
def test_an_inf_mask_without_nan_guard_is_left_alone(seq):
    # softmax of the fully masked row is NaN in the graph; the kernel would give zeros
    data = _attention(_sorted(_bool_mask_nodes(-np.inf)), KEEP, "mask")
    fusions, (y,) = _run(data, {"x": _rand(B, seq, E, seed=5), "keep": _padding(seq)})
    assert "attention" not in fusions
    assert np.isnan(y[2]).all() and np.isfinite(y[:2]).all()


@SEQS
def test_an_inf_mask_with_the_sdpa_nan_guard_is_fused(seq):
    data = _attention(_sorted(_bool_mask_nodes(-np.inf)), KEEP, "mask", guard=True)
    fusions, (y,) = _run(data, {"x": _rand(B, seq, E, seed=5), "keep": _padding(seq)})
    assert fusions.get("attention") == 1
    assert np.all(y[2] == 0)


@pytest.mark.parametrize("mask_type", [T.INT64, T.FLOAT])
def test_one_minus_mask_times_finfo_min_of_an_unbounded_input_is_left_alone(mask_type):
    seq = 6
    # (1 - m)·finfo.min overflows to -inf for m <= -1: not provably finite without a guard
    nodes = [h.make_node("Unsqueeze", ["m", "axes12"], ["m4"]), h.make_node("Cast", ["m4"], ["mf"], to=T.FLOAT),
             h.make_node("Sub", ["one", "mf"], ["inv"]), h.make_node("Mul", ["inv", "fmin"], ["mask"]),
             h.make_node("Constant", [], ["axes12"], value=numpy_helper.from_array(np.array([1, 2], np.int64))),
             h.make_node("Constant", [], ["one"], value=numpy_helper.from_array(np.float32(1))),
             h.make_node("Constant", [], ["fmin"], value=numpy_helper.from_array(np.float32(FMIN)))]
    data = _attention(_sorted(nodes), [h.make_tensor_value_info("m", mask_type, ["b", "s"])], "mask")
    m = _padding(seq).astype(np.int64 if mask_type == T.INT64 else np.float32)
    fusions, _ = _run(data, {"x": _rand(B, seq, E, seed=5), "m": m})
    assert "attention" not in fusions


@SEQS
def test_one_minus_a_bool_mask_times_finfo_min_is_fused(seq):
    nodes = [h.make_node("Unsqueeze", ["keep", "axes12"], ["keep_u"]),
             h.make_node("Cast", ["keep_u"], ["kf"], to=T.FLOAT),
             h.make_node("Sub", ["one", "kf"], ["inv"]), h.make_node("Mul", ["inv", "fmin"], ["mask"]),
             h.make_node("Constant", [], ["axes12"], value=numpy_helper.from_array(np.array([1, 2], np.int64))),
             h.make_node("Constant", [], ["one"], value=numpy_helper.from_array(np.float32(1))),
             h.make_node("Constant", [], ["fmin"], value=numpy_helper.from_array(np.float32(FMIN)))]
    data = _attention(_sorted(nodes), KEEP, "mask")
    fusions, _ = _run(data, {"x": _rand(B, seq, E, seed=5), "keep": _padding(seq)})
    assert fusions.get("attention") == 1


def test_a_constant_causal_triangle_becomes_is_causal():
    tri = np.where(np.tril(np.ones((S, S), bool)), 0, -np.inf).astype(np.float32)
    nodes = [h.make_node("Constant", [], ["mask"], value=numpy_helper.from_array(tri))]
    data = _attention(nodes, [], "mask", seq=S)
    fusions, _ = _run(data, {"x": _rand(B, S, E, seed=6)})
    assert fusions.get("attention") == 1
    attn, has_mask = _attention_node(data)
    assert attn.attrs.get("is_causal") == 1 and not has_mask


def test_a_triangle_that_is_not_causal_stays_a_mask():
    tri = np.where(np.triu(np.ones((S, S), bool)), 0, FMIN).astype(np.float32)  # anti-causal
    nodes = [h.make_node("Constant", [], ["mask"], value=numpy_helper.from_array(tri))]
    data = _attention(nodes, [], "mask", seq=S)
    fusions, _ = _run(data, {"x": _rand(B, S, E, seed=6)})
    attn, has_mask = _attention_node(data)
    assert fusions.get("attention") == 1 and "is_causal" not in attn.attrs and has_mask


def _attention_node(data):
    """The fused attention node of a loaded model and whether it reads a mask (fuse_qkv may have
    packed its projections: a PackedAttention reads [QKV, mask] instead of [Q, K, V, mask])."""
    (attn,) = [n for n in engine.load(data).optimized_graph.nodes if n.op in ("Attention", "PackedAttention")]
    return attn, len(attn.inputs) == (4 if attn.op == "Attention" else 2)


def test_no_mask():
    fusions, _ = _run(_attention([], [], None), {"x": _rand(2, 5, E, seed=7)})
    assert fusions.get("attention") == 1


def test_probabilities_read_elsewhere_are_left_alone():
    fusions, _ = _run(_attention([], [], None, extra_outputs=["p"]), {"x": _rand(2, 5, E, seed=7)})
    assert "attention" not in fusions
