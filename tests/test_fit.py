"""compile / fit / evaluate on engine.nn models and loaded models: learning on real data
(scikit-learn's digits), the Keras loop's options, checkpoints and resume, and bad input."""

import math

import numpy as np
import pytest

import engine
from engine import optimizers
from engine.callbacks import EarlyStopping, ModelCheckpoint, TerminateOnNaN
from engine.errors import EngineError
from engine.fit import TrainingError
from engine.nn import Dense, Input, Sequential


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = (d.data / 16.0).astype(np.float32)
    return train_test_split(x, d.target, test_size=0.25, random_state=0)


def mlp(seed=0, hidden=64):
    engine.nn.set_random_seed(seed)
    return Sequential([Input((64,)), Dense(hidden, activation="relu"), Dense(10, activation="softmax")])


def test_mlp_learns_digits(digits):
    xt, xv, yt, yv = digits
    m = mlp()
    m.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    h = m.fit(xt, yt, epochs=25, batch_size=32, verbose=0, seed=1)
    assert h.history["loss"][-1] < h.history["loss"][0] / 4
    loss, acc = m.evaluate(xv, yv, verbose=0)
    assert acc >= 0.95
    assert acc == pytest.approx(np.mean(m.predict(xv).argmax(1) == yv), abs=1e-6)
    assert math.isfinite(loss) and loss < 0.3


def test_cnn_learns_digits(digits):
    from engine.nn import Conv2D, Flatten, MaxPooling2D

    xt, xv, yt, yv = digits
    engine.nn.set_random_seed(0)
    m = Sequential([Input((8, 8, 1)), Conv2D(32, (3, 3), activation="relu"), MaxPooling2D((2, 2)), Flatten(),
                    Dense(64, activation="relu"), Dense(10, activation="softmax")])
    m.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    m.fit(xt.reshape(-1, 8, 8, 1), yt, epochs=20, batch_size=32, verbose=0, seed=0)
    _, acc = m.evaluate(xv.reshape(-1, 8, 8, 1), yv, verbose=0)
    assert acc >= 0.97


def test_one_hot_labels_and_validation_split(digits):
    xt, _, yt, _ = digits
    m = mlp()
    m.compile(optimizer=optimizers.Adam(3e-3), loss="categorical_crossentropy", metrics=["accuracy"])
    onehot = np.eye(10, dtype=np.float32)[yt]
    h = m.fit(xt, onehot, epochs=3, batch_size=64, validation_split=0.2, verbose=0, seed=0)
    assert set(h.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert len(h.history["val_loss"]) == 3
    # Keras holds out the last samples (before shuffling): evaluating them gives val_loss
    split = int(len(xt) * 0.8)
    assert m.evaluate(xt[split:], onehot[split:], verbose=0)[0] == pytest.approx(h.history["val_loss"][-1], rel=1e-5)


def test_fit_is_reproducible_with_a_seed(digits):
    xt, _, yt, _ = digits
    runs = []
    for _ in range(2):
        m = mlp(seed=3)
        m.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
        m.fit(xt, yt, epochs=2, batch_size=50, verbose=0, seed=7)
        runs.append(m.get_weights())
    for a, b in zip(*runs):
        np.testing.assert_array_equal(a, b)


def test_save_load_predict_after_fit(digits, tmp_path):
    xt, xv, yt, _ = digits
    m = mlp()
    m.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    m.fit(xt, yt, epochs=2, batch_size=32, verbose=0, seed=0)
    m.save(tmp_path / "digits.engine")
    loaded = engine.load(tmp_path / "digits.engine")
    np.testing.assert_allclose(loaded.predict(xv), m.predict(xv), rtol=1e-6, atol=1e-7)
    history = loaded.metadata["training"]["history"]
    assert len(history["loss"]) == 2 and history["loss"] == pytest.approx(m.history.history["loss"])


def test_resume_from_checkpoint_equals_uninterrupted(digits, tmp_path):
    xt, _, yt, _ = digits
    full = mlp(seed=5)
    full.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    full.fit(xt, yt, epochs=3, batch_size=64, verbose=0, seed=11)

    first = mlp(seed=5)
    first.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    first.fit(xt, yt, epochs=2, batch_size=64, verbose=0, seed=11,
              callbacks=[ModelCheckpoint(str(tmp_path / "ckpt-{epoch}.engine"))])
    resumed = mlp(seed=99)  # different initial weights: the checkpoint must replace them
    resumed.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    resumed.load_weights(tmp_path / "ckpt-2.engine")
    assert resumed.optimizer.iterations == first.optimizer.iterations
    resumed.fit(xt, yt, epochs=3, initial_epoch=2, batch_size=64, verbose=0, seed=11)
    for a, b in zip(full.get_weights(), resumed.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_early_stopping_restores_best(digits):
    xt, xv, yt, yv = digits
    m = mlp()
    m.compile(optimizer=optimizers.SGD(0.5), loss="sparse_categorical_crossentropy")
    stop = EarlyStopping(monitor="val_loss", patience=1, restore_best_weights=True)
    h = m.fit(xt, yt, epochs=40, batch_size=16, validation_data=(xv, yv), callbacks=[stop], verbose=0, seed=0)
    best = int(np.argmin(h.history["val_loss"]))
    assert len(h.history["loss"]) < 40
    assert m.evaluate(xv, yv, verbose=0) == pytest.approx(h.history["val_loss"][best], rel=1e-5)


def test_sample_and_class_weights(digits):
    xt, _, yt, _ = digits
    x, y = xt[:64], yt[:64]
    w = np.where(y == 3, 2.0, 1.0).astype(np.float32)
    a, b = mlp(seed=1), mlp(seed=1)
    for m in (a, b):
        m.compile(optimizer=optimizers.SGD(0.1), loss="sparse_categorical_crossentropy")
    a.fit(x, y, epochs=1, batch_size=64, sample_weight=w, verbose=0, shuffle=False)
    b.fit(x, y, epochs=1, batch_size=64, class_weight={3: 2.0}, verbose=0, shuffle=False)
    for p, q in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(p, q)
    c = mlp(seed=1)
    c.compile(optimizer=optimizers.SGD(0.1), loss="sparse_categorical_crossentropy")
    c.fit(x, y, epochs=1, batch_size=64, verbose=0, shuffle=False)
    assert not np.array_equal(c.get_weights()[0], a.get_weights()[0])


def test_mse_regression_on_a_loaded_onnx_model(tmp_path):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(10, 32), torch.nn.ReLU(), torch.nn.Linear(32, 1))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((256, 10)).astype(np.float32)
    y = (2 * x[:, :1] - x[:, 1:2]).astype(np.float32)
    torch.onnx.export(net, torch.tensor(x[:4]), tmp_path / "m.onnx", input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "n"}}, dynamo=False)
    m = engine.load(tmp_path / "m.onnx")
    m.compile(optimizer=optimizers.Adam(1e-2), loss="mse")
    before = m.evaluate(x, y, verbose=0)
    m.fit(x, y, epochs=15, batch_size=32, verbose=0, seed=0)
    after = m.evaluate(x, y, verbose=0)
    assert after < before / 10
    assert np.mean((m.predict(x) - y) ** 2) == pytest.approx(after, rel=1e-4)
    m.save(tmp_path / "tuned.engine")
    np.testing.assert_allclose(engine.load(tmp_path / "tuned.engine").predict(x), m.predict(x), rtol=1e-5, atol=1e-6)


# -- bad input --------------------------------------------------------------------------------

def compiled(loss="sparse_categorical_crossentropy", metrics=None):
    m = mlp()
    m.compile(optimizer="adam", loss=loss, metrics=metrics)
    return m


def test_label_out_of_range_is_named():
    x = np.zeros((4, 64), np.float32)
    with pytest.raises(TrainingError, match=r"label 10 at index 2 is outside \[0, 10\)"):
        compiled().fit(x, np.array([0, 1, 10, 2]), verbose=0)


def test_length_mismatch():
    with pytest.raises(TrainingError, match="4 samples but y has 3"):
        compiled().fit(np.zeros((4, 64), np.float32), np.array([0, 1, 2]), verbose=0)


def test_wrong_label_shape_for_the_loss():
    x = np.zeros((4, 64), np.float32)
    with pytest.raises(EngineError, match="categorical_crossentropy"):
        compiled("categorical_crossentropy").fit(x, np.array([0, 1, 2, 3]), verbose=0)
    with pytest.raises(EngineError, match="sparse_categorical_crossentropy"):
        compiled().fit(x, np.eye(10, dtype=np.float32)[:4], verbose=0)


def test_nan_loss_names_epoch_and_batch():
    m = mlp()
    m.compile(optimizer="sgd", loss="mse")
    x = np.ones((8, 64), np.float32)
    x[5, 3] = np.nan
    with pytest.raises(TrainingError, match="epoch 1, batch 2"):
        m.fit(x, np.zeros((8, 10), np.float32), batch_size=4, shuffle=False, verbose=0)


def test_terminate_on_nan_stops_quietly():
    m = mlp()
    m.compile(optimizer="sgd", loss="mse")
    x = np.ones((8, 64), np.float32)
    x[5, 3] = np.nan
    h = m.fit(x, np.zeros((8, 10), np.float32), batch_size=4, epochs=3, shuffle=False, verbose=0,
              callbacks=[TerminateOnNaN()])
    assert len(h.history["loss"]) == 1


@pytest.mark.parametrize("kw,match", [
    ({"optimizer": "adamm", "loss": "mse"}, "adamm"),
    ({"optimizer": "adam", "loss": "msee"}, "unknown loss 'msee'"),
    ({"optimizer": "adam", "loss": None}, "needs a loss"),
])
def test_unknown_names(kw, match):
    with pytest.raises(EngineError, match=match):
        mlp().compile(**kw)


def test_unknown_metric():
    with pytest.raises(EngineError, match="accurcy"):
        compiled(metrics=["accurcy"]).fit(np.zeros((4, 64), np.float32), np.array([0, 1, 2, 3]), verbose=0)


def test_fit_before_compile():
    with pytest.raises(TrainingError, match="compile"):
        mlp().fit(np.zeros((4, 64), np.float32), np.array([0, 1, 2, 3]))


def test_train_on_batch_updates_are_visible_to_every_reader(digits):
    xt, xv, yt, _ = digits
    m = mlp()
    m.compile(optimizer=optimizers.SGD(0.5), loss="sparse_categorical_crossentropy")
    before = m.predict(xv)
    w0 = m.layers[0].get_weights()[0]
    for i in range(3):
        m.train_on_batch(xt[i * 32:(i + 1) * 32], yt[i * 32:(i + 1) * 32])
    assert not np.array_equal(m.layers[0].get_weights()[0], w0)  # a layer read writes back
    assert not np.allclose(m.predict(xv), before)
    ref = mlp()
    ref.set_weights(m.get_weights())
    np.testing.assert_array_equal(ref.predict(xv), m.predict(xv))
    m.set_weights(ref.get_weights())  # weights set from outside: the next step starts from them
    m.train_on_batch(xt[:32], yt[:32])
    ref.compile(optimizer=optimizers.SGD(0.5), loss="sparse_categorical_crossentropy")
    ref.train_on_batch(xt[:32], yt[:32])
    for a, b in zip(m.get_weights(), ref.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_an_op_without_a_backward_rule_is_named_at_compile():
    from engine.autograd import NoGradientError
    from engine.graph import Graph, Node, Value

    w = np.ones((4, 3), np.float32)
    g = Graph([Value("x", (None, 4))], [Value("y", (None, 3))],
              [Node("Dense", ["x", "w"], ["h"]), Node("Mod", ["h", "k"], ["y"], {"fmod": 1})],
              {"w": w, "k": np.float32(2.0)})
    m = engine.Model(g)
    with pytest.raises(NoGradientError, match="op Mod has no backward rule"):
        m.compile(optimizer="sgd", loss="mse")


def test_wrapped_layers_train():
    from engine.nn import LSTM, Bidirectional

    engine.nn.set_random_seed(0)
    m = Sequential([Input((6, 3)), Bidirectional(LSTM(4)), Dense(1)])
    m.compile(optimizer=optimizers.SGD(0.1), loss="mse")
    before = m.get_weights()
    rng = np.random.default_rng(0)
    m.fit(rng.random((8, 6, 3), dtype=np.float32), rng.random((8, 1), dtype=np.float32), epochs=1, verbose=0)
    after = m.get_weights()
    assert len(before) == len(after) == 8
    assert all(not np.array_equal(a, b) for a, b in zip(before, after))  # both directions' weights moved
