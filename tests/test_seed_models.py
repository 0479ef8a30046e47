"""The seed examples' networks, built with engine.nn as users write them, checked end to
end against the same networks built in PyTorch with the same weights."""

import numpy as np
import pytest
import torch

import engine
from engine.nn import (Conv2D, Dense, Flatten, Input, MaxPooling2D, Model, Sequential,
                       set_random_seed)

torch.set_num_threads(1)


def seed000_cnn():
    model = Sequential()
    model.add(Conv2D(32, (3, 3), activation="relu", input_shape=(28, 28, 1)))
    model.add(MaxPooling2D((2, 2)))
    model.add(Flatten())
    model.add(Dense(128, activation="relu"))
    model.add(Dense(10, activation="softmax"))
    return model


def torch_cnn(weights):
    k, b, w1, b1, w2, b2 = (torch.from_numpy(w) for w in weights)

    def forward(x_nhwc):
        x = torch.from_numpy(x_nhwc).permute(0, 3, 1, 2)
        x = torch.relu(torch.nn.functional.conv2d(x, k.permute(3, 2, 0, 1), b))
        x = torch.nn.functional.max_pool2d(x, 2)
        x = x.permute(0, 2, 3, 1).reshape(x.shape[0], -1)  # Keras flattens in HWC order
        x = torch.relu(x @ w1 + b1)
        return torch.softmax(x @ w2 + b2, dim=-1).numpy()
    return forward


def seed001_mlp():
    input_layer = Input(shape=(1000,))
    hidden_layer = Dense(128, activation="relu")(input_layer)
    output_layer = Dense(10, activation="softmax")(hidden_layer)
    return Model(inputs=input_layer, outputs=output_layer)


def torch_dense_stack(weights, activations):
    def forward(x):
        h = torch.from_numpy(x)
        for (w, b), act in zip(zip(weights[::2], weights[1::2]), activations):
            h = h @ torch.from_numpy(w) + torch.from_numpy(b)
            h = {"relu": torch.relu, "softmax": lambda t: torch.softmax(t, -1),
                 None: lambda t: t}[act](h)
        return h.numpy()
    return forward


def randomize(model, rng):
    """Non-zero biases too, so a bias bug cannot hide behind Keras's zero init."""
    model.set_weights([rng.normal(0, 0.2, w.shape).astype(np.float32) for w in model.get_weights()])


@pytest.mark.parametrize("batch", [1, 7, 64])
def test_seed000_cnn_matches_torch(rng, batch, tmp_path):
    model = seed000_cnn()
    randomize(model, rng)
    x = rng.random((batch, 28, 28, 1), dtype=np.float32)
    want = torch_cnn(model.get_weights())(x)
    got = model.predict(x)
    assert got.shape == (batch, 10)
    assert np.abs(got - want).max() <= 1e-4
    model.save(tmp_path / "cnn.engine")
    loaded = engine.load(tmp_path / "cnn.engine")
    assert np.abs(loaded.predict(x) - want).max() <= 1e-4


@pytest.mark.parametrize("batch", [1, 5, 64])
def test_seed001_mlp_matches_torch(rng, batch, tmp_path):
    model = seed001_mlp()
    randomize(model, rng)
    x = rng.random((batch, 1000), dtype=np.float32)
    want = torch_dense_stack(model.get_weights(), ["relu", "softmax"])(x)
    assert np.abs(model.predict(x) - want).max() <= 1e-4
    model.save(tmp_path / "mlp.engine")
    assert np.abs(engine.load(tmp_path / "mlp.engine").predict(x) - want).max() <= 1e-4


def test_seed003_dense_on_flattened_images(rng):
    model = Sequential()
    model.add(Dense(128, activation="relu", input_shape=(28 * 28,)))
    model.add(Dense(10, activation="softmax"))
    randomize(model, rng)
    x = rng.random((33, 784), dtype=np.float32)
    probs = model.predict(x)
    want = torch_dense_stack(model.get_weights(), ["relu", "softmax"])(x)
    assert np.abs(probs - want).max() <= 1e-4
    np.testing.assert_array_equal(probs.argmax(1), want.argmax(1))


def test_seed004_regression_mlp(rng):
    # The PyTorch MLP of seed 4 (1000 -> 500 -> 100 -> 1), written with engine.nn, fed the
    # torch module's own weights (nn.Linear stores (out, in): transpose to Keras's (in, out)).
    tm = torch.nn.Sequential(torch.nn.Linear(1000, 500), torch.nn.ReLU(), torch.nn.Linear(500, 100),
                             torch.nn.ReLU(), torch.nn.Linear(100, 1)).eval()
    model = Sequential([Input((1000,)), Dense(500, activation="relu"), Dense(100, activation="relu"),
                        Dense(1)])
    ws = []
    for layer in tm:
        if isinstance(layer, torch.nn.Linear):
            ws += [layer.weight.detach().numpy().T.copy(), layer.bias.detach().numpy().copy()]
    model.set_weights(ws)
    x = rng.standard_normal((1, 1000), dtype=np.float32)
    with torch.inference_mode():
        want = tm(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(model.predict(x), want, atol=1e-4, rtol=1e-4)


def test_default_init_is_deterministic_with_seed():
    set_random_seed(7)
    a = seed000_cnn().get_weights()
    set_random_seed(7)
    b = seed000_cnn().get_weights()
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)
