"""Losses as Keras names and defines them, emitted as graph nodes into a training graph (so the
loss, its gradient and the rest of the step run as one native call).

Each loss computes Keras's per-sample values (the mean over the last axis for the pointwise
losses), multiplies them by the sample weights, and reduces them as Keras's default
"sum_over_batch_size" does: the sum divided by the number of per-sample values.

Cross-entropy on probabilities that a Softmax produced (Dense(..., activation="softmax")) is
computed from the softmax's logits with the fused, stable `softmax_xent` kernel — the value
Keras computes, without its clipping at 1e-7 (which only matters for probabilities below it).
"""

from __future__ import annotations

import numpy as np

from .errors import EngineError

EPSILON = 1e-7  # keras.backend.epsilon()


class LossError(EngineError):
    """An unknown loss, or targets that do not fit the loss."""


class Loss:
    name = "loss"

    def __init__(self, reduction="sum_over_batch_size", name=None):
        if reduction not in ("sum_over_batch_size", "mean"):
            raise LossError(f"{type(self).__name__}: reduction {reduction!r} is not supported in training "
                            "(use 'sum_over_batch_size')")
        self.reduction = reduction
        if name:
            self.name = name

    def target_dtype(self, pred_shape: tuple) -> str:
        return "float32"

    def check_target(self, y_shape: tuple, pred_shape: tuple) -> None:
        """LossError unless targets of y_shape (per batch, batch dim included) fit predictions."""
        a, b = _aligned(tuple(y_shape), tuple(pred_shape))
        try:
            np.broadcast_shapes(a, b)
        except ValueError:
            raise LossError(f"{self.name}: targets of shape {tuple(y_shape)} do not match predictions of shape "
                            f"{tuple(pred_shape)}") from None

    def per_sample(self, gb, pred: str, true: str) -> str:
        raise NotImplementedError

    def emit(self, gb, pred: str, true: str, weight: str | None) -> str:
        """The scalar loss from predictions `pred`, targets `true` and sample weights (N,)."""
        values = self.per_sample(gb, pred, true)
        return reduce_weighted(gb, values, weight)

    def get_config(self) -> dict:
        return {"name": self.name, "reduction": self.reduction}


def _aligned(y: tuple, p: tuple):
    """keras squeeze_or_expand_to_same_rank: a trailing 1 dropped from the longer."""
    if len(y) == len(p) + 1 and y[-1] == 1:
        y = y[:-1]
    elif len(p) == len(y) + 1 and p[-1] == 1:
        p = p[:-1]
    return y, p


def _i64(gb, values):
    return gb.const(np.array(values, np.int64))


def _f32(gb, v):
    return gb.const(np.float32(v))


def align(gb, pred: str, true: str):
    """(pred, true) reshaped as Keras aligns their ranks; true cast to float32."""
    ys, ps = gb.shape(true), gb.shape(pred)
    ya, pa = _aligned(ys, ps)
    if ya != ys:
        true = gb.node("Reshape", [true], attrs={"shape": list(ya)})
    if pa != ps:
        pred = gb.node("Reshape", [pred], attrs={"shape": list(pa)})
    if gb.dtype(true) != "float32":
        true = gb.node("Cast", [true], attrs={"to": 1})
    return pred, true


def mean_last(gb, x: str) -> str:
    if len(gb.shape(x)) <= 1:
        return x
    return gb.node("ReduceMean", [x, _i64(gb, [-1])], attrs={"keepdims": 0})


def reduce_weighted(gb, values: str, weight: str | None) -> str:
    """sum(values · weight) / size(values); weight (N,) broadcast over the rest."""
    shape = gb.shape(values)
    if weight:
        w = weight
        if len(shape) > 1:
            w = gb.node("Reshape", [weight], attrs={"shape": [shape[0]] + [1] * (len(shape) - 1)})
        values = gb.node("Mul", [values, w])
    total = gb.node("ReduceSum", [values, _i64(gb, list(range(len(shape))))], attrs={"keepdims": 0})
    n = int(np.prod(shape)) if shape else 1
    return total if n == 1 else gb.node("Mul", [total, _f32(gb, 1.0 / max(n, 1))], base="loss")


class MeanSquaredError(Loss):
    name = "mean_squared_error"

    def per_sample(self, gb, pred, true):
        pred, true = align(gb, pred, true)
        d = gb.node("Sub", [pred, true])
        return mean_last(gb, gb.node("Mul", [d, d]))


class MeanAbsoluteError(Loss):
    name = "mean_absolute_error"

    def per_sample(self, gb, pred, true):
        pred, true = align(gb, pred, true)
        return mean_last(gb, gb.node("Abs", [gb.node("Sub", [pred, true])]))


class Huber(Loss):
    name = "huber_loss"

    def __init__(self, delta=1.0, **kw):
        super().__init__(**kw)
        self.delta = float(delta)

    def per_sample(self, gb, pred, true):
        pred, true = align(gb, pred, true)
        e = gb.node("Abs", [gb.node("Sub", [pred, true])])
        d = self.delta
        quad = gb.node("Clip", [e], attrs={"min": 0.0, "max": d})  # min(|e|, d)
        lin = gb.node("Sub", [e, quad])
        # 0.5·q² + d·(|e| − q): Keras's where(|e| <= d, 0.5e², d|e| − 0.5d²)
        half_q2 = gb.node("Mul", [gb.node("Mul", [quad, quad]), _f32(gb, 0.5)])
        return mean_last(gb, gb.node("Add", [half_q2, gb.node("Mul", [lin, _f32(gb, d)])]))

    def get_config(self):
        return {**super().get_config(), "delta": self.delta}


def _softmax_logits(gb, pred: str):
    """The logits when `pred` is the output of a Softmax over the last axis, else None."""
    for node in gb.nodes:
        if pred in node.outputs:
            rank = len(gb.shape(pred))
            if node.op == "Softmax" and int(node.attrs.get("axis", -1)) % rank == rank - 1:
                return node.inputs[0]
            return None
    return None


class _CrossEntropy(Loss):
    def __init__(self, from_logits=False, label_smoothing=0.0, axis=-1, **kw):
        super().__init__(**kw)
        self.from_logits = bool(from_logits)
        self.label_smoothing = float(label_smoothing)
        if axis != -1:
            raise LossError(f"{type(self).__name__}: only axis=-1 is supported")
        if not 0.0 <= self.label_smoothing <= 1.0:
            raise LossError(f"{type(self).__name__}: label_smoothing must be in [0, 1], got {label_smoothing}")

    def get_config(self):
        return {**super().get_config(), "from_logits": self.from_logits, "label_smoothing": self.label_smoothing}

    def _logits(self, gb, pred):
        if self.from_logits:
            return pred
        return _softmax_logits(gb, pred)

    def _xent_rows(self, gb, logits, target, weight):
        """Softmax cross-entropy over rows of the last axis, through the fused kernel."""
        shape = gb.shape(logits)
        C = shape[-1]
        rows = int(np.prod(shape[:-1]))
        z = logits if len(shape) == 2 else gb.node("Reshape", [logits], attrs={"shape": [rows, C]})
        sparse = gb.dtype(target) in ("int32", "int64")
        t = target
        if sparse and gb.shape(t) != (rows,):
            t = gb.node("Reshape", [t], attrs={"shape": [rows]})
        if not sparse and gb.shape(t) != (rows, C):
            t = gb.node("Reshape", [t], attrs={"shape": [rows, C]})
        w = weight or ""
        if weight and rows != shape[0]:  # a per-sample weight for each of the sample's rows
            per = rows // shape[0]
            w = gb.node("Reshape", [gb.node("Expand", [gb.node("Reshape", [weight], attrs={"shape": [shape[0], 1]}),
                                                       _i64(gb, [shape[0], per])])], attrs={"shape": [rows]})
        loss, _ = gb.node("SoftmaxXent", [z, t, w], outputs=2, attrs={"reduction": 2}, base="loss/xent")
        return loss


class CategoricalCrossentropy(_CrossEntropy):
    name = "categorical_crossentropy"

    def check_target(self, y_shape, pred_shape):
        if tuple(y_shape) != tuple(pred_shape):
            raise LossError(f"{self.name}: targets must be one-hot (or probabilities) of the predictions' shape "
                            f"{tuple(pred_shape)}, got {tuple(y_shape)} (integer labels: use "
                            "sparse_categorical_crossentropy)")

    def emit(self, gb, pred, true, weight):
        if gb.dtype(true) != "float32":
            true = gb.node("Cast", [true], attrs={"to": 1})
        if self.label_smoothing:
            C = gb.shape(pred)[-1]
            true = gb.node("Add", [gb.node("Mul", [true, _f32(gb, 1.0 - self.label_smoothing)]),
                                   _f32(gb, self.label_smoothing / C)])
        logits = self._logits(gb, pred)
        if logits is not None:
            return self._xent_rows(gb, logits, true, weight)
        # Keras on probabilities: p / Σp, clipped to [ε, 1 − ε], −Σ y·log p
        p = gb.node("Div", [pred, gb.node("ReduceSum", [pred, _i64(gb, [-1])], attrs={"keepdims": 1})])
        logp = gb.node("Log", [gb.node("Clip", [p], attrs={"min": EPSILON, "max": 1.0 - EPSILON})])
        values = gb.node("Neg", [gb.node("ReduceSum", [gb.node("Mul", [true, logp]), _i64(gb, [-1])],
                                         attrs={"keepdims": 0})])
        return reduce_weighted(gb, values, weight)


class SparseCategoricalCrossentropy(_CrossEntropy):
    name = "sparse_categorical_crossentropy"

    def target_dtype(self, pred_shape):
        return "int64"

    def check_target(self, y_shape, pred_shape):
        y, p = tuple(y_shape), tuple(pred_shape)
        if y == p[:-1] or (len(y) == len(p) and y[-1] == 1 and y[:-1] == p[:-1]):
            return
        raise LossError(f"{self.name}: labels must have shape {p[:-1]} (or {p[:-1] + (1,)}) for predictions "
                        f"of shape {p}, got {y} (one-hot targets: use categorical_crossentropy)")

    def emit(self, gb, pred, true, weight):
        if self.label_smoothing:
            raise LossError(f"{self.name}: label_smoothing is not supported")
        shape = gb.shape(pred)
        if gb.shape(true) != shape[:-1]:
            true = gb.node("Reshape", [true], attrs={"shape": list(shape[:-1])})
        logits = self._logits(gb, pred)
        if logits is None:  # probabilities from elsewhere: log of the clipped probability
            logits = gb.node("Log", [gb.node("Clip", [pred], attrs={"min": EPSILON, "max": 1.0 - EPSILON})])
            # softmax(log p) = p / Σp: Keras normalises too
        return self._xent_rows(gb, logits, true, weight)


class BinaryCrossentropy(_CrossEntropy):
    name = "binary_crossentropy"

    def per_sample(self, gb, pred, true):
        pred, true = align(gb, pred, true)
        if self.label_smoothing:
            true = gb.node("Add", [gb.node("Mul", [true, _f32(gb, 1.0 - self.label_smoothing)]),
                                   _f32(gb, 0.5 * self.label_smoothing)])
        if self.from_logits:  # max(z, 0) − z·y + log(1 + exp(−|z|))
            z = pred
            relu = gb.node("Relu", [z])
            softplus = gb.node("Softplus", [gb.node("Neg", [gb.node("Abs", [z])])])
            v = gb.node("Add", [gb.node("Sub", [relu, gb.node("Mul", [z, true])]), softplus])
        else:  # −(y·log p + (1 − y)·log(1 − p)), p clipped to [ε, 1 − ε]
            p = gb.node("Clip", [pred], attrs={"min": EPSILON, "max": 1.0 - EPSILON})
            one = _f32(gb, 1.0)
            a = gb.node("Mul", [true, gb.node("Log", [p])])
            b = gb.node("Mul", [gb.node("Sub", [one, true]), gb.node("Log", [gb.node("Sub", [one, p])])])
            v = gb.node("Neg", [gb.node("Add", [a, b])])
        return mean_last(gb, v)


class KLDivergence(Loss):
    name = "kl_divergence"

    def per_sample(self, gb, pred, true):
        pred, true = align(gb, pred, true)
        y = gb.node("Clip", [true], attrs={"min": EPSILON, "max": 1.0})
        p = gb.node("Clip", [pred], attrs={"min": EPSILON, "max": 1.0})
        v = gb.node("Mul", [y, gb.node("Log", [gb.node("Div", [y, p])])])
        return gb.node("ReduceSum", [v, _i64(gb, [-1])], attrs={"keepdims": 0})


class CosineSimilarity(Loss):
    name = "cosine_similarity"

    def __init__(self, axis=-1, **kw):
        super().__init__(**kw)
        if axis != -1:
            raise LossError("cosine_similarity: only axis=-1 is supported")

    def per_sample(self, gb, pred, true):
        pred, true = align(gb, pred, true)

        def l2n(x):  # x / sqrt(max(Σx², ε²)): Keras 3's normalize, x·min(rsqrt(Σx²), 1/ε), ε = 1e-7
            ss = gb.node("ReduceSumSquare", [x, _i64(gb, [-1])], attrs={"keepdims": 1})
            inv = gb.node("Reciprocal", [gb.node("Sqrt", [gb.node("Clip", [ss], attrs={"min": EPSILON ** 2})])])
            return gb.node("Mul", [x, inv])
        dot = gb.node("ReduceSum", [gb.node("Mul", [l2n(true), l2n(pred)]), _i64(gb, [-1])], attrs={"keepdims": 0})
        return gb.node("Neg", [dot])


LOSSES = {
    "mean_squared_error": MeanSquaredError, "mse": MeanSquaredError,
    "mean_absolute_error": MeanAbsoluteError, "mae": MeanAbsoluteError,
    "huber": Huber, "huber_loss": Huber,
    "binary_crossentropy": BinaryCrossentropy, "categorical_crossentropy": CategoricalCrossentropy,
    "sparse_categorical_crossentropy": SparseCategoricalCrossentropy,
    "kl_divergence": KLDivergence, "kld": KLDivergence, "kullback_leibler_divergence": KLDivergence,
    "cosine_similarity": CosineSimilarity,
}
for _cls in set(LOSSES.values()):
    LOSSES[_cls.__name__] = _cls


def get(identifier) -> Loss:
    """A Loss from a Keras name ('mse', 'sparse_categorical_crossentropy', ...), a class name,
    or a Loss instance."""
    if isinstance(identifier, Loss):
        return identifier
    if isinstance(identifier, type) and issubclass(identifier, Loss):
        return identifier()
    if isinstance(identifier, str) and identifier in LOSSES:
        return LOSSES[identifier]()
    known = sorted(k for k in LOSSES if k[0].islower())
    raise LossError(f"unknown loss {identifier!r}; known losses: {', '.join(known)}")
