"""The ReLU backward folded into the max-pool backward (passes/fuse_pool_relu_grad.py): the
same gradients as torch, NaN, zeros and negatives included, and the ActGrad really gone."""

import numpy as np
import pytest

from engine.autograd import GradBuilder, vjp  # noqa: F401
from engine.graph import Graph, Node, Value
from engine.passes import fuse_pool_relu_grad

torch = pytest.importorskip("torch")


def graph(fused_relu: bool, pool_attrs: dict):
    w = np.random.default_rng(1).standard_normal((3, 3, 2, 4)).astype(np.float32) * 0.5
    b = np.random.default_rng(2).standard_normal(4).astype(np.float32) * 0.1
    nodes = ([Node("Conv2D", ["x", "w", "b"], ["y"], {"activation": "relu", "padding": "same"})] if fused_relu else
             [Node("Conv2D", ["x", "w", "b"], ["z"], {"padding": "same"}), Node("Relu", ["z"], ["y"])])
    nodes.append(Node("MaxPool2D", ["y"], ["p"], pool_attrs))
    return Graph([Value("x", (None, 7, 7, 2))], [Value("p", None)], nodes, {"w": w, "b": b}), w, b


@pytest.mark.parametrize("fused_relu", [True, False])
@pytest.mark.parametrize("pool_attrs", [{"pool_size": [2, 2]}, {"pool_size": [3, 3], "strides": [1, 1]}])
def test_gradients_equal_torch(fused_relu, pool_attrs):
    g, w, b = graph(fused_relu, pool_attrs)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 7, 7, 2)).astype(np.float32)
    x[0, :3, :3, :] = 0.0  # windows where the ReLU's output is exactly 0 (derivative 0)
    x[1, 2, 2, 0] = np.nan  # a NaN reaches the pool: it wins the window and carries dy
    k, s = pool_attrs["pool_size"], pool_attrs.get("strides", pool_attrs["pool_size"])
    oh = (7 - k[0]) // s[0] + 1
    dy = rng.standard_normal((3, oh, oh, 4)).astype(np.float32)
    got = vjp(g, {"x": x}, ["w", "b"], {"p": dy}, wrt_inputs=("x",), optimize=True)

    tx, tw, tb = (torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in (x, w, b))
    z = torch.nn.functional.conv2d(tx.permute(0, 3, 1, 2), tw.permute(3, 2, 0, 1), tb, padding=1)
    p = torch.nn.functional.max_pool2d(torch.relu(z), k, s)
    p.backward(torch.tensor(dy, dtype=torch.float64).permute(0, 3, 1, 2))
    np.testing.assert_allclose(got["x"], tx.grad.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got["w"], tw.grad.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(got["b"], tb.grad.numpy(), rtol=1e-4, atol=1e-4)


def test_the_pass_removes_the_relu_backward():
    from engine.autograd import differentiate, training_graph
    from engine.ops.registry import TensorType

    g, _, _ = graph(True, {"pool_size": [2, 2]})
    types = {"x": TensorType((2, 7, 7, 2), "float32"), "dp": TensorType((2, 3, 3, 4), "float32")}
    gb, _, grads = differentiate(g, types, ["w", "b"], output_grads={"p": "dp"})
    outs = [gb.node("Identity", [grads["w"]])]
    tg = training_graph(gb, [Value("x", (2, 7, 7, 2)), Value("dp", (2, 3, 3, 4)), Value("w", (3, 3, 2, 4)),
                             Value("b", (4,))], outs, {})
    before = [n.op for n in tg.nodes]
    after = fuse_pool_relu_grad(tg)
    assert "ActGrad" in before and "ActGrad" not in [n.op for n in after.nodes]
    assert [n.attrs.get("relu") for n in after.nodes if n.op == "Pool2DGrad"] == [1]
