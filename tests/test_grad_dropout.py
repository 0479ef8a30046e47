"""dropout_fwd / dropout_grad: the mask is Philox4x32-10 of (seed, step, element), checked
against a numpy Philox (itself checked on Random123's known-answer vectors), the same for
every ISA and thread count; the forward and backward against torch autograd of the same
masked product; NaN; bad parameters."""

import numpy as np
import pytest

from engine import KernelError
from grad_helpers import Alias, assert_close, empty, run_step

torch = pytest.importorskip("torch")

M32 = 0xFFFFFFFF


def philox4x32_10(ctr, key):
    """numpy Philox4x32-10 (Salmon et al. 2011): ctr is four uint32 arrays, key two ints."""
    c = [np.asarray(v, np.uint64) & M32 for v in ctr]
    k0, k1 = key[0] & M32, key[1] & M32
    for r in range(10):
        if r:
            k0, k1 = (k0 + 0x9E3779B9) & M32, (k1 + 0xBB67AE85) & M32
        p0, p1 = c[0] * np.uint64(0xD2511F53), c[2] * np.uint64(0xCD9E8D57)
        c = [(p1 >> np.uint64(32)) ^ c[1] ^ np.uint64(k0), p1 & np.uint64(M32),
             (p0 >> np.uint64(32)) ^ c[3] ^ np.uint64(k1), p0 & np.uint64(M32)]
    return c


def test_numpy_philox_known_answers():
    # Random123's kat_vectors for philox4x32_10 (also in TensorFlow's stateful random tests)
    kat = [((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
           ((M32,) * 4, (M32, M32), (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
           ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
            (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1))]
    for ctr, key, want in kat:
        got = philox4x32_10([[v] for v in ctr], key)
        assert [int(w[0]) for w in got] == list(want)


def reference_mask(n, rate, seed, step):
    b = np.arange((n + 3) // 4, dtype=np.uint64)
    words = philox4x32_10([b & np.uint64(M32), b >> np.uint64(32), np.full_like(b, step & M32),
                           np.full_like(b, step >> 32)], (seed & M32, seed >> 32))
    words = np.stack(words, axis=1).ravel()[:n]
    return (words >> np.uint64(8)) >= np.uint64(int(np.ceil(rate * 2**24)))


def fwd(x, rate, seed, step, mask=True, counter=None):
    ctr = np.array([step], np.int64) if counter is None else counter
    outs = [empty(x.size)] + ([np.full(x.size, 7, np.uint8)] if mask else [])
    return run_step("dropout_fwd", [x, ctr], outs, [x.size, seed], [rate])


@pytest.mark.parametrize("rate", [0.0, 0.1, 0.5, 0.9])
def test_dropout_mask_is_philox(rate, isa, threads):
    rng = np.random.default_rng(int(rate * 10))
    seed, step = 0x1234_5678_9ABC_DEF0 & 0x7FFF_FFFF_FFFF_FFFF, (1 << 33) + 5  # both words used
    for n in (1, 3, 5, 64, 1001, 100_003):
        x = rng.standard_normal(n).astype(np.float32)
        y, mask = fwd(x, rate, seed, step)
        keep = reference_mask(n, rate, seed, step)
        np.testing.assert_array_equal(mask, keep.astype(np.uint8), err_msg=f"n={n}")
        scale = np.float32(1 / (1 - rate))
        np.testing.assert_array_equal(y, np.where(keep, x * scale, np.float32(0)))
        if n == 100_003:
            assert abs(keep.mean() - (1 - rate)) < 0.01


def test_dropout_vs_torch_autograd_with_the_same_mask():
    rng = np.random.default_rng(1)
    x = rng.standard_normal(4099).astype(np.float32)
    dy = rng.standard_normal(4099).astype(np.float32)
    rate, seed, step = 0.3, 42, 7
    y, mask = fwd(x, rate, seed, step)
    t = torch.tensor(x, requires_grad=True)
    ref = t * torch.tensor(mask, dtype=torch.float32) * (1 / (1 - rate))  # torch's native_dropout
    ref.backward(torch.tensor(dy))
    assert_close(y, ref, rtol=1e-6, atol=0)
    (dx,) = run_step("dropout_grad", [dy, mask, None], [empty(4099)], [4099, seed], [rate])
    assert_close(dx, t.grad, rtol=1e-6, atol=0)
    # drawn again from (seed, step) instead of stored: the same gradient, in place over dy too
    (dx2,) = run_step("dropout_grad", [dy, None, np.array([step], np.int64)], [empty(4099)], [4099, seed], [rate])
    np.testing.assert_array_equal(dx2, dx)
    (dx3,) = run_step("dropout_grad", [dy.copy(), None, np.array([step], np.int64)], [Alias(0)], [4099, seed], [rate])
    np.testing.assert_array_equal(dx3, dx)
    # the optimizers' float64 hyper buffer [lr, step, grad_scale] as the counter
    (dx4,) = run_step("dropout_grad", [dy, None, np.array([1e-3, step, 1.0])], [empty(4099)], [4099, seed], [rate])
    np.testing.assert_array_equal(dx4, dx)


def test_dropout_steps_and_seeds_differ_nan_propagates():
    x = np.ones(1000, np.float32)
    a = fwd(x, 0.5, 1, 1)[1]
    assert (a != fwd(x, 0.5, 1, 2)[1]).any() and (a != fwd(x, 0.5, 2, 1)[1]).any()
    np.testing.assert_array_equal(a, fwd(x, 0.5, 1, 1)[1])
    x[:] = np.nan
    (y,) = fwd(x, 0.5, 1, 1, mask=False)
    assert np.isnan(y).all()  # x·0 where dropped, as torch's product


def test_dropout_bad_parameters():
    x = np.ones(8, np.float32)
    ctr = np.array([1], np.int64)
    for rate in (1.0, -0.1, np.nan):
        with pytest.raises(KernelError, match=r"rate must be in \[0, 1\)"):
            fwd(x, rate, 1, 1)
    with pytest.raises(KernelError, match="mask must be uint8, got float32"):
        run_step("dropout_fwd", [x, ctr], [empty(8), empty(8)], [8, 1], [0.5])
    with pytest.raises(KernelError, match="needs the forward's mask"):
        run_step("dropout_grad", [x, None, None], [empty(8)], [8, 1], [0.5])
    with pytest.raises(KernelError, match="counter must be int64"):
        run_step("dropout_fwd", [x, np.ones(1, np.float32)], [empty(8)], [8, 1], [0.5])
    with pytest.raises(KernelError, match="step must be a whole number"):
        fwd(x, 0.5, 1, 1, counter=np.array([1e-3, 1.5, 1.0]))
