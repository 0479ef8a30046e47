"""engine._C.quant_matmul / quant_dequantize against engine.lm.quant_ref (bit-exact with the gguf
package) and float64 numpy, on random raw blocks of every type and on SmolLM2's own tensors, on
every kernel path this CPU has (the `isa` fixture).

Tolerance of quant_matmul. With fewer than 10 rows the kernels round each 32-value block of an
x row to integers Q (two int8 parts) with one scale d = max|x_block|/(127*128), so each x value
moves by at most d/2 and an output by at most sum_blocks d_b/2 * sum_{k in b} |W[n,k]| (the
integer dot products are exact).
With 10 rows or more x stays f32 (dequantised W, GEMM). Either way f32 arithmetic adds a rounding
term bounded by c * K * 2^-24 * (|W| @ |x|), c = 8 covering the scale products and the
minimum/offset terms that are summed apart from the codes.
"""

import functools

import numpy as np
import pytest

from engine import _C
from engine.errors import KernelError
from engine.formats.gguf import BLOCK_SIZES, read_gguf
from engine.lm.quant_ref import dequantize
from gguf_helpers import smollm2_path

TYPES = ["F16", "BF16", "Q4_0", "Q4_1", "Q8_0", "Q4_K", "Q6_K"]
SMALL_M_LIMIT = 10  # quant.cpp's kPanelMinRows: from here on x is not quantised


def _f16_bytes(values):
    return np.asarray(values, np.float16).view(np.uint8).reshape(-1, 2)


def random_weights(type_name, n, k, rng):
    """Raw bytes (uint8, n rows) of random blocks: random codes, modest random f16 scales."""
    block, nbytes = BLOCK_SIZES[type_name]
    nb = n * k // block
    if type_name == "F16":
        return rng.standard_normal(n * k).astype(np.float16).view(np.uint8)
    if type_name == "BF16":
        bits = rng.standard_normal(n * k).astype(np.float32).view(np.uint32) >> 16
        return bits.astype(np.uint16).view(np.uint8)
    raw = rng.integers(0, 256, (nb, nbytes), dtype=np.uint8)
    scale = lambda: _f16_bytes(rng.uniform(0.005, 0.05, nb) * rng.choice([-1, 1], nb))  # noqa: E731
    if type_name in ("Q4_0", "Q8_0"):
        raw[:, 0:2] = scale()
    elif type_name == "Q4_1":
        raw[:, 0:2] = scale()
        raw[:, 2:4] = _f16_bytes(rng.uniform(-0.4, 0.1, nb))  # the block minimum
    elif type_name == "Q4_K":
        raw[:, 0:2] = _f16_bytes(rng.uniform(0.0005, 0.003, nb))  # d (x 6-bit scales)
        raw[:, 2:4] = _f16_bytes(rng.uniform(0.0005, 0.003, nb))  # dmin (x 6-bit mins)
    elif type_name == "Q6_K":
        raw[:, 208:210] = _f16_bytes(rng.uniform(0.0002, 0.001, nb))  # d (x int8 scales)
    return raw.reshape(-1)


def reference(x, raw, type_name, n, k, rows=None):
    """float64 (dequant_ref(W) @ x^T) and the error bound of the module docstring (for a call
    of `rows` rows, default x's)."""
    w = dequantize(raw, type_name, (n, k)).astype(np.float64)
    x64 = x.astype(np.float64)
    want = x64 @ w.T
    bound = 8 * k * 2.0**-24 * (np.abs(x64) @ np.abs(w).T)
    if type_name not in ("F16", "BF16") and (rows or x.shape[0]) < SMALL_M_LIMIT:
        d = np.abs(x64).reshape(x.shape[0], -1, 32).max(axis=2) / (127 * 128)  # (M, blocks)
        wsum = np.abs(w).reshape(n, -1, 32).sum(axis=2)                 # (N, blocks)
        bound += 0.5 * d @ wsum.T
    return want, bound + 1e-30


def _k_for(type_name):
    return {"F16": 77, "BF16": 77, "Q4_K": 512, "Q6_K": 512}.get(type_name, 160)


@pytest.mark.parametrize("type_name", TYPES)
def test_dequantize_is_bit_exact(type_name, isa, rng):
    k = _k_for(type_name)
    for n in (1, 7, 33):
        raw = random_weights(type_name, n, k, rng)
        ours = _C.quant_dequantize(raw, type_name, n, k)
        want = dequantize(raw, type_name, (n, k))
        assert ours.shape == (n, k) and ours.dtype == np.float32
        assert np.array_equal(ours.view(np.uint32), want.view(np.uint32))


@pytest.mark.parametrize("type_name", TYPES)
def test_matmul_matches_float64(type_name, isa, rng):
    k = _k_for(type_name)
    for n in (1, 7, 193):
        raw = random_weights(type_name, n, k, rng)
        for i, m in enumerate((1, 2, 3, 5, 8, 9, 10, 16, 33, 128)):
            x = rng.standard_normal((m, k)).astype(np.float32)
            x[:, : k // 3] *= 10  # blocks of different scales
            want, bound = reference(x, raw, type_name, n, k)
            accumulate = bool(i % 2)
            if accumulate:
                y0 = rng.standard_normal((m, n)).astype(np.float32)
                got = _C.quant_matmul(x, raw, type_name, n, k, out=y0.copy(), accumulate=True)
                want = want + y0
                bound = bound + 2.0**-24 * np.abs(want)
            else:
                got = _C.quant_matmul(x, raw, type_name, n, k)
            err = np.abs(got - want)
            assert got.shape == (m, n) and np.isfinite(got).all()
            assert (err <= bound).all(), (m, n, accumulate, float((err / bound).max()))


@pytest.mark.parametrize("type_name", ["Q4_1", "Q8_0", "BF16"])
def test_rows_split_over_threads(type_name, threads, rng):
    """Enough weight rows that the small-M path runs as several tasks (and the panel path too)."""
    n, k = 513, 1024
    raw = random_weights(type_name, n, k, rng)
    for m in (1, 3, 9, 10):
        x = rng.standard_normal((m, k)).astype(np.float32)
        want, bound = reference(x, raw, type_name, n, k)
        assert (np.abs(_C.quant_matmul(x, raw, type_name, n, k) - want) <= bound).all(), m


@pytest.mark.parametrize("scale", [1e-38, 1e-30, 1e30])
def test_tiny_and_huge_x(scale, isa, rng):
    """x blocks whose int8 scale is subnormal (no finite reciprocal) or huge."""
    n, k = 7, 96
    raw = random_weights("Q4_1", n, k, rng)
    for m in (1, 4, 12):
        x = (rng.standard_normal((m, k)) * scale).astype(np.float32)
        want, bound = reference(x, raw, "Q4_1", n, k)
        got = _C.quant_matmul(x, raw, "Q4_1", n, k)
        assert np.isfinite(got).all() and (np.abs(got - want) <= bound + 1e-45).all(), m


def test_f32_weights(rng):
    x = rng.standard_normal((5, 64)).astype(np.float32)
    w = rng.standard_normal((9, 64)).astype(np.float32)
    for weights in (w, w.view(np.uint8)):
        got = _C.quant_matmul(x, weights, "F32", 9, 64)
        np.testing.assert_allclose(got, x.astype(np.float64) @ w.T.astype(np.float64), rtol=1e-5, atol=1e-4)
    assert np.array_equal(_C.quant_dequantize(w, "F32", 9, 64), w)


@pytest.mark.parametrize("type_name", ["Q4_0", "Q4_1", "Q8_0", "Q6_K", "F16"])
@pytest.mark.parametrize("m", [1, 3, 16])
def test_nan_and_inf_in_x_propagate(type_name, m, isa, rng):
    k, n = _k_for(type_name), 5
    raw = random_weights(type_name, n, k, rng)
    x = rng.standard_normal((m, k)).astype(np.float32)
    x[0, 3] = np.nan
    x[min(1, m - 1), k - 1] = np.inf
    got = _C.quant_matmul(x, raw, type_name, n, k)
    assert not np.isfinite(got[:2]).any()
    if m <= 2:
        return
    want, bound = reference(x[2:], raw, type_name, n, k, rows=m)
    assert np.isfinite(got[2:]).all() and (np.abs(got[2:] - want) <= bound).all()


def test_row_bytes():
    assert _C.quant_row_bytes("Q4_1", 576) == 18 * 20
    assert _C.quant_row_bytes("Q6_K", 512) == 2 * 210
    assert _C.quant_row_bytes("BF16", 7) == 14
    with pytest.raises(KernelError, match="multiple of 256"):
        _C.quant_row_bytes("Q4_K", 576)
    with pytest.raises(KernelError, match="wtype: unknown weight type 'Q5_0'"):
        _C.quant_row_bytes("Q5_0", 64)


def test_bad_arguments_are_named(rng):
    raw = random_weights("Q4_1", 3, 64, rng)
    x = np.ones((2, 64), np.float32)
    cases = [
        (dict(x=x.astype(np.float64)), "x: expected a float32"),
        (dict(x=np.ones((64, 4), np.float32)[:, :2].T), "x: expected a 2-D|x: expected a C-contiguous"),
        (dict(x=np.ones((2, 32), np.float32)), "x: expected a 2-D float32 array \\(M, K=64\\)"),
        (dict(w=raw[:-1]), "w: expected 120 bytes"),
        (dict(w=raw.view(np.int8)), "w: expected a uint8 array"),
        (dict(w=np.ones(30, np.float32)), "w: expected a uint8 array"),
        (dict(wtype="Q4_X"), "wtype: unknown"),
        (dict(k=48), "multiple of 32"),
        (dict(n=-1), "N: expected N >= 0"),
        (dict(out=np.zeros((2, 4), np.float32)), "out: expected shape \\(2, 3\\)"),
        (dict(out=np.zeros((2, 3), np.float64)), "out: expected a float32"),
    ]
    for change, message in cases:
        args = dict(x=x, w=raw, wtype="Q4_1", n=3, k=64, out=None)
        args.update(change)
        with pytest.raises(KernelError, match=message):
            _C.quant_matmul(args["x"], args["w"], args["wtype"], args["n"], args["k"], out=args["out"])
    frozen = np.zeros((2, 3), np.float32)
    frozen.flags.writeable = False
    with pytest.raises(KernelError, match="out: array is read-only"):
        _C.quant_matmul(x, raw, "Q4_1", 3, 64, out=frozen)
    with pytest.raises(KernelError, match="w: expected 120 bytes"):
        _C.quant_dequantize(raw[:100], "Q4_1", 3, 64)


@functools.cache
def smollm2_tensors():
    return read_gguf(smollm2_path()).tensors


def test_smollm2_tensors(isa, rng):
    """Real weights (the file's Q8_0 embedding and Q4_1 layers), a slice of rows of each: bit-exact
    dequantisation, and an M=1 and M=16 product."""
    tensors = smollm2_tensors()
    names = ["token_embd.weight", "blk.0.attn_q.weight", "blk.0.ffn_down.weight", "blk.29.ffn_gate.weight"]
    for name in names:
        t = tensors[name]
        n, k = t.shape
        rows = min(n, 96)  # a slice of rows keeps the reference fast
        raw = np.ascontiguousarray(t.data[: rows * _C.quant_row_bytes(t.type, k)])
        want = dequantize(raw, t.type, (rows, k))
        assert np.array_equal(_C.quant_dequantize(raw, t.type, rows, k).view(np.uint32), want.view(np.uint32)), name
        for m in (1, 16):
            x = rng.standard_normal((m, k)).astype(np.float32)
            ref, bound = reference(x, raw, t.type, rows, k)
            got = _C.quant_matmul(x, raw, t.type, rows, k)
            assert (np.abs(got - ref) <= bound).all(), name
