"""SGEMM / PackedMatrixB / sgemm_packed against a float64 numpy reference (and torch).

Every ISA path the CPU supports and 1 and 2 threads are exercised; shapes hit the block-size
edges of each micro-kernel (MR, NR, KC, MC) as well as 1, primes and large K.
"""
import math

import numpy as np
import pytest

import engine
from engine import _C

ISA_ORDER = ["portable", "avx2", "avx512"]
ISAS = ISA_ORDER[: ISA_ORDER.index(_C.detected_isa()) + 1]
ACT = _C.Act

# Register tiles (MR, NR) per ISA and the cache blocks (KC, MC) of the driver.
TILES = {"avx512": (14, 32), "avx2": (6, 16), "portable": (4, 8)}
KC = 256


# The `isa` (every ISA path up to the detected one) and `threads` (pool of 1 and 2) fixtures
# come from conftest.py and restore the previous setting afterwards.


def rand(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


def tol(K):
    return 2e-5 * math.sqrt(max(K, 1)) * 8


def ref_gemm(a, b, ta, tb, alpha=1.0, beta=0.0, c=None, bias=None, act=None):
    A = (a.T if ta else a).astype(np.float64)
    B = (b.T if tb else b).astype(np.float64)
    r = alpha * (A @ B)
    if beta != 0.0:
        r = r + beta * c.astype(np.float64)
    if bias is not None:
        r = r + bias.astype(np.float64)
    if act == "relu":
        r = np.maximum(r, 0)
    elif act == "sigmoid":
        r = 1 / (1 + np.exp(-r))
    elif act == "gelu":
        from math import erf

        r = 0.5 * r * (1 + np.vectorize(erf)(r / math.sqrt(2)))
    return r


def check(c, ref, K):
    scale = max(1.0, float(np.abs(ref).max()) if ref.size else 1.0)
    np.testing.assert_allclose(c, ref, rtol=0, atol=tol(K) * scale)


def run_sgemm(rng, M, N, K, ta=False, tb=False, alpha=1.0, beta=0.0, bias=False, act=None):
    a = rand(rng, *((K, M) if ta else (M, K)))
    b = rand(rng, *((N, K) if tb else (K, N)))
    c0 = rand(rng, M, N)
    c = np.full((M, N), np.nan, np.float32) if beta == 0.0 else c0.copy()
    bv = rand(rng, N) if bias else None
    _C.sgemm(c, a, b, ta, tb, alpha, beta, bv, getattr(ACT, act or "none"), 0.0, 0.0)
    check(c, ref_gemm(a, b, ta, tb, alpha, beta, c0, bv, act), K)


def edge_sizes(isa):
    mr, nr = TILES[isa]
    return sorted({1, 2, 3, mr - 1, mr, mr + 1, 2 * mr + 1, nr - 1, nr, nr + 1, 2 * nr + 3})


def test_tiny_and_edges(isa, threads):
    rng = np.random.default_rng(0)
    sizes = edge_sizes(isa)
    for M in sizes:
        for N in sizes:
            run_sgemm(rng, M, N, 7)
    run_sgemm(rng, 1, 1, 1)


@pytest.mark.parametrize("ta", [False, True])
@pytest.mark.parametrize("tb", [False, True])
def test_trans(isa, threads, ta, tb):
    rng = np.random.default_rng(1)
    for M, N, K in [(1, 1, 1), (13, 17, 19), (97, 61, 131), (130, 70, KC + 1), (40, 300, 2 * KC - 1)]:
        run_sgemm(rng, M, N, K, ta, tb)


def test_k_edges(isa):
    rng = np.random.default_rng(2)
    for K in [1, 2, 3, 5, KC - 1, KC, KC + 1, 4097]:
        run_sgemm(rng, 17, 35, K)
    run_sgemm(rng, 1, 33, 4097)
    # Row strides that are a multiple of 4 KiB: A is packed instead of read in place.
    run_sgemm(rng, 40, 70, 1024)
    run_sgemm(rng, 29, 100, 2048)


def test_large_blocks(threads):
    # Crosses MC (168 rows on avx512) and several KC blocks, on every thread count.
    rng = np.random.default_rng(3)
    run_sgemm(rng, 337, 290, 600)
    run_sgemm(rng, 300, 1100, 70, tb=True)
    run_sgemm(rng, 4200, 40, 300)  # more rows than one packed A block holds


def test_alpha_beta(isa):
    rng = np.random.default_rng(4)
    for alpha, beta in [(0.5, 0.0), (1.0, 1.0), (-2.0, 0.25), (0.0, 0.5), (0.0, 0.0)]:
        run_sgemm(rng, 31, 45, 300, alpha=alpha, beta=beta)
        run_sgemm(rng, 3, 45, 20, alpha=alpha, beta=beta)


def test_beta0_ignores_nan(isa):
    rng = np.random.default_rng(5)
    run_sgemm(rng, 29, 33, 9, beta=0.0)  # c starts as NaN


@pytest.mark.parametrize("act", [None, "relu", "sigmoid", "gelu"])
def test_epilogue(isa, threads, act):
    rng = np.random.default_rng(6)
    for M, N, K in [(1, 10, 5), (15, 33, 300), (64, 65, 40)]:
        run_sgemm(rng, M, N, K, bias=True, act=act, beta=0.5)
        run_sgemm(rng, M, N, K, bias=False, act=act)


def test_zero_sizes(isa):
    rng = np.random.default_rng(7)
    for M, N, K in [(0, 5, 3), (4, 0, 3), (0, 0, 0)]:
        run_sgemm(rng, M, N, K)
    # K == 0: C = beta*C + bias, then the activation.
    c0 = rand(rng, 3, 4)
    c = c0.copy()
    bias = rand(rng, 4)
    _C.sgemm(c, np.zeros((3, 0), np.float32), np.zeros((0, 4), np.float32), False, False, 1.0, 2.0,
             bias, ACT.relu, 0.0, 0.0)
    np.testing.assert_allclose(c, np.maximum(2 * c0 + bias, 0), rtol=1e-6)


def test_strided_views(isa, threads):
    rng = np.random.default_rng(8)
    for ta in (False, True):
        for tb in (False, True):
            M, N, K = 23, 37, 45
            big_a = rand(rng, 60, 70)
            big_b = rand(rng, 60, 70)
            big_c = rand(rng, 40, 50)
            a = big_a[:K, 3:3 + M] if ta else big_a[:M, 3:3 + K]
            b = big_b[:N, 5:5 + K] if tb else big_b[:K, 5:5 + N]
            c = big_c[:M, 2:2 + N]
            c0 = c.copy()
            before = big_c.copy()
            _C.sgemm_strided(c, a, b, ta, tb, 1.5, 0.5)
            check(c, ref_gemm(a, b, ta, tb, 1.5, 0.5, c0), K)
            mask = np.ones_like(big_c, bool)
            mask[:M, 2:2 + N] = False
            assert np.array_equal(big_c[mask], before[mask]), "wrote outside the C view"


@pytest.mark.parametrize("M", [1, 2, 7, 14, 15, 64, 100])
def test_packed(isa, threads, M):
    rng = np.random.default_rng(9)
    for K, N, tb in [(5408 // 8, 128, False), (1000, 128, True), (128, 10, False), (300, 500, True), (1, 1, False)]:
        b = rand(rng, *((N, K) if tb else (K, N)))
        pb = _C.PackedMatrixB(b, tb)
        assert (pb.K, pb.N) == (K, N)
        a = rand(rng, M, K)
        bias = rand(rng, N)
        c = np.full((M, N), np.nan, np.float32)
        _C.sgemm_packed(c, a, pb, False, 1.0, 0.0, bias, ACT.relu, 0.0, 0.0)
        check(c, ref_gemm(a, b, False, tb, bias=bias, act="relu"), K)
        # trans_a, alpha/beta
        at = np.ascontiguousarray(a.T)
        c0 = rand(rng, M, N)
        c = c0.copy()
        _C.sgemm_packed(c, at, pb, True, 0.5, 1.0, None, ACT.none, 0.0, 0.0)
        check(c, ref_gemm(a, b, False, tb, 0.5, 1.0, c0), K)


def test_packed_keeps_its_isa():
    """A matrix packed under one ISA keeps working after cpu_isa() changes."""
    rng = np.random.default_rng(10)
    old = _C.cpu_isa()
    try:
        for pack_isa in ISAS:
            _C.set_isa(pack_isa)
            b = rand(rng, 70, 45)
            pb = _C.PackedMatrixB(b, False)
            for run_isa in ISAS:
                _C.set_isa(run_isa)
                a = rand(rng, 9, 70)
                c = np.zeros((9, 45), np.float32)
                _C.sgemm_packed(c, a, pb)
                check(c, ref_gemm(a, b, False, False), 70)
    finally:
        _C.set_isa(old)


def test_against_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(11)
    a = rand(rng, 129, 257)
    b = rand(rng, 257, 65)
    bias = rand(rng, 65)
    c = np.empty((129, 65), np.float32)
    _C.sgemm(c, a, b, False, False, 1.0, 0.0, bias, ACT.gelu, 0.0, 0.0)
    ref = torch.nn.functional.gelu(torch.from_numpy(a) @ torch.from_numpy(b) + torch.from_numpy(bias)).numpy()
    np.testing.assert_allclose(c, ref, rtol=1e-4, atol=1e-4)


def test_errors():
    f = np.zeros((3, 4), np.float32)
    g = np.zeros((4, 5), np.float32)
    c = np.zeros((3, 5), np.float32)
    with pytest.raises(engine.KernelError):  # inner dims differ
        _C.sgemm(c, f, np.zeros((5, 5), np.float32))
    with pytest.raises(engine.EngineError):  # wrong C shape
        _C.sgemm(np.zeros((3, 4), np.float32), f, g)
    with pytest.raises(engine.EngineError):  # dtype
        _C.sgemm(c, f.astype(np.float64), g)
    with pytest.raises(engine.EngineError):  # non-contiguous
        _C.sgemm(c, np.zeros((4, 3), np.float32).T, g)
    with pytest.raises(engine.EngineError):  # read-only output
        ro = np.zeros((3, 5), np.float32)
        ro.flags.writeable = False
        _C.sgemm(ro, f, g)
    with pytest.raises(engine.EngineError):  # bias size
        _C.sgemm(c, f, g, bias=np.zeros(4, np.float32))
    with pytest.raises(engine.EngineError):  # not 2-D
        _C.sgemm(c, np.zeros(12, np.float32), g)
    pb = _C.PackedMatrixB(g, False)
    with pytest.raises(engine.EngineError):  # K mismatch
        _C.sgemm_packed(c, np.zeros((3, 5), np.float32), pb)
    with pytest.raises(engine.EngineError):
        _C.sgemm_packed(np.zeros((3, 4), np.float32), f, pb)
    with pytest.raises(engine.EngineError):
        _C.PackedMatrixB(np.zeros((4, 5), np.float64), False)
    with pytest.raises(engine.EngineError):  # strided entry: non-unit inner stride
        _C.sgemm_strided(c, np.zeros((3, 8), np.float32)[:, ::2], g)


def test_bias_per_row(isa, threads):
    rng = np.random.default_rng(12)
    for M, N, K in [(1, 5, 3), (15, 33, 300), (70, 90, 20)]:
        a, b = rand(rng, M, K), rand(rng, K, N)
        bias = rand(rng, M)
        c = np.full((M, N), np.nan, np.float32)
        _C.sgemm(c, a, b, False, False, 1.0, 0.0, bias, ACT.relu, 0.0, 0.0, True)
        check(c, ref_gemm(a, b, False, False, bias=bias[:, None], act="relu"), K)
        c = np.zeros((M, N), np.float32)
        _C.sgemm(c, a, b, False, False, 1.0, 0.0, bias, ACT.sigmoid, 0.0, 0.0, True)
        check(c, ref_gemm(a, b, False, False, bias=bias[:, None], act="sigmoid"), K)
    with pytest.raises(engine.EngineError):  # per-row bias must have M entries
        _C.sgemm(np.zeros((3, 5), np.float32), rand(rng, 3, 4), rand(rng, 4, 5), bias=rand(rng, 5),
                 bias_per_row=True)


def test_few_rows_trans_b(isa, threads):
    """C = A·B^T with at most 4 rows of A runs as dot products over rows of B."""
    rng = np.random.default_rng(13)
    for M in (1, 2, 3, 4, 5):
        for N in (1, 3, 4, 5, 17, 300):
            for K in (1, 15, 16, 17, 100, 1000):
                run_sgemm(rng, M, N, K, tb=True)
    run_sgemm(rng, 2, 37, 33, tb=True, alpha=0.5, beta=0.75, bias=True, act="gelu")
    run_sgemm(rng, 1, 600, 700, tb=True, beta=1.0, bias=True, act="relu")
    big_b = rand(rng, 50, 90)
    b = big_b[:41, 7:7 + 60]  # ldb = 90
    a = rand(rng, 3, 60)
    c = np.empty((3, 41), np.float32)
    _C.sgemm_strided(c, a, b, False, True, 1.0, 0.0)
    check(c, ref_gemm(a, b, False, True), 60)


@pytest.mark.parametrize("M", [1, 3, 14])
@pytest.mark.parametrize("n_threads", [2, 3])
def test_packed_split_k(isa, set_threads, M, n_threads):
    # Few rows and a long K over pre-packed weights split K across threads (each thread a
    # partial C, summed by the caller with alpha/beta/bias/activation): odd K and N so the
    # split points and the last panel are ragged.
    set_threads(n_threads)
    rng = np.random.default_rng(11)
    for K, N in [(5408, 128), (4099, 33), (2000 * n_threads + 7, 10)]:
        b = rand(rng, K, N)
        pb = _C.PackedMatrixB(b, False)
        a, bias, c0 = rand(rng, M, K), rand(rng, N), rand(rng, M, N)
        c = np.full((M, N), np.nan, np.float32)
        _C.sgemm_packed(c, a, pb, False, 1.0, 0.0, bias, ACT.gelu, 0.0, 0.0)
        check(c, ref_gemm(a, b, False, False, bias=bias, act="gelu"), K)
        c = c0.copy()
        _C.sgemm_packed(c, a, pb, False, -0.5, 0.25, bias, ACT.relu, 0.0, 0.0)
        check(c, ref_gemm(a, b, False, False, -0.5, 0.25, c0, bias, "relu"), K)
