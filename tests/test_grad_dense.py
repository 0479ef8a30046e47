"""dense_grad and matmul_grad against torch autograd in float64: Keras (K×N) and torch (N×K)
weight layouts, every subset of outputs, accumulation, batched matmul with transposes and
broadcast operands, every ISA, 1 and 2 threads; bad parameters refused."""

import itertools

import numpy as np
import pytest

from engine import KernelError
from grad_helpers import assert_close, empty, run_step

torch = pytest.importorskip("torch")

SHAPES = [(1, 1, 1), (1, 7, 3), (5, 37, 10), (64, 128, 10), (300, 784, 128)]


def t64(a, grad=False):
    return torch.tensor(a, dtype=torch.float64, requires_grad=grad)


@pytest.mark.parametrize("wt", [0, 1])
@pytest.mark.parametrize("M,K,N", SHAPES)
def test_dense_grad_vs_torch(M, K, N, wt, isa, threads):
    rng = np.random.default_rng(M * K + N)
    x = rng.standard_normal((M, K)).astype(np.float32)
    w = rng.standard_normal((N, K) if wt else (K, N)).astype(np.float32)
    dy = rng.standard_normal((M, N)).astype(np.float32)
    tx, tw, tb = t64(x, True), t64(w, True), t64(np.zeros(N), True)
    (tx @ (tw.T if wt else tw) + tb).backward(t64(dy))
    want = [tx.grad, tw.grad, tb.grad]
    shapes = [(M, K), w.shape, (N,)]
    for mask in (7, 1, 2, 4, 6):
        outs = [empty(*shapes[k]) for k in range(3) if mask >> k & 1]
        got = run_step("dense_grad", [dy, x if mask & 2 else None, w if mask & 1 else None], outs,
                       [M, K, N, wt, mask, 0])
        for g, k in zip(got, [k for k in range(3) if mask >> k & 1]):
            assert_close(g, want[k], rtol=2e-5, atol=2e-5 * np.sqrt(max(M, K, N)), what=f"mask {mask} out {k}")
    acc = [np.ones(s, np.float32) for s in shapes]
    run_step("dense_grad", [dy, x, w], acc, [M, K, N, wt, 7, 1])
    for g, ref in zip(acc, want):
        assert_close(g, ref + 1, rtol=2e-5, atol=2e-5 * np.sqrt(max(M, K, N)))


CASES = [  # batch, M, N, K, broadcast a, broadcast b
    (1, 5, 3, 4, False, False), (3, 5, 3, 4, False, False), (4, 17, 9, 33, True, False),
    (4, 17, 9, 33, False, True), (2, 64, 48, 80, False, True), (40, 8, 8, 16, False, False)]


@pytest.mark.parametrize("ta,tb", list(itertools.product([0, 1], [0, 1])))
@pytest.mark.parametrize("batch,M,N,K,ba,bb", CASES)
def test_matmul_grad_vs_torch(batch, M, N, K, ba, bb, ta, tb, isa, threads):
    rng = np.random.default_rng(batch * 100 + M)
    a_shape = (K, M) if ta else (M, K)
    b_shape = (N, K) if tb else (K, N)
    a = rng.standard_normal(a_shape if ba else (batch, *a_shape)).astype(np.float32)
    b = rng.standard_normal(b_shape if bb else (batch, *b_shape)).astype(np.float32)
    dc = rng.standard_normal((batch, M, N)).astype(np.float32)
    taa, tbb = t64(a, True), t64(b, True)
    (torch.matmul(taa.mT if ta else taa, tbb.mT if tb else tbb).expand(batch, M, N)).backward(t64(dc))
    ints = [batch, M, N, K, ta, tb, 0 if ba else M * K, 0 if bb else K * N, 3, 0]
    da, db = run_step("matmul_grad", [dc, a, b], [empty(*a.shape), empty(*b.shape)], ints)
    assert_close(da, taa.grad, rtol=2e-5, atol=1e-4, what="da")
    assert_close(db, tbb.grad, rtol=2e-5, atol=1e-4, what="db")


def test_empty_products_and_bad_parameters():
    dy = np.ones((3, 2), np.float32)
    x, w = np.ones((3, 0), np.float32), np.ones((0, 2), np.float32)
    dx, dw, db = run_step("dense_grad", [dy, x, w], [empty(3, 0), empty(0, 2), empty(2)], [3, 0, 2, 0, 7, 0])
    np.testing.assert_array_equal(db, [3, 3])
    x, w = np.ones((3, 4), np.float32), np.ones((4, 2), np.float32)
    for mask, n, msg in [(0, 1, "outputs mask must be 1 to 7, got 0"), (8, 1, "outputs mask must be 1 to 7, got 8"),
                         (3, 1, "outputs mask 3 wants 2 outputs, got 1"), (1, 2, "outputs mask 1 wants 1 outputs, got 2")]:
        with pytest.raises(KernelError, match=msg):
            run_step("dense_grad", [dy, x, w], [empty(3, 4)] * n, [3, 4, 2, 0, mask, 0])
    with pytest.raises(KernelError, match=r"dx needs w \(input 2\)"):
        run_step("dense_grad", [dy, x, None], [empty(3, 4)], [3, 4, 2, 0, 1, 0])
    with pytest.raises(KernelError, match="w_transposed must be 0 or 1, got 2"):
        run_step("dense_grad", [dy, x, w], [empty(3, 4)], [3, 4, 2, 2, 1, 0])
    with pytest.raises(KernelError, match="input 1 must be float32, got float64"):
        run_step("dense_grad", [dy, x.astype(np.float64), w], [empty(4, 2)], [3, 4, 2, 0, 2, 0])
    with pytest.raises(KernelError, match="batch >= 1"):
        run_step("matmul_grad", [dy, x, w], [empty(3, 4)], [0, 3, 2, 4, 0, 0, 12, 8, 1, 0])
