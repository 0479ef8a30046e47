"""compile / fit / evaluate / train_on_batch / test_on_batch, as Keras has them, for any model
that can give a training graph (engine.nn models, models loaded with engine.load).

The host class provides:
    _training_parts() -> (graph, trainable names, state names)   forward in training form
    _eval_parts() -> (graph, version)                              forward in inference form
    _store_values({name: array})                                   trained values written back
    _input_names() -> [names]
"""

from __future__ import annotations

import math
import numbers
from typing import Optional

import numpy as np

from . import losses as _losses
from . import optimizers as _optimizers
from .autograd import check_trainable
from .errors import EngineError
from .train import Trainer


class TrainingError(EngineError):
    """Bad arguments or data for compile / fit / evaluate, or a loss that became NaN."""


class TrainingMixin:
    stop_training = False

    # -- compile ---------------------------------------------------------------------------
    def compile(self, optimizer="rmsprop", loss=None, metrics=None, loss_weights=None, weighted_metrics=None,
                run_eagerly=False, steps_per_execution=1, jit_compile="auto", auto_scale_loss=True, seed=None):
        """Keras's compile: an optimizer (name or instance), a loss (name or instance) and metrics."""
        if loss is None:
            raise TrainingError(f"{self._train_name()}: compile() needs a loss")
        if loss_weights is not None:
            raise TrainingError(f"{self._train_name()}: loss_weights is not supported (one output, one loss)")
        if isinstance(loss, (list, tuple, dict)):
            items = list(loss.values()) if isinstance(loss, dict) else list(loss)
            if len(items) != 1:
                raise TrainingError(f"{self._train_name()}: one loss per model is supported, got {len(items)}")
            loss = items[0]
        try:
            self.optimizer = _optimizers.get(optimizer)
        except EngineError as e:
            raise TrainingError(str(e)) from None
        self.loss = _losses.get(loss)
        # Keras: `metrics` ignore sample weights, `weighted_metrics` use them
        self._metric_ids = [(m, False) for m in (metrics or [])] + [(m, True) for m in (weighted_metrics or [])]
        self._seed = seed
        self._trainer: Optional[Trainer] = None
        self._trainer_key = None
        self.compiled = True
        graph, trainable = self._training_parts()[:2]
        check_trainable(graph, trainable)  # an op without a backward rule: say so now

    def _train_name(self) -> str:
        return getattr(self, "name", type(self).__name__)

    def _require_compiled(self, what: str):
        if not getattr(self, "compiled", False):
            raise TrainingError(f"{self._train_name()}: call compile() before {what}()")

    def _get_trainer(self) -> Trainer:
        if self._trainer is not None and self._trainer_key == self._training_parts(key_only=True):
            return self._trainer  # nothing changed the weights from outside since the last step
        graph, trainable, state, key = self._training_parts()
        if self._trainer is not None and self._trainer_key != key and self._trainer.same_values(graph, trainable, state):
            self._trainer.load_values(graph)  # weights set from outside: same plans, new values
            self._trainer_key = key
        if self._trainer is None or self._trainer_key != key:
            seed = self._seed if self._seed is not None else 1234
            self._trainer = Trainer(graph, trainable, state, self.loss, self.optimizer, seed)
            self._trainer_key = key
        return self._trainer

    def _flush_training(self) -> None:
        """Write back values trained since the last write-back (train_on_batch defers it to the
        next read of the weights, so a loop of train_on_batch copies nothing per step)."""
        if self.__dict__.get("_dirty"):
            self._sync()

    def _sync(self) -> None:
        """Write the trained values back to the model (after each epoch and at the end)."""
        self._dirty = False
        if self._trainer is not None:
            self._store_values(self._trainer.values)
            self._trainer_key = self._training_parts(key_only=True)

    # -- data ------------------------------------------------------------------------------
    def _feeds(self, x) -> dict:
        names = self._input_names()
        if isinstance(x, dict):
            missing = [n for n in names if n not in x]
            if missing:
                raise TrainingError(f"{self._train_name()}: inputs {missing} are missing from x (got {list(x)})")
            arrays = [x[n] for n in names]
        elif isinstance(x, (list, tuple)) and len(names) > 1:
            if len(x) != len(names):
                raise TrainingError(f"{self._train_name()}: the model has {len(names)} inputs, x holds {len(x)}")
            arrays = list(x)
        else:
            arrays = [x]
        out = {}
        for n, a in zip(names, arrays):
            a = np.asarray(a)
            want = self._input_dtype(n)
            if a.dtype.kind in "iub" and want.startswith("float"):
                a = a.astype(np.float32)
            elif a.dtype != np.dtype(want):
                if want.startswith("int") and a.dtype.kind == "f":
                    if not np.all(np.isfinite(a)) or np.any(a != np.round(a)):
                        raise TrainingError(f"{self._train_name()}: input '{n}' holds token ids and must be "
                                            "whole numbers")
                a = a.astype(want)
            out[n] = np.ascontiguousarray(a)
        return out

    def _targets(self, y, n: int, pred_shape: tuple) -> np.ndarray:
        if isinstance(y, (list, tuple)) and len(y) == 1 and not np.isscalar(y[0]):
            y = y[0]
        y = np.asarray(y)
        if y.dtype == object or y.ndim == 0:
            raise TrainingError(f"{self._train_name()}: y must be an array of targets, got {y.dtype} of shape {y.shape}")
        if len(y) != n:
            raise TrainingError(f"{self._train_name()}: x has {n} samples but y has {len(y)}")
        want = self.loss.target_dtype(pred_shape)
        if want == "int64":
            if y.dtype.kind == "f":
                if not np.all(np.isfinite(y)) or np.any(y != np.round(y)):
                    raise TrainingError(f"{self._train_name()}: {self.loss.name} needs integer class labels, "
                                        "got non-integer values in y")
            y = y.astype(np.int64)
            C = pred_shape[-1]
            bad = (y < 0) | (y >= C)
            if bad.any():
                i = int(np.flatnonzero(bad.reshape(-1))[0])
                raise TrainingError(f"{self._train_name()}: label {y.reshape(-1)[i]} at index {i} is outside "
                                    f"[0, {C}) for {C} classes")
        else:
            y = y.astype(np.float32)
        self.loss.check_target((n,) + y.shape[1:], (n,) + tuple(pred_shape[1:]))
        return np.ascontiguousarray(y)

    def _weights(self, sample_weight, class_weight, y, n: int):
        w = None
        if sample_weight is not None:
            w = np.asarray(sample_weight, np.float32).reshape(-1)
            if len(w) != n:
                raise TrainingError(f"{self._train_name()}: sample_weight has {len(w)} values for {n} samples")
        if class_weight is not None:
            labels = y.reshape(n, -1)
            labels = labels[:, 0] if labels.shape[1] == 1 else np.argmax(labels, axis=1)
            cw = np.ones(n, np.float32)
            for k, v in dict(class_weight).items():
                cw[labels == int(k)] = float(v)
            w = cw if w is None else w * cw
        return None if w is None else np.ascontiguousarray(w)

    def _pred_shape(self, feeds: dict) -> tuple:
        """The output's shape for one sample of these inputs (cached per input signature)."""
        key = (tuple((k, v.shape[1:], str(v.dtype)) for k, v in feeds.items()), self._architecture())
        cache = self.__dict__.setdefault("_pred_shapes", {})
        if key not in cache:
            graph, _ = self._eval_parts()
            from .passes.shapes import infer
            one = {k: (1,) + v.shape[1:] for k, v in feeds.items()}
            t = infer(graph, one, input_dtypes={k: str(v.dtype) for k, v in feeds.items()}).types
            cache[key] = t[graph.outputs[0].name].shape
        return cache[key]

    # -- the loop --------------------------------------------------------------------------
    def fit(self, x=None, y=None, batch_size=None, epochs=1, verbose="auto", callbacks=None, validation_split=0.0,
            validation_data=None, shuffle=True, class_weight=None, sample_weight=None, initial_epoch=0,
            steps_per_epoch=None, validation_steps=None, validation_batch_size=None, validation_freq=1, seed=None):
        """Keras's fit. Returns a History; `model.history` keeps it (and is saved with the model)."""
        from .callbacks import CallbackList
        from .metrics import Mean

        self._require_compiled("fit")
        if x is None or y is None:
            raise TrainingError(f"{self._train_name()}: fit() needs x and y")
        batch_size = _positive_int(batch_size, 32, "batch_size", self)
        epochs = _positive_int(epochs, 1, "epochs", self, zero_ok=True)
        feeds = self._feeds(x)
        n = _count(feeds, self)
        pred_shape = self._pred_shape(feeds)
        y = self._targets(y, n, pred_shape)
        w = self._weights(sample_weight, class_weight, y, n)
        if validation_data is None and validation_split:
            if not 0.0 < float(validation_split) < 1.0:
                raise TrainingError(f"{self._train_name()}: validation_split must be in (0, 1), got {validation_split}")
            split = int(n * (1.0 - float(validation_split)))  # Keras: the last samples, before shuffling
            val = ({k: v[split:] for k, v in feeds.items()}, y[split:], None if w is None else w[split:])
            feeds, y, w = {k: v[:split] for k, v in feeds.items()}, y[:split], None if w is None else w[:split]
            n = split
        elif validation_data is not None:
            vd = tuple(validation_data)
            if len(vd) not in (2, 3):
                raise TrainingError(f"{self._train_name()}: validation_data must be (x, y) or (x, y, sample_weight)")
            vf = self._feeds(vd[0])
            vn = _count(vf, self)
            val = (vf, self._targets(vd[1], vn, pred_shape), self._weights(vd[2] if len(vd) > 2 else None, None, None, vn))
        else:
            val = None
        steps = math.ceil(n / batch_size) if steps_per_epoch is None else int(steps_per_epoch)
        verbose = 1 if verbose == "auto" else int(verbose)
        cbs = list(callbacks or [])
        cb = CallbackList(cbs, add_history=True, add_progbar=verbose != 0, model=self, verbose=verbose,
                          epochs=epochs, steps=steps)
        self.history = cb.history
        trainer = self._get_trainer()
        metrics = self._make_metrics(y, pred_shape)
        loss_mean = Mean(name="loss")
        # One generator per epoch from (seed, epoch): a run resumed at initial_epoch shuffles as
        # the uninterrupted run did.
        base = seed if seed is not None else (self._seed if self._seed is not None
                                              else int(np.random.randint(1 << 31)))
        self.stop_training = False
        cb.on_train_begin({})
        logs: dict = {}
        for epoch in range(initial_epoch, epochs):
            cb.on_epoch_begin(epoch, {})
            loss_mean.reset_state()
            for m in metrics:
                m.reset_state()
            order = np.random.default_rng([base, epoch]).permutation(n) if shuffle else None
            for b in range(steps):
                idx = slice(b * batch_size % max(n, 1), min(n, b * batch_size % max(n, 1) + batch_size))
                take = order[idx] if order is not None else np.arange(n)[idx]
                cb.on_train_batch_begin(b, {})
                bf = {k: np.ascontiguousarray(v[take]) for k, v in feeds.items()}
                by = np.ascontiguousarray(y[take])
                bw = None if w is None else np.ascontiguousarray(w[take])
                loss, outs = trainer.train_batch(bf, by, bw)
                if not math.isfinite(loss) and not _has_nan_callback(cbs):
                    self._sync()
                    raise TrainingError(f"{self._train_name()}: the loss became {loss} at epoch {epoch + 1}, "
                                        f"batch {b + 1} (lower the learning rate, clip gradients, or check the "
                                        "data; TerminateOnNaN stops quietly instead)")
                loss_mean.update_state(loss, sample_weight=len(take))
                for m in metrics:
                    m.update_state(by, outs[0], sample_weight=bw if m._weighted else None)
                logs = {"loss": loss_mean.result(), **{m.name: m.result() for m in metrics}}
                cb.on_train_batch_end(b, logs)
                if self.stop_training:
                    break
            self._sync()
            if val is not None and (epoch + 1) % int(validation_freq) == 0:
                cb.on_test_begin({})
                vlogs = self._evaluate_arrays(*val, validation_batch_size or batch_size, y_shape=pred_shape,
                                              callbacks=cb)
                cb.on_test_end(vlogs)
                logs.update({f"val_{k}": v for k, v in vlogs.items()})
            cb.on_epoch_end(epoch, logs)
            if self.stop_training:
                break
        cb.on_train_end(logs)  # may set weights (EarlyStopping's best): the trainer reloads them
        return self.history

    def _make_metrics(self, y, pred_shape):
        from .metrics import get as get_metric
        out = []
        for m, weighted in getattr(self, "_metric_ids", []):
            try:
                metric = get_metric(m, self.loss.name, y.shape, (len(y),) + tuple(pred_shape[1:]))
            except EngineError as e:
                raise TrainingError(str(e)) from None
            metric._weighted = weighted
            out.append(metric)
        return out

    def _evaluate_arrays(self, feeds, y, w, batch_size, y_shape=None, callbacks=None):
        from .metrics import Mean
        trainer = self._get_trainer()
        graph, version = self._eval_parts()
        n = len(y)
        metrics = self._make_metrics(y, y_shape if y_shape is not None else self._pred_shape(feeds))
        loss_mean = Mean(name="loss")
        for b in range(math.ceil(n / batch_size)):
            s = slice(b * batch_size, min(n, (b + 1) * batch_size))
            if callbacks is not None:
                callbacks.on_test_batch_begin(b, {})
            bf = {k: np.ascontiguousarray(v[s]) for k, v in feeds.items()}
            bw = None if w is None else np.ascontiguousarray(w[s])
            loss, outs = trainer.eval_batch(graph, bf, np.ascontiguousarray(y[s]), bw, version=version)
            loss_mean.update_state(loss, sample_weight=s.stop - s.start)
            for m in metrics:
                m.update_state(y[s], outs[0], sample_weight=bw if m._weighted else None)
            if callbacks is not None:
                callbacks.on_test_batch_end(b, {"loss": loss_mean.result()})
        return {"loss": float(loss_mean.result()), **{m.name: float(m.result()) for m in metrics}}

    def evaluate(self, x=None, y=None, batch_size=None, verbose="auto", sample_weight=None, steps=None,
                 callbacks=None, return_dict=False):
        """Keras's evaluate: the loss (and metrics) on (x, y); a scalar, a list, or a dict."""
        self._require_compiled("evaluate")
        if x is None or y is None:
            raise TrainingError(f"{self._train_name()}: evaluate() needs x and y")
        batch_size = _positive_int(batch_size, 32, "batch_size", self)
        feeds = self._feeds(x)
        n = _count(feeds, self)
        pred_shape = self._pred_shape(feeds)
        yy = self._targets(y, n, pred_shape)
        logs = self._evaluate_arrays(feeds, yy, self._weights(sample_weight, None, yy, n), batch_size, y_shape=pred_shape)
        if verbose not in (0, "auto") or verbose == "auto":
            if verbose == "auto" or int(verbose) > 0:
                from .progbar import Progbar
                bar = Progbar(math.ceil(n / batch_size), verbose=1 if verbose == "auto" else int(verbose))
                bar.update(math.ceil(n / batch_size), list(logs.items()), finalize=True)
        if return_dict:
            return logs
        values = list(logs.values())
        return values[0] if len(values) == 1 else values

    def train_on_batch(self, x, y=None, sample_weight=None, class_weight=None, return_dict=False):
        """One optimizer step on one batch; returns the batch loss (and metrics)."""
        self._require_compiled("train_on_batch")
        feeds = self._feeds(x)
        n = _count(feeds, self)
        pred_shape = self._pred_shape(feeds)
        yy = self._targets(y, n, pred_shape)
        w = self._weights(sample_weight, class_weight, yy, n)
        loss, outs = self._get_trainer().train_batch(feeds, yy, w)
        self._dirty = True  # written back when the weights are next read
        logs = {"loss": loss}
        for m in self._make_metrics(yy, pred_shape):
            m.update_state(yy, outs[0], sample_weight=w if m._weighted else None)
            logs[m.name] = m.result()
        if return_dict:
            return logs
        return loss if len(logs) == 1 else list(logs.values())

    def test_on_batch(self, x, y=None, sample_weight=None, return_dict=False):
        return self.evaluate(x, y, batch_size=max(1, _count(self._feeds(x), self)), verbose=0,
                             sample_weight=sample_weight, return_dict=return_dict)


def _count(feeds: dict, model) -> int:
    counts = {k: (len(v) if v.ndim else 0) for k, v in feeds.items()}
    if len(set(counts.values())) > 1:
        raise TrainingError(f"{model._train_name()}: inputs have different numbers of samples: {counts}")
    n = next(iter(counts.values()))
    if n == 0:
        raise TrainingError(f"{model._train_name()}: no samples in x")
    return n


def _positive_int(v, default, what, model, zero_ok=False):
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < (0 if zero_ok else 1):
        raise TrainingError(f"{model._train_name()}: {what} must be a {'non-negative' if zero_ok else 'positive'} "
                            f"int, got {v!r}")
    return int(v)


def _has_nan_callback(cbs) -> bool:
    from .callbacks import TerminateOnNaN
    return any(isinstance(c, TerminateOnNaN) for c in cbs)
