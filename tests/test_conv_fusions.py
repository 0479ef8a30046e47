"""Conv2D fusion passes: passes/fuse_residual.py (Add(Conv2D(x), r) [-> Relu] becomes one
Conv2D with a residual input and the activation) and passes/fuse_concat.py (a channel Concat of
convs becomes one Conv2DConcat), only where that computes the same thing."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import engine
from engine.graph import Graph, Node, Value
from engine.passes import fuse_residual, optimize


def rand(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def conv_ref(x, w, b, pad):
    y = F.conv2d(torch.from_numpy(x).permute(0, 3, 1, 2).double(), torch.from_numpy(w).permute(3, 2, 0, 1).double(),
                 torch.from_numpy(b).double(), padding=pad)
    return y.permute(0, 2, 3, 1).numpy()


def block(shortcut_conv=False, act_after_add="Relu"):
    """x -> conv3x3+relu -> conv1x1 -> Add(., x or conv1x1(x)) -> act."""
    nodes = [Node("Conv2D", ["x", "w1", "b1"], ["h"], {"padding": "same", "activation": "relu"}),
             Node("Conv2D", ["h", "w2", "b2"], ["c"])]
    skip = "x"
    if shortcut_conv:
        nodes.append(Node("Conv2D", ["x", "w3", "b3"], ["s"]))
        skip = "s"
    nodes.append(Node("Add", ["c", skip], ["sum"] if act_after_add else ["y"]))
    if act_after_add:
        nodes.append(Node(act_after_add, ["sum"], ["y"]))
    weights = {"w1": rand(3, 3, 8, 8, seed=1) * 0.2, "b1": rand(8, seed=2), "w2": rand(1, 1, 8, 8, seed=3) * 0.3,
               "b2": rand(8, seed=4), "w3": rand(1, 1, 8, 8, seed=5) * 0.3, "b3": rand(8, seed=6)}
    return Graph([Value("x", (None, 6, 7, 8))], [Value("y", (None, 6, 7, 8))], nodes, weights)


def block_ref(g, x, shortcut_conv, act):
    w = g.initializers
    h = np.maximum(conv_ref(x, w["w1"], w["b1"], 1), 0).astype(np.float32)
    c = conv_ref(h, w["w2"], w["b2"], 0)
    s = conv_ref(x, w["w3"], w["b3"], 0) if shortcut_conv else x
    y = c + s
    return {"Relu": np.maximum(y, 0), "Sigmoid": 1 / (1 + np.exp(-y)), None: y}[act]


@pytest.mark.parametrize("shortcut_conv", [False, True])
@pytest.mark.parametrize("act", ["Relu", "Sigmoid", None])
def test_residual_block_fuses(shortcut_conv, act):
    g = block(shortcut_conv, act)
    opt = optimize(g)
    assert [n.op for n in opt.nodes] == ["Conv2D"] * (3 if shortcut_conv else 2)
    fused = [n for n in opt.nodes if len(n.inputs) > 3]
    assert len(fused) == 1 and fused[0].outputs == ["y"]
    assert fused[0].attrs.get("activation") == {"Relu": "relu", "Sigmoid": "sigmoid", None: None}[act]
    x = rand(3, 6, 7, 8, seed=9)
    np.testing.assert_allclose(engine.Model(g).predict(x), block_ref(g, x, shortcut_conv, act), rtol=1e-4, atol=1e-4)


def test_conv_output_also_wanted_is_not_fused():
    g = block()
    g = g.replace(outputs=g.outputs + [Value("c", (None, 6, 7, 8))])
    assert [n.op for n in fuse_residual(g).nodes].count("Add") == 1


def test_activation_before_the_add_is_not_fused():
    g = block(act_after_add=None)
    nodes = list(g.nodes)
    nodes[1] = Node("Conv2D", ["h", "w2", "b2"], ["c"], {"activation": "relu"})  # relu(conv) + x
    g = g.replace(nodes=nodes)
    assert [n.op for n in fuse_residual(g).nodes].count("Add") == 1
    x = rand(2, 6, 7, 8, seed=4)
    w = g.initializers
    h = np.maximum(conv_ref(x, w["w1"], w["b1"], 1), 0).astype(np.float32)
    want = np.maximum(conv_ref(h, w["w2"], w["b2"], 0), 0) + x
    np.testing.assert_allclose(engine.Model(g).predict(x), want, rtol=1e-4, atol=1e-4)


def test_broadcasting_add_is_not_fused():
    g = Graph([Value("x", (None, 6, 7, 8))], [Value("y", (None, 6, 7, 8))],
              [Node("Conv2D", ["x", "w", "b"], ["c"]), Node("Add", ["c", "shift"], ["y"])],
              {"w": rand(1, 1, 8, 8, seed=1), "b": rand(8, seed=2), "shift": rand(8, seed=3)})
    assert [n.op for n in fuse_residual(g).nodes] == ["Conv2D", "Add"]


def test_residual_computed_after_the_conv():
    # Add(f(x), conv(x)) with f after the conv in node order: the fused conv moves to the Add.
    g = Graph([Value("x", (None, 5, 5, 8))], [Value("y", (None, 5, 5, 8))],
              [Node("Conv2D", ["x", "w", "b"], ["c"], {"padding": "same"}), Node("Sigmoid", ["x"], ["s"]),
               Node("Add", ["s", "c"], ["y"])],
              {"w": rand(3, 3, 8, 8, seed=1) * 0.2, "b": rand(8, seed=2)})
    fused = fuse_residual(g)
    assert [n.op for n in fused.nodes] == ["Sigmoid", "Conv2D"]
    fused.validate()
    x = rand(2, 5, 5, 8, seed=5)
    want = conv_ref(x, g.initializers["w"], g.initializers["b"], 1) + 1 / (1 + np.exp(-x))
    np.testing.assert_allclose(engine.Model(fused).predict(x), want, rtol=1e-4, atol=1e-4)


# -- passes/fuse_concat.py: a channel Concat of convs writes each conv's slice directly ------

def fire(extra_reader=False, pool_part=False):
    """SqueezeNet's fire module: squeeze 1x1 -> [expand 1x1, expand 3x3] -> Concat (channels)."""
    nodes = [Node("Conv2D", ["x", "ws", "bs"], ["s"], {"activation": "relu"}),
             Node("Conv2D", ["s", "w1", "b1"], ["e1"], {"activation": "relu"}),
             Node("Conv2D", ["s", "w3", ""], ["e3"], {"padding": [1, 1, 1, 1], "activation": "leaky_relu"}),
             Node("Concat", ["e1", "e3"], ["y"], {"axis": 3})]
    outs = [Value("y", (None, 7, 6, 20))]
    if extra_reader:
        outs.append(Value("e1", (None, 7, 6, 12)))
    if pool_part:  # a depthwise conv and a dilated one: every algorithm writes a strided slice
        nodes[1] = Node("Conv2D", ["s", "wd", "bd"], ["e1"], {"groups": 6, "padding": "same"})
        nodes[2] = Node("Conv2D", ["s", "w3", ""], ["e3"], {"padding": [2, 2, 2, 2], "dilations": 2})
    weights = {"ws": rand(1, 1, 5, 6, seed=1), "bs": rand(6, seed=2), "w1": rand(1, 1, 6, 12, seed=3),
               "b1": rand(12, seed=4), "w3": rand(3, 3, 6, 8, seed=5) * 0.3,
               "wd": rand(3, 3, 1, 12, seed=6), "bd": rand(12, seed=7)}
    return Graph([Value("x", (None, 7, 6, 5))], outs, nodes, weights)


def fire_ref(g, x, dw=False):
    w = g.initializers
    t = lambda a: torch.from_numpy(a).permute(0, 3, 1, 2).double()  # noqa: E731
    k = lambda a: torch.from_numpy(a).permute(3, 2, 0, 1).double()  # noqa: E731
    s = F.relu(F.conv2d(t(x), k(w["ws"]), torch.from_numpy(w["bs"]).double()))
    if dw:
        e1 = F.conv2d(s, k(w["wd"]), torch.from_numpy(w["bd"]).double(), padding=1, groups=6)
        e3 = F.conv2d(s, k(w["w3"]), None, padding=2, dilation=2)
    else:
        e1 = F.relu(F.conv2d(s, k(w["w1"]), torch.from_numpy(w["b1"]).double()))
        e3 = F.leaky_relu(F.conv2d(s, k(w["w3"]), None, padding=1), 0.2)
    return torch.cat([e1, e3], 1).permute(0, 2, 3, 1).numpy()


@pytest.mark.parametrize("dw", [False, True])
def test_fire_concat_fuses(dw, isa, threads):
    g = fire(pool_part=dw)
    opt = optimize(g)
    assert [n.op for n in opt.nodes] == ["Conv2D", "Conv2DConcat"]
    x = rand(2, 7, 6, 5, seed=8)
    np.testing.assert_allclose(engine.Model(g).predict(x), fire_ref(g, x, dw), rtol=1e-4, atol=1e-4)


def test_concat_of_a_conv_read_elsewhere_is_kept():
    g = fire(extra_reader=True)
    assert "Concat" in [n.op for n in optimize(g).nodes]
    out = engine.Model(g).run({"x": rand(1, 7, 6, 5, seed=2)})
    np.testing.assert_array_equal(out["y"][..., :12], out["e1"])
