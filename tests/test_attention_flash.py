"""The tiled online-softmax ("flash") attention kernel and the decode kernel (fewer than 16 query
rows): the ONNX Attention op in float32 against torch's scaled_dot_product_attention over sequence
lengths, heads, head sizes, masks, grouped-/multi-query layouts and past key/value caches, and the
flash, decode and materialised block kernels against the ONNX reference on the seq family's edge
cases (softcap, windows, padding, caches), on every ISA."""

from __future__ import annotations

import numpy as np
import pytest

from engine import _C
from test_ops_seq import ATTENTION_CASES, attention_case, feeds_of, model, reference_attention, run_engine

torch = pytest.importorskip("torch")


@pytest.fixture(params=["auto", "flash"])
def kernel(request):
    """Runs the test with the default kernel choice and with the flash kernel forced (small q_len too)."""
    old = _C.attention_kernel()
    _C.set_attention_kernel(request.param)
    yield request.param
    _C.set_attention_kernel(old)


def sdpa_case(S, Hq, Hkv, D, mask, B=1, seed=0):
    """Engine's Attention (opset 23, 4-D inputs) and torch SDPA on the same random inputs."""
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((B, Hq, S, D)).astype(np.float32)
    k = rng.standard_normal((B, Hkv, S, D)).astype(np.float32)
    v = rng.standard_normal((B, Hkv, S, D)).astype(np.float32)
    ins, attrs, tmask = [("Q", q), ("K", k), ("V", v)], {}, None
    if mask == "causal":
        attrs["is_causal"] = 1
    elif mask == "padding":  # per batch: the last keys are padding; every query sees at least one key
        keep = np.ones((B, 1, 1, S), np.bool_)
        for b in range(B):
            keep[b, ..., max(1, S - 1 - (S * (b + 1)) // 5):] = False
        ins.append(("mask", keep))
        tmask = torch.from_numpy(keep)
    elif mask == "bias":
        bias = rng.standard_normal((B, Hq, S, S)).astype(np.float32)
        ins.append(("mask", bias))
        tmask = torch.from_numpy(bias)
    got = run_engine(model("Attention", ins, ["Y"], attrs), feeds_of(ins))[0]
    want = torch.nn.functional.scaled_dot_product_attention(
        torch.from_numpy(q), torch.from_numpy(k), torch.from_numpy(v), attn_mask=tmask, is_causal=mask == "causal",
        enable_gqa=Hq != Hkv).numpy()
    return got, want


def assert_close_scaled(got, want, tol=1e-5):
    """|got - want| <= tol·(|want| + max|want|): relative to the output's scale."""
    scale = float(np.abs(want).max())
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol * scale)


CASES = [  # (S, Hq, Hkv, D, mask)
    (1, 4, 4, 64, "none"), (1, 8, 2, 32, "causal"), (1, 3, 1, 80, "bias"),
    (7, 1, 1, 32, "none"), (7, 6, 3, 64, "padding"), (7, 4, 1, 128, "causal"), (7, 16, 4, 80, "bias"),
    (128, 2, 2, 64, "none"), (128, 8, 2, 32, "causal"), (128, 4, 1, 80, "padding"), (128, 3, 3, 128, "bias"),
    (128, 16, 4, 64, "causal"), (128, 12, 12, 64, "bias"),
    (512, 12, 12, 64, "none"), (512, 12, 12, 64, "causal"), (512, 4, 1, 128, "padding"), (512, 8, 2, 80, "bias"),
    (512, 16, 4, 32, "causal"), (512, 1, 1, 64, "causal"),
    (2048, 12, 12, 64, "causal"), (2048, 4, 1, 80, "none"), (2048, 2, 2, 128, "padding"),
]


@pytest.mark.parametrize("S,Hq,Hkv,D,mask", CASES)
def test_flash_vs_torch_sdpa(S, Hq, Hkv, D, mask, kernel):
    if kernel == "flash" and S >= 512:
        pytest.skip("auto already runs the flash kernel here")
    got, want = sdpa_case(S, Hq, Hkv, D, mask, seed=S + Hq + D)
    assert_close_scaled(got, want)


@pytest.mark.parametrize("S", [17, 33, 95, 200])  # odd row and key counts: tails of every tile
def test_flash_batched_gqa_every_isa(S, isa):
    for mask in ("none", "padding", "bias", "causal"):
        got, want = sdpa_case(S, 6, 2, 40, mask, B=2, seed=S)
        assert_close_scaled(got, want)


@pytest.mark.parametrize("case", range(len(ATTENTION_CASES)))
def test_flash_vs_reference_edge_cases(case, isa):
    """The seq family's edge cases (softcap, windows, nonpad_kv_seqlen, past keys, short masks, empty
    rows) through the flash kernel forced on at every size."""
    old = _C.attention_kernel()
    _C.set_attention_kernel("flash")
    try:
        rng = np.random.default_rng(case)
        ins, attrs = attention_case(rng, **ATTENTION_CASES[case])
        got = run_engine(model("Attention", ins, ["Y"], attrs, opset=24), feeds_of(ins))[0]
    finally:
        _C.set_attention_kernel(old)
    want = reference_attention(*[a for _, a in ins], **attrs)[0].astype(np.float32)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_flash_matches_block_kernel_long_window():
    """Windows and a per-query float mask over several key tiles and row blocks: the two kernels agree."""
    rng = np.random.default_rng(5)
    ins, attrs = attention_case(rng, B=1, Hq=4, Hkv=2, Sq=300, L=420, D=48, Dv=40, mask=("float", (300, 420)),
                                left_window_size=150, right_window_size=37, softcap=4.0, past=0)
    blob, feeds = model("Attention", ins, ["Y"], attrs, opset=24), feeds_of(ins)
    old = _C.attention_kernel()
    try:
        _C.set_attention_kernel("block")
        want = run_engine(blob, feeds)[0]
        _C.set_attention_kernel("flash")
        got = run_engine(blob, feeds)[0]
    finally:
        _C.set_attention_kernel(old)
    assert_close_scaled(got, want)


def test_set_attention_kernel_rejects_unknown():
    with pytest.raises(Exception, match="expected 'auto', 'block' or 'flash'"):
        _C.set_attention_kernel("fast")


# -- decode: fewer than 16 query rows (the decode kernel under "auto") ------------------------

def decode_case(S, Hq, Hkv, P, mask, B=1, D=64, seed=0):
    """Engine's Attention with S new query rows and keys/values after a past cache of P (the ONNX
    past_key / past_value inputs; P = 0: none) and torch SDPA on the whole cache. mask: none,
    causal (bottom-right: row i attends keys up to P + i), bool (each query's own keep pattern,
    every row keeping a key) or bias (additive, per query)."""
    rng = np.random.default_rng(seed)
    L = P + S
    q = rng.standard_normal((B, Hq, S, D)).astype(np.float32)
    k, v = (rng.standard_normal((B, Hkv, S, D)).astype(np.float32) for _ in range(2))
    pk, pv = (rng.standard_normal((B, Hkv, P, D)).astype(np.float32) for _ in range(2))
    ins, attrs, tmask = [("Q", q), ("K", k), ("V", v)], {}, None
    if mask == "causal":
        attrs["is_causal"] = 1
        tmask = torch.ones(S, L, dtype=torch.bool).tril(diagonal=P)
    elif mask == "bool":
        keep = rng.uniform(size=(B, Hq, S, L)) > 0.4
        keep[..., rng.integers(0, L)] = True
        ins.append(("mask", keep))
        tmask = torch.from_numpy(keep)
    elif mask == "bias":
        bias = (2 * rng.standard_normal((B, Hq, S, L))).astype(np.float32)
        ins.append(("mask", bias))
        tmask = torch.from_numpy(bias)
    if P:
        ins += [("mask", None)] * (mask not in ("bool", "bias")) + [("past_key", pk), ("past_value", pv)]
    outs = ["Y", "present_key", "present_value"] if P else ["Y"]
    got = run_engine(model("Attention", ins, outs, attrs), feeds_of(ins))[0]
    kk, vv = (torch.from_numpy(np.concatenate([p, n], axis=2)) for p, n in ((pk, k), (pv, v)))
    want = torch.nn.functional.scaled_dot_product_attention(torch.from_numpy(q), kk, vv, attn_mask=tmask,
                                                            enable_gqa=Hq != Hkv).numpy()
    return got, want


@pytest.mark.parametrize("S", [1, 2, 7, 15])
@pytest.mark.parametrize("Hq,Hkv", [(9, 3), (8, 1), (4, 4)])  # grouped-query, multi-query, one kv head per query head
@pytest.mark.parametrize("mask", ["none", "causal", "bool", "bias"])
def test_decode_vs_torch_sdpa(S, Hq, Hkv, mask):
    """Rows 1..15 against a past cache of 300 (two key tiles, the last one short)."""
    got, want = decode_case(S, Hq, Hkv, 300, mask, seed=S * Hq)
    assert_close_scaled(got, want)


@pytest.mark.parametrize("P,D", [(0, 64), (37, 40), (129, 80), (1000, 32)])  # odd key counts, head sizes, key splits
def test_decode_every_isa_and_thread_count(P, D, isa, threads):
    for mask in ("none", "causal", "bool", "bias"):
        got, want = decode_case(3, 6, 2, P, mask, B=2, D=D, seed=P + D)
        assert_close_scaled(got, want)


@pytest.mark.parametrize("case", [c for c in range(len(ATTENTION_CASES)) if ATTENTION_CASES[c].get("Sq", 5) < 16])
def test_decode_vs_reference_edge_cases(case, isa, threads):
    """The seq family's edge cases with fewer than 16 query rows through the decode kernel."""
    rng = np.random.default_rng(case)
    ins, attrs = attention_case(rng, **ATTENTION_CASES[case])
    has_past = any(n == "past_key" for n, _ in ins)
    outs = ["Y", "present_key", "present_value"] if has_past else ["Y"]
    got = run_engine(model("Attention", ins, outs, attrs, opset=24), feeds_of(ins))
    want = reference_attention(*[a for _, a in ins], **attrs)[:len(outs)]
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w.astype(np.float32), rtol=1e-5, atol=1e-5)


def test_decode_split_keys_rows_without_keys(threads):
    """A long cache split over threads, where whole splits are masked out for some rows and one
    row masks out every key: the splits merge by their log-sum-exp, the keyless row gives zeros."""
    rng = np.random.default_rng(3)
    B, Hq, Hkv, S, L, D = 1, 2, 1, 3, 2000, 16
    q = rng.standard_normal((B, Hq, S, D)).astype(np.float32)
    k, v = (rng.standard_normal((B, Hkv, L, D)).astype(np.float32) for _ in range(2))
    keep = np.ones((B, Hq, S, L), np.bool_)
    keep[0, 0, 0, 100:] = False  # only the first split's keys
    keep[0, 1, 1, :1900] = False  # only the last split's keys
    keep[0, 1, 2] = False  # no key
    ins = [("Q", q), ("K", k), ("V", v), ("mask", keep)]
    got = run_engine(model("Attention", ins, ["Y"]), feeds_of(ins))[0]
    want = torch.nn.functional.scaled_dot_product_attention(
        torch.from_numpy(q), torch.from_numpy(k), torch.from_numpy(v), attn_mask=torch.from_numpy(keep),
        enable_gqa=True).numpy()
    np.testing.assert_array_equal(got[0, 1, 2], 0)
    want[0, 1, 2] = 0  # (torch: NaN)
    assert_close_scaled(got, want)


def test_decode_sliding_window_long_cache(threads):
    """One new token with a causal 100-key window at the end of a 1500-key cache (the ONNX
    left_window_size, counted from the bottom-right frontier): only the window's keys are split
    over threads."""
    rng = np.random.default_rng(4)
    B, Hq, Hkv, P, D, window = 1, 4, 1, 1499, 32, 100
    q = rng.standard_normal((B, Hq, 1, D)).astype(np.float32)
    k, v = (rng.standard_normal((B, Hkv, 1, D)).astype(np.float32) for _ in range(2))
    pk, pv = (rng.standard_normal((B, Hkv, P, D)).astype(np.float32) for _ in range(2))
    ins = [("Q", q), ("K", k), ("V", v), ("mask", None), ("past_key", pk), ("past_value", pv)]
    attrs = {"is_causal": 1, "left_window_size": window}
    got = run_engine(model("Attention", ins, ["Y", "present_key", "present_value"], attrs, opset=24),
                     feeds_of(ins))[0]
    kk, vv = (torch.from_numpy(np.concatenate([p, n], axis=2)[:, :, P - window:]) for p, n in ((pk, k), (pv, v)))
    want = torch.nn.functional.scaled_dot_product_attention(torch.from_numpy(q), kk, vv, enable_gqa=True).numpy()
    assert_close_scaled(got, want)
