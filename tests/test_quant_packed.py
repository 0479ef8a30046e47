"""engine._C.QuantPacked (weights repacked into 16-row tiles for the AVX-512 VNNI kernels) against
float64 numpy on random raw blocks and SmolLM2's own tensors, on every kernel path this CPU has
(under a cap without VNNI the packed weights fall back to quant_matmul on the blocks).

The packed kernels quantise x exactly as quant_matmul's few-row kernels do, for any number of
rows, so the tolerance is the few-row bound of test_quant_matmul at every M.
"""

import numpy as np
import pytest

from engine import _C
from engine.errors import EngineError
from gguf_helpers import smollm2_path
from test_quant_matmul import random_weights, reference

TYPES = ["Q4_0", "Q4_1", "Q8_0", "Q4_K"]


def _k_for(type_name):
    return 512 if type_name == "Q4_K" else 160


def _within(got, want, bound):
    err = np.abs(got.astype(np.float64) - want)
    assert np.all(err <= bound), f"worst error {err.max():.3g} at {np.unravel_index(np.argmax(err - bound), err.shape)}"


@pytest.mark.parametrize("type_name", TYPES)
def test_packed_matmul_equals_float64_within_the_rounding_of_x(type_name, isa, threads, rng):
    k = _k_for(type_name)
    for n in (1, 7, 16, 17, 193):
        raw = random_weights(type_name, n, k, rng)
        packed = _C.QuantPacked(raw, type_name, n, k)
        assert packed.shape == (n, k) and packed.wtype == type_name
        for m in (1, 2, 3, 5, 8, 9, 10, 16, 33):
            x = rng.standard_normal((m, k)).astype(np.float32) * rng.uniform(0.1, 10)
            want, bound = reference(x, raw, type_name, n, k, rows=1)  # x quantised at every M
            _within(packed.matmul(x, raw), want, bound)
            base = rng.standard_normal((m, n)).astype(np.float32)
            out = base.copy()
            assert packed.matmul(x, raw, out=out, accumulate=True) is out
            _within(out, want + base, bound + 1e-6 * np.abs(base))


@pytest.mark.parametrize("type_name", TYPES)
def test_a_row_does_not_depend_on_the_other_rows(type_name, threads, rng):
    """Each x row is quantised and reduced on its own, in the same order for any M: a sequence's
    logits are the same bits alone or in a batch."""
    k, n = _k_for(type_name), 50
    raw = random_weights(type_name, n, k, rng)
    packed = _C.QuantPacked(raw, type_name, n, k)
    x = rng.standard_normal((12, k)).astype(np.float32)
    together = packed.matmul(x, raw)
    for m in (0, 5, 11):
        np.testing.assert_array_equal(packed.matmul(x[m:m + 1], raw)[0], together[m])
    np.testing.assert_array_equal(packed.matmul(x[3:10], raw), together[3:10])


@pytest.mark.parametrize("type_name", TYPES)
def test_without_vnni_the_blocks_are_used_unchanged(type_name, isa, rng):
    k, n = _k_for(type_name), 40
    raw = random_weights(type_name, n, k, rng)
    packed = _C.QuantPacked(raw, type_name, n, k)
    x = rng.standard_normal((3, k)).astype(np.float32)
    if _C.quant_packed_active():
        assert isa == "avx512"
    else:
        np.testing.assert_array_equal(packed.matmul(x, raw), _C.quant_matmul(x, raw, type_name, n, k))


def test_nan_or_inf_in_a_row_makes_only_that_row_nan(rng):
    k, n = 160, 33
    raw = random_weights("Q4_1", n, k, rng)
    packed = _C.QuantPacked(raw, "Q4_1", n, k)
    x = rng.standard_normal((4, k)).astype(np.float32)
    clean = packed.matmul(x, raw)
    x[1, 40] = np.nan
    x[2, 3] = np.inf
    got = packed.matmul(x, raw)
    assert np.isnan(got[1]).all() and np.isnan(got[2]).all()
    np.testing.assert_array_equal(got[[0, 3]], clean[[0, 3]])


def test_smollm2_tensors(rng):
    from engine.formats.gguf import read_gguf

    tensors = read_gguf(smollm2_path()).tensors
    for name in ("blk.0.attn_k.weight", "blk.3.ffn_down.weight", "token_embd.weight"):
        t = tensors[name]
        n, k = t.shape
        rows = slice(0, 400) if n > 400 else slice(None)  # the 49152-row embedding: its first rows
        raw = np.ascontiguousarray(t.data.reshape(n, -1)[rows]).reshape(-1)
        n = raw.size // _C.quant_row_bytes(t.type, k)
        packed = _C.QuantPacked(raw, t.type, n, k)
        x = rng.standard_normal((8, k)).astype(np.float32)
        want, bound = reference(x, raw, t.type, n, k, rows=1)
        _within(packed.matmul(x, raw), want, bound)


def test_bad_arguments_are_named(rng):
    raw = random_weights("Q4_1", 8, 64, rng)
    with pytest.raises(EngineError, match="wtype: no packed layout for Q6_K"):
        _C.QuantPacked(random_weights("Q6_K", 1, 256, rng), "Q6_K", 1, 256)
    with pytest.raises(EngineError, match="wtype: no packed layout for F16"):
        _C.QuantPacked(random_weights("F16", 2, 64, rng), "F16", 2, 64)
    with pytest.raises(EngineError, match="w: expected 320 bytes"):
        _C.QuantPacked(raw[:-1], "Q4_1", 8, 64)
    with pytest.raises(EngineError, match="K=48"):
        _C.QuantPacked(raw, "Q4_1", 8, 48)
    packed = _C.QuantPacked(raw, "Q4_1", 8, 64)
    with pytest.raises(EngineError, match=r"x: expected a 2-D float32 array \(M, K=64\)"):
        packed.matmul(np.zeros((2, 32), np.float32), raw)
    with pytest.raises(EngineError, match="out"):
        packed.matmul(np.zeros((2, 64), np.float32), raw, out=np.zeros((2, 9), np.float32))
    with pytest.raises(EngineError, match="w: expected 320 bytes"):
        packed.matmul(np.zeros((2, 64), np.float32), raw[:100])
