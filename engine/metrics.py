"""Streaming metrics for `compile / fit / evaluate`, in numpy, with Keras 3's names, formulas and
sample weighting.

    m = metrics.get("accuracy", "sparse_categorical_crossentropy", y.shape, probs.shape)  # as compile picks it
    m.update_state(y_true, y_pred, sample_weight=None)     # once per batch
    m.result()                                             # a Python float: the running value
    m.reset_state()                                        # at each epoch start

    loss = metrics.Mean(name="loss")
    loss.update_state(batch_loss, sample_weight=batch_size)   # Keras's loss tracker

Every metric here is Keras's definition: a per-sample value (Keras's metric function, computed in
the predictions' float type as Keras computes it in float32) reduced by `Mean` exactly as
`keras.metrics.Mean` reduces it (see `_samplewise`), so sample weights, sequence outputs and
1-D outputs weigh as they do in Keras. Running totals are float64 (Keras: float32, so after many
batches the two differ by ~1e-7 relative). NaN propagates as numpy propagates it: a NaN loss
makes the running mean NaN until `reset_state`; `result()` of an empty metric is 0.0 (Keras's
`divide_no_nan`).

`get(identifier, loss_name, y_true_shape, y_pred_shape)` resolves what a user passes to
`compile(metrics=...)`: Keras's strings ('accuracy'/'acc' choose binary, sparse categorical or
categorical accuracy from the shapes exactly as Keras 3's compile does; class names, their
snake_case names and the aliases 'mse', 'mae', 'mape', 'msle', 'bce' in either case), `Metric`
objects and classes, config dicts, or a function `fn(y_true, y_pred) -> per-sample values`
(wrapped in `MeanMetricWrapper`, named after the function). The metric's `name` is the key in
the logs: the string as given ('acc' stays 'acc', 'mse' stays 'mse'), else the object's name.
"""

from __future__ import annotations

import math
import re

import numpy as np

from .errors import EngineError

EPSILON = 1e-7  # keras.backend.epsilon()


class MetricError(EngineError, ValueError):
    """A metric identifier is unknown, or a metric got arrays it cannot take."""


# --------------------------------------------------------------------------------------------
# Keras's shape conventions


def _squeeze_or_expand_to_same_rank(x1, x2, expand_rank_1=True):
    """keras.src.losses.loss.squeeze_or_expand_to_same_rank: make ranks equal when they differ
    by one and the longer one ends in 1."""
    r1, r2 = x1.ndim, x2.ndim
    if r1 == r2:
        return x1, x2
    if r1 == r2 + 1 and x1.shape[-1] == 1:
        if r2 == 1 and expand_rank_1:
            x2 = x2[..., None]
        else:
            x1 = x1[..., 0]
    if r2 == r1 + 1 and x2.shape[-1] == 1:
        if r1 == 1 and expand_rank_1:
            x1 = x1[..., None]
        else:
            x2 = x2[..., 0]
    return x1, x2


def _float_array(x):
    """x as a float array (float32 unless it is float64 / float16 already), like Keras's
    convert_to_tensor of predictions."""
    x = np.asarray(x)
    if x.dtype.kind != "f":
        x = x.astype(np.float32)
    return x


def _samplewise(values, sample_weight):
    """keras.src.metrics.reduction_metrics.reduce_to_samplewise_values with mean reduction.

    Returns (values reduced to at most 1-D and multiplied by the weights, weights reduced the same
    way or None). A weight of lower rank than the values averages the values over the extra axes
    first; weights of rank > 1 are averaged over their non-batch axes (not normalised per sample:
    Keras's rule)."""
    values = np.asarray(values, dtype=np.float64)
    if sample_weight is not None:
        sample_weight = np.asarray(sample_weight, dtype=np.float64)
        values, sample_weight = _squeeze_or_expand_to_same_rank(values, sample_weight)
        w_ndim, v_ndim = sample_weight.ndim, values.ndim
        if v_ndim > w_ndim:
            values = values.mean(axis=tuple(range(w_ndim, v_ndim)))
        try:
            sample_weight = np.broadcast_to(sample_weight, values.shape)
        except ValueError:
            raise MetricError(f"sample_weight of shape {sample_weight.shape} does not fit per-sample values of "
                              f"shape {values.shape} (Keras's rule: the weight's shape must broadcast to the values "
                              f"after averaging them over the axes the weight lacks)") from None
        values = values * sample_weight
        if w_ndim > 1:
            sample_weight = sample_weight.mean(axis=tuple(range(1, w_ndim)))
    if values.ndim > 1:
        values = values.mean(axis=tuple(range(1, values.ndim)))
    return values, sample_weight


# --------------------------------------------------------------------------------------------
# Base classes


class Metric:
    """Base class: `update_state(y_true, y_pred, sample_weight=None)`, `result() -> float`,
    `reset_state()`, `name`. `_direction` ('up' / 'down') tells the monitoring callbacks which
    way is better (Keras's attribute)."""

    _direction = None

    def __init__(self, name=None, dtype=None):
        self.name = name or _snake(type(self).__name__)
        self.dtype = dtype or "float32"

    def update_state(self, y_true, y_pred, sample_weight=None):
        raise NotImplementedError

    def result(self) -> float:
        raise NotImplementedError

    def reset_state(self) -> None:
        raise NotImplementedError

    def __call__(self, *args, **kwargs) -> float:
        """Update, then return the result (Keras's `metric(y_true, y_pred)`)."""
        self.update_state(*args, **kwargs)
        return self.result()

    def get_config(self) -> dict:
        return {"name": self.name, "dtype": self.dtype}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        return f"<{type(self).__name__} name={self.name!r}>"


class Mean(Metric):
    """The (weighted) mean of the values given: keras.metrics.Mean.

    `update_state(values, sample_weight=None)`: the loss tracker calls it with the batch's loss
    and the batch size as the weight, so `result()` is Σ loss·size / Σ size."""

    def __init__(self, name="mean", dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.total = 0.0
        self.count = 0.0

    def update_state(self, values, sample_weight=None):
        # Fast path for the per-batch loss: a Python / numpy scalar and a scalar weight.
        if isinstance(values, (float, int, np.floating, np.integer)) and not isinstance(values, bool):
            if sample_weight is None:
                self.total += float(values)
                self.count += 1.0
                return
            if isinstance(sample_weight, (float, int, np.floating, np.integer)):
                w = float(sample_weight)
                self.total += float(values) * w
                self.count += w
                return
        values = np.asarray(values)
        if sample_weight is None and values.ndim <= 1:  # the per-batch metric path
            kind = values.dtype.kind
            if kind == "b":                                      # accuracies: a count of matches
                self.total += np.count_nonzero(values)
            elif kind == "f" and values.dtype.itemsize >= 4:     # summed in its type, as Keras sums float32
                self.total += float(values.sum())
            else:                                                # float16, integers: in float64
                self.total += float(values.astype(np.float64).sum())
            self.count += values.shape[0] if values.ndim else 1.0
            return
        values, sample_weight = _samplewise(values, sample_weight)
        self.total += float(values.sum())
        if sample_weight is not None:
            self.count += float(sample_weight.sum())
        elif values.ndim >= 1:
            self.count += values.shape[0]
        else:
            self.count += 1.0

    def result(self) -> float:
        count = self.count
        return self.total / count if count != 0 else 0.0

    def reset_state(self) -> None:
        self.total = 0.0
        self.count = 0.0


class Sum(Metric):
    """The (weighted) sum of the values given: keras.metrics.Sum."""

    def __init__(self, name="sum", dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.total = 0.0

    def update_state(self, values, sample_weight=None):
        values, _ = _samplewise(values, sample_weight)
        self.total += float(values.sum())

    def result(self) -> float:
        return self.total

    def reset_state(self) -> None:
        self.total = 0.0


class MeanMetricWrapper(Mean):
    """The mean of `fn(y_true, y_pred, **kwargs)`'s per-sample values: keras.metrics.MeanMetricWrapper.

    `fn` takes numpy arrays and returns per-sample values (any shape whose first axis is the
    batch; extra axes are averaged, as in Keras)."""

    def __init__(self, fn, name=None, dtype=None, **kwargs):
        super().__init__(name=name or getattr(fn, "__name__", "mean_metric_wrapper"), dtype=dtype)
        self._fn = fn
        self._fn_kwargs = kwargs

    def update_state(self, y_true, y_pred, sample_weight=None):
        Mean.update_state(self, self._fn(y_true, y_pred, **self._fn_kwargs), sample_weight)

    def get_config(self) -> dict:
        return {**super().get_config(), **self._fn_kwargs}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


# --------------------------------------------------------------------------------------------
# Per-sample functions (Keras's metric functions, numpy)


def accuracy(y_true, y_pred):
    """True where y_true == y_pred exactly (keras.metrics.Accuracy's function; booleans, which
    `Mean` sums as 0/1)."""
    y_pred = np.asarray(y_pred)
    y_true = np.asarray(y_true).astype(y_pred.dtype, copy=False)
    y_true, y_pred = _squeeze_or_expand_to_same_rank(y_true, y_pred)
    return y_true == y_pred


def binary_accuracy(y_true, y_pred, threshold=0.5):
    """True where (y_pred > threshold) equals y_true."""
    y_pred = np.asarray(y_pred)
    y_true = np.asarray(y_true)
    y_true, y_pred = _squeeze_or_expand_to_same_rank(y_true, y_pred)
    return y_true == (y_pred > threshold).astype(y_true.dtype)


def categorical_accuracy(y_true, y_pred):
    """True where argmax(y_true) == argmax(y_pred) over the last axis (one-hot targets). A NaN
    score counts as the maximum (its first occurrence), as in numpy and torch."""
    y_pred = np.asarray(y_pred)
    y_true = np.argmax(np.asarray(y_true), axis=-1)
    if y_true.ndim == y_pred.ndim:  # targets of rank y_pred + 1 ending in 1 (Keras squeezes them)
        if y_true.shape[-1] != 1:
            raise MetricError(f"categorical accuracy: y_true of shape {y_true.shape} after argmax does not fit "
                              f"y_pred of shape {y_pred.shape}")
        return (y_true[..., 0] == np.argmax(y_pred, axis=-1)).reshape(y_true.shape)
    return y_true == np.argmax(y_pred, axis=-1)


def sparse_categorical_accuracy(y_true, y_pred):
    """True where the integer label equals argmax(y_pred) over the last axis (labels of shape
    (batch,) or (batch, 1); a NaN score counts as the maximum)."""
    y_pred = np.asarray(y_pred)
    y_true = np.asarray(y_true)
    if y_true.ndim == y_pred.ndim and y_true.shape[-1] == 1:
        y_true = y_true[..., 0]  # Keras squeezes, compares, then drops the trailing 1 again
    return y_true == np.argmax(y_pred, axis=-1)


def _in_top_k(targets, predictions, k):
    """keras.ops.in_top_k: the target's score is >= the k-th largest score (ties count as in; a
    NaN score ranks above every number, a NaN target score is never in). Counts the scores
    strictly above the target's (NaN ones included: `not <=`)."""
    n, n_classes = predictions.shape
    bad = (targets < 0) | (targets >= n_classes)
    if bad.any():
        i = int(np.argmax(bad))
        raise MetricError(f"top-k accuracy: label {int(targets[i])} of sample {i} is outside [0, {n_classes})")
    k = min(int(k), n_classes)
    target_scores = predictions[np.arange(n), targets]
    above = np.count_nonzero(~(predictions <= target_scores[:, None]), axis=-1)
    return above < k


def top_k_categorical_accuracy(y_true, y_pred, k=5):
    """True where argmax(y_true) is among the k highest scores of y_pred."""
    y_pred = np.asarray(y_pred)
    y_true = np.argmax(np.asarray(y_true), axis=-1)
    org_shape = y_true.shape
    if y_pred.ndim > 2:
        y_pred = y_pred.reshape(-1, y_pred.shape[-1])
    matches = _in_top_k(y_true.reshape(-1), y_pred, k)
    return matches.reshape(org_shape) if len(org_shape) > 1 else matches


def sparse_top_k_categorical_accuracy(y_true, y_pred, k=5):
    """True where the integer label is among the k highest scores of y_pred."""
    y_pred = np.asarray(y_pred)
    y_true = np.asarray(y_true)
    if y_true.dtype.kind != "i":
        y_true = y_true.astype(np.int64)  # Keras converts the labels to int32 (truncation)
    org_shape = y_true.shape
    if y_pred.ndim > 2:
        y_pred = y_pred.reshape(-1, y_pred.shape[-1])
    matches = _in_top_k(y_true.reshape(-1), y_pred, k)
    return matches.reshape(org_shape) if len(org_shape) > 1 else matches


def _regression_pair(y_true, y_pred):
    y_pred = _float_array(y_pred)
    y_true = np.asarray(y_true).astype(y_pred.dtype, copy=False)
    return _squeeze_or_expand_to_same_rank(y_true, y_pred)


def mean_squared_error(y_true, y_pred):
    """mean((y_true - y_pred)², axis=-1)."""
    y_true, y_pred = _regression_pair(y_true, y_pred)
    return np.mean(np.square(y_true - y_pred), axis=-1)


def mean_absolute_error(y_true, y_pred):
    """mean(|y_true - y_pred|, axis=-1)."""
    y_true, y_pred = _regression_pair(y_true, y_pred)
    return np.mean(np.abs(y_true - y_pred), axis=-1)


def mean_absolute_percentage_error(y_true, y_pred):
    """100 · mean(|(y_true - y_pred) / max(|y_true|, ε)|, axis=-1)."""
    y_true, y_pred = _regression_pair(y_true, y_pred)
    eps = y_pred.dtype.type(EPSILON)
    diff = np.abs((y_true - y_pred) / np.maximum(np.abs(y_true), eps))
    return y_pred.dtype.type(100.0) * np.mean(diff, axis=-1)


def mean_squared_logarithmic_error(y_true, y_pred):
    """mean((log(max(y_pred, ε) + 1) - log(max(y_true, ε) + 1))², axis=-1)."""
    y_true, y_pred = _regression_pair(y_true, y_pred)
    eps = y_pred.dtype.type(EPSILON)
    first = np.log(np.maximum(y_pred, eps) + y_pred.dtype.type(1))
    second = np.log(np.maximum(y_true, eps) + y_pred.dtype.type(1))
    return np.mean(np.square(first - second), axis=-1)


def _log_softmax(x, axis):
    m = np.max(x, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0)
    z = x - m
    return z - np.log(np.sum(np.exp(z), axis=axis, keepdims=True))


def binary_crossentropy(y_true, y_pred, from_logits=False, label_smoothing=0.0, axis=-1):
    """mean over `axis` of the elementwise binary cross-entropy (probabilities clipped to
    [ε, 1 - ε], or the stable logits formula), as Keras's torch backend computes it."""
    y_pred = _float_array(y_pred)
    y_true = np.asarray(y_true).astype(y_pred.dtype, copy=False)
    if label_smoothing:
        y_true = y_true * (1.0 - label_smoothing) + 0.5 * label_smoothing
        y_true = y_true.astype(y_pred.dtype, copy=False)
    if y_true.shape != y_pred.shape:
        raise MetricError(f"binary crossentropy: y_true shape {y_true.shape} and y_pred shape {y_pred.shape} "
                          "must be the same")
    if from_logits:
        x = y_pred
        bce = np.maximum(x, 0) - x * y_true + np.log1p(np.exp(-np.abs(x)))
    else:
        eps = y_pred.dtype.type(EPSILON)
        p = np.clip(y_pred, eps, 1 - eps)
        bce = -(y_true * np.maximum(np.log(p), -100) + (1 - y_true) * np.maximum(np.log(1 - p), -100))
    return np.mean(bce, axis=axis)


def categorical_crossentropy(y_true, y_pred, from_logits=False, label_smoothing=0.0, axis=-1):
    """-Σ y_true · log p over `axis`; p = y_pred / Σ y_pred clipped to [ε, 1 - ε], or
    log_softmax(y_pred) from logits."""
    y_pred = _float_array(y_pred)
    y_true = np.asarray(y_true).astype(y_pred.dtype, copy=False)
    if label_smoothing:
        n = y_true.shape[-1]
        y_true = (y_true * (1.0 - label_smoothing) + label_smoothing / n).astype(y_pred.dtype, copy=False)
    if y_true.shape != y_pred.shape:
        raise MetricError(f"categorical crossentropy: y_true shape {y_true.shape} and y_pred shape {y_pred.shape} "
                          "must be the same (one-hot targets; use sparse_categorical_crossentropy for labels)")
    if from_logits:
        log_prob = _log_softmax(y_pred, axis)
    else:
        eps = y_pred.dtype.type(EPSILON)
        p = y_pred / np.sum(y_pred, axis=axis, keepdims=True)
        log_prob = np.log(np.clip(p, eps, 1 - eps))
    return -np.sum(y_true * log_prob, axis=axis)


def sparse_categorical_crossentropy(y_true, y_pred, from_logits=False, axis=-1):
    """-log p[label] with p as in `categorical_crossentropy`."""
    y_pred = _float_array(y_pred)
    labels = np.asarray(y_true)
    if labels.ndim == y_pred.ndim and labels.shape[axis] == 1:
        labels = np.squeeze(labels, axis=axis)
    labels = labels.astype(np.int64)
    expected = tuple(d for i, d in enumerate(y_pred.shape) if i != axis % y_pred.ndim)
    if labels.shape != expected:
        raise MetricError(f"sparse categorical crossentropy: y_true shape {labels.shape} must be y_pred's shape "
                          f"{y_pred.shape} without the class axis")
    n_classes = y_pred.shape[axis]
    bad = (labels < 0) | (labels >= n_classes)
    if bad.any():
        raise MetricError(f"sparse categorical crossentropy: label {int(labels[bad][0])} is outside [0, {n_classes})")
    if from_logits:
        log_prob = _log_softmax(y_pred, axis)
    else:
        eps = y_pred.dtype.type(EPSILON)
        p = y_pred / np.sum(y_pred, axis=axis, keepdims=True)
        log_prob = np.log(np.clip(p, eps, 1 - eps))
    log_prob = np.moveaxis(log_prob, axis, -1)
    return -np.take_along_axis(log_prob, labels[..., None], axis=-1)[..., 0]


# --------------------------------------------------------------------------------------------
# Metric classes (Keras's names, defaults and directions)


class Accuracy(MeanMetricWrapper):
    """How often predictions equal labels exactly."""

    _direction = "up"

    def __init__(self, name="accuracy", dtype=None):
        super().__init__(accuracy, name=name, dtype=dtype)



class BinaryAccuracy(MeanMetricWrapper):
    """How often (y_pred > threshold) matches the 0/1 labels."""

    _direction = "up"

    def __init__(self, name="binary_accuracy", dtype=None, threshold=0.5):
        super().__init__(binary_accuracy, name=name, dtype=dtype, threshold=threshold)
        self.threshold = threshold



class CategoricalAccuracy(MeanMetricWrapper):
    """How often argmax(y_pred) matches argmax of the one-hot labels."""

    _direction = "up"

    def __init__(self, name="categorical_accuracy", dtype=None):
        super().__init__(categorical_accuracy, name=name, dtype=dtype)



class SparseCategoricalAccuracy(MeanMetricWrapper):
    """How often argmax(y_pred) matches the integer labels."""

    _direction = "up"

    def __init__(self, name="sparse_categorical_accuracy", dtype=None):
        super().__init__(sparse_categorical_accuracy, name=name, dtype=dtype)



class TopKCategoricalAccuracy(MeanMetricWrapper):
    """How often the one-hot label is among the top k predictions."""

    _direction = "up"

    def __init__(self, k=5, name="top_k_categorical_accuracy", dtype=None):
        super().__init__(top_k_categorical_accuracy, name=name, dtype=dtype, k=k)
        self.k = k



class SparseTopKCategoricalAccuracy(MeanMetricWrapper):
    """How often the integer label is among the top k predictions."""

    _direction = "up"

    def __init__(self, k=5, name="sparse_top_k_categorical_accuracy", dtype=None):
        super().__init__(sparse_top_k_categorical_accuracy, name=name, dtype=dtype, k=k)
        self.k = k



class MeanSquaredError(MeanMetricWrapper):
    _direction = "down"

    def __init__(self, name="mean_squared_error", dtype=None):
        super().__init__(mean_squared_error, name=name, dtype=dtype)



class MeanAbsoluteError(MeanMetricWrapper):
    _direction = "down"

    def __init__(self, name="mean_absolute_error", dtype=None):
        super().__init__(mean_absolute_error, name=name, dtype=dtype)



class MeanAbsolutePercentageError(MeanMetricWrapper):
    _direction = "down"

    def __init__(self, name="mean_absolute_percentage_error", dtype=None):
        super().__init__(mean_absolute_percentage_error, name=name, dtype=dtype)



class MeanSquaredLogarithmicError(MeanMetricWrapper):
    _direction = "down"

    def __init__(self, name="mean_squared_logarithmic_error", dtype=None):
        super().__init__(mean_squared_logarithmic_error, name=name, dtype=dtype)



class RootMeanSquaredError(Mean):
    """sqrt of the (weighted) mean of the elementwise squared errors."""

    _direction = "down"

    def __init__(self, name="root_mean_squared_error", dtype=None):
        super().__init__(name=name, dtype=dtype)

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_pred = np.asarray(y_pred, dtype=np.float32)
        y_true = np.asarray(y_true, dtype=np.float32)
        y_true, y_pred = _squeeze_or_expand_to_same_rank(y_true, y_pred)
        Mean.update_state(self, np.square(y_pred - y_true), sample_weight)

    def result(self) -> float:
        mean = Mean.result(self)
        return math.sqrt(mean) if mean >= 0 else float("nan")


class BinaryCrossentropy(MeanMetricWrapper):
    _direction = "down"

    def __init__(self, name="binary_crossentropy", dtype=None, from_logits=False, label_smoothing=0):
        super().__init__(binary_crossentropy, name=name, dtype=dtype, from_logits=from_logits,
                         label_smoothing=label_smoothing)
        self.from_logits, self.label_smoothing = from_logits, label_smoothing


class CategoricalCrossentropy(MeanMetricWrapper):
    _direction = "down"

    def __init__(self, name="categorical_crossentropy", dtype=None, from_logits=False, label_smoothing=0, axis=-1):
        super().__init__(categorical_crossentropy, name=name, dtype=dtype, from_logits=from_logits,
                         label_smoothing=label_smoothing, axis=axis)
        self.from_logits, self.label_smoothing, self.axis = from_logits, label_smoothing, axis


class SparseCategoricalCrossentropy(MeanMetricWrapper):
    _direction = "down"

    def __init__(self, name="sparse_categorical_crossentropy", dtype=None, from_logits=False, ignore_class=None,
                 axis=-1):
        if ignore_class is not None:
            raise MetricError("SparseCategoricalCrossentropy: ignore_class is not supported")
        super().__init__(sparse_categorical_crossentropy, name=name, dtype=dtype, from_logits=from_logits, axis=axis)
        self.from_logits, self.axis = from_logits, axis


# --------------------------------------------------------------------------------------------
# Resolving compile(metrics=...)


def _snake(name: str) -> str:
    """keras.src.utils.naming.to_snake_case."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    name = re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()
    return name


_CLASSES = [Accuracy, BinaryAccuracy, CategoricalAccuracy, SparseCategoricalAccuracy, TopKCategoricalAccuracy,
            SparseTopKCategoricalAccuracy, MeanSquaredError, MeanAbsoluteError, MeanAbsolutePercentageError,
            MeanSquaredLogarithmicError, RootMeanSquaredError, BinaryCrossentropy, CategoricalCrossentropy,
            SparseCategoricalCrossentropy]

# Keras 3's metrics.ALL_OBJECTS_DICT, restricted to what is implemented here (Mean and Sum are
# left out: they take values, not (y_true, y_pred)).
_BY_NAME = {cls.__name__: cls for cls in _CLASSES}
_BY_NAME.update({_snake(cls.__name__): cls for cls in _CLASSES})
_BY_NAME.update({"bce": BinaryCrossentropy, "BCE": BinaryCrossentropy, "mse": MeanSquaredError,
                 "MSE": MeanSquaredError, "mae": MeanAbsoluteError, "MAE": MeanAbsoluteError,
                 "mape": MeanAbsolutePercentageError, "MAPE": MeanAbsolutePercentageError,
                 "msle": MeanSquaredLogarithmicError, "MSLE": MeanSquaredLogarithmicError})
_ALL_CLASSES = {cls.__name__: cls for cls in _CLASSES + [Mean, Sum, MeanMetricWrapper]}

# Loss names → the accuracy Keras 2 picked for them; used only when the shapes are not known.
_LOSS_ACCURACY = {"binary_crossentropy": "binary", "bce": "binary", "BinaryCrossentropy": "binary",
                  "binary_focal_crossentropy": "binary", "BinaryFocalCrossentropy": "binary",
                  "sparse_categorical_crossentropy": "sparse", "SparseCategoricalCrossentropy": "sparse",
                  "categorical_crossentropy": "categorical", "CategoricalCrossentropy": "categorical",
                  "categorical_focal_crossentropy": "categorical", "CategoricalFocalCrossentropy": "categorical"}


def known_names() -> list:
    """The strings `get` accepts."""
    return sorted(set(_BY_NAME) | {"accuracy", "acc"})


def _accuracy_kind(loss_name, y_true_shape, y_pred_shape) -> str:
    """Keras 3's compile_utils.is_binary_or_sparse_categorical on the first batch's shapes."""
    if y_true_shape is not None and y_pred_shape is not None:
        y_true_shape, y_pred_shape = tuple(y_true_shape), tuple(y_pred_shape)
        if len(y_true_shape) == 0 or len(y_pred_shape) == 0:
            raise MetricError(f"accuracy: y_true shape {y_true_shape} and y_pred shape {y_pred_shape} need a batch "
                              "axis")
        if y_pred_shape[-1] == 1:
            return "binary"
        if len(y_true_shape) < len(y_pred_shape) or (y_true_shape[-1] == 1 and (y_pred_shape[-1] or 2) > 1):
            return "sparse"
        return "categorical"
    name = loss_name if isinstance(loss_name, str) else getattr(loss_name, "name", None) or \
        getattr(loss_name, "__name__", None) or type(loss_name).__name__
    kind = _LOSS_ACCURACY.get(name) or _LOSS_ACCURACY.get(_snake(name) if name else "")
    if kind is None:
        raise MetricError(f"'accuracy' needs the shapes of y_true and y_pred (or a cross-entropy loss) to choose "
                          f"binary, sparse categorical or categorical accuracy; got loss {loss_name!r} and no shapes")
    return kind


def get(identifier, loss_name=None, y_true_shape=None, y_pred_shape=None) -> Metric:
    """The Metric for one entry of `compile(metrics=[...])`, as Keras 3's compile builds it.

    `y_true_shape` / `y_pred_shape`: the shapes of the first batch's targets and predictions
    (Keras builds its compiled metrics from the first batch). 'accuracy' / 'acc' (any case) give
    BinaryAccuracy when y_pred's last axis is 1, SparseCategoricalAccuracy when y_true has lower
    rank or a last axis of 1 against more classes, else CategoricalAccuracy; Keras 3 looks only at
    the shapes, so `loss_name` is used only when the shapes are not given. The returned metric is
    named by the string as given; a Metric object keeps its name and is returned itself."""
    if identifier is None:
        raise MetricError("expected a metric, got None")
    if isinstance(identifier, Metric):
        return identifier
    if isinstance(identifier, type) and issubclass(identifier, Metric):
        try:
            return identifier()
        except TypeError as e:
            raise MetricError(f"metric class {identifier.__name__} cannot be built without arguments: {e}") from None
    if isinstance(identifier, dict):
        cls = _ALL_CLASSES.get(identifier.get("class_name"))
        if cls is None or cls in (Mean, Sum, MeanMetricWrapper):
            raise MetricError(f"unknown metric config class {identifier.get('class_name')!r}; known: "
                              f"{', '.join(c.__name__ for c in _CLASSES)}")
        config = dict(identifier.get("config") or {})
        config.pop("dtype", None)
        return cls(**config)
    if isinstance(identifier, str):
        if identifier.lower() in ("accuracy", "acc"):
            kind = _accuracy_kind(loss_name, y_true_shape, y_pred_shape)
            cls = {"binary": BinaryAccuracy, "sparse": SparseCategoricalAccuracy,
                   "categorical": CategoricalAccuracy}[kind]
            return cls(name=identifier)
        cls = _BY_NAME.get(identifier)
        if cls is None:
            raise MetricError(f"unknown metric {identifier!r}; known names: {', '.join(known_names())}")
        return cls(name=identifier)
    if callable(identifier):
        return MeanMetricWrapper(identifier, name=getattr(identifier, "__name__", None) or type(identifier).__name__)
    raise MetricError(f"cannot interpret metric identifier {identifier!r} (a name, a Metric, a Metric class, a "
                      f"config dict or a function fn(y_true, y_pred) are accepted)")


def direction(name: str):
    """'up', 'down' or None for a metric name as it appears in the logs (without 'val_')."""
    if name.lower() in ("accuracy", "acc"):
        return "up"
    cls = _BY_NAME.get(name)
    return cls._direction if cls is not None else None


__all__ = ["Accuracy", "BinaryAccuracy", "BinaryCrossentropy", "CategoricalAccuracy", "CategoricalCrossentropy", "Mean",
           "MeanAbsoluteError", "MeanAbsolutePercentageError", "MeanMetricWrapper", "MeanSquaredError",
           "MeanSquaredLogarithmicError", "Metric", "MetricError", "RootMeanSquaredError", "SparseCategoricalAccuracy",
           "SparseCategoricalCrossentropy", "SparseTopKCategoricalAccuracy", "Sum", "TopKCategoricalAccuracy",
           "direction", "get", "known_names"]
