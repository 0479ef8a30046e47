"""engine.callbacks against keras.callbacks (Keras 3, torch backend): the same scripted logs go
through ours and Keras's EarlyStopping / ReduceLROnPlateau / ModelCheckpoint / CSVLogger with
fake models, and the decisions (when training stops, the weights restored, each epoch's learning
rate, the files saved, the CSV bytes, the messages) must be the same. Plus CallbackList dispatch,
History, TerminateOnNaN, LambdaCallback, warnings for missing monitors, and per-batch cost."""

from __future__ import annotations

import itertools
import math
import os
import time

import numpy as np
import pytest

from engine import EngineError
from engine import callbacks as cb
from engine import metrics as M

os.environ["KERAS_BACKEND"] = "torch"  # before keras is imported anywhere


@pytest.fixture(scope="module")
def keras():
    return pytest.importorskip("keras")


class FakeOptimizer:
    def __init__(self, lr=0.01, name="sgd"):
        self._lr = lr
        self.name = name

    @property
    def learning_rate(self):
        return self._lr

    @learning_rate.setter
    def learning_rate(self, value):
        self._lr = float(value)


class FakeModel:
    """What the callbacks may use: stop_training, get/set_weights (copies), save, save_weights,
    optimizer.learning_rate. Weights carry the epoch they were set at."""

    def __init__(self, optimizer=None, metrics=None):
        self.stop_training = False
        self._weights = [np.zeros(3), np.zeros((2, 2))]
        self.optimizer = optimizer if optimizer is not None else FakeOptimizer()
        self.saved = []
        if metrics is not None:
            self.metrics = metrics

    def mark(self, epoch):
        self._weights = [np.full(3, float(epoch)), np.full((2, 2), float(epoch))]

    def get_weights(self):
        return [w.copy() for w in self._weights]

    def set_weights(self, weights):
        self._weights = [np.array(w) for w in weights]

    def save(self, path, **kwargs):  # Keras passes overwrite=True
        self.saved.append(("model", path))
        with open(path, "w") as f:
            f.write("model")

    def save_weights(self, path, **kwargs):
        self.saved.append(("weights", path))
        with open(path, "w") as f:
            f.write("weights")


def _keras_metrics_list(keras, *metrics):
    """A Keras model's `metrics` as Keras 3's mode='auto' reads them."""
    from keras.src.trainers.compile_utils import MetricsList

    return [MetricsList(list(metrics))]


def drive(callback, model, values, key="val_loss", batches=0):
    """A scripted fit: each epoch sets the weights to the epoch number and ends with
    logs {key: value, 'loss': ...}. Returns the per-epoch trace."""
    callback.set_model(model)
    callback.set_params({"verbose": 0, "epochs": len(values), "steps": batches or 1})
    callback.on_train_begin({})
    trace = []
    for epoch, value in enumerate(values):
        callback.on_epoch_begin(epoch, {})
        for b in range(batches):
            callback.on_train_batch_begin(b, {})
            callback.on_train_batch_end(b, {"loss": 1.0 / (b + 1), "batch_metric": float(b)})
        model.mark(epoch)
        logs = {"loss": 1.0 + epoch} if value is None else {key: value, "loss": 1.0 + epoch}
        callback.on_epoch_end(epoch, logs)
        trace.append({"stop": model.stop_training, "wait": getattr(callback, "wait", None),
                      "best": getattr(callback, "best", None), "logs": dict(logs),
                      "lr": float(np.float32(float(model.optimizer.learning_rate)))})
        if model.stop_training:
            break
    callback.on_train_end({})
    return trace


def _same(a, b):
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b or (a is not None and b is not None and np.float64(a) == np.float64(b))


# -- EarlyStopping ------------------------------------------------------------------------------

LOSSES = [1.0, 0.9, 0.95, 0.91, 0.89, 0.9, 0.92, 0.93, 0.94, 0.8, 0.85, 0.86, 0.87, 0.88]
ACCS = [0.5, 0.6, 0.55, 0.61, 0.605, 0.7, 0.69, 0.68, 0.71, 0.7, 0.7, 0.7]
NANS = [1.0, float("nan"), 0.9, float("nan"), float("nan"), float("nan"), 0.5]

ES_GRID = list(itertools.product([0, 1, 3], [0, 0.02], [None, 0.85], [False, True], [0, 2]))


@pytest.mark.parametrize("patience,min_delta,baseline,restore,start", ES_GRID)
def test_early_stopping_matches_keras(keras, patience, min_delta, baseline, restore, start):
    kwargs = {"monitor": "val_loss", "patience": patience, "min_delta": min_delta, "baseline": baseline,
                  "restore_best_weights": restore, "start_from_epoch": start}
    ours, theirs = cb.EarlyStopping(**kwargs), keras.callbacks.EarlyStopping(**kwargs)
    m1, m2 = FakeModel(), FakeModel()
    t1, t2 = drive(ours, m1, LOSSES), drive(theirs, m2, LOSSES)
    assert [(t["stop"], t["wait"]) for t in t1] == [(t["stop"], t["wait"]) for t in t2]
    assert all(_same(a["best"], b["best"]) for a, b in zip(t1, t2))
    assert (ours.stopped_epoch, ours.best_epoch) == (theirs.stopped_epoch, theirs.best_epoch)
    for a, b in zip(m1.get_weights(), m2.get_weights()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("values,mode,key", [(ACCS, "auto", "val_accuracy"), (ACCS, "max", "val_accuracy"),
                                             (LOSSES, "max", "val_loss"), (NANS, "auto", "val_loss"),
                                             (NANS, "min", "val_loss"), (ACCS, "min", "accuracy")])
@pytest.mark.parametrize("patience", [0, 2])
def test_early_stopping_modes_and_nan_match_keras(keras, values, mode, key, patience):
    kwargs = {"monitor": key, "patience": patience, "mode": mode, "restore_best_weights": True}
    ours, theirs = cb.EarlyStopping(**kwargs), keras.callbacks.EarlyStopping(**kwargs)
    keras_metrics = _keras_metrics_list(keras, keras.metrics.SparseCategoricalAccuracy(name="accuracy"))
    m1, m2 = FakeModel(), FakeModel(metrics=keras_metrics)
    t1, t2 = drive(ours, m1, values, key), drive(theirs, m2, values, key)
    assert [(t["stop"], t["wait"]) for t in t1] == [(t["stop"], t["wait"]) for t in t2]
    assert all(_same(a["best"], b["best"]) for a, b in zip(t1, t2))
    np.testing.assert_array_equal(m1.get_weights()[0], m2.get_weights()[0])


def test_early_stopping_messages_match_keras(keras, capsys):
    kwargs = {"monitor": "val_loss", "patience": 1, "verbose": 1, "restore_best_weights": True}
    drive(keras.callbacks.EarlyStopping(**kwargs), FakeModel(), LOSSES)
    theirs = capsys.readouterr().out
    drive(cb.EarlyStopping(**kwargs), FakeModel(), LOSSES)
    ours = capsys.readouterr().out
    assert ours == theirs == "Epoch 3: early stopping\nRestoring model weights from the end of the best epoch: 2.\n"


def test_early_stopping_restores_best_and_reuses():
    model = FakeModel()
    es = cb.EarlyStopping(monitor="val_loss", patience=2, restore_best_weights=True)
    trace = drive(es, model, [3.0, 2.0, 2.5, 2.6, 1.0])
    assert [t["stop"] for t in trace] == [False, False, False, True]
    assert es.stopped_epoch == 3 and es.best_epoch == 1
    assert model.get_weights()[0][0] == 1.0  # the weights of epoch 1
    trace = drive(es, FakeModel(), [5.0, 4.0, 3.0])  # reusable: state reset by on_train_begin
    assert not any(t["stop"] for t in trace) and es.best == 3.0


def test_early_stopping_missing_monitor_warns():
    es = cb.EarlyStopping(monitor="val_loss", patience=0)
    with pytest.warns(UserWarning, match=r"Early stopping conditioned on metric `val_loss` which is not available. "
                                         r"Available metrics are: loss"):
        trace = drive(es, FakeModel(), [None, None, None])
    assert not any(t["stop"] for t in trace)


# -- mode='auto' ---------------------------------------------------------------------------------

@pytest.mark.parametrize("monitor,expected", [
    ("val_loss", "min"), ("loss", "min"), ("val_accuracy", "max"), ("acc", "max"), ("val_auc", "max"),
    ("val_my_acc", "max"), ("val_mae", "min"), ("mean_squared_error", "min"),
    ("val_sparse_top_k_categorical_accuracy", "max"), ("val_binary_crossentropy", "min")])
def test_auto_mode_direction(monitor, expected):
    es = cb.EarlyStopping(monitor=monitor)
    es.set_model(FakeModel())
    es._set_monitor_op()
    assert es._is_improvement(1.0, 0.5) == (expected == "max")
    assert es._is_improvement(0.5, 1.0) == (expected == "min")


def test_auto_mode_from_model_metrics_and_unknown():
    es = cb.EarlyStopping(monitor="val_score")
    es.set_model(FakeModel())
    with pytest.raises(cb.CallbackError, match="mode='max'") as e:
        es.on_epoch_end(0, {"val_score": 1.0})
    assert isinstance(e.value, EngineError) and isinstance(e.value, ValueError)
    score = M.MeanMetricWrapper(lambda t, p: p, name="score")
    score._direction = "up"
    es = cb.EarlyStopping(monitor="val_score")
    es.set_model(FakeModel(metrics=[M.Mean(name="loss"), score]))
    es._set_monitor_op()
    assert es._is_improvement(2.0, 1.0)
    with pytest.warns(UserWarning, match="mode 'sideways' is unknown"):
        es = cb.EarlyStopping(mode="sideways")
    assert es.mode == "auto"


def test_min_delta_sign(keras):
    for mode, seq in [("min", [1.0, 0.995, 0.98]), ("max", [1.0, 1.005, 1.02])]:
        ours = cb.EarlyStopping(monitor="m", min_delta=0.01, mode=mode, patience=5)
        theirs = keras.callbacks.EarlyStopping(monitor="m", min_delta=0.01, mode=mode, patience=5)
        t1, t2 = drive(ours, FakeModel(), seq, "m"), drive(theirs, FakeModel(), seq, "m")
        assert [t["wait"] for t in t1] == [t["wait"] for t in t2] == [0, 1, 0]


# -- ReduceLROnPlateau ---------------------------------------------------------------------------

PLATEAU = [1.0, 0.9, 0.9, 0.9, 0.9, 0.85, 0.85, 0.85, 0.85, 0.85, 0.7, 0.7, 0.7, 0.7, 0.7, 0.7, 0.7, 0.7, 0.7,
           0.69995, 0.7, 0.7, 0.7, float("nan"), 0.6, 0.6, 0.6, 0.6]
LR_GRID = list(itertools.product([0, 2], [0.5, 0.1], [0, 2], [0.0, 1e-3], [1e-4, 0.05]))


@pytest.mark.parametrize("patience,factor,cooldown,min_lr,min_delta", LR_GRID)
def test_reduce_lr_matches_keras(keras, patience, factor, cooldown, min_lr, min_delta):
    kwargs = {"monitor": "val_loss", "patience": patience, "factor": factor, "cooldown": cooldown, "min_lr": min_lr,
                  "min_delta": min_delta}
    ours, theirs = cb.ReduceLROnPlateau(**kwargs), keras.callbacks.ReduceLROnPlateau(**kwargs)
    m1 = FakeModel(FakeOptimizer(0.01))
    m2 = FakeModel(keras.optimizers.SGD(learning_rate=0.01))  # a float32 variable, as Keras has it
    t1, t2 = drive(ours, m1, PLATEAU), drive(theirs, m2, PLATEAU)
    assert [t["lr"] for t in t1] == [t["lr"] for t in t2]
    assert [t["logs"]["learning_rate"] for t in t1] == [t["logs"]["learning_rate"] for t in t2]
    assert [t["wait"] for t in t1] == [t["wait"] for t in t2]
    assert all(_same(a["best"], b["best"]) for a, b in zip(t1, t2))
    assert ours.cooldown_counter == theirs.cooldown_counter


def test_reduce_lr_mode_max_and_messages_match_keras(keras, capsys):
    kwargs = {"monitor": "val_accuracy", "mode": "max", "patience": 1, "factor": 0.5, "verbose": 1, "min_lr": 0.002}
    t2 = drive(keras.callbacks.ReduceLROnPlateau(**kwargs), FakeModel(keras.optimizers.SGD(learning_rate=0.01)),
               ACCS, "val_accuracy")
    theirs = capsys.readouterr().out
    t1 = drive(cb.ReduceLROnPlateau(**kwargs), FakeModel(FakeOptimizer(0.01)), ACCS, "val_accuracy")
    ours = capsys.readouterr().out
    assert [t["lr"] for t in t1] == [t["lr"] for t in t2]
    assert ours == theirs and "ReduceLROnPlateau reducing learning rate to" in ours


def test_reduce_lr_on_engine_optimizer():
    from engine import optimizers

    opt = optimizers.SGD(learning_rate=0.1)
    trace = drive(cb.ReduceLROnPlateau(monitor="loss", patience=1, factor=0.5), FakeModel(opt), [1, 1, 1, 1], "loss")
    assert [t["lr"] for t in trace] == [np.float32(v) for v in (0.1, 0.05, 0.025, 0.0125)]
    assert isinstance(opt.learning_rate, float)


def test_reduce_lr_missing_monitor_warns_and_factor_checked():
    with pytest.warns(UserWarning, match=r"Learning rate reduction is conditioned on metric `val_loss`"):
        trace = drive(cb.ReduceLROnPlateau(patience=0), FakeModel(), [None, None])
    assert [t["lr"] for t in trace] == [np.float32(0.01)] * 2
    with pytest.raises(cb.CallbackError, match="factor"):
        cb.ReduceLROnPlateau(factor=1.0)


def test_reduce_lr_reaches_history_through_callback_list():
    model = FakeModel(FakeOptimizer(0.5))
    cbs = cb.CallbackList([cb.ReduceLROnPlateau(monitor="loss", patience=0)], add_history=True, model=model,
                          verbose=0, epochs=3, steps=1)
    cbs.on_train_begin()
    for epoch in range(3):
        cbs.on_epoch_begin(epoch)
        cbs.on_epoch_end(epoch, {"loss": 1.0})
    cbs.on_train_end()
    # the rate the epoch ran with (logged before that epoch's reduction), as Keras logs it
    assert cbs.history.history["learning_rate"] == [0.5, 0.5, float(np.float32(0.05))]
    assert model.history is cbs.history


# -- ModelCheckpoint -----------------------------------------------------------------------------

CKPT_VALUES = [0.5, 0.4, 0.45, 0.39, float("nan"), 0.3, 0.31]


def _run_ckpt(factory, tmp_path, sub, values, key="val_loss", batches=0):
    folder = tmp_path / sub
    model = FakeModel()
    callback = factory(str(folder / "ck"))
    drive(callback, model, values, key, batches=batches)
    return [(kind, os.path.relpath(p, folder)) for kind, p in model.saved]


@pytest.mark.parametrize("best_only", [False, True])
@pytest.mark.parametrize("mode,threshold", [("auto", None), ("max", None), ("auto", 0.42)])
def test_checkpoint_paths_match_keras(keras, tmp_path, best_only, mode, threshold):
    def make(lib, ext):
        return lambda base: lib.ModelCheckpoint(base + "-{epoch:02d}-{val_loss:.2f}" + ext, monitor="val_loss",
                                                save_best_only=best_only, mode=mode,
                                                initial_value_threshold=threshold)

    theirs = _run_ckpt(make(keras.callbacks, ".keras"), tmp_path, "k", CKPT_VALUES)
    ours = _run_ckpt(make(cb, ".keras"), tmp_path, "e", CKPT_VALUES)
    assert ours == theirs
    # every epoch; or the improvements: 0.5, 0.4, 0.39, 0.3 (min), 0.5 (max), and below 0.42 only
    expected = len(CKPT_VALUES) if not best_only else {("auto", None): 4, ("max", None): 1, ("auto", 0.42): 3}[
        (mode, threshold)]
    assert len(ours) == expected
    assert all(os.path.exists(tmp_path / "e" / p) for _, p in ours)


def test_checkpoint_best_only_names(tmp_path):
    saved = _run_ckpt(lambda b: cb.ModelCheckpoint(b + "-{epoch}-{val_loss:.2f}.engine", save_best_only=True),
                      tmp_path, "x", CKPT_VALUES)
    assert saved == [("model", "ck-1-0.50.engine"), ("model", "ck-2-0.40.engine"), ("model", "ck-4-0.39.engine"),
                     ("model", "ck-6-0.30.engine")]


def test_checkpoint_weights_and_batches_match_keras(keras, tmp_path):
    def make(lib):
        return lambda base: lib.ModelCheckpoint(base + "-{epoch}-{batch}.weights.h5", save_weights_only=True,
                                                save_freq=3, monitor="loss")

    theirs = _run_ckpt(make(keras.callbacks), tmp_path, "k", [0.5, 0.4, 0.3], batches=5)
    ours = _run_ckpt(make(cb), tmp_path, "e", [0.5, 0.4, 0.3], batches=5)
    assert ours == theirs
    assert ours[0] == ("weights", "ck-1-3.weights.h5")


def test_checkpoint_messages_match_keras(keras, tmp_path, capsys):
    kwargs = {"monitor": "val_loss", "save_best_only": True, "verbose": 1}
    _run_ckpt(lambda b: keras.callbacks.ModelCheckpoint(b + ".keras", **kwargs), tmp_path, "k", CKPT_VALUES[:4])
    theirs = capsys.readouterr().out.replace(str(tmp_path / "k"), "DIR")
    _run_ckpt(lambda b: cb.ModelCheckpoint(b + ".keras", **kwargs), tmp_path, "e", CKPT_VALUES[:4])
    ours = capsys.readouterr().out.replace(str(tmp_path / "e"), "DIR")
    assert ours == theirs and "val_loss did not improve from 0.40000" in ours


def test_checkpoint_missing_monitor_warns_and_saves(tmp_path):
    with pytest.warns(UserWarning, match="Can save best model only with val_loss available"):
        saved = _run_ckpt(lambda b: cb.ModelCheckpoint(b + "-{epoch}.engine", save_best_only=True), tmp_path, "m",
                          [None, None])
    assert saved == [("model", "ck-1.engine"), ("model", "ck-2.engine")]


def test_checkpoint_creates_folder_and_reports_bad_fields(tmp_path):
    model = FakeModel()
    ck = cb.ModelCheckpoint(str(tmp_path / "a" / "b" / "m-{epoch}.engine"))
    drive(ck, model, [0.1])
    assert (tmp_path / "a" / "b" / "m-1.engine").exists()
    ck = cb.ModelCheckpoint(str(tmp_path / "m-{val_acc}.engine"))
    with pytest.raises(cb.CallbackError, match="val_acc"):
        drive(ck, FakeModel(), [0.1])
    os.mkdir(tmp_path / "adir")
    with pytest.raises(cb.CallbackError, match="non-directory"):
        drive(cb.ModelCheckpoint(str(tmp_path / "adir")), FakeModel(), [0.1])
    with pytest.raises(cb.CallbackError, match="save_freq"):
        cb.ModelCheckpoint("x.engine", save_freq="batch")


# -- CSVLogger -----------------------------------------------------------------------------------

CSV_LOGS = [{"loss": 0.5, "accuracy": np.float32(0.25)}, {"loss": 0.25, "accuracy": 0.5, "extra": 3},
            {"loss": float("nan"), "accuracy": 1.0}]


def _csv_run(logger, epochs_logs, start=0):
    logger.set_model(FakeModel())
    logger.on_train_begin({})
    for i, logs in enumerate(epochs_logs):
        logger.on_epoch_end(start + i, cb.pythonify_logs(logs))
    logger.on_train_end({})


@pytest.mark.parametrize("sep", [",", ";"])
@pytest.mark.parametrize("with_val", [False, True])
def test_csv_logger_bytes_match_keras(keras, tmp_path, sep, with_val):
    logs = [dict(d, **({"val_loss": 0.75} if with_val else {})) for d in CSV_LOGS]
    _csv_run(keras.callbacks.CSVLogger(str(tmp_path / "k.csv"), separator=sep), logs)
    _csv_run(cb.CSVLogger(str(tmp_path / "e.csv"), separator=sep), logs)
    ours, theirs = (tmp_path / "e.csv").read_bytes(), (tmp_path / "k.csv").read_bytes()
    assert ours == theirs
    header = ours.split(b"\r\n")[0].decode()
    expected = ["epoch", "accuracy", "loss"] + (["val_loss"] if with_val else ["val_accuracy", "val_loss"])
    assert header.split(sep) == expected


def test_csv_logger_append_matches_keras(keras, tmp_path):
    for lib, name in [(keras.callbacks, "k.csv"), (cb, "e.csv")]:
        _csv_run(lib.CSVLogger(str(tmp_path / name)), CSV_LOGS[:1])
        _csv_run(lib.CSVLogger(str(tmp_path / name), append=True), CSV_LOGS[1:], start=1)
        (tmp_path / ("empty_" + name)).write_bytes(b"")
        _csv_run(lib.CSVLogger(str(tmp_path / ("empty_" + name)), append=True), CSV_LOGS[1:])
    assert (tmp_path / "e.csv").read_bytes() == (tmp_path / "k.csv").read_bytes()
    assert (tmp_path / "e.csv").read_bytes().count(b"epoch") == 1
    assert (tmp_path / "empty_e.csv").read_bytes() == (tmp_path / "empty_k.csv").read_bytes()


def test_csv_logger_values(keras, tmp_path):
    logs = [{"loss": 0.5, "name": "a,b", "vec": np.array([1.0, 2.0]), "none": None}]
    for lib, name in [(keras.callbacks, "k.csv"), (cb, "e.csv")]:
        logger = lib.CSVLogger(str(tmp_path / name))
        logger.set_model(FakeModel())
        logger.on_train_begin({})
        logger.on_epoch_end(0, logs[0])
        logger.on_train_end({})
    assert (tmp_path / "e.csv").read_bytes() == (tmp_path / "k.csv").read_bytes()
    text = (tmp_path / "e.csv").read_text()
    assert '"a,b"' in text and "NA" in text


def test_csv_logger_flushes_each_epoch(tmp_path):
    path = tmp_path / "log.csv"
    logger = cb.CSVLogger(str(path))
    logger.on_train_begin({})
    logger.on_epoch_end(0, {"loss": 0.5})
    assert path.read_bytes() == b"epoch,loss,val_loss\r\n0,0.5,NA\r\n"  # on disk before the end of training
    logger.on_epoch_end(1, {"loss": 0.25})
    assert path.read_bytes().endswith(b"1,0.25,NA\r\n")
    logger.on_train_end({})


class _FailingFile:
    """Writes part of the data, then fails (a full disk)."""

    def __init__(self, real):
        self.real = real

    def write(self, data):
        self.real.write(bytes(data[: len(data) // 2]))
        raise OSError(28, "No space left on device")

    def __getattr__(self, name):
        return getattr(self.real, name)


def test_csv_logger_never_leaves_half_a_row(tmp_path):
    path = tmp_path / "log.csv"
    logger = cb.CSVLogger(str(path))
    logger.on_train_begin({})
    logger.on_epoch_end(0, {"loss": 0.5, "val_loss": 0.75})
    before = path.read_bytes()
    real = logger.csv_file
    logger.csv_file = _FailingFile(real)
    with pytest.raises(OSError, match="No space"):
        logger.on_epoch_end(1, {"loss": 0.25, "val_loss": 0.5})
    assert path.read_bytes() == before   # the partial row was cut off
    logger.csv_file = real
    logger.on_epoch_end(2, {"loss": 0.125, "val_loss": 0.25})
    logger.on_train_end({})
    assert path.read_bytes() == before + b"2,0.125,0.25\r\n"
    # a value that cannot be formatted writes nothing
    logger = cb.CSVLogger(str(path), append=True)
    logger.on_train_begin({})

    class Bad:
        def __str__(self):
            raise ValueError("unprintable")

    with pytest.raises(ValueError):
        logger.on_epoch_end(3, {"loss": Bad(), "val_loss": 0.5})
    logger.on_train_end({})
    assert path.read_bytes() == before + b"2,0.125,0.25\r\n"


# -- TerminateOnNaN, History, LambdaCallback, CallbackList ---------------------------------------

@pytest.mark.parametrize("loss,stops", [(float("nan"), True), (float("inf"), True), (-float("inf"), True),
                                        (np.float32("nan"), True), (0.5, False), (None, False)])
def test_terminate_on_nan(keras, loss, stops, capsys):
    ours, theirs = cb.TerminateOnNaN(), keras.callbacks.TerminateOnNaN()
    results = []
    for callback in (ours, theirs):
        model = FakeModel()
        callback.set_model(model)
        callback.on_train_batch_end(7, {} if loss is None else {"loss": loss})
        results.append(model.stop_training)
    assert results == [stops, stops]
    out = capsys.readouterr().out
    assert out == ("Batch 7: Invalid loss, terminating training\n" * 2 if stops else "")
    with pytest.raises(RuntimeError, match="NaN or Inf loss encountered at batch 3"):
        t = cb.TerminateOnNaN(raise_error=True)
        t.set_model(FakeModel())
        t.on_train_batch_end(3, {"loss": float("nan")})


def test_terminate_on_nan_through_callback_list():
    model = FakeModel()
    cbs = cb.CallbackList([cb.TerminateOnNaN()], model=model)
    cbs.on_train_batch_end(0, {"loss": np.float32(1.0)})
    assert not model.stop_training
    cbs.on_train_batch_end(1, {"loss": np.array(np.nan, np.float32)})
    assert model.stop_training


def test_history(keras):
    results = []
    for h in (cb.History(), keras.callbacks.History()):
        model = FakeModel()
        h.set_model(model)
        for fit in range(2):
            h.on_train_begin({})
            for epoch in range(2):
                h.on_epoch_end(epoch, {"loss": float(fit * 10 + epoch), "val_loss": 0.5})
        assert model.history is h
        results.append((h.history, h.epoch))
    assert results[0] == results[1]
    assert results[0][0]["loss"] == [0.0, 1.0, 10.0, 11.0] and results[0][1] == [0, 1]


def test_lambda_callback_call_conventions():
    calls = []
    lam = cb.LambdaCallback(
        on_epoch_begin=lambda epoch, logs: calls.append(("epoch_begin", epoch, logs)),
        on_epoch_end=lambda epoch, logs: calls.append(("epoch_end", epoch, logs)),
        on_train_begin=lambda logs: calls.append(("train_begin", logs)),
        on_train_end=lambda logs: calls.append(("train_end", logs)),
        on_train_batch_begin=lambda batch, logs: calls.append(("batch_begin", batch, logs)),
        on_train_batch_end=lambda batch, logs: calls.append(("batch_end", batch, logs)),
        on_test_end=lambda logs: calls.append(("test_end", logs)))
    cbs = cb.CallbackList([lam], model=FakeModel())
    cbs.on_train_begin()
    cbs.on_epoch_begin(0)
    cbs.on_train_batch_begin(0)
    cbs.on_train_batch_end(0, {"loss": np.float32(0.5)})
    cbs.on_test_begin()
    cbs.on_test_end({"loss": 1})
    cbs.on_epoch_end(0, {"loss": 0.5})
    cbs.on_train_end({"loss": 0.5})
    assert calls == [("train_begin", {}), ("epoch_begin", 0, {}), ("batch_begin", 0, {}),
                     ("batch_end", 0, {"loss": 0.5}), ("test_end", {"loss": 1.0}), ("epoch_end", 0, {"loss": 0.5}),
                     ("train_end", {"loss": 0.5})]
    assert type(calls[3][2]["loss"]) is float


class Recorder(cb.Callback):
    def __init__(self, name, log):
        super().__init__()
        self.name, self.log = name, log

    def on_batch_end(self, batch, logs=None):  # the legacy alias still receives train batches
        self.log.append((self.name, "batch_end", batch, dict(logs)))

    def on_epoch_end(self, epoch, logs=None):
        self.log.append((self.name, "epoch_end", epoch, list(logs)))
        logs[f"from_{self.name}"] = 1.0  # the dict is shared with the callbacks after this one


def test_callback_list_dispatch(keras):
    from keras.src.utils.python_utils import pythonify_logs

    log = []
    model = FakeModel()
    a, b = Recorder("a", log), Recorder("b", log)
    cbs = cb.CallbackList([a, [b]], add_history=True, add_progbar=True, model=model, verbose=0, epochs=1, steps=1)
    assert [type(c).__name__ for c in cbs.callbacks] == ["Recorder", "Recorder", "History", "ProgbarLogger"]
    assert a.model is model and a.params == {"verbose": 0, "epochs": 1, "steps": 1}
    logs = {"b": np.float64(2.0), "a": np.array(1.0, np.float32), "nested": {"z": np.int64(3)}, "s": "text"}
    cbs.on_train_batch_end(4, logs)
    assert log[0] == ("a", "batch_end", 4, {"a": 1.0, "b": 2.0, "s": "text", "z": 3.0})
    assert list(log[0][3]) == ["a", "b", "z", "s"]  # sorted, nested flattened in place, Python floats
    assert list(pythonify_logs(logs).items()) == list(log[0][3].items())
    assert logs["a"].dtype == np.float32            # the caller's dict is not changed
    cbs.on_epoch_end(0, {"loss": 0.5})
    assert log[2] == ("a", "epoch_end", 0, ["loss"]) and log[3] == ("b", "epoch_end", 0, ["loss", "from_a"])
    assert cbs.history.history == {"loss": [0.5], "from_a": [1.0], "from_b": [1.0]}
    # an existing History / ProgbarLogger is used, not duplicated
    h = cb.History()
    cbs = cb.CallbackList([h], add_history=True, add_progbar=False)
    assert cbs.callbacks == [h] and cbs.history is h
    with pytest.raises(cb.CallbackError, match="Callback instances"):
        cb.CallbackList([object()])


def test_callback_base_hooks_are_no_ops():
    c = cb.Callback()
    for hook in ["on_train_begin", "on_train_end", "on_test_begin", "on_test_end", "on_predict_begin",
                 "on_predict_end"]:
        assert getattr(c, hook)({"x": 1}) is None
    for hook in ["on_epoch_begin", "on_epoch_end", "on_train_batch_begin", "on_train_batch_end",
                 "on_test_batch_begin", "on_test_batch_end", "on_predict_batch_begin", "on_predict_batch_end"]:
        assert getattr(c, hook)(0, {"x": 1}) is None
    c.set_model("m")
    c.set_params({"epochs": 2})
    assert (c.model, c.params) == ("m", {"epochs": 2})


def test_batch_hooks_only_reach_callbacks_that_use_them():
    history, es = cb.History(), cb.EarlyStopping()
    cbs = cb.CallbackList([history, es], model=FakeModel())
    assert cbs._train_batch_end == [] and cbs._test_batch_end == [] and cbs._predict_batch_end == []
    lam = cb.LambdaCallback(on_train_batch_end=lambda batch, logs: None)
    cbs.append(lam)
    assert cbs._train_batch_end == [lam]
    assert cb.CallbackList([cb.TerminateOnNaN()])._train_batch_end != []


def test_per_batch_cost_is_microseconds():
    """A fit's usual callbacks: History, EarlyStopping, ModelCheckpoint per epoch, and the
    progress bar writing to a file (nothing printed per batch)."""
    import io

    stream = io.StringIO()
    cbs = cb.CallbackList([cb.EarlyStopping(), cb.ModelCheckpoint("unused-{epoch}.engine"),
                           cb.ProgbarLogger(file=stream)], add_history=True, model=FakeModel(),
                          verbose=1, epochs=1, steps=100000)
    cbs.on_train_begin()
    cbs.on_epoch_begin(0)
    logs = {"loss": 0.5, "accuracy": 0.9}
    n = 20000
    t = time.perf_counter()
    for i in range(n):
        cbs.on_train_batch_begin(i)
        cbs.on_train_batch_end(i, logs)
    per_batch = (time.perf_counter() - t) / n
    assert stream.getvalue() == ""
    assert per_batch < 20e-6, per_batch
