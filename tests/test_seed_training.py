"""The seeds' training code (../shared/SEED-EXAMPLES.md) run as written, with
`from engine.nn import ...` in place of the TensorFlow imports and scikit-learn's digits
(scaled to 28×28) in place of MNIST: each compiles, fits (the loss falls), evaluates and
saves, and the saved file loads with engine.load to the same outputs."""

import numpy as np
import pytest

import engine


@pytest.fixture(scope="module")
def mnist_like():
    """Digits upscaled 8×8 → 28×28 (nearest, 3×, with a 2-pixel border), in [0, 1]."""
    from sklearn.datasets import load_digits

    d = load_digits()
    img = np.kron(d.images / 16.0, np.ones((3, 3)))             # 24×24
    img = np.pad(img, ((0, 0), (2, 2), (2, 2))).astype(np.float32)  # 28×28
    from sklearn.model_selection import train_test_split

    x_train, x_test, y_train, y_test = train_test_split(img[..., None], d.target, test_size=0.2, random_state=0)
    return x_train, y_train, x_test, y_test


def test_seed_1_sequential_cnn(mnist_like, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    x_train, y_train, x_test, y_test = mnist_like
    from engine.nn import Conv2D, Dense, Flatten, MaxPooling2D, Sequential

    model = Sequential()
    model.add(Conv2D(32, (3, 3), activation='relu', input_shape=(28, 28, 1)))
    model.add(MaxPooling2D((2, 2)))
    model.add(Flatten())
    model.add(Dense(128, activation='relu'))
    model.add(Dense(10, activation='softmax'))
    model.compile(optimizer='adam', loss='sparse_categorical_crossentropy', metrics=['accuracy'])
    history = model.fit(x_train, y_train, epochs=10, batch_size=32, verbose=0)

    loss = history.history["loss"]
    assert loss[-1] < loss[0]
    test_loss, acc = model.evaluate(x_test, y_test, verbose=0)
    assert acc > 0.95
    model.save("seed1.engine")
    np.testing.assert_allclose(engine.load("seed1.engine").predict(x_test), model.predict(x_test), rtol=1e-5, atol=1e-6)


def test_seed_2_functional_one_hot(mnist_like):
    x28, labels, xt28, test_labels = mnist_like
    rng = np.random.default_rng(0)
    proj = rng.standard_normal((784, 1000)).astype(np.float32) / 28.0  # 1000 features, as the seed's input
    x_train, x_test = x28.reshape(-1, 784) @ proj, xt28.reshape(-1, 784) @ proj
    y_train, y_test = np.eye(10, dtype=np.float32)[labels], np.eye(10, dtype=np.float32)[test_labels]
    from engine.nn import Dense, Input, Model

    input_layer = Input(shape=(1000,))
    hidden_layer = Dense(128, activation='relu')(input_layer)
    output_layer = Dense(10, activation='softmax')(hidden_layer)
    model = Model(inputs=input_layer, outputs=output_layer)
    model.compile(optimizer='adam', loss='categorical_crossentropy', metrics=['accuracy'])
    history = model.fit(x_train, y_train, epochs=10, batch_size=32, verbose=0)
    loss, acc = model.evaluate(x_test, y_test, verbose=0)

    assert history.history["loss"][-1] < history.history["loss"][0] / 3
    assert acc > 0.9


def test_seed_3_dense_saved_as_h5(mnist_like, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    x28, y_train, xt28, y_test = mnist_like
    x_train, x_test = x28.reshape(-1, 28 * 28), xt28.reshape(-1, 28 * 28)
    from engine.nn import Dense, Sequential, load_model

    model = Sequential()
    model.add(Dense(128, activation='relu', input_shape=(28 * 28,)))
    model.add(Dense(10, activation='softmax'))
    model.compile(optimizer='adam', loss='sparse_categorical_crossentropy', metrics=['accuracy'])
    history = model.fit(x_train, y_train, epochs=10, batch_size=128, verbose=0)
    expected = model.predict(x_test)
    model.save('model.h5')                        # serialise, store
    model = load_model('model.h5')                # load, initialise

    assert history.history["loss"][-1] < history.history["loss"][0] / 3
    probs = model.predict(x_test)
    np.testing.assert_allclose(probs, expected, rtol=1e-5, atol=1e-6)
    assert np.mean(probs.argmax(1) == y_test) > 0.9


def test_seed_5_embedding_lstm_regression(tmp_path):
    vocab_size, embedding_dim, max_length, lstm_units, dense_units = 50, 16, 12, 24, 16
    epochs, batch_size = 5, 32
    rng = np.random.default_rng(0)

    def data(n):  # the target at each step: a smooth function of the tokens so far
        x = rng.integers(1, vocab_size, (n, max_length))
        y = (np.cumsum(x, axis=1) / (vocab_size * np.arange(1, max_length + 1))).astype(np.float32)
        return x, y[..., None]
    (x_train, y_train), (x_val, y_val), (x_test, y_test) = data(256), data(64), data(64)
    from engine.nn import LSTM, Dense, Embedding, Sequential

    model = Sequential([
        Embedding(input_dim=vocab_size, output_dim=embedding_dim, input_length=max_length),
        LSTM(units=lstm_units, return_sequences=True),
        Dense(units=dense_units, activation='relu'),
        Dense(units=1)
    ])
    model.compile(optimizer='adam', loss='mse', metrics=['accuracy'])
    history = model.fit(x_train, y_train, epochs=epochs, batch_size=batch_size, validation_data=(x_val, y_val),
                        verbose=0)
    loss, accuracy = model.evaluate(x_test, y_test, verbose=0)

    assert history.history["loss"][-1] < history.history["loss"][0] / 2
    assert set(history.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert loss == pytest.approx(np.mean((model.predict(x_test) - y_test) ** 2), rel=1e-4)
    model.save(tmp_path / "seed5.engine")
    np.testing.assert_allclose(engine.load(tmp_path / "seed5.engine").predict(x_test), model.predict(x_test),
                               rtol=1e-5, atol=1e-6)
