"""engine.metrics against keras.metrics (Keras 3, torch backend) on the same random inputs:
values with and without sample weights (vector, scalar, column, per-timestep), sequence outputs,
ties and NaN; compile's 'accuracy' resolution against Keras's own get_metric; names; errors."""

from __future__ import annotations

import os
import time
import zlib

import numpy as np
import pytest

from engine import EngineError
from engine import metrics as M

os.environ["KERAS_BACKEND"] = "torch"  # before keras is imported anywhere

RTOL, ATOL = 2e-6, 1e-7  # Keras keeps float32 running totals, ours are float64
N, C, T = 16, 7, 5


@pytest.fixture(scope="module")
def keras():
    return pytest.importorskip("keras")


def _probs(rng, *shape):
    x = rng.random(shape).astype(np.float32)
    return x / x.sum(-1, keepdims=True)


def _onehot(labels):
    return np.eye(C, dtype=np.float32)[labels]


def _weights(rng, kind, n=N):
    return {"none": None, "vector": rng.random(n).astype(np.float32), "scalar": np.float32(0.7),
            "column": rng.random((n, 1)).astype(np.float32)}[kind]


# (engine class, keras class name, kwargs, batch maker(rng) -> (y_true, y_pred))
CASES = {
    "sparse_categorical_accuracy": (M.SparseCategoricalAccuracy, "SparseCategoricalAccuracy", {},
                                    lambda r: (r.integers(0, C, N), _probs(r, N, C))),
    "sparse_categorical_accuracy_column_labels": (M.SparseCategoricalAccuracy, "SparseCategoricalAccuracy", {},
                                                  lambda r: (r.integers(0, C, (N, 1)), _probs(r, N, C))),
    "categorical_accuracy": (M.CategoricalAccuracy, "CategoricalAccuracy", {},
                             lambda r: (_onehot(r.integers(0, C, N)), _probs(r, N, C))),
    "binary_accuracy": (M.BinaryAccuracy, "BinaryAccuracy", {},
                        lambda r: (r.integers(0, 2, (N, 1)).astype(np.float32), r.random((N, 1), np.float32))),
    "binary_accuracy_threshold_1d_labels": (M.BinaryAccuracy, "BinaryAccuracy", {"threshold": 0.3},
                                            lambda r: (r.integers(0, 2, N), r.random((N, 1), np.float32))),
    "accuracy_exact": (M.Accuracy, "Accuracy", {}, lambda r: (r.integers(0, 3, N), r.integers(0, 3, N))),
    "top_k_categorical_accuracy": (M.TopKCategoricalAccuracy, "TopKCategoricalAccuracy", {"k": 3},
                                   lambda r: (_onehot(r.integers(0, C, N)), _probs(r, N, C))),
    "top_k_default_k": (M.TopKCategoricalAccuracy, "TopKCategoricalAccuracy", {},
                        lambda r: (_onehot(r.integers(0, C, N)), _probs(r, N, C))),
    "sparse_top_k_categorical_accuracy": (M.SparseTopKCategoricalAccuracy, "SparseTopKCategoricalAccuracy", {"k": 2},
                                          lambda r: (r.integers(0, C, N), _probs(r, N, C))),
    "mean_squared_error": (M.MeanSquaredError, "MeanSquaredError", {},
                           lambda r: (r.random((N, 3), np.float32), r.random((N, 3), np.float32))),
    "mean_absolute_error": (M.MeanAbsoluteError, "MeanAbsoluteError", {},
                            lambda r: (r.random((N, 3), np.float32), r.random((N, 3), np.float32))),
    "mean_absolute_percentage_error": (M.MeanAbsolutePercentageError, "MeanAbsolutePercentageError", {},
                                       lambda r: (r.random((N, 3), np.float32), r.random((N, 3), np.float32))),
    "mean_squared_logarithmic_error": (M.MeanSquaredLogarithmicError, "MeanSquaredLogarithmicError", {},
                                       lambda r: (r.random((N, 3), np.float32), r.random((N, 3), np.float32))),
    "root_mean_squared_error": (M.RootMeanSquaredError, "RootMeanSquaredError", {},
                                lambda r: (r.random((N, 3), np.float32), r.random((N, 3), np.float32))),
    "binary_crossentropy": (M.BinaryCrossentropy, "BinaryCrossentropy", {},
                            lambda r: (r.integers(0, 2, (N, 3)).astype(np.float32), r.random((N, 3), np.float32))),
    "binary_crossentropy_logits_smoothing": (
        M.BinaryCrossentropy, "BinaryCrossentropy", {"from_logits": True, "label_smoothing": 0.1},
        lambda r: (r.integers(0, 2, (N, 3)).astype(np.float32), 5 * r.standard_normal((N, 3)).astype(np.float32))),
    "categorical_crossentropy": (M.CategoricalCrossentropy, "CategoricalCrossentropy", {},
                                 lambda r: (_onehot(r.integers(0, C, N)), _probs(r, N, C))),
    "categorical_crossentropy_logits_smoothing": (
        M.CategoricalCrossentropy, "CategoricalCrossentropy", {"from_logits": True, "label_smoothing": 0.2},
        lambda r: (_onehot(r.integers(0, C, N)), r.standard_normal((N, C)).astype(np.float32))),
    "sparse_categorical_crossentropy": (M.SparseCategoricalCrossentropy, "SparseCategoricalCrossentropy", {},
                                        lambda r: (r.integers(0, C, N), _probs(r, N, C))),
    "sparse_categorical_crossentropy_logits": (
        M.SparseCategoricalCrossentropy, "SparseCategoricalCrossentropy", {"from_logits": True},
        lambda r: (r.integers(0, C, (N, 1)), r.standard_normal((N, C)).astype(np.float32))),
}


def _run_both(keras, ours, theirs, batches):
    for y_true, y_pred, sw in batches:
        ours.update_state(y_true, y_pred, sample_weight=sw)
        theirs.update_state(y_true, y_pred, sample_weight=sw)
    return ours.result(), float(theirs.result())


@pytest.mark.parametrize("weights", ["none", "vector", "scalar", "column"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_matches_keras(keras, case, weights):
    cls, keras_name, kwargs, make = CASES[case]
    rng = np.random.default_rng(zlib.crc32(f"{case}/{weights}".encode()))
    batches = [(*make(rng), _weights(rng, weights)) for _ in range(3)]
    ours, theirs = _run_both(keras, cls(**kwargs), getattr(keras.metrics, keras_name)(**kwargs), batches)
    assert isinstance(ours, float)
    np.testing.assert_allclose(ours, theirs, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("weights", ["none", "vector", "per_step"])
@pytest.mark.parametrize("name,make", [
    ("SparseCategoricalAccuracy", lambda r: (r.integers(0, C, (N, T)), _probs(r, N, T, C))),
    ("CategoricalAccuracy", lambda r: (_onehot(r.integers(0, C, (N, T))), _probs(r, N, T, C))),
    ("SparseTopKCategoricalAccuracy", lambda r: (r.integers(0, C, (N, T)), _probs(r, N, T, C))),
    ("TopKCategoricalAccuracy", lambda r: (_onehot(r.integers(0, C, (N, T))), _probs(r, N, T, C))),
    ("MeanSquaredError", lambda r: (r.random((N, T, 3), np.float32), r.random((N, T, 3), np.float32))),
    ("MeanAbsoluteError", lambda r: (r.random((N, T, 3), np.float32), r.random((N, T, 3), np.float32))),
])
def test_sequence_outputs_match_keras(keras, name, make, weights):
    """(batch, time, ...) outputs: per-sample values averaged over time; weights per sample or
    per time step (Keras averages a per-step weight over time too, without normalising)."""
    rng = np.random.default_rng(7)
    batches = []
    for _ in range(2):
        y_true, y_pred = make(rng)
        sw = {"none": None, "vector": rng.random(N).astype(np.float32),
              "per_step": rng.random((N, T)).astype(np.float32)}[weights]
        batches.append((y_true, y_pred, sw))
    ours, theirs = _run_both(keras, getattr(M, name)(), getattr(keras.metrics, name)(), batches)
    np.testing.assert_allclose(ours, theirs, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("weights", [None, 2.0])
def test_1d_regression_outputs_match_keras(keras, weights):
    """y of shape (batch,): Keras's mean over the last axis makes one value per batch."""
    rng = np.random.default_rng(3)
    batches = [(rng.random(N, np.float32), rng.random(N, np.float32),
                None if weights is None else np.float32(weights)) for _ in range(3)]
    ours, theirs = _run_both(keras, M.MeanSquaredError(), keras.metrics.MeanSquaredError(), batches)
    np.testing.assert_allclose(ours, theirs, rtol=RTOL)


def test_nan_and_ties_match_keras(keras):
    rng = np.random.default_rng(11)
    x = _probs(rng, N, C)
    x[:, 0] = x[:, 1]          # ties: argmax takes the first
    x[0, 2] = np.nan           # a NaN ranks highest (torch's argmax / topk; numpy's too)
    x[1, :] = np.nan
    labels = rng.integers(0, C, N)
    labels[:4] = [0, 2, 1, 0]
    for ours, theirs, y in [(M.CategoricalAccuracy(), keras.metrics.CategoricalAccuracy(), _onehot(labels)),
                            (M.SparseCategoricalAccuracy(), keras.metrics.SparseCategoricalAccuracy(), labels),
                            (M.SparseTopKCategoricalAccuracy(k=2), keras.metrics.SparseTopKCategoricalAccuracy(k=2),
                             labels),
                            (M.TopKCategoricalAccuracy(k=1), keras.metrics.TopKCategoricalAccuracy(k=1),
                             _onehot(labels))]:
        a, b = _run_both(keras, ours, theirs, [(y, x, None)])
        assert a == pytest.approx(b, abs=1e-7), type(ours).__name__
    # integer scores with many ties: in_top_k counts a tie with the k-th score as in
    scores = np.round(rng.random((N, C)) * 3).astype(np.float32)
    a, b = _run_both(keras, M.SparseTopKCategoricalAccuracy(k=1), keras.metrics.SparseTopKCategoricalAccuracy(k=1),
                     [(rng.integers(0, C, N), scores, None)])
    assert a == pytest.approx(b, abs=1e-7)
    a, b = _run_both(keras, M.BinaryAccuracy(), keras.metrics.BinaryAccuracy(),
                     [(np.ones((3, 1)), np.array([[np.nan], [0.7], [0.2]], np.float32), None)])
    assert a == pytest.approx(b) == pytest.approx(1 / 3)


def test_nan_propagates_like_numpy(keras):
    ours, theirs = M.MeanSquaredError(), keras.metrics.MeanSquaredError()
    y = np.ones((4, 2), np.float32)
    p = y.copy()
    p[1, 0] = np.nan
    a, b = _run_both(keras, ours, theirs, [(y, y, None), (y, p, None)])
    assert np.isnan(a) and np.isnan(b)
    ours.reset_state()
    ours.update_state(y, y)
    assert ours.result() == 0.0


def test_loss_tracker_mean_matches_keras(keras):
    """fit's loss: Mean(name='loss') updated with the batch loss and the batch size."""
    ours, theirs = M.Mean(name="loss"), keras.metrics.Mean(name="loss")
    for loss, size in [(0.5, 32), (np.float32(0.25), 32), (1.0, 8), (np.float64(2.0), 1)]:
        ours.update_state(loss, sample_weight=size)
        theirs.update_state(loss, sample_weight=size)
    assert ours.name == "loss"
    assert ours.result() == pytest.approx(float(theirs.result()), rel=1e-6)
    assert ours.result() == pytest.approx((0.5 * 32 + 0.25 * 32 + 8 + 2) / 73)


def test_mean_of_arrays_matches_keras(keras):
    rng = np.random.default_rng(5)
    ours, theirs = M.Mean(), keras.metrics.Mean()
    for v, sw in [(rng.random((4, 3)), rng.random(4)), (rng.random((4, 3)), rng.random((4, 3))),
                  (rng.random(5), None), (rng.random((2, 2, 2)), rng.random((2, 1))), (3.0, None)]:
        ours.update_state(v, sample_weight=sw)
        theirs.update_state(v.astype(np.float32) if isinstance(v, np.ndarray) else v,
                            sample_weight=None if sw is None else sw.astype(np.float32))
    np.testing.assert_allclose(ours.result(), float(theirs.result()), rtol=RTOL)


def test_sum_matches_keras(keras):
    ours, theirs = M.Sum(), keras.metrics.Sum()
    for v, sw in [([1, 3, 5, 7], None), ([1, 3, 5, 7], [1, 1, 0, 0])]:
        ours.update_state(np.array(v, np.float32), sample_weight=sw)
        theirs.update_state(np.array(v, np.float32), sample_weight=sw)
    assert ours.result() == float(theirs.result()) == 20.0


def test_reset_and_empty_result():
    m = M.SparseCategoricalAccuracy()
    assert m.result() == 0.0  # Keras's divide_no_nan
    m.update_state([1, 2], np.array([[0, 1, 0], [1, 0, 0]], np.float32))
    assert m.result() == 0.5
    m.reset_state()
    assert m.result() == 0.0
    m.update_state([0], np.array([[1, 0, 0]], np.float32), sample_weight=[0.0])
    assert m.result() == 0.0  # all weight zero: 0 / 0 -> 0
    assert m([0], np.array([[1, 0, 0]], np.float32)) == 1.0  # __call__: update, then result


def test_sample_weight_zero_excludes_samples():
    m = M.CategoricalAccuracy()
    y = np.eye(3, dtype=np.float32)
    p = np.array([[1, 0, 0], [1, 0, 0], [0, 0, 1]], np.float32)
    m.update_state(y, p, sample_weight=[1.0, 0.0, 1.0])
    assert m.result() == 1.0


# -- get(): compile(metrics=[...]) resolution ----------------------------------------------------

SHAPES = [((4,), (4, 10)), ((4, 1), (4, 10)), ((4, 10), (4, 10)), ((4, 1), (4, 1)), ((4,), (4, 1)),
          ((4,), (4,)), ((1,), (1,)), ((4, 5, 1), (4, 5, 3)), ((4, 5), (4, 5, 3)), ((4, 5, 3), (4, 5, 3))]


@pytest.mark.parametrize("identifier", ["accuracy", "acc", "Accuracy", "ACC"])
@pytest.mark.parametrize("yt,yp", SHAPES)
def test_accuracy_resolution_matches_keras_compile(keras, identifier, yt, yp):
    from keras.src.trainers.compile_utils import get_metric

    theirs = get_metric(identifier, np.zeros(yt, np.float32), np.zeros(yp, np.float32))
    ours = M.get(identifier, "sparse_categorical_crossentropy", yt, yp)
    assert type(ours).__name__ == type(theirs).__name__
    assert ours.name == theirs.name == identifier


@pytest.mark.parametrize("identifier", [
    "mse", "MSE", "mae", "MAE", "mape", "MAPE", "msle", "MSLE", "bce", "BCE", "mean_squared_error",
    "mean_absolute_error", "top_k_categorical_accuracy", "sparse_top_k_categorical_accuracy",
    "categorical_accuracy", "sparse_categorical_accuracy", "binary_accuracy", "root_mean_squared_error",
    "binary_crossentropy", "categorical_crossentropy", "sparse_categorical_crossentropy",
    "MeanSquaredError", "SparseTopKCategoricalAccuracy", "RootMeanSquaredError", "TopKCategoricalAccuracy"])
def test_names_match_keras(keras, identifier):
    from keras.src.trainers.compile_utils import get_metric

    theirs = get_metric(identifier, np.zeros((4, 10), np.float32), np.zeros((4, 10), np.float32))
    ours = M.get(identifier, "mse", (4, 10), (4, 10))
    assert type(ours).__name__ == type(theirs).__name__
    assert ours.name == theirs.name == identifier  # the log key is the string as given


def test_every_known_name_resolves():
    for name in M.known_names():
        m = M.get(name, None, (4, 3), (4, 3))
        assert isinstance(m, M.Metric) and m.name == name


def test_unknown_name_lists_known_names():
    with pytest.raises(M.MetricError) as e:
        M.get("f1_scorez", "mse", (4, 1), (4, 1))
    assert isinstance(e.value, EngineError) and isinstance(e.value, ValueError)
    assert "f1_scorez" in str(e.value) and "mae" in str(e.value) and "sparse_categorical_accuracy" in str(e.value)
    with pytest.raises(M.MetricError):
        M.get(None)
    with pytest.raises(M.MetricError):
        M.get(42)


def test_objects_classes_functions_and_configs():
    mine = M.SparseTopKCategoricalAccuracy(k=3, name="top3")
    assert M.get(mine, "sparse_categorical_crossentropy", (4,), (4, 10)) is mine
    m = M.get(M.MeanAbsoluteError)
    assert isinstance(m, M.MeanAbsoluteError) and m.name == "mean_absolute_error"

    def my_error(y_true, y_pred):
        return np.abs(y_true - y_pred).max(axis=-1)

    m = M.get(my_error)
    assert isinstance(m, M.MeanMetricWrapper) and m.name == "my_error"
    m.update_state(np.zeros((2, 3)), np.array([[1, 2, 3], [0, 0, 1]], np.float32))
    assert m.result() == 2.0
    m = M.get({"class_name": "TopKCategoricalAccuracy", "config": {"k": 2, "name": "t2", "dtype": "float32"}})
    assert isinstance(m, M.TopKCategoricalAccuracy) and m.k == 2 and m.name == "t2"


def test_accuracy_from_loss_when_shapes_unknown():
    assert isinstance(M.get("accuracy", "binary_crossentropy"), M.BinaryAccuracy)
    assert isinstance(M.get("accuracy", "sparse_categorical_crossentropy"), M.SparseCategoricalAccuracy)
    assert isinstance(M.get("acc", "categorical_crossentropy"), M.CategoricalAccuracy)
    with pytest.raises(M.MetricError, match="shapes"):
        M.get("accuracy", "mse")


def test_directions():
    assert M.direction("accuracy") == M.direction("acc") == M.direction("top_k_categorical_accuracy") == "up"
    assert M.direction("mae") == M.direction("mean_squared_error") == M.direction("binary_crossentropy") == "down"
    assert M.direction("something_else") is None


def test_bad_inputs_are_metric_errors():
    with pytest.raises(M.MetricError, match="outside"):
        M.SparseTopKCategoricalAccuracy(k=2).update_state([0, 9], np.ones((2, 3), np.float32))
    with pytest.raises(M.MetricError, match="sample_weight"):
        M.MeanSquaredError().update_state(np.ones(4), np.ones(4), sample_weight=np.ones(4))  # 1-D, as Keras
    with pytest.raises(M.MetricError, match="shape"):
        M.BinaryCrossentropy().update_state(np.ones(3), np.ones((3, 1), np.float32))


def test_loss_update_is_microseconds():
    """The per-batch loss update is a float fast path (no numpy)."""
    m = M.Mean(name="loss")
    n = 20000
    t = time.perf_counter()
    for i in range(n):
        m.update_state(0.5, sample_weight=32)
    per_call = (time.perf_counter() - t) / n
    assert m.result() == 0.5
    assert per_call < 20e-6, per_call
