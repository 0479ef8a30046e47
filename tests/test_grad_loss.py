"""softmax_xent (fused softmax cross-entropy: loss and gradient w.r.t. the logits) against
torch's cross_entropy and autograd in float64: sparse int32/int64 labels and one-hot /
probability targets, every reduction, per-sample weights, an upstream gradient, in place,
large logits, NaN rows, out-of-range labels."""

import numpy as np
import pytest

from engine import KernelError
from grad_helpers import Alias, assert_close, empty, run_step

torch = pytest.importorskip("torch")
F = torch.nn.functional

NONE, SUM, MEAN, WMEAN = 0, 1, 2, 3


def xent(z, lab, weight=None, dloss=None, red=MEAN, grad=True, sparse=True, out_grad=None):
    N, C = z.shape
    loss = empty(N if red == NONE else 1)
    outs = [loss] + ([out_grad if out_grad is not None else empty(N, C)] if grad else [])
    return run_step("softmax_xent", [z, lab, weight, dloss], outs, [N, C, red, int(sparse)])


def reference(z, lab, weight, dloss, red, sparse):
    t = torch.tensor(z, dtype=torch.float64, requires_grad=True)
    if sparse:
        per = F.cross_entropy(t, torch.tensor(lab, dtype=torch.int64), reduction="none")
    else:
        per = F.cross_entropy(t, torch.tensor(lab, dtype=torch.float64), reduction="none")
    w = torch.ones(len(z), dtype=torch.float64) if weight is None else torch.tensor(weight, dtype=torch.float64)
    per = per * w
    if red == NONE:
        loss = per
        up = torch.ones_like(per) if dloss is None else torch.tensor(dloss, dtype=torch.float64)
    else:
        loss = {SUM: per.sum(), MEAN: per.sum() / len(z), WMEAN: per.sum() / w.sum()}[red].reshape(1)
        up = torch.ones(1, dtype=torch.float64) if dloss is None else torch.tensor(dloss, dtype=torch.float64)
    loss.backward(up)
    return loss.detach().numpy(), t.grad.numpy()


@pytest.mark.parametrize("sparse", [True, False])
@pytest.mark.parametrize("red", [NONE, SUM, MEAN, WMEAN])
def test_xent_vs_torch(red, sparse, isa, threads):
    rng = np.random.default_rng(red * 10 + sparse)
    for N, C in [(1, 1), (1, 10), (5, 2), (7, 37), (300, 10), (64, 1000), (2000, 33)]:
        z = (3 * rng.standard_normal((N, C))).astype(np.float32)
        if sparse:
            lab = rng.integers(0, C, N).astype(np.int64 if N % 2 else np.int32)
        elif N % 2:  # one-hot
            lab = np.eye(C, dtype=np.float32)[rng.integers(0, C, N)]
        else:  # probabilities (rows not summing to 1 in one case: Σt scales the softmax term)
            lab = rng.uniform(0, 1, (N, C)).astype(np.float32)
            lab /= lab.sum(1, keepdims=True) if N != 300 else 1.0
        weight = rng.uniform(0.1, 2, N).astype(np.float32) if N > 1 else None
        dloss = rng.uniform(0.5, 2, N if red == NONE else 1).astype(np.float32) if C != 33 else None
        loss, g = xent(z, lab, weight, dloss, red, sparse=sparse)
        want_loss, want_g = reference(z, lab, weight, dloss, red, sparse)
        assert_close(loss, want_loss, rtol=2e-5, atol=1e-5, what=f"loss N={N} C={C}")
        assert_close(g, want_g, rtol=2e-4, atol=2e-7, what=f"grad N={N} C={C}")


def test_xent_in_place_loss_only_and_stability():
    rng = np.random.default_rng(3)
    z = (rng.standard_normal((9, 21)) * 5 + 1e4).astype(np.float32)  # logsumexp without the max overflows
    z[1] -= 2e4
    lab = rng.integers(0, 21, 9)
    want_loss, want_g = reference(z, lab, None, None, MEAN, True)
    loss, g = run_step("softmax_xent", [z.copy(), lab, None, None], [empty(1), Alias(0)], [9, 21, MEAN, 1])
    assert_close(loss, want_loss, rtol=1e-4, atol=1e-4)
    assert_close(g, want_g, rtol=1e-3, atol=1e-7)
    (only,) = xent(z, lab, grad=False)
    np.testing.assert_array_equal(only, loss)
    t = rng.uniform(0, 1, (9, 21)).astype(np.float32)
    want_loss, want_g = reference(z, t, None, None, SUM, False)
    loss, g = run_step("softmax_xent", [z.copy(), t, None, None], [empty(1), Alias(0)], [9, 21, SUM, 0])
    assert_close(loss, want_loss, rtol=1e-4, atol=1e-3)
    assert_close(g, want_g, rtol=1e-3, atol=1e-6)


def test_xent_nan_logits_stay_in_their_row():
    z = np.zeros((3, 4), np.float32)
    z[1, 2] = np.nan
    loss, g = xent(z, np.array([0, 1, 3]), red=NONE)
    assert np.isnan(loss[1]) and np.isnan(g[1]).all()
    assert np.isfinite(loss[[0, 2]]).all() and np.isfinite(g[[0, 2]]).all()
    (total,) = xent(z, np.array([0, 1, 3]), red=MEAN, grad=False)
    assert np.isnan(total[0])


def test_xent_bad_labels_and_parameters():
    z = np.zeros((4, 3), np.float32)
    for bad, v in [(np.array([0, 1, 3, 2], np.int64), 3), (np.array([0, -1, 2, 2], np.int32), -1)]:
        g = empty(4, 3)
        pos = int(np.flatnonzero(bad == v)[0])
        with pytest.raises(KernelError, match=rf"label {v} of sample {pos} is out of range for 3 classes \(valid: 0 to 2\)"):
            xent(z, bad, out_grad=g)
        assert np.isnan(g).all()  # nothing written
    lab = np.array([0, 1, 2, 2])
    with pytest.raises(KernelError, match="reduction must be 0"):
        xent(z, lab, red=4)
    with pytest.raises(KernelError, match="sparse labels must be int32 or int64, got float32"):
        xent(z, lab.astype(np.float32))
    with pytest.raises(KernelError, match="targets must be float32, got int64"):
        xent(z, lab, sparse=False)
    with pytest.raises(KernelError, match="C >= 1"):
        run_step("softmax_xent", [z, lab, None, None], [empty(1)], [4, 0, MEAN, 1])
    with pytest.raises(KernelError, match="input types are required"):
        run_step("softmax_xent", [z, lab, None, None], [empty(1)], [4, 3, MEAN, 1], types=False)
