"""sum_to_shape (a broadcast input's gradient) against torch's sum_to_size in float64, and
bias_grad (column sums): random shapes, every ISA, 1 and 2 threads, the same bits for any
thread count, bad shapes refused."""

import numpy as np
import pytest

from engine import KernelError
from grad_helpers import assert_close, empty, run_step

torch = pytest.importorskip("torch")

CASES = [((5,), (1,)), ((5, 3), (1, 3)), ((5, 3), (5, 1)), ((2, 3, 4, 5), (1, 3, 1, 5)), ((2, 3, 4, 5), (2, 1, 4, 1)),
         ((2, 3, 4, 5), (1, 1, 1, 1)), ((1, 1, 1), (1, 1, 1)), ((7, 1, 9), (1, 1, 9)), ((4,), (4,)), ((0, 3), (1, 3)),
         ((3, 1, 2), (1, 1, 2)), ((100_000, 10), (1, 10)), ((3, 200_000), (3, 1)), ((64, 7, 7, 33), (1, 1, 1, 33)),
         ((6, 5, 4, 3, 2), (6, 1, 4, 1, 2)), ((), ())]


def sum_to_shape(x, shape):
    nd = x.ndim
    return run_step("sum_to_shape", [x], [empty(*shape)], [nd, *x.shape, *shape])[0]


@pytest.mark.parametrize("xs,ys", CASES)
def test_sum_to_shape_vs_torch(xs, ys, isa, threads):
    x = np.random.default_rng(len(xs)).standard_normal(xs).astype(np.float32)
    want = torch.tensor(x, dtype=torch.float64).sum_to_size(ys) if xs else x
    got = sum_to_shape(x, ys)
    rows = max(1, int(np.prod(xs)) // max(1, int(np.prod(ys))))
    assert_close(got, want, rtol=1e-5, atol=1e-6 * np.sqrt(rows), what=f"{xs} -> {ys}")


def test_sums_do_not_depend_on_threads(set_threads):
    x = np.random.default_rng(0).standard_normal((300_001, 5)).astype(np.float32)
    set_threads(1)
    a = sum_to_shape(x, (1, 5))
    b = run_step("bias_grad", [x], [empty(5)], [300_001, 5, 0])[0]
    set_threads(2)
    np.testing.assert_array_equal(sum_to_shape(x, (1, 5)), a)
    np.testing.assert_array_equal(run_step("bias_grad", [x], [empty(5)], [300_001, 5, 0])[0], b)
    np.testing.assert_array_equal(a.ravel(), b)


@pytest.mark.parametrize("rows,cols", [(1, 1), (3, 17), (1000, 10), (64, 4099), (70_000, 64)])
def test_bias_grad_vs_torch(rows, cols, isa, threads):
    rng = np.random.default_rng(rows)
    dy = rng.standard_normal((rows, cols)).astype(np.float32)
    b = torch.zeros(cols, dtype=torch.float64, requires_grad=True)
    (torch.tensor(dy, dtype=torch.float64) * 0 + b).backward(torch.tensor(dy, dtype=torch.float64))
    (got,) = run_step("bias_grad", [dy], [empty(cols)], [rows, cols, 0])
    assert_close(got, b.grad, rtol=1e-5, atol=1e-5)
    acc = np.ones(cols, np.float32)
    run_step("bias_grad", [dy], [acc], [rows, cols, 1])
    assert_close(acc, b.grad + 1, rtol=1e-5, atol=1e-5)


def test_bad_shapes():
    x = np.zeros((2, 3), np.float32)
    with pytest.raises(KernelError, match=r"dim 1 of y must be 1 or x's \(3\), got 2"):
        run_step("sum_to_shape", [x], [empty(2, 2)], [2, 2, 3, 2, 2])
    with pytest.raises(KernelError, match="expected 1 \\+ 2\\*ndim ints"):
        run_step("sum_to_shape", [x], [empty(2, 1)], [2, 2, 3, 2])
    with pytest.raises(KernelError, match="negative size"):
        run_step("bias_grad", [x], [empty(3)], [-2, 3, 0])
