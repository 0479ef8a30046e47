"""The seq family (LSTM, GRU, RNN, Attention, RotaryEmbedding) against onnxruntime, torch and
the ONNX reference implementation on random shapes, every element type, and bad inputs."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import engine

ort = pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")

_ELEM = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.float16): TensorProto.FLOAT16,
         np.dtype(np.float64): TensorProto.DOUBLE, np.dtype(np.int32): TensorProto.INT32,
         np.dtype(np.int64): TensorProto.INT64, np.dtype(np.bool_): TensorProto.BOOL}


def model(op, inputs, outputs, attrs=None, opset=23, weights=(), dynamic=False):
    """ONNX bytes of one `op` node. inputs: [(name, array | None)] (None: absent); names in
    `weights` become initializers; dynamic: inputs of any shape. outputs: names ("" = absent)."""
    node = helper.make_node(op, [n if a is not None else "" for n, a in inputs], outputs, **(attrs or {}))
    graph_in = [helper.make_tensor_value_info(
        n, _ELEM[a.dtype], [f"{n}{i}" for i in range(a.ndim)] if dynamic else a.shape) for n, a in inputs
                if a is not None and n not in weights]
    inits = [numpy_helper.from_array(a, n) for n, a in inputs if a is not None and n in weights]
    out_type = _ELEM[inputs[0][1].dtype]
    graph_out = [helper.make_tensor_value_info(o, out_type, None) for o in outputs if o]
    g = helper.make_graph([node], "g", graph_in, graph_out, initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    return m.SerializeToString()


def feeds_of(inputs, weights=()):
    return {n: a for n, a in inputs if a is not None and n not in weights}


def run_engine(blob, feeds, optimize=True):
    return engine.load(blob, optimize=optimize).run(None, feeds)


def run_ort(blob, feeds):
    so = ort.SessionOptions()
    so.log_severity_level = 3
    return ort.InferenceSession(blob, so, providers=["CPUExecutionProvider"]).run(None, feeds)


def assert_close(got, want, rtol=1e-4, atol=1e-5):
    assert len(got) == len(want)
    for k, (g, w) in enumerate(zip(got, want)):
        assert g.dtype == w.dtype and g.shape == w.shape, f"output {k}: {g.dtype}{g.shape} vs {w.dtype}{w.shape}"
        np.testing.assert_allclose(g.astype(np.float64), w.astype(np.float64), rtol=rtol, atol=atol,
                                   err_msg=f"output {k}")


# -- recurrent layers ------------------------------------------------------------------------

GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}


def rnn_inputs(op, rng, T, B, In, H, direction="forward", layout=0, lens=None, init=False, peep=False,
               dtype=np.float32, bias=True):
    D = 2 if direction == "bidirectional" else 1
    G = GATES[op]
    u = lambda *s: rng.uniform(-1, 1, s).astype(dtype)  # noqa: E731
    X = u(B, T, In) if layout else u(T, B, In)
    state = (B, D, H) if layout else (D, B, H)
    ins = [("X", X), ("W", u(D, G * H, In)), ("R", u(D, G * H, H)), ("B", u(D, 2 * G * H) if bias else None),
           ("lens", None if lens is None else np.asarray(lens, np.int32)),
           ("h0", u(*state) if init else None)]
    if op == "LSTM":
        ins += [("c0", u(*state) if init else None), ("P", u(D, 3 * H) if peep else None)]
    while ins[-1][1] is None:
        ins.pop()
    return ins


def rnn_outputs(op):
    return ["Y", "Y_h", "Y_c"] if op == "LSTM" else ["Y", "Y_h"]


@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
@pytest.mark.parametrize("layout", [0, 1])
def test_rnn_vs_onnxruntime(op, direction, layout):
    rng = np.random.default_rng(sum(map(ord, op + direction)) + layout)
    T, B, In, H = 5, 3, 4, 5
    lens = [5, 2, 0]  # onnxruntime rejects sequence_lens with layout 1: compared in layout 0 below
    ins = rnn_inputs(op, rng, T, B, In, H, direction, layout, lens=lens, init=True, peep=True)
    attrs = {"hidden_size": H, "direction": direction, "layout": layout}
    if op == "GRU":
        attrs["linear_before_reset"] = int(layout == 1)
    blob = model(op, ins, rnn_outputs(op), attrs, opset=22)
    feeds = feeds_of(ins)
    want = run_ort(blob, feeds) if layout == 0 else None
    for weights in ((), ("W", "R", "B", "P")):  # runtime weights; packed weights
        blob_w = model(op, ins, rnn_outputs(op), attrs, opset=22, weights=weights)
        got = run_engine(blob_w, feeds_of(ins, weights))
        if want is None:  # layout 1: the same layer in layout 0, transposed
            ins0 = [(n, np.swapaxes(a, 0, 1) if n in ("X", "h0", "c0") and a is not None else a) for n, a in ins]
            y0 = run_ort(model(op, ins0, rnn_outputs(op), {**attrs, "layout": 0}, opset=22), feeds_of(ins0))
            want = [y0[0].transpose(2, 0, 1, 3)] + [s.transpose(1, 0, 2) for s in y0[1:]]
        assert_close(got, want)


@pytest.mark.parametrize("act,alpha,beta", [
    ("Sigmoid", None, None), ("Tanh", None, None), ("Relu", None, None), ("HardSigmoid", 0.3, 0.4),
    ("Affine", 0.7, -0.2), ("LeakyRelu", 0.05, None), ("ThresholdedRelu", 0.2, None),
    ("ScaledTanh", 1.5, 0.8), ("Elu", 0.9, None), ("Softsign", None, None), ("Softplus", None, None)])
def test_rnn_activations_vs_onnxruntime(act, alpha, beta):
    rng = np.random.default_rng(7)
    ins = rnn_inputs("RNN", rng, 4, 2, 3, 6, "bidirectional", init=True)
    attrs = {"hidden_size": 6, "direction": "bidirectional", "activations": [act, "Tanh"]}
    if alpha is not None:
        attrs["activation_alpha"] = [alpha]
    if beta is not None:
        attrs["activation_beta"] = [beta]
    blob = model("RNN", ins, ["Y", "Y_h"], attrs, opset=22)
    assert_close(run_engine(blob, feeds_of(ins)), run_ort(blob, feeds_of(ins)))


@pytest.mark.parametrize("act,fn", [
    ("ThresholdedRelu", lambda x: np.where(x >= 1.0, x, 0.0)), ("Affine", lambda x: x),
    ("ScaledTanh", np.tanh), ("LeakyRelu", lambda x: np.where(x >= 0, x, 0.01 * x))])
def test_rnn_activation_defaults_follow_the_spec(act, fn):
    """Without activation_alpha/beta, the ONNX operators' defaults (onnxruntime uses 0 for the
    first three)."""
    rng = np.random.default_rng(8)
    ins = rnn_inputs("RNN", rng, 4, 2, 3, 5, init=True)
    X, W, R, B, h = (a for _, a in ins if a is not None)
    ys = []
    for x in X:
        h = fn(x @ W[0].T + h[0] @ R[0].T + B[0, :5] + B[0, 5:])[None]
        ys.append(h)
    got = run_engine(model("RNN", ins, ["Y", "Y_h"], {"hidden_size": 5, "activations": [act]}, opset=22),
                     feeds_of(ins))
    np.testing.assert_allclose(got[0], np.stack(ys), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("op,attrs", [
    ("LSTM", {"clip": 0.5}), ("LSTM", {"input_forget": 1}), ("GRU", {"clip": 0.3}),
    ("GRU", {"linear_before_reset": 1, "clip": 0.6}), ("RNN", {"clip": 0.4}),
    ("LSTM", {"activations": ["HardSigmoid", "Softsign", "Elu"], "activation_alpha": [0.3, 0.7],
              "activation_beta": [0.45]}),
    ("GRU", {"activations": ["Sigmoid", "Relu", "HardSigmoid", "Tanh"], "direction": "bidirectional"})])
def test_rnn_attributes_vs_onnxruntime(op, attrs):
    rng = np.random.default_rng(3)
    ins = rnn_inputs(op, rng, 6, 3, 5, 4, attrs.get("direction", "forward"), lens=[6, 3, 1], init=True,
                     peep=True)
    blob = model(op, ins, rnn_outputs(op), {"hidden_size": 4, **attrs}, opset=22)
    assert_close(run_engine(blob, feeds_of(ins)), run_ort(blob, feeds_of(ins)))


def test_rnn_partial_outputs_and_no_bias():
    rng = np.random.default_rng(5)
    ins = rnn_inputs("LSTM", rng, 3, 2, 3, 4, bias=False)
    for outs in (["", "Y_h"], ["", "", "Y_c"], ["Y"], ["Y", "", "Y_c"]):
        blob = model("LSTM", ins, outs, {"hidden_size": 4}, opset=22)
        for optimize in (True, False):
            assert_close(run_engine(blob, feeds_of(ins), optimize), run_ort(blob, feeds_of(ins)))


@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
def test_rnn_vs_torch(op):
    """torch.nn layers with the same weights (gates permuted to ONNX order), batch_first and
    bidirectional."""
    torch.manual_seed(0)
    T, B, In, H = 7, 3, 5, 6
    layer = getattr(torch.nn, op)(In, H, batch_first=True, bidirectional=True).double()
    order = {"LSTM": [0, 3, 1, 2], "GRU": [1, 0, 2], "RNN": [0]}[op]  # torch i,f,g,o / r,z,n -> ONNX

    def perm(w):
        return np.concatenate([np.split(w, len(order))[k] for k in order])

    def weights(sfx):
        p = {k: getattr(layer, k + sfx).detach().numpy() for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}
        return perm(p["weight_ih"]), perm(p["weight_hh"]), np.concatenate([perm(p["bias_ih"]), perm(p["bias_hh"])])

    f, b = weights("_l0"), weights("_l0_reverse")
    W, R, Bi = (np.stack([f[k], b[k]]).astype(np.float32) for k in range(3))
    x = torch.randn(B, T, In, dtype=torch.float64)
    y, state = layer(x)
    ins = [("X", x.numpy().astype(np.float32)), ("W", W), ("R", R), ("B", Bi)]
    attrs = {"hidden_size": H, "direction": "bidirectional", "layout": 1}
    if op == "GRU":
        attrs["linear_before_reset"] = 1  # torch's n gate: r ⊙ (h·Rnᵀ + bn)
    got = run_engine(model(op, ins, rnn_outputs(op), attrs, opset=22, weights=("W", "R", "B")), feeds_of(ins, "WRB"))
    np.testing.assert_allclose(got[0].reshape(B, T, 2 * H), y.detach().numpy(), rtol=1e-4, atol=1e-5)
    h = state[0] if op == "LSTM" else state
    np.testing.assert_allclose(got[1], h.detach().numpy().transpose(1, 0, 2), rtol=1e-4, atol=1e-5)
    if op == "LSTM":
        np.testing.assert_allclose(got[2], state[1].detach().numpy().transpose(1, 0, 2), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("dtype", [np.float16, np.float64])
def test_rnn_float16_float64(dtype):
    """Other float types compute in float32: the results are the float32 layer's, rounded."""
    rng = np.random.default_rng(11)
    for op in ("LSTM", "GRU"):
        ins = rnn_inputs(op, rng, 4, 3, 5, 6, "bidirectional", lens=[4, 1, 3], init=True, peep=True)
        attrs = {"hidden_size": 6, "direction": "bidirectional"}
        want = run_engine(model(op, ins, rnn_outputs(op), attrs, opset=22), feeds_of(ins))
        cast = [(n, a.astype(dtype) if a is not None and a.dtype == np.float32 else a) for n, a in ins]
        for weights in ((), ("W", "R")):
            got = run_engine(model(op, cast, rnn_outputs(op), attrs, opset=22, weights=weights),
                             feeds_of(cast, weights))
            tol = 2e-3 if dtype == np.float16 else 1e-6
            assert_close(got, [w.astype(dtype) for w in want], rtol=tol, atol=tol)


def test_rnn_empty_and_large(threads):
    rng = np.random.default_rng(2)
    # T = 0: empty Y, zero final states; batch 0: every output empty.
    for T, B in ((0, 2), (3, 0)):
        ins = rnn_inputs("LSTM", rng, T, B, 3, 4, init=True)
        got = run_engine(model("LSTM", ins, ["Y", "Y_h", "Y_c"], {"hidden_size": 4}, opset=22), feeds_of(ins))
        assert [g.shape for g in got] == [(T, 1, B, 4), (1, B, 4), (1, B, 4)]
        assert all(not g.any() for g in got)
    # Enough rows per step that the gate pass is split over threads.
    ins = rnn_inputs("LSTM", rng, 3, 70, 8, 64, init=True, peep=True)
    blob = model("LSTM", ins, ["Y", "Y_h", "Y_c"], {"hidden_size": 64}, opset=22, weights=("W", "R"))
    assert_close(run_engine(blob, feeds_of(ins, ("W", "R"))), run_ort(blob, feeds_of(ins, ("W", "R"))))


def test_rnn_every_isa(isa):
    rng = np.random.default_rng(4)
    for op in ("LSTM", "GRU"):
        ins = rnn_inputs(op, rng, 5, 2, 7, 9, "bidirectional", init=True, peep=True)
        attrs = {"hidden_size": 9, "direction": "bidirectional", "activations": None}
        attrs.pop("activations")
        blob = model(op, ins, rnn_outputs(op), attrs, opset=22, weights=("W", "R"))
        assert_close(run_engine(blob, feeds_of(ins, ("W", "R"))), run_ort(blob, feeds_of(ins, ("W", "R"))))


# -- Attention -------------------------------------------------------------------------------

def reference_attention(Q, K, V, mask=None, past_key=None, past_value=None, nonpad=None, **attrs):
    from onnx.reference.ops.op_attention import _compute_attention

    mode = attrs.get("qk_matmul_output_mode", 0)
    out = _compute_attention(Q, K, V, attn_mask=mask, past_key=past_key, past_value=past_value,
                             nonpad_kv_seqlen=nonpad, scale=None if "scale" not in attrs else
                             float(np.float32(attrs["scale"])),  # as stored in the model
                             is_causal=attrs.get("is_causal", 0), q_num_heads=attrs.get("q_num_heads"),
                             kv_num_heads=attrs.get("kv_num_heads"), softcap=attrs.get("softcap", 0.0),
                             qk_matmul_output_mode=mode, left_window_size=attrs.get("left_window_size"),
                             right_window_size=attrs.get("right_window_size"), _validate_attention25=False)
    return list(out)


def attention_case(rng, B=2, Hq=4, Hkv=2, Sq=5, L=7, D=8, Dv=6, in3d=False, mask=None, past=0, nonpad=None,
                   dtype=np.float32, **attrs):
    u = lambda *s: rng.uniform(-1, 1, s).astype(dtype)  # noqa: E731
    if in3d:
        Q, K, V = u(B, Sq, Hq * D), u(B, L, Hkv * D), u(B, L, Hkv * Dv)
        attrs.update(q_num_heads=Hq, kv_num_heads=Hkv)
    else:
        Q, K, V = u(B, Hq, Sq, D), u(B, Hkv, L, D), u(B, Hkv, L, Dv)
    m = None
    if mask is not None:
        kind, shape = mask
        m = (rng.uniform(size=shape) > 0.3) if kind == "bool" else u(*shape)
    ins = [("Q", Q), ("K", K), ("V", V), ("mask", m),
           ("past_key", u(B, Hkv, past, D) if past else None), ("past_value", u(B, Hkv, past, Dv) if past else None),
           ("nonpad", None if nonpad is None else np.asarray(nonpad, np.int64))]
    while ins[-1][1] is None:
        ins.pop()
    return ins, attrs


ATTENTION_CASES = [
    dict(),
    dict(in3d=True),
    dict(Hq=6, Hkv=3, in3d=True, is_causal=1, Sq=7),
    dict(Hq=3, Hkv=1, mask=("bool", (5, 7))),
    dict(mask=("float", (2, 1, 5, 7)), is_causal=1),
    dict(mask=("float", (4, 1, 7)), softcap=1.5, scale=0.3),
    dict(mask=("bool", (5, 7)), past=3, is_causal=1, L=4),
    dict(mask=("float", (7,))),
    dict(mask=("float", (5, 4)), past=3, L=4),  # a short mask: the rest of the keys are masked out
    dict(past=2, L=1, Sq=1, is_causal=1, in3d=True),
    dict(nonpad=[5, 2], is_causal=1, Sq=3, L=6),
    dict(nonpad=[1, 6], Sq=4, L=6, is_causal=1),  # negative offset: leading rows see nothing
    dict(left_window_size=2, right_window_size=1, Sq=6, L=6),
    dict(left_window_size=1, is_causal=1, past=2, L=3, Sq=3),
    dict(mask=("bool", (1, 4, 5, 7)), left_window_size=3, nonpad=[6, 7]),
    dict(Sq=70, L=90, D=16, Dv=16, B=1, Hq=2, Hkv=2, is_causal=1, mask=("float", (70, 90))),  # several row blocks
    dict(Sq=1, L=1, D=1, Dv=1, B=1, Hq=1, Hkv=1),
]


@pytest.mark.parametrize("case", range(len(ATTENTION_CASES)))
@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.float64])
def test_attention_vs_reference(case, dtype):
    rng = np.random.default_rng(case)
    ins, attrs = attention_case(rng, dtype=dtype, **ATTENTION_CASES[case])
    has_past = any(n == "past_key" for n, _ in ins)
    outs = ["Y", "present_key", "present_value"] if has_past else ["Y"]
    got = run_engine(model("Attention", ins, outs, attrs, opset=24), feeds_of(ins))
    want = reference_attention(*[a for _, a in ins], **attrs)[:len(outs)]
    tol = {np.float16: 2e-3, np.float32: 1e-5, np.float64: 1e-12}[dtype]
    assert_close(got, [w.astype(dtype) for w in want], rtol=tol, atol=tol)


@pytest.mark.parametrize("mode", [0, 1, 2, 3])
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_attention_qk_output(mode, dtype):
    rng = np.random.default_rng(mode)
    ins, attrs = attention_case(rng, mask=("bool", (3, 5, 9)), Hq=3, Hkv=3, past=2, is_causal=1, L=7,
                                softcap=2.0, qk_matmul_output_mode=mode, dtype=dtype)
    got = run_engine(model("Attention", ins, ["Y", "", "", "qk"], attrs, opset=24), feeds_of(ins))
    want = reference_attention(*[a for _, a in ins], **{**attrs, "softcap": 0.0 if mode == 0 else 2.0})
    ref_y = reference_attention(*[a for _, a in ins], **attrs)[0]
    tol = 1e-5 if dtype == np.float32 else 3e-3
    # Mode 0 is Q·Kᵀ before the softcap (the spec; the reference applies the softcap first).
    assert_close(got, [ref_y.astype(dtype), want[3].astype(dtype)], rtol=tol, atol=tol)


def test_attention_vs_torch_sdpa(threads):
    rng = np.random.default_rng(9)
    B, Hq, Hkv, S, D = 2, 8, 2, 40, 16
    q, k, v = (rng.standard_normal(s).astype(np.float32) for s in ((B, Hq, S, D), (B, Hkv, S, D), (B, Hkv, S, D)))
    for causal in (0, 1):
        ins = [("Q", q), ("K", k), ("V", v)]
        got = run_engine(model("Attention", ins, ["Y"], {"is_causal": causal}), feeds_of(ins))[0]
        want = torch.nn.functional.scaled_dot_product_attention(
            torch.from_numpy(q), torch.from_numpy(k), torch.from_numpy(v), is_causal=bool(causal), enable_gqa=True)
        np.testing.assert_allclose(got, want.numpy(), rtol=1e-4, atol=1e-5)


def test_attention_every_isa(isa):
    rng = np.random.default_rng(12)
    for sq, L in ((9, 33), (40, 75)):  # plain-loop products; sgemm
        for dtype in (np.float32, np.float64):
            ins, attrs = attention_case(rng, Sq=sq, L=L, D=24, Dv=20, mask=("float", (sq, L)), softcap=3.0,
                                        is_causal=1, dtype=dtype)
            got = run_engine(model("Attention", ins, ["Y"], attrs), feeds_of(ins))
            tol = 1e-5 if dtype == np.float32 else 1e-12
            assert_close(got, reference_attention(*[a for _, a in ins], **attrs)[:1], rtol=tol, atol=tol)


def test_attention_vs_onnxruntime():
    rng = np.random.default_rng(13)
    ins, attrs = attention_case(rng, in3d=True, Hq=4, Hkv=2, Sq=3, L=5, mask=("float", (3, 5)), is_causal=1)
    blob = model("Attention", ins, ["Y"], attrs, opset=23)
    assert_close(run_engine(blob, feeds_of(ins)), run_ort(blob, feeds_of(ins)), rtol=1e-4, atol=1e-5)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the reference's 1/sqrt(0) for head size 0
def test_attention_empty():
    rng = np.random.default_rng(14)
    for kw in (dict(B=0), dict(Sq=0), dict(L=0, is_causal=1), dict(D=0)):
        ins, attrs = attention_case(rng, **kw)
        got = run_engine(model("Attention", ins, ["Y"], attrs), feeds_of(ins))[0]
        if kw.get("L", 1) == 0:
            want = np.zeros(got.shape, np.float32)  # no keys: zeros (the reference cannot reduce over 0 keys)
        else:
            want = reference_attention(*[a for _, a in ins], **attrs)[0]
        assert_close([got], [want], atol=1e-6)


# -- RotaryEmbedding -------------------------------------------------------------------------

@pytest.mark.parametrize("in3d", [False, True])
@pytest.mark.parametrize("interleaved", [0, 1])
@pytest.mark.parametrize("rot,pos", [(0, True), (6, True), (4, False)])
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_rotary_vs_reference(in3d, interleaved, rot, pos, dtype):
    from onnx.reference.ops.op_rotary_embedding import rotary_embedding

    rng = np.random.default_rng(rot + 2 * interleaved)
    B, S, H, D = 2, 5, 3, 10
    x = rng.uniform(-1, 1, (B, S, H * D) if in3d else (B, H, S, D)).astype(dtype)
    half = (rot or D) // 2
    cache = (11, half) if pos else (B, S, half)
    cos, sin = (rng.uniform(-1, 1, cache).astype(dtype) for _ in range(2))
    p = rng.integers(0, 11, (B, S)).astype(np.int64) if pos else None
    attrs = {"interleaved": interleaved, "rotary_embedding_dim": rot}
    if in3d:
        attrs["num_heads"] = H
    ins = [("X", x), ("cos", cos), ("sin", sin), ("pos", p)]
    got = run_engine(model("RotaryEmbedding", [i for i in ins if i[1] is not None], ["Y"], attrs), feeds_of(ins))[0]
    want = rotary_embedding(x, cos, sin, position_ids=p, interleaved=interleaved, rotary_embedding_dim=rot,
                            num_heads=H if in3d else 0)
    tol = 1e-6 if dtype == np.float32 else 2e-3
    np.testing.assert_allclose(got.astype(np.float64), want.astype(np.float64), rtol=tol, atol=tol)


# -- bad input: a clear EngineError naming the node, never a crash -----------------------------

def _raises(blob, feeds, err, match):
    with pytest.raises(err, match=match):
        run_engine(blob, feeds)


def test_rnn_bad_input():
    rng = np.random.default_rng(0)
    ins = rnn_inputs("LSTM", rng, 3, 2, 4, 5, lens=[3, 1], init=True)
    good = feeds_of(ins)
    for attrs, match in (({"direction": "sideways"}, "direction"), ({"activations": ["Sigmoid", "Nope", "Tanh"]},
                         "unknown activation"), ({"activations": ["Tanh"]}, "expected 3 activations"),
                         ({"layout": 2}, "layout"), ({"clip": -1.0}, "clip"), ({"hidden_size": 7}, "hidden_size")):
        with pytest.raises(engine.EngineError, match=match):
            run_engine(model("LSTM", ins, ["Y"], {"hidden_size": 5, **attrs}, opset=22), good)
    blob = model("LSTM", ins, ["Y"], {"hidden_size": 5}, opset=22, dynamic=True)
    _raises(blob, {**good, "W": good["W"][:, :-1]}, engine.ShapeError, "W must have shape")
    _raises(blob, {**good, "lens": np.array([4, 1], np.int32)}, engine.EngineError, r"LSTM: sequence_lens\[0\] = 4")
    _raises(blob, {**good, "lens": np.array([1, -1], np.int32)}, engine.EngineError, "sequence_lens")
    assert_close(run_engine(blob, good), run_ort(blob, good))  # still fine afterwards


def test_attention_bad_input():
    rng = np.random.default_rng(0)
    ins, attrs = attention_case(rng, in3d=True)
    feeds = feeds_of(ins)
    _raises(model("Attention", ins, ["Y"], {}), feeds, engine.ShapeError, "q_num_heads")
    _raises(model("Attention", ins, ["Y"], {**attrs, "q_num_heads": 3}), feeds, engine.ShapeError, "multiple")
    ins4, _ = attention_case(rng, mask=("float", (3, 7)))
    _raises(model("Attention", ins4, ["Y"]), feeds_of(ins4), engine.ShapeError, "does not broadcast")
    ins5, _ = attention_case(rng, mask=("float", (5, 9)))
    _raises(model("Attention", ins5, ["Y"]), feeds_of(ins5), engine.ShapeError, "more than")
    ins6, _ = attention_case(rng, Hq=3, Hkv=2)
    _raises(model("Attention", ins6, ["Y"]), feeds_of(ins6), engine.ShapeError, "multiple of kv heads")
    with pytest.raises(engine.EngineError, match="qk_matmul_output_mode"):
        run_engine(model("Attention", ins6, ["Y"], {"qk_matmul_output_mode": 5}), feeds_of(ins6))


def test_rotary_bad_input():
    x = np.zeros((1, 2, 3, 8), np.float32)
    cos = np.zeros((4, 4), np.float32)
    pos = np.array([[0, 4, 1]], np.int64)
    blob = model("RotaryEmbedding", [("X", x), ("cos", cos), ("sin", cos), ("pos", pos)], ["Y"], dynamic=True)
    _raises(blob, {"X": x, "cos": cos, "sin": cos, "pos": pos}, engine.EngineError, "position_ids value 4")
    _raises(blob, {"X": x, "cos": cos[:, :3], "sin": cos[:, :3], "pos": pos}, engine.ShapeError, "cos_cache")
    odd = model("RotaryEmbedding", [("X", x), ("cos", cos), ("sin", cos), ("pos", pos)], ["Y"],
                {"rotary_embedding_dim": 5})
    _raises(odd, {"X": x, "cos": cos, "sin": cos, "pos": pos}, engine.ShapeError, "even")
