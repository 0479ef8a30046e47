"""Training the recurrent layers: gradients of LSTM / GRU / RNN (engine.autograd.vjp through
RNNTrain / RNNGrad, the native rnn and rnn_grad steps) against torch.nn.LSTM / GRU / RNN
autograd with the gate orders mapped, and against a float64 torch reference of the ONNX
semantics (autograd through an explicit step loop) where torch.nn has no equivalent: reverse
layers, masks, sequences of length 0, GRU without linear_before_reset, other activations.
Then engine.nn's SimpleRNN / LSTM / GRU / Bidirectional gradients with respect to the Keras
weights against Keras itself (torch backend) computing the same, and a float64
finite-difference check of a tiny LSTM."""

from __future__ import annotations

import numpy as np
import pytest

from engine.autograd import vjp
from engine.errors import EngineError, UnsupportedOpError
from engine.graph import Graph, Node, Value

torch = pytest.importorskip("torch")

GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
# torch.nn's gate order as ONNX gate indices (ONNX: LSTM i,o,f,c; GRU z,r,h)
TORCH_ORDER = {"LSTM": [0, 2, 3, 1], "GRU": [1, 0, 2], "RNN": [0]}


# -- the layer under test --------------------------------------------------------------------

def layer_arrays(op, rng, T, B, In, H, direction="forward", layout=0, lens=None, init=False, mask=None,
                 bias=True):
    """X, W, R, B, sequence_lens, initial_h, initial_c, mask (None: absent)."""
    D = 2 if direction == "bidirectional" else 1
    G = GATES[op]
    u = lambda *s, scale=1.0: (rng.uniform(-1, 1, s) * scale).astype(np.float32)  # noqa: E731
    state = (B, D, H) if layout else (D, B, H)
    return {"X": u(*((B, T, In) if layout else (T, B, In))),
            "W": u(D, G * H, In, scale=1.5 / np.sqrt(In)), "R": u(D, G * H, H, scale=1.5 / np.sqrt(H)),
            "B": u(D, 2 * G * H) if bias else None,
            "lens": None if lens is None else np.asarray(lens, np.int32),
            "h0": u(*state) if init else None, "c0": u(*state) if init and op == "LSTM" else None,
            "mask": None if mask is None else np.asarray(mask, bool)}


INPUT_ORDER = ["X", "W", "R", "B", "lens", "h0", "c0", "P", "mask"]


def layer_graph(op, attrs, a, outputs=None):
    """One recurrent node; W, R, B weights; the rest graph inputs."""
    names = [n if a.get(n) is not None else "" for n in INPUT_ORDER]
    while names[-1] == "":
        names.pop()
    outputs = outputs or (["Y", "Y_h", "Y_c"] if op == "LSTM" else ["Y", "Y_h"])
    inputs = [Value(n, a[n].shape, {"int32": "int32", "bool": "bool"}.get(a[n].dtype.name, "float32"))
              for n in names if n and n not in ("W", "R", "B")]
    inits = {n: a[n] for n in ("W", "R", "B") if a.get(n) is not None}
    outs = [Value(o, None, "float32") for o in outputs if o]
    return Graph(inputs, outs, [Node(op, names, list(outputs), dict(attrs), "layer")], inits)


def engine_grads(op, attrs, a, dys, wrt=("X", "h0", "c0"), params=("W", "R", "B")):
    outs = ["Y", "Y_h", "Y_c"] if op == "LSTM" else ["Y", "Y_h"]
    g = layer_graph(op, attrs, a, [o if o in dys else "" for o in outs])
    feeds = {v.name: a[v.name] for v in g.inputs}
    params = [p for p in params if a.get(p) is not None]
    return vjp(g, feeds, params, dys, wrt_inputs=tuple(w for w in wrt if a.get(w) is not None))


def output_grads(op, rng, a, attrs, which=("Y", "Y_h", "Y_c")):
    D = 2 if attrs.get("direction") == "bidirectional" else 1
    layout = attrs.get("layout", 0)
    X = a["X"]
    T, B = (X.shape[1], X.shape[0]) if layout else X.shape[:2]
    H = a["R"].shape[-1]
    state = (B, D, H) if layout else (D, B, H)
    shapes = {"Y": (B, T, D, H) if layout else (T, D, B, H), "Y_h": state, "Y_c": state}
    return {k: rng.standard_normal(shapes[k]).astype(np.float32) for k in which if k != "Y_c" or op == "LSTM"}


def assert_grads(got: dict, want: dict, rtol=2e-4):
    assert set(want) <= set(got), f"missing gradients {set(want) - set(got)}"
    for k, w in want.items():
        w = np.asarray(w, np.float64)
        scale = max(1.0, float(np.abs(w).max()) if w.size else 1.0)
        np.testing.assert_allclose(got[k].astype(np.float64), w, rtol=rtol, atol=rtol * scale, err_msg=f"d{k}")


# -- references ------------------------------------------------------------------------------

def _torch_act(name, alpha=None, beta=None):
    name = name.lower()
    return {
        "sigmoid": torch.sigmoid, "tanh": torch.tanh, "relu": torch.relu,
        "hardsigmoid": lambda x: torch.clamp(alpha * x + beta, 0, 1),
        "affine": lambda x: alpha * x + beta,
        "leakyrelu": lambda x: torch.where(x >= 0, x, alpha * x),
        "elu": lambda x: torch.where(x > 0, x, alpha * torch.expm1(x)),
        "scaledtanh": lambda x: alpha * torch.tanh(beta * x),
        "softsign": lambda x: x / (1 + x.abs()),
        "softplus": torch.nn.functional.softplus,
    }[name]


def reference(op, attrs, t: dict):
    """Y, Y_h, Y_c of the ONNX op (plus the engine's mask input), float64 torch, an explicit loop
    per direction and batch row. t: torch tensors (None: absent)."""
    layout = attrs.get("layout", 0)
    direction = attrs.get("direction", "forward")
    D = 2 if direction == "bidirectional" else 1
    X = t["X"] if layout == 0 else t["X"].transpose(0, 1)
    T, B = X.shape[:2]
    H = t["R"].shape[-1]
    G = GATES[op]
    per = {"LSTM": 3, "GRU": 2, "RNN": 1}[op]
    names = attrs.get("activations", {"LSTM": ["Sigmoid", "Tanh", "Tanh"], "GRU": ["Sigmoid", "Tanh"],
                                      "RNN": ["Tanh"]}[op])
    if len(names) == per:
        names = names * D
    alphas, betas = list(attrs.get("activation_alpha", [])), list(attrs.get("activation_beta", []))
    acts = []
    for n in names:
        a = alphas.pop(0) if n.lower() in ("hardsigmoid", "affine", "leakyrelu", "elu", "scaledtanh") else None
        b = betas.pop(0) if n.lower() in ("hardsigmoid", "affine", "scaledtanh") else None
        acts.append(_torch_act(n, a, b))
    h0, c0 = t.get("h0"), t.get("c0")
    if layout and h0 is not None:
        h0 = h0.transpose(0, 1)
    if layout and c0 is not None:
        c0 = c0.transpose(0, 1)
    zero = X.new_zeros(H)
    lbr = bool(attrs.get("linear_before_reset", 0))
    inf = bool(attrs.get("input_forget", 0))
    Y = [[[zero for _ in range(B)] for _ in range(D)] for _ in range(T)]
    Yh = [[zero for _ in range(B)] for _ in range(D)]
    Yc = [[zero for _ in range(B)] for _ in range(D)]
    for d in range(D):
        f, g, hf = (acts[d * per:(d + 1) * per] + [None, None])[:3]
        W, R = t["W"][d], t["R"][d]
        Bb = t["B"][d] if t.get("B") is not None else X.new_zeros(2 * G * H)
        wb, rb = Bb[:G * H], Bb[G * H:]
        reverse = direction == "reverse" or (direction == "bidirectional" and d == 1)
        for b in range(B):
            n = int(t["lens"][b]) if t.get("lens") is not None else T
            h = h0[d, b] if h0 is not None else zero
            c = c0[d, b] if c0 is not None else zero
            seen = False
            for s in range(n):
                tt = n - 1 - s if reverse else s
                if t.get("mask") is not None and not bool(t["mask"][b, tt]):
                    Y[tt][d][b] = zero if attrs.get("zero_output_for_mask", 0) or not seen else h
                    continue
                seen = True
                x = X[tt, b]
                if op == "LSTM":
                    z = W @ x + R @ h + wb + rb
                    i, o, fg, cc = (z[k * H:(k + 1) * H] for k in range(4))
                    i = f(i)
                    fg = 1 - i if inf else f(fg)
                    c = fg * c + i * g(cc)
                    h = f(o) * hf(c)
                elif op == "GRU":
                    xz = W @ x + wb
                    zg = f(xz[:H] + R[:H] @ h + rb[:H])
                    rg = f(xz[H:2 * H] + R[H:2 * H] @ h + rb[H:2 * H])
                    if lbr:
                        hh = g(xz[2 * H:] + rg * (R[2 * H:] @ h + rb[2 * H:]))
                    else:
                        hh = g(xz[2 * H:] + R[2 * H:] @ (rg * h) + rb[2 * H:])
                    h = (1 - zg) * hh + zg * h
                else:
                    h = f(W @ x + R @ h + wb + rb)
                Y[tt][d][b] = h
            if n > 0:
                Yh[d][b], Yc[d][b] = h, c
    Y = torch.stack([torch.stack([torch.stack(r) for r in dd]) for dd in Y])  # T, D, B, H
    Yh = torch.stack([torch.stack(r) for r in Yh])
    Yc = torch.stack([torch.stack(r) for r in Yc])
    if layout:
        Y, Yh, Yc = Y.permute(2, 0, 1, 3), Yh.transpose(0, 1), Yc.transpose(0, 1)
    return {"Y": Y, "Y_h": Yh, "Y_c": Yc}


def reference_grads(op, attrs, a, dys, wrt=("X", "W", "R", "B", "h0", "c0")):
    t = {k: (torch.tensor(v.astype(np.float64) if v.dtype == np.float32 else v, requires_grad=k in wrt)
             if v is not None else None) for k, v in a.items()}
    outs = reference(op, attrs, t)
    loss = sum((outs[k] * torch.tensor(dy, dtype=torch.float64)).sum() for k, dy in dys.items())
    loss.backward()
    return {k: t[k].grad.numpy() for k in wrt if t.get(k) is not None and t[k].grad is not None}


def torch_nn_grads(op, attrs, a, dys):
    """The same gradients through torch.nn.LSTM / GRU / RNN (forward or bidirectional;
    sequence_lens by packing, every length > 0; GRU: linear_before_reset 1)."""
    layout = attrs.get("layout", 0)
    bidir = attrs.get("direction", "forward") == "bidirectional"
    D = 2 if bidir else 1
    X = a["X"]
    In, H = X.shape[-1], a["R"].shape[-1]
    mod = {"LSTM": torch.nn.LSTM, "GRU": torch.nn.GRU, "RNN": torch.nn.RNN}[op](
        In, H, batch_first=bool(layout), bidirectional=bidir, bias=a.get("B") is not None).double()
    order = TORCH_ORDER[op]
    G = GATES[op]

    def to_torch(m):  # (G·H, ...) ONNX gate blocks -> torch's
        return np.concatenate([m[k * H:(k + 1) * H] for k in order])

    def from_torch(m):
        out = np.empty_like(m)
        for pos, k in enumerate(order):
            out[k * H:(k + 1) * H] = m[pos * H:(pos + 1) * H]
        return out

    sfx = ["", "_reverse"]
    with torch.no_grad():
        for d in range(D):
            getattr(mod, f"weight_ih_l0{sfx[d]}").copy_(torch.tensor(to_torch(a["W"][d])))
            getattr(mod, f"weight_hh_l0{sfx[d]}").copy_(torch.tensor(to_torch(a["R"][d])))
            if a.get("B") is not None:
                getattr(mod, f"bias_ih_l0{sfx[d]}").copy_(torch.tensor(to_torch(a["B"][d][:G * H])))
                getattr(mod, f"bias_hh_l0{sfx[d]}").copy_(torch.tensor(to_torch(a["B"][d][G * H:])))
    x = torch.tensor(X.astype(np.float64), requires_grad=True)
    state = []
    for k in ("h0", "c0"):
        if a.get(k) is not None:
            s = torch.tensor(a[k].astype(np.float64), requires_grad=True)
            state.append(s)
    states_in = [s.transpose(0, 1) if layout else s for s in state]  # torch: (D, B, H)
    if op == "LSTM" and states_in:
        hx = tuple(states_in)
    else:
        hx = states_in[0] if states_in else None
    lens = a.get("lens")
    if lens is not None:
        packed = torch.nn.utils.rnn.pack_padded_sequence(x, torch.tensor(lens.astype(np.int64)),
                                                         batch_first=bool(layout), enforce_sorted=False)
        y, fin = mod(packed, hx)
        y, _ = torch.nn.utils.rnn.pad_packed_sequence(y, batch_first=bool(layout),
                                                      total_length=X.shape[1 if layout else 0])
    else:
        y, fin = mod(x, hx)
    hn, cn = fin if op == "LSTM" else (fin, None)
    T, B = (X.shape[1], X.shape[0]) if layout else X.shape[:2]
    Y = y.reshape(B, T, D, H) if layout else y.reshape(T, B, D, H).permute(0, 2, 1, 3)
    outs = {"Y": Y, "Y_h": hn.transpose(0, 1) if layout else hn}
    if cn is not None:
        outs["Y_c"] = cn.transpose(0, 1) if layout else cn
    loss = sum((outs[k] * torch.tensor(dy, dtype=torch.float64)).sum() for k, dy in dys.items())
    loss.backward()
    got = {"X": x.grad.numpy()}
    for k, s in zip([k for k in ("h0", "c0") if a.get(k) is not None], state):
        got[k] = s.grad.numpy()
    for name, pre in (("W", "weight_ih_l0"), ("R", "weight_hh_l0")):
        got[name] = np.stack([from_torch(getattr(mod, pre + sfx[d]).grad.numpy()) for d in range(D)])
    if a.get("B") is not None:
        got["B"] = np.stack([np.concatenate([from_torch(getattr(mod, "bias_ih_l0" + sfx[d]).grad.numpy()),
                                             from_torch(getattr(mod, "bias_hh_l0" + sfx[d]).grad.numpy())])
                             for d in range(D)])
    return got


# -- ops against torch.nn --------------------------------------------------------------------

# (op, T, B, In, H, direction, layout, lens, init, extra attrs)
TORCH_NN_CASES = [
    ("LSTM", 7, 3, 5, 6, "forward", 0, None, True, {}),
    ("LSTM", 5, 1, 3, 17, "forward", 1, None, False, {}),
    ("LSTM", 9, 4, 6, 19, "bidirectional", 0, [9, 3, 1, 6], True, {}),
    ("LSTM", 6, 13, 4, 33, "bidirectional", 1, None, True, {}),
    ("LSTM", 30, 7, 8, 64, "forward", 1, [30, 29, 1, 17, 30, 2, 5], False, {}),
    ("GRU", 7, 3, 5, 6, "forward", 0, None, True, {"linear_before_reset": 1}),
    ("GRU", 8, 5, 3, 21, "bidirectional", 1, [8, 1, 4, 7, 2], True, {"linear_before_reset": 1}),
    ("GRU", 4, 1, 7, 40, "bidirectional", 0, None, False, {"linear_before_reset": 1}),
    ("RNN", 7, 3, 5, 6, "forward", 0, None, True, {}),
    ("RNN", 6, 9, 4, 23, "bidirectional", 1, [6, 5, 4, 3, 2, 1, 6, 6, 1], True, {}),
    # many rows: the backward runs its steps in several blocks (a weight GEMM after each)
    ("LSTM", 25, 40, 8, 64, "bidirectional", 1, [25 - (7 * i) % 25 for i in range(40)], True, {}),
    ("GRU", 20, 48, 6, 64, "forward", 0, None, True, {"linear_before_reset": 1}),
]


@pytest.mark.parametrize("case", range(len(TORCH_NN_CASES)),
                         ids=[f"{c[0]}-T{c[1]}-B{c[2]}-H{c[4]}-{c[5]}-L{c[6]}" + ("-lens" if c[7] else "")
                              for c in TORCH_NN_CASES])
def test_op_grads_vs_torch_nn(case, isa, threads):
    op, T, B, In, H, direction, layout, lens, init, extra = TORCH_NN_CASES[case]
    rng = np.random.default_rng(100 + case)
    a = layer_arrays(op, rng, T, B, In, H, direction, layout, lens, init)
    attrs = {"hidden_size": H, "direction": direction, "layout": layout, **extra}
    dys = output_grads(op, rng, a, attrs)
    want = torch_nn_grads(op, attrs, a, dys)
    assert_grads(engine_grads(op, attrs, a, dys), want)


def test_reference_matches_torch_nn():
    """The explicit-loop reference (used where torch.nn has no equivalent) is torch.nn's math."""
    rng = np.random.default_rng(5)
    for op, extra in (("LSTM", {}), ("GRU", {"linear_before_reset": 1}), ("RNN", {})):
        a = layer_arrays(op, rng, 5, 3, 4, 6, "bidirectional", 1, [5, 2, 4], True)
        attrs = {"direction": "bidirectional", "layout": 1, **extra}
        dys = output_grads(op, rng, a, attrs)
        assert_grads(reference_grads(op, attrs, a, dys), torch_nn_grads(op, attrs, a, dys), rtol=1e-9)


# -- ops against the reference: what torch.nn has no form of ---------------------------------

def _mask(rng, B, T, p=0.35):
    m = rng.random((B, T)) > p
    m[0, :] = True
    if B > 2:
        m[2, :2] = False  # masked from the start: zeros before the first step that runs
    return m


# (op, T, B, In, H, direction, layout, lens, init, mask, extra attrs)
REF_CASES = [
    ("LSTM", 6, 3, 4, 5, "reverse", 0, None, True, False, {}),
    ("LSTM", 7, 4, 3, 18, "reverse", 1, [7, 0, 3, 5], True, False, {}),
    ("LSTM", 8, 5, 4, 6, "forward", 1, None, True, True, {}),
    ("LSTM", 8, 5, 4, 6, "bidirectional", 0, [8, 3, 7, 1, 0], True, True, {"zero_output_for_mask": 1}),
    ("LSTM", 5, 1, 3, 7, "reverse", 0, None, False, True, {}),
    ("LSTM", 6, 3, 4, 9, "forward", 0, [6, 0, 4], True, False, {"input_forget": 1}),
    ("GRU", 6, 3, 4, 5, "forward", 0, None, True, False, {"linear_before_reset": 0}),
    ("GRU", 7, 4, 3, 18, "bidirectional", 1, [7, 0, 3, 5], True, True, {"linear_before_reset": 0}),
    ("GRU", 8, 5, 4, 6, "reverse", 1, None, True, True, {"linear_before_reset": 1}),
    ("GRU", 5, 1, 6, 33, "reverse", 0, None, False, False, {"linear_before_reset": 0}),
    ("RNN", 6, 3, 4, 5, "reverse", 0, [6, 0, 2], True, True, {}),
    ("RNN", 9, 2, 4, 20, "bidirectional", 1, None, True, True, {"zero_output_for_mask": 1}),
    ("RNN", 6, 3, 4, 5, "forward", 0, None, True, False, {"activations": ["Relu"]}),
    ("GRU", 6, 3, 4, 7, "forward", 1, None, True, True,
     {"activations": ["HardSigmoid", "Softsign"], "activation_alpha": [0.3], "activation_beta": [0.45]}),
    ("LSTM", 5, 2, 3, 6, "bidirectional", 0, None, True, False,
     {"activations": ["Sigmoid", "Tanh", "Softplus", "Sigmoid", "Elu", "Tanh"], "activation_alpha": [0.8]}),
    ("RNN", 5, 3, 4, 5, "reverse", 0, None, True, False,
     {"activations": ["ScaledTanh"], "activation_alpha": [1.3], "activation_beta": [0.7]}),
    ("GRU", 5, 3, 4, 5, "forward", 0, None, True, False, {"activations": ["Sigmoid", "LeakyRelu"],
                                                          "activation_alpha": [0.1], "linear_before_reset": 1}),
    ("RNN", 4, 2, 3, 5, "forward", 0, None, True, False, {"activations": ["Affine"], "activation_alpha": [0.6],
                                                          "activation_beta": [0.1]}),
    # several blocks of steps in the backward
    ("GRU", 20, 48, 5, 64, "reverse", 1, [20 - (5 * i) % 20 for i in range(48)], True, True,
     {"linear_before_reset": 0}),
    ("LSTM", 14, 40, 5, 64, "forward", 1, None, True, True, {}),
]


@pytest.mark.parametrize("case", range(len(REF_CASES)),
                         ids=[f"{c[0]}-T{c[1]}-B{c[2]}-H{c[4]}-{c[5]}-L{c[6]}" + ("-lens" if c[7] else "")
                              + ("-mask" if c[9] else "") + "".join(f"-{k}" for k in c[10]) for c in REF_CASES])
def test_op_grads_vs_reference(case, isa, threads):
    op, T, B, In, H, direction, layout, lens, init, masked, extra = REF_CASES[case]
    rng = np.random.default_rng(200 + case)
    mask = _mask(rng, B, T) if masked else None
    a = layer_arrays(op, rng, T, B, In, H, direction, layout, lens, init, mask)
    attrs = {"hidden_size": H, "direction": direction, "layout": layout, **extra}
    dys = output_grads(op, rng, a, attrs)
    assert_grads(engine_grads(op, attrs, a, dys), reference_grads(op, attrs, a, dys))


@pytest.mark.parametrize("which", [("Y",), ("Y_h",), ("Y_c",), ("Y_h", "Y_c")])
def test_some_outputs_only(which):
    """Only some outputs reach the loss (the others are not even computed)."""
    rng = np.random.default_rng(7)
    a = layer_arrays("LSTM", rng, 6, 3, 4, 5, "bidirectional", 0, [6, 2, 4], True)
    attrs = {"direction": "bidirectional"}
    dys = output_grads("LSTM", rng, a, attrs, which)
    assert_grads(engine_grads("LSTM", attrs, a, dys), reference_grads("LSTM", attrs, a, dys))


def test_some_gradients_only():
    """Only the input's gradient (weights constant: the forward packs them once), or only R's."""
    rng = np.random.default_rng(8)
    a = layer_arrays("GRU", rng, 5, 3, 4, 6, "forward", 0, None, True)
    attrs = {"linear_before_reset": 1}
    dys = output_grads("GRU", rng, a, attrs)
    want = reference_grads("GRU", attrs, a, dys)
    got = engine_grads("GRU", attrs, a, dys, wrt=("X",), params=())
    assert set(got) == {"X"}
    assert_grads(got, {"X": want["X"]})
    got = engine_grads("GRU", attrs, a, dys, wrt=(), params=("R",))
    assert set(got) == {"R"}
    assert_grads(got, {"R": want["R"]})


def test_no_bias_and_empty_sequences():
    rng = np.random.default_rng(9)
    a = layer_arrays("LSTM", rng, 4, 3, 2, 5, "forward", 1, [0, 0, 0], True, bias=False)
    attrs = {"layout": 1}
    dys = output_grads("LSTM", rng, a, attrs)
    got = engine_grads("LSTM", attrs, a, dys)
    for k in ("X", "W", "R", "h0", "c0"):
        assert np.all(got[k] == 0), k


def test_keras_weight_layout_op():
    """weight_layout='keras': kernel (In, G·H), recurrent_kernel (H, G·H), Keras gate order; the
    gradients are the ONNX ones in that layout."""
    rng = np.random.default_rng(10)
    for op, perm, extra in (("LSTM", [0, 2, 3, 1], {}), ("GRU", [0, 1, 2], {"linear_before_reset": 1}),
                            ("GRU", [0, 1, 2], {"linear_before_reset": 0}), ("RNN", [0], {})):
        a = layer_arrays(op, rng, 5, 3, 4, 6, "reverse", 1, [5, 1, 3], True, _mask(rng, 3, 5))
        attrs = {"direction": "reverse", "layout": 1, **extra}
        dys = output_grads(op, rng, a, attrs)
        want = reference_grads(op, attrs, a, dys)
        H = 6
        # (1, G·H, K) in ONNX's gate order -> Keras's (K, G·H)
        keras = lambda m: np.concatenate([m[0][k * H:(k + 1) * H] for k in perm]).T  # noqa: E731
        two = extra.get("linear_before_reset") == 1
        b = a["B"][0].reshape(2, -1)
        kb = np.stack([keras(b[i][None, :, None])[0] for i in range(2)])
        k = dict(a, W=np.ascontiguousarray(keras(a["W"])), R=np.ascontiguousarray(keras(a["R"])),
                 B=np.ascontiguousarray(kb if two else kb[0]))
        if not two:  # one bias (input): the recurrent biases folded into it
            k["B"] = np.ascontiguousarray(kb[0] + kb[1])
        got = engine_grads(op, {**attrs, "weight_layout": "keras"}, k, dys)
        assert_grads({n: got[n] for n in ("X", "h0")}, {n: want[n] for n in ("X", "h0")})
        # frozen Keras weights: constants, packed once by the forward
        frozen = engine_grads(op, {**attrs, "weight_layout": "keras"}, k, dys, params=())
        assert_grads({n: frozen[n] for n in ("X", "h0")}, {n: want[n] for n in ("X", "h0")})
        assert_grads({"W": got["W"], "R": got["R"]}, {"W": keras(want["W"]), "R": keras(want["R"])})
        wb = want["B"][0].reshape(2, -1)
        kwb = np.stack([keras(wb[i][None, :, None])[0] for i in range(2)])
        assert_grads({"B": got["B"]}, {"B": kwb if two else kwb[0]})


# -- refused configurations ------------------------------------------------------------------

@pytest.mark.parametrize("attrs, extra, match", [
    ({"clip": 0.5}, {}, "clip"),
    ({"activations": ["ThresholdedRelu", "Tanh", "Tanh"]}, {}, "ThresholdedRelu|thresholdedrelu"),
    ({}, {"P": True}, "peephole"),
])
def test_unsupported_training_configurations(attrs, extra, match):
    rng = np.random.default_rng(11)
    a = layer_arrays("LSTM", rng, 3, 2, 3, 4)
    if extra.get("P"):
        a["P"] = rng.standard_normal((1, 12)).astype(np.float32)
    g = layer_graph("LSTM", attrs, a)
    if extra.get("P"):  # P as a weight
        g.initializers["P"] = a["P"]
        g.inputs = [v for v in g.inputs if v.name != "P"]
    with pytest.raises(UnsupportedOpError, match=match):
        vjp(g, {"X": a["X"]}, ["W"], {"Y": np.ones((3, 1, 2, 4), np.float32)})


def test_float64_layer_refused():
    rng = np.random.default_rng(12)
    a = {k: (v.astype(np.float64) if v is not None and v.dtype == np.float32 else v)
         for k, v in layer_arrays("RNN", rng, 3, 2, 3, 4).items()}
    g = layer_graph("RNN", {}, a)
    with pytest.raises(EngineError, match="float32"):
        vjp(g, {"X": a["X"]}, ["W"], {"Y": np.ones((3, 1, 2, 4), np.float32)})


# -- a float64 finite-difference check -------------------------------------------------------

def _lstm_np(a, attrs):
    """The tiny LSTM in float64 numpy (independent of torch): <dY, Y> + <dY_h, Y_h> + <dY_c, Y_c>."""
    t = {k: (torch.tensor(v) if v is not None else None) for k, v in a.items()}
    with torch.no_grad():
        return {k: v.numpy() for k, v in reference("LSTM", attrs, t).items()}


def test_lstm_finite_differences():
    rng = np.random.default_rng(13)
    a = layer_arrays("LSTM", rng, 4, 2, 3, 3, "reverse", 0, [4, 3], True, _mask(rng, 2, 4))
    attrs = {"direction": "reverse"}
    dys = output_grads("LSTM", rng, a, attrs)
    got = engine_grads("LSTM", attrs, a, dys)
    a64 = {k: (v.astype(np.float64) if v is not None and v.dtype == np.float32 else v) for k, v in a.items()}

    def loss(arrs):
        out = _lstm_np(arrs, attrs)
        return sum(float((out[k] * dys[k]).sum()) for k in dys)

    eps = 1e-6
    for name in ("X", "W", "R", "B", "h0", "c0"):
        fd = np.zeros_like(a64[name])
        for idx in np.ndindex(*fd.shape):
            plus, minus = dict(a64), dict(a64)
            plus[name], minus[name] = a64[name].copy(), a64[name].copy()
            plus[name][idx] += eps
            minus[name][idx] -= eps
            fd[idx] = (loss(plus) - loss(minus)) / (2 * eps)
        np.testing.assert_allclose(got[name], fd, rtol=1e-4, atol=1e-5, err_msg=f"d{name}")


# -- engine.nn layers against Keras ----------------------------------------------------------

def _keras():
    import os
    os.environ.setdefault("KERAS_BACKEND", "torch")
    keras = pytest.importorskip("keras")
    if keras.backend.backend() != "torch":
        pytest.skip("Keras is not on the torch backend")
    return keras


def _weight_names(layer) -> list:
    return [f"{layer.name}/{w}" for w in layer.weight_names] + [n for s in layer._sublayers for n in _weight_names(s)]


def _nn_case(name):
    """(engine model, keras model, input array): the same architecture both ways."""
    from engine import nn
    keras = _keras()
    K = keras.layers
    T, F, U = 7, 5, 6
    ids = name.startswith("embed")

    def build(lib, L):
        inp = lib.Input((T,), dtype="int32") if ids else lib.Input((T, F))
        x = L.Embedding(20, F, mask_zero=True)(inp) if ids else inp
        if name == "lstm_seq":
            y = L.LSTM(U, return_sequences=True)(x)
        elif name == "lstm_state_backwards":
            y = L.LSTM(U, return_state=True, go_backwards=True, return_sequences=True)(x)
        elif name == "gru_reset_after":
            y = L.GRU(U, return_sequences=True)(x)
        elif name == "gru_reset_before":
            y = L.GRU(U, reset_after=False, return_sequences=True, go_backwards=True)(x)
        elif name == "simple_rnn_last":
            y = L.SimpleRNN(U, activation="relu")(x)
        elif name == "lstm_no_bias_last":
            y = L.LSTM(U, use_bias=False)(x)
        elif name == "bidirectional_concat":
            y = L.Bidirectional(L.LSTM(U, return_sequences=True))(x)
        elif name == "embed_lstm_masked":
            y = L.LSTM(U, return_sequences=True)(x)
        elif name == "embed_gru_masked_last":
            y = L.GRU(U)(x)
        elif name == "embed_bidirectional_masked":
            y = L.Bidirectional(L.GRU(U, return_sequences=True), merge_mode="sum")(x)
        else:
            raise ValueError(name)
        return lib.Model(inp, y)

    km = build(keras, K)
    em = build(nn, nn)
    rng = np.random.default_rng(sum(map(ord, name)))
    weights = [rng.normal(0, 0.4, np.shape(w)).astype(np.float32) for w in km.get_weights()]
    km.set_weights(weights)
    em.set_weights(weights)
    if ids:
        x = rng.integers(1, 20, (4, T)).astype(np.int32)
        x[0, -3:] = 0
        x[1, 2] = 0
        x[2, :2] = 0
        x[3, :] = 0
        x[3, 4] = 5
    else:
        x = rng.standard_normal((4, T, F)).astype(np.float32)
    return em, km, x


NN_CASES = ["lstm_seq", "lstm_state_backwards", "gru_reset_after", "gru_reset_before", "simple_rnn_last",
            "lstm_no_bias_last", "bidirectional_concat", "embed_lstm_masked", "embed_gru_masked_last",
            "embed_bidirectional_masked"]


@pytest.mark.parametrize("name", NN_CASES)
def test_nn_layer_grads_vs_keras(name):
    em, km, x = _nn_case(name)
    graph = em.to_graph(training=True)
    rng = np.random.default_rng(3)
    # Keras, on the torch backend: the same loss <dY, Y> backward through its own layers
    ys = km(torch.tensor(x))
    ys = list(ys) if isinstance(ys, (list, tuple)) else [ys]
    dys = [rng.standard_normal(tuple(y.shape)).astype(np.float32) for y in ys]
    sum((y * torch.tensor(dy)).sum() for y, dy in zip(ys, dys)).backward()
    rec = [w for w in km.trainable_weights if "embedding" not in w.path]
    want = [w.value.grad.numpy() for w in rec]
    names = [n for layer in em.layers if type(layer).__name__ != "Embedding" for n in _weight_names(layer)]
    assert len(names) == len(want)
    feeds = {graph.inputs[0].name: x}
    got = vjp(graph, feeds, names, {v.name: dy for v, dy in zip(graph.outputs, dys)})
    for n, w in zip(names, want):
        scale = max(1.0, float(np.abs(w).max()))
        np.testing.assert_allclose(got[n], w, rtol=2e-4, atol=2e-4 * scale, err_msg=n)
    # the training graph's forward is the inference graph's
    ref = em.predict(x)
    ref = ref if isinstance(ref, list) else [ref]
    for y, r in zip(ys, ref):
        np.testing.assert_allclose(y.detach().numpy(), r, rtol=1e-4, atol=1e-5)


def test_nn_inference_graph_unchanged():
    """Inference graphs keep the ONNX-layout constants; only training graphs read Keras's weights."""
    em, _, _ = _nn_case("lstm_seq")
    ops = {n.op: n for n in em.to_graph().nodes}
    assert "weight_layout" not in ops["LSTM"].attrs and any(k.endswith("onnx_W") for k in em.to_graph().initializers)
    ops = {n.op: n for n in em.to_graph(training=True).nodes}
    assert ops["LSTM"].attrs["weight_layout"] == "keras"


@pytest.mark.parametrize("layer", ["gru", "gru_reset_before", "simple_rnn", "lstm_masked"])
def test_nn_fit_recurrent(layer):
    """compile / fit end to end: the recurrent weights train (the loss falls, every weight moves)."""
    from engine import nn, optimizers
    rng = np.random.default_rng(21)
    T, F = 8, 3
    x = rng.standard_normal((96, T, F)).astype(np.float32)
    y = np.cumsum(x[..., :1], axis=1).astype(np.float32) / 4
    if layer == "lstm_masked":
        x[:, -2:] = 0.0  # padding at the end, masked
    rec = {"gru": lambda: nn.GRU(8, return_sequences=True),
           "gru_reset_before": lambda: nn.GRU(8, reset_after=False, return_sequences=True),
           "simple_rnn": lambda: nn.SimpleRNN(8, return_sequences=True),
           "lstm_masked": lambda: nn.LSTM(8, return_sequences=True)}[layer]()
    layers = [nn.Input((T, F))] + ([nn.Masking(0.0)] if layer == "lstm_masked" else []) + [rec, nn.Dense(1)]
    model = nn.Sequential(layers)
    model.compile(optimizer=optimizers.Adam(learning_rate=0.02), loss="mse")
    before = [w.copy() for w in rec.get_weights()]
    history = model.fit(x, y, epochs=8, batch_size=32, verbose=0)
    assert history.history["loss"][-1] < 0.7 * history.history["loss"][0]
    for w0, w1 in zip(before, rec.get_weights()):
        assert not np.allclose(w0, w1)


def test_grads_same_for_any_thread_count(set_threads):
    """The backward's chunks of rows and blocks of steps are fixed by the shapes, its sums made in
    order: one thread or two give the same bits. (Not with sequence_lens or masks: the forward
    then groups the running rows into tiles by its threads' row ranges, and a one-row tile sums
    in another order.)"""
    rng = np.random.default_rng(22)
    a = layer_arrays("LSTM", rng, 25, 40, 8, 64, "bidirectional", 1, None, True)
    attrs = {"direction": "bidirectional", "layout": 1}
    dys = output_grads("LSTM", rng, a, attrs)
    got = []
    for n in (1, 2):
        set_threads(n)
        got.append(engine_grads("LSTM", attrs, a, dys))
    for k in got[0]:
        np.testing.assert_array_equal(got[0][k], got[1][k], err_msg=k)
