"""Keras files through engine.load: the seed models trained and saved by real Keras 3 (.h5 and
.keras), Keras 2 files (their config and weight layout), and bad input: Lambda and custom
layers, truncated and corrupt files, hostile zips, missing or misshapen weights."""

from __future__ import annotations

import io
import json
import shutil
import struct
import zipfile

import h5py
import numpy as np
import pytest

import engine
from keras_util import assert_close, check_files, engine_outputs, keras, keras_outputs, nn, perturb

L = keras.layers
RNG = np.random.default_rng(7)


def _fit(model, x, y, loss):
    model.compile(optimizer="adam", loss=loss)
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)  # optimizer state goes into the files too
    perturb(model)


# -- the seed models ---------------------------------------------------------------------------

def test_seed000_cnn(tmp_path):
    model = keras.Sequential()
    model.add(L.Conv2D(32, (3, 3), activation="relu", input_shape=(28, 28, 1)))
    model.add(L.MaxPooling2D((2, 2)))
    model.add(L.Flatten())
    model.add(L.Dense(128, activation="relu"))
    model.add(L.Dense(10, activation="softmax"))
    x = RNG.random((16, 28, 28, 1), dtype=np.float32)
    _fit(model, x, RNG.integers(0, 10, 16), "sparse_categorical_crossentropy")
    check_files(model, tmp_path, [x[:4]])
    # engine.nn, written as the seed writes it, with Keras's weights
    e = nn.Sequential()
    e.add(nn.Conv2D(32, (3, 3), activation="relu", input_shape=(28, 28, 1)))
    e.add(nn.MaxPooling2D((2, 2)))
    e.add(nn.Flatten())
    e.add(nn.Dense(128, activation="relu"))
    e.add(nn.Dense(10, activation="softmax"))
    e.set_weights(model.get_weights())
    assert_close([e.predict(x[:4])], [model.predict(x[:4], verbose=0)], "engine.nn seed-000")


def test_seed001_functional_mlp(tmp_path):
    def build(m):
        input_layer = m.Input(shape=(1000,))
        hidden_layer = m.Dense(128, activation="relu")(input_layer)
        output_layer = m.Dense(10, activation="softmax")(hidden_layer)
        return input_layer, output_layer
    k = keras.Model(*build(L))
    x = RNG.random((16, 1000), dtype=np.float32)
    _fit(k, x, np.eye(10, dtype=np.float32)[RNG.integers(0, 10, 16)], "categorical_crossentropy")
    check_files(k, tmp_path, [x[:5]])
    e = nn.Model(*build(nn))
    e.set_weights(k.get_weights())
    assert_close([e.predict(x[:5])], [k.predict(x[:5], verbose=0)], "engine.nn seed-001")


@pytest.mark.parametrize("mask_zero", [False, True])
def test_seed004_embedding_lstm(mask_zero, tmp_path):
    vocab_size, embedding_dim, max_length, lstm_units, dense_units = 50, 8, 12, 16, 8

    def build(m):
        layers = L if m is keras else m
        return m.Sequential([
            layers.Embedding(input_dim=vocab_size, output_dim=embedding_dim, input_length=max_length,
                             mask_zero=mask_zero),
            layers.LSTM(units=lstm_units, return_sequences=True),
            layers.Dense(units=dense_units, activation="relu"),
            layers.Dense(units=1),
        ])
    k = build(keras)
    x = RNG.integers(1, vocab_size, (24, max_length))
    x[::3, 8:] = 0  # padded sequences
    _fit(k, x, RNG.random((24, max_length, 1), dtype=np.float32), "mse")
    xs = [x[:6]]
    check_files(k, tmp_path, xs)
    loaded = engine.load(tmp_path / "model.h5")
    assert loaded.inputs[0].dtype == "int64"  # token ids, whatever their integer type
    np.testing.assert_allclose(loaded.predict(x[:6].astype(np.int32)), k.predict(x[:6], verbose=0), atol=1e-4)
    e = build(nn)  # as the seed writes it: input_length gives the input shape
    e.set_weights(k.get_weights())
    assert_close([e.predict(x[:6])], [k.predict(x[:6], verbose=0)], "engine.nn seed-004")


def test_load_from_bytes_and_file_objects(tmp_path):
    k = keras.Sequential([keras.Input((4,)), L.Dense(3, activation="tanh")])
    perturb(k)
    x = RNG.normal(size=(2, 4)).astype(np.float32)
    want = k.predict(x, verbose=0)
    for fmt in ("keras", "h5"):
        path = tmp_path / f"m.{fmt}"
        k.save(path)
        data = path.read_bytes()
        for source in (data, io.BytesIO(data)):
            np.testing.assert_allclose(engine.load(source).predict(x), want, atol=1e-5)
        m = engine.load(path)
        assert m.metadata["format"] == "keras" and m.metadata["keras_version"].startswith("3")


def test_rnn_layer_with_a_cell(tmp_path):
    k = keras.Sequential([keras.Input((5, 3)), L.RNN(L.LSTMCell(4), return_sequences=True), L.RNN(L.GRUCell(2))])
    perturb(k)
    check_files(k, tmp_path)


# -- Keras 2 files ---------------------------------------------------------------------------

def _keras2_h5(path, config: dict, weights: dict) -> None:
    """An HDF5 file laid out as tf.keras 2 writes it."""
    with h5py.File(path, "w") as f:
        f.attrs["keras_version"] = b"2.15.0"
        f.attrs["backend"] = b"tensorflow"
        f.attrs["model_config"] = json.dumps(config).encode()
        g = f.create_group("model_weights")
        g.attrs["layer_names"] = [n.encode() for n in weights]
        g.attrs["keras_version"] = b"2.15.0"
        for layer, named in weights.items():
            lg = g.create_group(layer)
            lg.attrs["weight_names"] = [n.encode() for n, _ in named]
            for n, a in named:
                lg.create_dataset(n, data=a)


def _k2(cls, **config):
    return {"class_name": cls, "config": {"trainable": True, "dtype": "float32", **config}}


def test_keras2_sequential_cnn(tmp_path):
    ref = keras.Sequential([keras.Input((8, 8, 1)), L.Conv2D(4, 3, padding="same", name="conv2d"),
                            L.BatchNormalization(name="batch_normalization"), L.LeakyReLU(negative_slope=0.1),
                            L.MaxPooling2D(), L.Flatten(), L.Dropout(0.5), L.Dense(3, activation="softmax", name="dense")])
    perturb(ref)
    w = {layer.name: layer.get_weights() for layer in ref.layers}
    init = {"class_name": "GlorotUniform", "config": {"seed": None}}
    config = {"class_name": "Sequential", "config": [  # Keras 2.0-2.2: the layer list itself
        _k2("Conv2D", name="conv2d", batch_input_shape=[None, 8, 8, 1], filters=4, kernel_size=[3, 3],
            strides=[1, 1], padding="same", data_format="channels_last", dilation_rate=[1, 1], groups=1,
            activation="linear", use_bias=True, kernel_initializer=init, bias_initializer={"class_name": "Zeros"},
            kernel_regularizer={"class_name": "L2", "config": {"l2": 0.01}}, bias_regularizer=None,
            activity_regularizer=None, kernel_constraint=None, bias_constraint=None),
        _k2("BatchNormalization", name="batch_normalization", axis=[3], momentum=0.99, epsilon=0.001, center=True,
            scale=True, beta_initializer={"class_name": "Zeros"}, moving_variance_initializer={"class_name": "Ones"}),
        _k2("LeakyReLU", name="leaky_re_lu", alpha=0.1),
        _k2("MaxPooling2D", name="max_pooling2d", pool_size=[2, 2], padding="valid", strides=[2, 2],
            data_format="channels_last"),
        _k2("Flatten", name="flatten", data_format="channels_last"),
        _k2("Dropout", name="dropout", rate=0.5, noise_shape=None, seed=None),
        _k2("Dense", name="dense", units=3, activation="softmax", use_bias=True),
    ]}
    bn = ["gamma:0", "beta:0", "moving_mean:0", "moving_variance:0"]
    _keras2_h5(tmp_path / "k2.h5", config, {
        "conv2d": [("conv2d/kernel:0", w["conv2d"][0]), ("conv2d/bias:0", w["conv2d"][1])],
        "batch_normalization": [(f"batch_normalization/{n}", a) for n, a in zip(bn, w["batch_normalization"])],
        "leaky_re_lu": [], "max_pooling2d": [], "flatten": [], "dropout": [],
        "dense": [("dense/kernel:0", w["dense"][0]), ("dense/bias:0", w["dense"][1])]})
    x = RNG.normal(size=(3, 8, 8, 1)).astype(np.float32)
    np.testing.assert_allclose(engine.load(tmp_path / "k2.h5").predict(x), ref.predict(x, verbose=0), atol=1e-5)


def test_keras2_functional_rnn(tmp_path):
    """Keras 2's list-form inbound nodes, a shared layer, an RNN's initial state given as an
    extra input (Keras 2 then still used the input's mask), hard_sigmoid meaning
    clip(0.2·x + 0.5, 0, 1)."""
    hard_sigmoid2 = lambda v: keras.ops.clip(0.2 * v + 0.5, 0.0, 1.0)  # noqa: E731
    ids, ctx = keras.Input((6,), dtype="int32", name="ids"), keras.Input((3,), name="ctx")
    e = L.Embedding(20, 4, mask_zero=True, name="embedding")(ids)
    seq = L.LSTM(5, return_sequences=True, recurrent_activation=hard_sigmoid2, name="lstm")(e)
    h0 = L.Dense(5, activation="tanh", name="init")(ctx)
    g = L.GRU(5, name="gru")(seq, initial_state=[h0], mask=keras.ops.not_equal(ids, 0))
    shared = L.Dense(3, activation="relu", name="shared")
    out = L.Dense(1, name="out")(L.Add(name="add")([shared(g), shared(h0)]))
    ref = keras.Model([ids, ctx], out)
    perturb(ref)
    w = {layer.name: layer.get_weights() for layer in ref.layers}

    def node(*refs):
        return [[[name, idx, 0, {}] for name, idx in refs]]
    layers = [
        {**_k2("InputLayer", name="ids", batch_input_shape=[None, 6], dtype="int32", sparse=False, ragged=False),
         "name": "ids", "inbound_nodes": []},
        {**_k2("InputLayer", name="ctx", batch_input_shape=[None, 3], sparse=False, ragged=False),
         "name": "ctx", "inbound_nodes": []},
        {**_k2("Embedding", name="embedding", input_dim=20, output_dim=4, mask_zero=True, input_length=None,
               batch_input_shape=[None, None]), "name": "embedding", "inbound_nodes": node(("ids", 0))},
        {**_k2("LSTM", name="lstm", units=5, return_sequences=True, return_state=False, go_backwards=False,
               stateful=False, unroll=False, time_major=False, activation="tanh", recurrent_activation="hard_sigmoid",
               use_bias=True, unit_forget_bias=True, dropout=0.0, recurrent_dropout=0.0, implementation=2),
         "name": "lstm", "inbound_nodes": node(("embedding", 0))},
        {**_k2("GRU", name="gru", units=5, return_sequences=False, activation="tanh", recurrent_activation="sigmoid",
               reset_after=True, implementation=2), "name": "gru", "inbound_nodes": node(("lstm", 0), ("init", 0))},
        {**_k2("Dense", name="init", units=5, activation="tanh"), "name": "init", "inbound_nodes": node(("ctx", 0))},
        {**_k2("Dense", name="shared", units=3, activation="relu"), "name": "shared",
         "inbound_nodes": node(("gru", 0)) + node(("init", 0))},
        {**_k2("Add", name="add"), "name": "add", "inbound_nodes": node(("shared", 0), ("shared", 1))},
        {**_k2("Dense", name="out", units=1), "name": "out", "inbound_nodes": node(("add", 0))},
    ]
    config = {"class_name": "Functional", "config": {"name": "model", "layers": layers,
                                                     "input_layers": [["ids", 0, 0], ["ctx", 0, 0]],
                                                     "output_layers": [["out", 0, 0]]}}
    cell = ["kernel:0", "recurrent_kernel:0", "bias:0"]
    _keras2_h5(tmp_path / "k2.h5", config, {
        "ids": [], "ctx": [], "embedding": [("embedding/embeddings:0", w["embedding"][0])],
        "lstm": [(f"lstm/lstm_cell/{n}", a) for n, a in zip(cell, w["lstm"])],
        "gru": [(f"gru/gru_cell/{n}", a) for n, a in zip(cell, w["gru"])],
        "init": [("init/kernel:0", w["init"][0]), ("init/bias:0", w["init"][1])],
        "shared": [("shared/kernel:0", w["shared"][0]), ("shared/bias:0", w["shared"][1])],
        "add": [], "out": [("out/kernel:0", w["out"][0]), ("out/bias:0", w["out"][1])]})
    x = [RNG.integers(1, 20, (4, 6)).astype(np.int32), RNG.normal(size=(4, 3)).astype(np.float32)]
    x[0][0, 3:] = 0
    x[0][2, :2] = 0
    np.testing.assert_allclose(engine.load(tmp_path / "k2.h5").predict(x), ref.predict(x, verbose=0), atol=1e-5)


# -- bad input ---------------------------------------------------------------------------------

def test_lambda_layer_is_refused_and_never_run(tmp_path):
    marker = tmp_path / "ran"

    def touch(v):
        marker.write_text("ran")
        return v * 2
    k = keras.Sequential([keras.Input((3,)), L.Dense(2), L.Lambda(touch, name="doubler")])
    for fmt in ("keras", "h5"):
        k.save(tmp_path / f"m.{fmt}")
        marker.unlink(missing_ok=True)
        with pytest.raises(engine.UnsupportedOpError, match="layer 'doubler' is a Lambda layer.*never run"):
            engine.load(tmp_path / f"m.{fmt}")
        assert not marker.exists()


def test_custom_layer_is_refused(tmp_path):
    @keras.saving.register_keras_serializable(package="evil")
    class Doubler(L.Layer):
        def call(self, v):
            return v * 2
    k = keras.Sequential([keras.Input((3,)), L.Dense(2), Doubler(name="twice")])
    k.save(tmp_path / "m.keras")
    with pytest.raises(engine.UnsupportedOpError, match="layer 'twice' is a custom object.*evil>Doubler"):
        engine.load(tmp_path / "m.keras")


def test_unsupported_layer_and_tf_op_layer_are_named(tmp_path):
    x = keras.Input((4, 3))
    k = keras.Model(x, L.Dense(2)(L.LSTM(3, return_sequences=True)(L.Conv1D(3, 1)(x))))
    k.save(tmp_path / "m.keras")
    with zipfile.ZipFile(tmp_path / "m.keras") as z:
        config = json.loads(z.read("config.json"))
    layers = config["config"]["layers"]
    for cls, pattern in (("ConvLSTM1D", "Keras class 'ConvLSTM1D' is not supported"),
                         ("TFOpLambda", "TensorFlow op layer")):
        layers[1]["class_name"] = cls
        _rewrite(tmp_path / "m.keras", tmp_path / "bad.keras", {"config.json": json.dumps(config).encode()})
        with pytest.raises(engine.UnsupportedOpError, match=pattern):
            engine.load(tmp_path / "bad.keras")


def _rewrite(src, dst, replace: dict, drop=()) -> None:
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            if info.filename in drop:
                continue
            zout.writestr(info.filename, replace.get(info.filename, zin.read(info.filename)))


@pytest.fixture
def saved(tmp_path):
    k = keras.Sequential([keras.Input((5,)), L.Dense(4, activation="relu", name="hidden"), L.Dense(2, name="head")])
    perturb(k)
    k.save(tmp_path / "m.keras")
    k.save(tmp_path / "m.h5")
    return tmp_path


@pytest.mark.parametrize("fmt", ["keras", "h5"])
def test_truncated_and_corrupt_files(saved, fmt, monkeypatch):
    from engine.formats import h5_tree
    monkeypatch.setattr(h5_tree, "TIMEOUT_S", 1.0)  # some corruptions make the HDF5 library loop forever
    data = (saved / f"m.{fmt}").read_bytes()
    for cut in (10, 200, len(data) // 3, len(data) // 2, len(data) - 100, len(data) - 1):
        with pytest.raises(engine.EngineError):
            engine.load(data[:cut])
        p = saved / f"cut.{fmt}"
        p.write_bytes(data[:cut])
        with pytest.raises(engine.EngineError, match="cut"):
            engine.load(p)
    rng = np.random.default_rng(0)
    for _ in range(20):  # flipped bytes: an EngineError, or (in weight data) a model; never a crash
        bad = bytearray(data)
        for i in rng.integers(0, len(bad), 8):
            bad[i] ^= 0xFF
        try:
            engine.load(bytes(bad))
        except engine.EngineError:
            pass


def _patch_sizes(data: bytes, name: bytes, size: int) -> bytes:
    """The zip with entry `name`'s uncompressed size rewritten in both headers."""
    out = bytearray(data)
    # (signature, offset of the name length, of the name, of the uncompressed size)
    for sig, len_at, name_at, size_at in ((b"PK\x03\x04", 26, 30, 22), (b"PK\x01\x02", 28, 46, 24)):
        i = out.find(sig)
        while i >= 0:
            n = struct.unpack_from("<H", out, i + len_at)[0]
            if bytes(out[i + name_at:i + name_at + n]) == name:
                struct.pack_into("<I", out, i + size_at, size)
            i = out.find(sig, i + 4)
    return bytes(out)


@pytest.mark.parametrize("entry", ["config.json", "model.weights.h5"])
def test_zip_entries_claiming_huge_sizes(saved, entry):
    data = (saved / "m.keras").read_bytes()
    bad = _patch_sizes(data, entry.encode(), 0xFFFFFFF0)
    with pytest.raises(engine.ModelFormatError, match=f"'{entry}' claims 4,294,967,280 bytes"):
        engine.load(bad)


def test_zip_bomb_is_refused(tmp_path, monkeypatch):
    from engine.formats import keras as reader
    monkeypatch.setattr(reader, "_EXPANSION_FLOOR", 1 << 20)
    with zipfile.ZipFile(tmp_path / "bomb.keras", "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("config.json", b"{}")
        z.writestr("model.weights.h5", bytes(32 << 20))  # 32 MiB of zeros, ~32 KiB compressed
    with pytest.raises(engine.ModelFormatError, match="zip bomb"):
        engine.load(tmp_path / "bomb.keras")


def test_missing_and_misshapen_weights(saved):
    with zipfile.ZipFile(saved / "m.keras") as z:
        weights = z.read("model.weights.h5")
    for change, pattern in (("drop", r"layer 'head': the file holds 1 weight arrays, the layer has 2"),
                            ("reshape", r"layer 'head': weight 'layers/dense_1/vars/0' has shape \(5, 2\), "
                                        r"the layer's configuration needs \(4, 2\)"),
                            ("folder", r"layer 'hidden' has no weights in the file")):
        buf = io.BytesIO(weights)
        with h5py.File(buf, "a") as f:
            if change == "drop":
                del f["layers/dense_1/vars/1"]
            elif change == "reshape":
                del f["layers/dense_1/vars/0"]
                f["layers/dense_1/vars"].create_dataset("0", data=np.zeros((5, 2), np.float32))
            else:
                del f["layers/dense"]
        _rewrite(saved / "m.keras", saved / "bad.keras", {"model.weights.h5": buf.getvalue()})
        with pytest.raises(engine.ModelFormatError, match=pattern):
            engine.load(saved / "bad.keras")
    shutil.copy(saved / "m.h5", saved / "bad.h5")
    with h5py.File(saved / "bad.h5", "a") as f:
        del f["model_weights/hidden"]
    with pytest.raises(engine.ModelFormatError, match=r"bad.h5: layer 'hidden' has no weights in the file"):
        engine.load(saved / "bad.h5")


def test_config_cannot_ask_for_more_than_the_file_holds(saved):
    with zipfile.ZipFile(saved / "m.keras") as z:
        config = json.loads(z.read("config.json"))
    config["config"]["layers"][1]["config"]["units"] = 10 ** 9
    _rewrite(saved / "m.keras", saved / "huge.keras", {"config.json": json.dumps(config).encode()})
    with pytest.raises(engine.ModelFormatError, match="layer 'hidden'.*more than the file holds"):
        engine.load(saved / "huge.keras")


def test_not_a_model(saved, tmp_path):
    k = keras.Sequential([keras.Input((3,)), L.Dense(2)])
    k.save_weights(tmp_path / "w.weights.h5")
    with pytest.raises(engine.ModelFormatError, match="no model_config"):
        engine.load(tmp_path / "w.weights.h5")
    with zipfile.ZipFile(tmp_path / "t.keras", "w") as z:
        z.writestr("archive/data.pkl", b"\x80\x02")
    with pytest.raises(engine.ModelFormatError, match="PyTorch file"):
        engine.load(tmp_path / "t.keras")
    _rewrite(saved / "m.keras", tmp_path / "noweights.keras", {}, drop=("model.weights.h5",))
    with pytest.raises(engine.ModelFormatError, match="no model.weights.h5"):
        engine.load(tmp_path / "noweights.keras")
    _rewrite(saved / "m.keras", tmp_path / "badjson.keras", {"config.json": b"{not json"})
    with pytest.raises(engine.ModelFormatError, match="config.json is not valid JSON"):
        engine.load(tmp_path / "badjson.keras")
    (tmp_path / "x.h5").write_bytes(b"plain text")
    with pytest.raises(engine.ModelFormatError, match="not a Keras file"):
        engine.load(tmp_path / "x.h5")


def test_nested_model_is_refused_clearly(tmp_path):
    inner = keras.Sequential([keras.Input((3,)), L.Dense(2)], name="inner")
    x = keras.Input((3,))
    k = keras.Model(x, L.Dense(1)(inner(x)))
    k.save(tmp_path / "m.keras")
    with pytest.raises(engine.UnsupportedOpError, match="layer 'inner' is a nested Sequential model"):
        engine.load(tmp_path / "m.keras")
