"""batchnorm_train_fwd, batchnorm_grad, layernorm_grad and embedding_grad against torch
autograd (float64): channels-last batch norm in training mode with Keras's and torch's
running statistics, a frozen batch norm, layer norm and RMS norm from the forward's saved
statistics, embedding scatter-add with duplicate and negative indices; every ISA, 1 and 2
threads; bad parameters."""

import numpy as np
import pytest

from engine import KernelError
from grad_helpers import Alias, assert_close, empty, run_step

torch = pytest.importorskip("torch")
F = torch.nn.functional


def t64(a, grad=False):
    return torch.tensor(a, dtype=torch.float64, requires_grad=grad)


def bn_fwd(x2, gamma, beta, rm, rv, eps, momentum, unbiased):
    M, C = x2.shape
    y, mean, invstd = empty(M, C), empty(C), empty(C)
    return run_step("batchnorm_train_fwd", [x2, gamma, beta, rm, rv],
                    [y, mean, invstd, Alias(3), Alias(4)], [M, C, unbiased], [eps, momentum])


@pytest.mark.parametrize("unbiased", [0, 1])
@pytest.mark.parametrize("shape", [(2, 1, 1, 1), (4, 5, 5, 3), (8, 13, 13, 32), (64, 7, 7, 19), (3, 2, 2, 100)])
def test_batchnorm_train_vs_torch(shape, unbiased, isa, threads):
    rng = np.random.default_rng(shape[-1] + unbiased)
    C = shape[-1]
    x = (rng.standard_normal(shape) * 3 + 5).astype(np.float32)  # an offset mean
    gamma, beta = rng.uniform(0.5, 2, C).astype(np.float32), rng.standard_normal(C).astype(np.float32)
    rm, rv = rng.standard_normal(C).astype(np.float32), rng.uniform(0.5, 2, C).astype(np.float32)
    dy = rng.standard_normal(shape).astype(np.float32)
    eps, keras_momentum = 1e-3, 0.99
    M = x.size // C
    y, mean, invstd, rm2, rv2 = bn_fwd(x.reshape(M, C), gamma, beta, rm.copy(), rv.copy(), eps, keras_momentum, unbiased)
    tx, tg, tb = t64(x, True), t64(gamma, True), t64(beta, True)
    trm, trv = t64(rm), t64(rv)
    ty = F.batch_norm(tx.permute(0, 3, 1, 2), trm, trv, tg, tb, training=True, momentum=1 - keras_momentum, eps=eps)
    ty = ty.permute(0, 2, 3, 1)
    assert_close(y.reshape(shape), ty, rtol=1e-4, atol=1e-5, what="y")
    x64 = x.reshape(M, C).astype(np.float64)
    assert_close(mean, x64.mean(0), rtol=1e-6, atol=1e-6, what="mean")
    assert_close(invstd, 1 / np.sqrt(x64.var(0) + eps), rtol=1e-5, what="invstd")
    assert_close(rm2, trm, rtol=1e-6, atol=1e-6, what="running mean")
    if unbiased:  # torch's running variance
        assert_close(rv2, trv, rtol=1e-5, atol=1e-6, what="running var (torch)")
    else:  # Keras: population variance
        assert_close(rv2, rv * keras_momentum + x64.var(0) * (1 - keras_momentum), rtol=1e-5, what="running var")
    ty.backward(t64(dy))
    dx, dg, db = run_step("batchnorm_grad", [dy.reshape(M, C), x.reshape(M, C), gamma, mean, invstd],
                          [empty(M, C), empty(C), empty(C)], [M, C, 1, 7], [eps])
    assert_close(dx.reshape(shape), tx.grad, rtol=1e-4, atol=1e-4, what="dx")
    assert_close(dg, tg.grad, rtol=1e-4, atol=1e-4 * np.sqrt(M), what="dgamma")
    assert_close(db, tb.grad, rtol=1e-5, atol=1e-5 * np.sqrt(M), what="dbeta")


def test_batchnorm_frozen_and_optional_parts(isa, threads):
    rng = np.random.default_rng(2)
    M, C = 300, 24
    x, dy = rng.standard_normal((M, C)).astype(np.float32), rng.standard_normal((M, C)).astype(np.float32)
    rm, rv = rng.standard_normal(C).astype(np.float32), rng.uniform(0.5, 2, C).astype(np.float32)
    beta = rng.standard_normal(C).astype(np.float32)
    tx, tb = t64(x, True), t64(beta, True)
    F.batch_norm(tx, t64(rm), t64(rv), None, tb, training=False, eps=1e-3).backward(t64(dy))
    dx, db = run_step("batchnorm_grad", [dy, x, None, rm, rv], [empty(M, C), empty(C)], [M, C, 0, 5], [1e-3])
    assert_close(dx, tx.grad, rtol=1e-5, atol=1e-6)
    assert_close(db, tb.grad, rtol=1e-5, atol=1e-5)
    # no gamma / beta in the forward (scale=False, center=False), dgamma alone
    y, mean, invstd, _, _ = bn_fwd(x, None, None, rm.copy(), rv.copy(), 1e-5, 0.9, 0)
    tx = t64(x, True)
    ty = F.batch_norm(tx, None, None, training=True, eps=1e-5)
    assert_close(y, ty, rtol=1e-4, atol=1e-5)
    (dg,) = run_step("batchnorm_grad", [dy, x, None, mean, invstd], [empty(C)], [M, C, 1, 2], [1e-5])
    assert_close(dg, (t64(dy) * ty).sum(0), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("rms", [0, 1])
@pytest.mark.parametrize("rows,D", [(1, 1), (5, 7), (64, 128), (300, 33), (4, 4099), (2000, 64)])
def test_layernorm_grad_vs_torch(rows, D, rms, isa, threads):
    rng = np.random.default_rng(rows + D)
    x = (rng.standard_normal((rows, D)) + 2).astype(np.float32)
    gamma, beta = rng.uniform(0.5, 2, D).astype(np.float32), rng.standard_normal(D).astype(np.float32)
    dy = rng.standard_normal((rows, D)).astype(np.float32)
    eps = 1e-3
    x64 = x.astype(np.float64)
    mean = x64.mean(1)
    invstd = 1 / np.sqrt(((x64 ** 2).mean(1) if rms else x64.var(1)) + eps)
    tx, tg, tb = t64(x, True), t64(gamma, True), t64(beta, True)
    if rms:
        ty = F.rms_norm(tx, (D,), tg, eps) + tb
    else:
        ty = F.layer_norm(tx, (D,), tg, tb, eps)
    ty.backward(t64(dy))
    dx, dg, db = run_step("layernorm_grad", [dy, x, gamma, None if rms else mean.astype(np.float32),
                                             invstd.astype(np.float32)],
                          [empty(rows, D), empty(D), empty(D)], [rows, D, rms, 7])
    tol = 1e-4 * np.sqrt(D)
    assert_close(dx, tx.grad, rtol=1e-4, atol=1e-4 * max(1, D ** 0.5 / 8), what="dx")
    assert_close(dg, tg.grad, rtol=1e-4, atol=tol, what="dgamma")
    assert_close(db, tb.grad, rtol=1e-5, atol=tol, what="dbeta")


def test_layernorm_grad_from_the_normalize_step():
    """The statistics the forward step writes (mean, inv_std) are what the backward reads."""
    rng = np.random.default_rng(0)
    rows, D = 6, 10
    x, dy = rng.standard_normal((rows, D)).astype(np.float32), rng.standard_normal((rows, D)).astype(np.float32)
    _, mean, invstd = run_step("normalize", [x, None, None], [empty(rows, D), empty(rows), empty(rows)],
                               [rows, 1, D, 1, 0], [1e-5])  # a LayerNorm row: cps = D
    (dx,) = run_step("layernorm_grad", [dy, x, None, mean, invstd], [empty(rows, D)], [rows, D, 0, 1])
    tx = t64(x, True)
    F.layer_norm(tx, (D,), eps=1e-5).backward(t64(dy))
    assert_close(dx, tx.grad, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("itype", [np.int32, np.int64])
@pytest.mark.parametrize("n,V,D", [(1, 1, 1), (7, 5, 3), (2000, 50, 64), (40_000, 1000, 16), (300, 30_000, 8)])
def test_embedding_grad_vs_torch(n, V, D, itype, isa, threads):
    rng = np.random.default_rng(n + V)
    idx = rng.integers(-V, V, n).astype(itype)  # duplicates and negative (from the end) indices
    dy = rng.standard_normal((n, D)).astype(np.float32)
    tw = t64(np.zeros((V, D)), True)
    F.embedding(torch.tensor(np.where(idx < 0, idx + V, idx), dtype=torch.int64), tw).backward(t64(dy))
    (dw,) = run_step("embedding_grad", [dy, idx], [empty(V, D)], [n, V, D, 0])
    assert_close(dw, tw.grad, rtol=1e-5, atol=1e-5 * np.sqrt(n / V + 1))
    acc = np.ones((V, D), np.float32)
    run_step("embedding_grad", [dy, idx], [acc], [n, V, D, 1])
    assert_close(acc, tw.grad + 1, rtol=1e-5, atol=1e-5 * np.sqrt(n / V + 1))


def test_norm_and_embedding_bad_parameters():
    x = np.zeros((4, 3), np.float32)
    c = np.ones(3, np.float32)
    with pytest.raises(KernelError, match="unbiased running variance needs at least 2 values"):
        bn_fwd(x[:1], c, c, c.copy(), c.copy(), 1e-3, 0.99, 1)
    with pytest.raises(KernelError, match=r"momentum must be in \[0, 1\]"):
        bn_fwd(x, c, c, c.copy(), c.copy(), 1e-3, 1.5, 0)
    with pytest.raises(KernelError, match="must be the running statistics' input slots"):
        run_step("batchnorm_train_fwd", [x, c, c, c.copy(), c.copy()], [empty(4, 3)] + [empty(3)] * 4, [4, 3, 0],
                 [1e-3, 0.99])
    with pytest.raises(KernelError, match=r"layer norm needs the per-row mean \(input 3\)"):
        run_step("layernorm_grad", [x, x, None, None, np.ones(4, np.float32)], [empty(4, 3)], [4, 3, 0, 1])
    idx = np.array([0, 2, 5, 1], np.int64)
    dw = empty(5, 3)
    with pytest.raises(KernelError, match=r"index 5 at position 2 is out of range for 5 rows \(valid: -5 to 4\)"):
        run_step("embedding_grad", [x, idx], [empty(5, 3)], [4, 5, 3, 0])
    idx[2] = -6
    with pytest.raises(KernelError, match="index -6 at position 2"):
        run_step("embedding_grad", [x, idx], [dw], [4, 5, 3, 1])
    assert np.isnan(dw).all()  # nothing written
    with pytest.raises(KernelError, match="indices must be int32 or int64, got float32"):
        run_step("embedding_grad", [x, idx.astype(np.float32)], [empty(5, 3)], [4, 5, 3, 0])
