"""engine.nn: Keras's constructors, weight order/layouts, initialisers, summary, layers."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import engine
from engine import nn
from helpers import rand


def test_weight_order_and_layouts():
    m = nn.Sequential([nn.Input((28, 28, 3)), nn.Conv2D(8, (5, 3), activation="relu"),
                       nn.Flatten(), nn.Dense(4, use_bias=False), nn.Dense(2)])
    shapes = [w.shape for w in m.get_weights()]
    assert shapes == [(5, 3, 3, 8), (8,), (24 * 26 * 8, 4), (4, 2), (2,)]
    assert m.count_params() == sum(math.prod(s) for s in shapes)


def test_glorot_uniform_and_zero_bias():
    nn.set_random_seed(0)
    d = nn.Dense(300)
    d._build_for((None, 200))
    kernel, bias = d.get_weights()
    limit = math.sqrt(6 / (200 + 300))
    assert kernel.dtype == np.float32 and np.abs(kernel).max() <= limit
    assert np.abs(kernel).max() > 0.95 * limit           # spans the range
    assert abs(kernel.var() - limit ** 2 / 3) < 0.05 * limit ** 2 / 3  # uniform variance
    assert not bias.any()
    c = nn.Conv2D(16, 3)
    c._build_for((None, 10, 10, 4))
    climit = math.sqrt(6 / (9 * 4 + 9 * 16))
    assert np.abs(c.get_weights()[0]).max() <= climit


def test_set_weights_validates_and_copies():
    m = nn.Sequential([nn.Input((3,)), nn.Dense(2)])
    with pytest.raises(engine.ShapeError, match=r"\(3, 2\)"):
        m.set_weights([np.zeros((2, 3), np.float32), np.zeros(2, np.float32)])
    with pytest.raises(engine.ShapeError, match="expected 2 weight arrays"):
        m.set_weights([np.zeros((3, 2), np.float32)])
    w = [np.ones((3, 2), np.float32), np.zeros(2, np.float32)]
    m.set_weights(w)
    w[0][:] = 5  # the model holds its own copy
    np.testing.assert_allclose(m.predict(np.ones((1, 3), np.float32)), [[3, 3]])


def test_predict_sees_new_weights():
    m = nn.Sequential([nn.Input((2,)), nn.Dense(1)])
    x = np.ones((1, 2), np.float32)
    m.set_weights([np.ones((2, 1), np.float32), np.zeros(1, np.float32)])
    assert m.predict(x)[0, 0] == 2
    m.set_weights([np.full((2, 1), 3, np.float32), np.ones(1, np.float32)])
    assert m.predict(x)[0, 0] == 7


def test_summary_lists_layers_and_params():
    lines = []
    m = nn.Sequential([nn.Input((28, 28, 1)), nn.Conv2D(32, (3, 3), name="c"),
                       nn.MaxPooling2D(name="p"), nn.Flatten(name="f"), nn.Dense(10, name="d")])
    m.summary(print_fn=lines.append)
    text = "\n".join(lines)
    assert "c (Conv2D)" in text and "(None, 26, 26, 32)" in text and "320" in text
    assert "(None, 13, 13, 32)" in text and "(None, 5408)" in text and "54,090" in text
    assert f"Total params: {m.count_params():,}" in text


def test_sequential_needs_an_input_shape():
    m = nn.Sequential([nn.Dense(3)])
    with pytest.raises(engine.EngineError, match="input shape is unknown"):
        m.predict(np.zeros((1, 2), np.float32))
    m.build((None, 2))
    assert m.predict(np.zeros((4, 2), np.float32)).shape == (4, 3)


def test_unknown_activation_and_bad_args():
    with pytest.raises(engine.EngineError, match="unknown activation 'relux'"):
        nn.Dense(3, activation="relux")
    with pytest.raises(engine.EngineError, match="units"):
        nn.Dense(0)
    with pytest.raises(engine.EngineError, match="unsupported argument"):
        nn.Dense(3, kernel_regulariser="l2")  # a misspelt argument (regularizers are Keras arguments)
    with pytest.raises(engine.EngineError, match="padding"):
        nn.Conv2D(3, 3, padding="full")


def test_functional_multi_output():
    x = nn.Input((6,), name="features")
    h = nn.Dense(5, activation="tanh")(x)
    a = nn.Dense(2, name="head_a")(h)
    b = nn.Dense(3, activation="sigmoid", name="head_b")(h)
    m = nn.Model(inputs=x, outputs=[a, b])
    w = m.get_weights()
    xs = rand(4, 6)
    ya, yb = m.predict(xs)
    hh = np.tanh(xs @ w[0] + w[1])
    np.testing.assert_allclose(ya, hh @ w[2] + w[3], atol=1e-5)
    np.testing.assert_allclose(yb, 1 / (1 + np.exp(-(hh @ w[4] + w[5]))), atol=1e-5)


def test_functional_rejects_unlisted_inputs():
    x, z = nn.Input((2,)), nn.Input((2,))
    y = nn.Dense(1)(x)
    with pytest.raises(engine.EngineError, match="does not lead to any output"):
        nn.Model(inputs=[x, z], outputs=y)


def _torch_nchw(fn, x, *args, **kw):
    y = fn(torch.from_numpy(x).permute(0, 3, 1, 2), *args, **kw)
    return y.permute(0, 2, 3, 1).numpy()


@pytest.mark.parametrize("padding,strides,dilation,size", [
    ("same", 1, 1, (9, 11)), ("same", 2, 1, (10, 7)), ("valid", 2, 1, (9, 9)),
    ("valid", 1, 2, (12, 10)), ("same", 3, 1, (8, 13))])
def test_conv2d_layer_padding_modes(padding, strides, dilation, size):
    layer = nn.Conv2D(6, (3, 2), strides=strides, padding=padding, dilation_rate=dilation,
                      activation="sigmoid")
    m = nn.Sequential([nn.Input(size + (3,)), layer])
    k, b = m.get_weights()
    b = rand(6, seed=3)
    m.set_weights([k, b])
    x = rand(2, *size, 3)
    xt = torch.from_numpy(x).permute(0, 3, 1, 2)
    if padding == "same":  # TensorFlow's rule: extra padding at the end
        pads = []
        for n, kk, s in zip(size, (3, 2), (strides, strides)):
            total = max((math.ceil(n / s) - 1) * s + (kk - 1) * dilation + 1 - n, 0)
            pads.append((total // 2, total - total // 2))
        xt = F.pad(xt, (pads[1][0], pads[1][1], pads[0][0], pads[0][1]))
    want = torch.sigmoid(F.conv2d(xt, torch.from_numpy(k).permute(3, 2, 0, 1), torch.from_numpy(b),
                                  stride=strides, dilation=dilation)).permute(0, 2, 3, 1).numpy()
    got = m.predict(x)
    assert got.shape == want.shape == (2,) + layer.output_shape[1:]
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_pooling_and_activation_layers():
    x = rand(3, 8, 9, 4)
    m = nn.Sequential([nn.Input((8, 9, 4)), nn.AveragePooling2D((2, 3)), nn.ReLU(),
                       nn.MaxPooling2D((2, 2), strides=1), nn.Activation("tanh")])
    want = np.tanh(_torch_nchw(F.max_pool2d, np.maximum(_torch_nchw(F.avg_pool2d, x, (2, 3)), 0),
                               2, stride=1))
    np.testing.assert_allclose(m.predict(x), want, atol=1e-6)


def test_global_pool_reshape_dropout_softmax_leaky_relu():
    x = rand(2, 5, 6, 8)
    m = nn.Sequential([nn.Input((5, 6, 8)), nn.GlobalAveragePooling2D(), nn.Dropout(0.5),
                       nn.Reshape((2, 4)), nn.ReLU(negative_slope=0.1), nn.Softmax(axis=1)])
    h = x.mean(axis=(1, 2)).reshape(2, 2, 4)
    h = np.where(h > 0, h, 0.1 * h)
    want = np.exp(h) / np.exp(h).sum(1, keepdims=True)
    np.testing.assert_allclose(m.predict(x), want, atol=1e-6)


def test_relu_max_value_is_clip():
    m = nn.Sequential([nn.Input((5,)), nn.ReLU(max_value=0.5)])
    x = np.array([[-1, 0.2, 0.5, 0.7, 3]], np.float32)
    np.testing.assert_array_equal(m.predict(x), np.clip(x, 0, 0.5))


# -- weight changes through any API reach predict and save (issue: stale packed weights) ----

def test_layer_set_weights_after_predict_is_seen_and_saved(tmp_path):
    m = nn.Sequential([nn.Input((3,)), nn.Dense(2, kernel_initializer="ones")])
    x = np.ones((1, 3), np.float32)
    np.testing.assert_array_equal(m.predict(x), [[3, 3]])
    m.layers[0].set_weights([np.zeros((3, 2)), np.zeros(2)])
    np.testing.assert_array_equal(m.predict(x), [[0, 0]])
    m.save(tmp_path / "m.engine")
    np.testing.assert_array_equal(engine.load(tmp_path / "m.engine").predict(x), [[0, 0]])


def test_layer_weights_assignment_is_seen_and_in_place_edits_refused():
    d = nn.Dense(2, kernel_initializer="ones")
    m = nn.Sequential([nn.Input((3,)), d])
    x = np.ones((1, 3), np.float32)
    m.predict(x)
    d.weights = [np.full((3, 2), 2.0), np.ones(2)]
    np.testing.assert_array_equal(m.predict(x), [[7, 7]])
    with pytest.raises(ValueError, match="read-only"):
        d.weights[0][:] = 0          # would bypass the packed copy: refused, not ignored
    np.testing.assert_array_equal(m.predict(x), [[7, 7]])


def test_a_layer_shared_by_two_models_updates_both():
    d = nn.Dense(1, kernel_initializer="ones")
    a = nn.Sequential([nn.Input((2,)), d])
    i = nn.Input((2,))
    b = nn.Model(i, d(i))
    x = np.ones((1, 2), np.float32)
    assert a.predict(x)[0, 0] == 2 and b.predict(x)[0, 0] == 2
    d.set_weights([np.full((2, 1), 5.0), np.ones(1)])
    assert a.predict(x)[0, 0] == 11 and b.predict(x)[0, 0] == 11


def test_network_set_weights_is_all_or_nothing():
    m = nn.Sequential([nn.Input((2,)), nn.Dense(2, kernel_initializer="ones"), nn.Dense(1)])
    before = m.get_weights()
    bad = [np.zeros((2, 2)), np.zeros(2), np.zeros((3, 1)), np.zeros(1)]  # the last layer's is wrong
    with pytest.raises(engine.ShapeError, match=r"\(2, 1\)"):
        m.set_weights(bad)
    for w, b in zip(m.get_weights(), before):
        np.testing.assert_array_equal(w, b)


def test_loaded_model_set_weights_rebuilds_plans(tmp_path):
    nn.Sequential([nn.Input((3,)), nn.Dense(2, activation="relu", kernel_initializer="ones")]).save(
        tmp_path / "m.engine")
    m = engine.load(tmp_path / "m.engine")
    x = np.ones((4, 3), np.float32)
    np.testing.assert_array_equal(m.predict(x), np.full((4, 2), 3))
    name = next(k for k in m.weights if k.endswith("kernel"))
    m.set_weights({name: np.full((3, 2), 2.0)})
    np.testing.assert_array_equal(m.predict(x), np.full((4, 2), 6))
    with pytest.raises(ValueError, match="read-only"):
        m.weights[name][:] = 0
    with pytest.raises(engine.ShapeError, match=r"\(3, 2\)"):
        m.set_weights({name: np.zeros((2, 3))})
    with pytest.raises(engine.EngineError, match="no weight 'nope'"):
        m.set_weights({"nope": np.zeros(1)})
    np.testing.assert_array_equal(m.predict(x), np.full((4, 2), 6))  # failed calls changed nothing


# -- shared layers, Reshape ------------------------------------------------------------------

def test_a_layer_applied_twice_shares_its_weights_like_keras():
    import torch

    i = nn.Input((8,))
    d = nn.Dense(8, activation="tanh")
    m = nn.Model(i, d(d(i)))
    assert len(m.layers) == 1 and m.count_params() == 8 * 8 + 8
    x = rand(5, 8)
    k, b = (torch.from_numpy(w) for w in d.get_weights())
    want = torch.tanh(torch.tanh(torch.from_numpy(x) @ k + b) @ k + b).numpy()
    np.testing.assert_allclose(m.predict(x), want, atol=1e-6)
    # a shared layer called on two different tensors, each call its own output
    i2 = nn.Input((8,))
    shared = nn.Dense(3, activation="softmax")
    two = nn.Model(i2, [shared(i2), shared(d(i2))])
    y1, y2 = two.predict(x)
    np.testing.assert_allclose(y1.sum(1), 1, atol=1e-6)
    np.testing.assert_allclose(y2, shared_ref(shared, np.tanh(x @ d.get_weights()[0] + d.get_weights()[1])),
                               atol=1e-6)


def shared_ref(layer, h):
    k, b = layer.get_weights()
    z = h @ k + b
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


@pytest.mark.parametrize("target,want", [((-1, 4), (3, 6, 4)), ((6, -1), (3, 6, 4)), ((24,), (3, 24)),
                                         ((2, 3, 4), (3, 2, 3, 4)), ((-1,), (3, 24))])
def test_reshape_minus_one_excludes_the_batch_axis(target, want):
    m = nn.Sequential([nn.Input((4, 6)), nn.Reshape(target)])
    x = rand(3, 4, 6)
    y = m.predict(x)
    assert y.shape == want
    np.testing.assert_array_equal(y, x.reshape(want))
    assert m.output_shape == (None,) + want[1:]


def test_reshape_rejects_bad_targets():
    with pytest.raises(engine.EngineError, match="at most one -1"):
        nn.Reshape((-1, -1, 4))
    with pytest.raises(engine.EngineError, match="positive ints"):
        nn.Reshape((0, 4))
    with pytest.raises(engine.ShapeError, match="cannot reshape"):
        nn.Sequential([nn.Input((4, 6)), nn.Reshape((5, -1))])
