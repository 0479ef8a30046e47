"""Keras 3's training callbacks for `fit / evaluate / predict`, in pure Python.

    cbs = CallbackList(user_callbacks, add_history=True, add_progbar=verbose != 0, model=model,
                       verbose=verbose, epochs=epochs, steps=steps_per_epoch)
    cbs.on_train_begin()
    for epoch in range(epochs):
        cbs.on_epoch_begin(epoch)
        for step in range(steps):
            cbs.on_train_batch_begin(step)
            ...                                        # one training step
            cbs.on_train_batch_end(step, {"loss": ..., "accuracy": ...})
        cbs.on_epoch_end(epoch, {"loss": ..., "val_loss": ...})
        if model.stop_training: break
    cbs.on_train_end(logs)
    return cbs.history                                 # the History callback

What the callbacks use of the model: `stop_training` (a bool attribute they set),
`get_weights()` (copies) / `set_weights(list)` (EarlyStopping's restore_best_weights),
`save(path)` / `save_weights(path)` (ModelCheckpoint), `optimizer.learning_rate` (a float
property, read and assigned by ReduceLROnPlateau), optionally `metrics` (Metric objects, whose
`_direction` tells mode='auto' which way is better) and `history` (set to the History).

Each hook's `logs` is a new dict per CallbackList call, keys sorted and values made Python
floats (Keras's `pythonify_logs`), shared by the callbacks of that call (so ReduceLROnPlateau's
`learning_rate` entry reaches History and the progress bar, as in Keras). Batch hooks go only to
callbacks that override them; with none, a batch hook costs one attribute test.
"""

from __future__ import annotations

import collections.abc
import csv
import io
import math
import operator
import os
import sys
import warnings

import numpy as np

from . import metrics as _metrics
from .errors import EngineError
from .progbar import Progbar


class CallbackError(EngineError, ValueError):
    """A callback was given arguments it cannot work with."""


def _print(msg, file=None):
    """keras.src.utils.io_utils.print_msg: the message and a newline on stdout, flushed."""
    file = sys.stdout if file is None else file
    file.write(msg + "\n")
    try:
        file.flush()
    except (AttributeError, ValueError, OSError):
        pass


def pythonify_logs(logs) -> dict:
    """A new dict, keys sorted, nested dicts flattened, values converted with float() where that
    works (numpy scalars and one-element arrays become Python floats), as Keras does."""
    if not logs:
        return {}
    result = {}
    for key in sorted(logs):
        value = logs[key]
        if isinstance(value, dict):
            result.update(pythonify_logs(value))
            continue
        if type(value) is not float:
            try:
                value = float(value)
            except (TypeError, ValueError, OverflowError):
                pass
        result[key] = value
    return result


class Callback:
    """Base class: `model`, `params` and the hooks fit / evaluate / predict call (all no-ops).

    `on_train_batch_begin/end` call `on_batch_begin/end` (Keras's aliases), so overriding either
    works. Hooks: on_train_begin/end(logs), on_epoch_begin/end(epoch, logs),
    on_train_batch_begin/end(batch, logs), on_test_begin/end(logs),
    on_test_batch_begin/end(batch, logs), on_predict_begin/end(logs),
    on_predict_batch_begin/end(batch, logs)."""

    def __init__(self):
        self.params = None
        self._model = None

    def set_params(self, params):
        self.params = params

    def set_model(self, model):
        self._model = model

    @property
    def model(self):
        return self._model

    @model.setter
    def model(self, model):
        self._model = model

    def on_batch_begin(self, batch, logs=None):
        """A legacy alias of `on_train_batch_begin`."""

    def on_batch_end(self, batch, logs=None):
        """A legacy alias of `on_train_batch_end`."""

    def on_epoch_begin(self, epoch, logs=None):
        """At the start of an epoch (fit only)."""

    def on_epoch_end(self, epoch, logs=None):
        """At the end of an epoch: logs holds the epoch's training and validation ('val_') metrics."""

    def on_train_batch_begin(self, batch, logs=None):
        self.on_batch_begin(batch, logs=logs)

    def on_train_batch_end(self, batch, logs=None):
        self.on_batch_end(batch, logs=logs)

    def on_test_batch_begin(self, batch, logs=None):
        """Before a batch of evaluate (and of the validation inside fit)."""

    def on_test_batch_end(self, batch, logs=None):
        """After a batch of evaluate: logs holds the running metrics."""

    def on_predict_batch_begin(self, batch, logs=None):
        """Before a batch of predict."""

    def on_predict_batch_end(self, batch, logs=None):
        """After a batch of predict."""

    def on_train_begin(self, logs=None):
        """At the start of fit."""

    def on_train_end(self, logs=None):
        """At the end of fit: logs holds the last epoch's logs."""

    def on_test_begin(self, logs=None):
        """At the start of evaluate (and of the validation inside fit)."""

    def on_test_end(self, logs=None):
        """At the end of evaluate."""

    def on_predict_begin(self, logs=None):
        """At the start of predict."""

    def on_predict_end(self, logs=None):
        """At the end of predict."""


def _overrides(callback, *names) -> bool:
    """Whether `callback` does something in any of these hooks (a subclass method or an
    instance attribute, as LambdaCallback sets)."""
    for name in names:
        if name in vars(callback):
            return True
        if getattr(type(callback), name, None) is not getattr(Callback, name):
            return True
    return False


def _flatten(callbacks):
    out = []
    for cb in callbacks:
        if isinstance(cb, (list, tuple)):
            out.extend(_flatten(cb))
        elif cb is not None:
            out.append(cb)
    return out


class CallbackList(Callback):
    """Calls every callback's hook in order (keras.callbacks.CallbackList, without the async
    dispatch). add_history / add_progbar append a History / ProgbarLogger unless one is in the
    list (History first, then the ProgbarLogger, at the end, as Keras). `**params` (verbose,
    epochs, steps) go to every callback's set_params."""

    def __init__(self, callbacks=None, add_history=False, add_progbar=False, model=None, **params):
        super().__init__()
        self.callbacks = _flatten(callbacks) if callbacks else []
        for cb in self.callbacks:
            if not isinstance(cb, Callback):
                raise CallbackError(f"callbacks must be engine.callbacks.Callback instances, got "
                                    f"{type(cb).__module__}.{type(cb).__name__}")
        self._history = None
        self._progbar = None
        for cb in self.callbacks:
            if isinstance(cb, ProgbarLogger):
                self._progbar = cb
            elif isinstance(cb, History):
                self._history = cb
        if self._history is None and add_history:
            self._history = History()
            self.callbacks.append(self._history)
        if self._progbar is None and add_progbar:
            self._progbar = ProgbarLogger()
            self.callbacks.append(self._progbar)
        self._route()
        self.set_model(model)
        self.set_params(params)

    @property
    def history(self):
        """The History callback (None unless added)."""
        return self._history

    def append(self, callback):
        self.callbacks.append(callback)
        if isinstance(callback, History) and self._history is None:
            self._history = callback
        if isinstance(callback, ProgbarLogger) and self._progbar is None:
            self._progbar = callback
        self._route()

    def _route(self):
        """Which callbacks take part in each per-batch hook (recomputed at every *_begin)."""
        cbs = self.callbacks
        self._train_batch_begin = [c for c in cbs if _overrides(c, "on_train_batch_begin", "on_batch_begin")]
        self._train_batch_end = [c for c in cbs if _overrides(c, "on_train_batch_end", "on_batch_end")]
        self._test_batch_begin = [c for c in cbs if _overrides(c, "on_test_batch_begin")]
        self._test_batch_end = [c for c in cbs if _overrides(c, "on_test_batch_end")]
        self._predict_batch_begin = [c for c in cbs if _overrides(c, "on_predict_batch_begin")]
        self._predict_batch_end = [c for c in cbs if _overrides(c, "on_predict_batch_end")]

    def set_params(self, params):
        self.params = params
        if params:
            for cb in self.callbacks:
                cb.set_params(params)

    def set_model(self, model):
        if model is None:
            return
        super().set_model(model)
        if self._history is not None:
            try:
                model.history = self._history
            except AttributeError:
                pass
        for cb in self.callbacks:
            cb.set_model(model)

    # -- per batch (hot) --
    def on_train_batch_begin(self, batch, logs=None):
        if self._train_batch_begin:
            logs = pythonify_logs(logs)
            for cb in self._train_batch_begin:
                cb.on_train_batch_begin(batch, logs=logs)

    def on_train_batch_end(self, batch, logs=None):
        if self._train_batch_end:
            logs = pythonify_logs(logs)
            for cb in self._train_batch_end:
                cb.on_train_batch_end(batch, logs=logs)

    on_batch_begin = on_train_batch_begin
    on_batch_end = on_train_batch_end

    def on_test_batch_begin(self, batch, logs=None):
        if self._test_batch_begin:
            logs = pythonify_logs(logs)
            for cb in self._test_batch_begin:
                cb.on_test_batch_begin(batch, logs=logs)

    def on_test_batch_end(self, batch, logs=None):
        if self._test_batch_end:
            logs = pythonify_logs(logs)
            for cb in self._test_batch_end:
                cb.on_test_batch_end(batch, logs=logs)

    def on_predict_batch_begin(self, batch, logs=None):
        if self._predict_batch_begin:
            logs = pythonify_logs(logs)
            for cb in self._predict_batch_begin:
                cb.on_predict_batch_begin(batch, logs=logs)

    def on_predict_batch_end(self, batch, logs=None):
        if self._predict_batch_end:
            logs = pythonify_logs(logs)
            for cb in self._predict_batch_end:
                cb.on_predict_batch_end(batch, logs=logs)

    # -- per epoch / per call --
    def on_epoch_begin(self, epoch, logs=None):
        logs = pythonify_logs(logs)
        for cb in self.callbacks:
            cb.on_epoch_begin(epoch, logs)

    def on_epoch_end(self, epoch, logs=None):
        logs = pythonify_logs(logs)
        for cb in self.callbacks:
            cb.on_epoch_end(epoch, logs)

    def on_train_begin(self, logs=None):
        self._route()
        logs = pythonify_logs(logs)
        for cb in self.callbacks:
            cb.on_train_begin(logs)

    def on_train_end(self, logs=None):
        logs = pythonify_logs(logs)
        for cb in self.callbacks:
            cb.on_train_end(logs)

    def on_test_begin(self, logs=None):
        self._route()
        logs = pythonify_logs(logs)
        for cb in self.callbacks:
            cb.on_test_begin(logs)

    def on_test_end(self, logs=None):
        logs = pythonify_logs(logs)
        for cb in self.callbacks:
            cb.on_test_end(logs)

    def on_predict_begin(self, logs=None):
        self._route()
        logs = pythonify_logs(logs)
        for cb in self.callbacks:
            cb.on_predict_begin(logs)

    def on_predict_end(self, logs=None):
        logs = pythonify_logs(logs)
        for cb in self.callbacks:
            cb.on_predict_end(logs)

    def __iter__(self):
        return iter(self.callbacks)


class History(Callback):
    """Records each epoch's logs: `history` ({name: [value per epoch]}, kept across fits as in
    Keras) and `epoch` (the epoch indices of the last fit). fit returns it."""

    def __init__(self):
        super().__init__()
        self.history = {}
        self.epoch = []

    def on_train_begin(self, logs=None):
        self.epoch = []

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        self.epoch.append(epoch)
        for k, v in logs.items():
            self.history.setdefault(k, []).append(v)
        if self.model is not None:
            try:
                self.model.history = self
            except AttributeError:
                pass


# --------------------------------------------------------------------------------------------
# Monitoring a quantity


class MonitorCallback(Callback):
    """Base of EarlyStopping, ReduceLROnPlateau and ModelCheckpoint: which way is better for
    `monitor`, and whether a value improves on a reference by more than `min_delta`.

    mode 'min' / 'max', or 'auto': 'loss' / 'val_loss' → min; otherwise the direction of the
    model's metric of that name (its `_direction`, Keras 3's rule), else of the engine metric
    of that name ('mae' → min, 'acc' → max, ...), else a name ending in 'acc', 'accuracy' or
    'auc' → max (Keras 2's rule); if none applies, a CallbackError asks for mode='min'/'max' (Keras
    3 raises the same ValueError). An unknown mode warns and falls back to 'auto'."""

    def __init__(self, monitor="val_loss", mode="auto", baseline=None, min_delta=0):
        super().__init__()
        if mode not in ("auto", "min", "max"):
            warnings.warn(f"{type(self).__name__} mode '{mode}' is unknown, fallback to auto mode.", stacklevel=3)
            mode = "auto"
        self.monitor = monitor
        self.mode = mode
        self.best = baseline
        self.min_delta = abs(min_delta)
        self.monitor_op = None

    def _model_direction(self, name):
        try:
            found = getattr(self.model, "metrics", None)
        except Exception:  # noqa: BLE001  (a model property that needs compile: no metrics to look at)
            return None
        if not found:
            return None
        direction = None
        stack = list(found) if isinstance(found, (list, tuple)) else []
        while stack:
            m = stack.pop(0)
            inner = getattr(m, "metrics", None)
            if isinstance(inner, (list, tuple)):
                stack[:0] = list(inner)
                continue
            if getattr(m, "name", None) == name and getattr(m, "_direction", None) in ("up", "down"):
                direction = m._direction
        return direction

    def _set_monitor_op(self):
        if self.mode == "min":
            self.monitor_op = operator.lt
        elif self.mode == "max":
            self.monitor_op = operator.gt
        else:
            name = self.monitor.removeprefix("val_")
            direction = "down" if name == "loss" else None
            direction = self._model_direction(name) or direction or _metrics.direction(name)
            if direction is None and name.endswith(("acc", "accuracy", "auc")):
                direction = "up"
            if direction is None:
                raise CallbackError(
                    f"{type(self).__name__} callback received monitor={self.monitor}, but cannot determine whether "
                    "that metric should be maximized or minimized. Pass `mode='max'` in order to monitor based on "
                    "the highest metric value, or pass `mode='min'` in order to use the lowest value.")
            self.monitor_op = operator.gt if direction == "up" else operator.lt
        if self.monitor_op is operator.lt:
            self.min_delta = -abs(self.min_delta)

    def _is_improvement(self, monitor_value, reference_value) -> bool:
        if reference_value is None:
            return True
        return bool(self.monitor_op(monitor_value - self.min_delta, reference_value))


class EarlyStopping(MonitorCallback):
    """Stop training when `monitor` has not improved (by more than min_delta) for `patience`
    epochs: sets `model.stop_training = True` (keras.callbacks.EarlyStopping).

    baseline: training also stops if, after `patience` epochs, nothing beat the baseline.
    restore_best_weights: at the end of training, set the weights of the best epoch (saved with
    get_weights() when it happened; whether or not training stopped early).
    start_from_epoch: epochs before monitoring starts."""

    def __init__(self, monitor="val_loss", min_delta=0, patience=0, verbose=0, mode="auto", baseline=None,
                 restore_best_weights=False, start_from_epoch=0):
        super().__init__(monitor, mode, min_delta=min_delta)
        self.patience = patience
        self.verbose = verbose
        self.baseline = baseline
        self.wait = 0
        self.stopped_epoch = 0
        self.restore_best_weights = restore_best_weights
        self.best_weights = None
        self.best_epoch = 0
        self.start_from_epoch = start_from_epoch

    def on_train_begin(self, logs=None):
        self.wait = 0
        self.stopped_epoch = 0
        self.best = None
        self.best_weights = None
        self.best_epoch = 0

    def on_epoch_end(self, epoch, logs=None):
        if self.monitor_op is None:
            self._set_monitor_op()
        current = self.get_monitor_value(logs)
        if current is None or epoch < self.start_from_epoch:
            return
        if self.restore_best_weights and self.best_weights is None:
            self.best_weights = self.model.get_weights()
            self.best_epoch = epoch
        self.wait += 1
        if self._is_improvement(current, self.best):
            self.best = current
            self.best_epoch = epoch
            if self.restore_best_weights:
                self.best_weights = self.model.get_weights()
            if self.baseline is None or self._is_improvement(current, self.baseline):
                self.wait = 0
            return
        if self.wait >= self.patience and epoch > 0:
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self.stopped_epoch > 0 and self.verbose > 0:
            _print(f"Epoch {self.stopped_epoch + 1}: early stopping")
        if self.restore_best_weights and self.best_weights is not None:
            if self.verbose > 0:
                _print(f"Restoring model weights from the end of the best epoch: {self.best_epoch + 1}.")
            self.model.set_weights(self.best_weights)

    def get_monitor_value(self, logs):
        logs = logs or {}
        value = logs.get(self.monitor)
        if value is None:
            warnings.warn(f"Early stopping conditioned on metric `{self.monitor}` which is not available. "
                          f"Available metrics are: {','.join(list(logs.keys()))}", stacklevel=3)
        return value


class ReduceLROnPlateau(MonitorCallback):
    """Multiply the learning rate by `factor` when `monitor` has not improved (by more than
    min_delta) for `patience` epochs; then wait `cooldown` epochs; never below `min_lr`
    (keras.callbacks.ReduceLROnPlateau). Adds 'learning_rate' to the epoch's logs.

    The rate is read and written through `model.optimizer.learning_rate` (a float). As in Keras,
    whose rate is a float32 variable, the rate is read as float32: the reduction happens while it
    is above float32(min_lr), the new rate is old·factor (at least min_lr), and the logged rate
    is the float32 value."""

    def __init__(self, monitor="val_loss", factor=0.1, patience=10, verbose=0, mode="auto", min_delta=1e-4,
                 cooldown=0, min_lr=0.0, **kwargs):
        super().__init__(monitor, mode, min_delta=min_delta)
        if factor >= 1.0:
            raise CallbackError(f"ReduceLROnPlateau does not support a factor >= 1.0. Received factor={factor}")
        self.factor = factor
        self.min_lr = min_lr
        self.patience = patience
        self.verbose = verbose
        self.cooldown = cooldown
        self.cooldown_counter = 0
        self.wait = 0

    def _reset(self):
        self.best = None
        self.cooldown_counter = 0
        self.wait = 0

    @staticmethod
    def _read_lr(optimizer) -> float:
        return float(np.float32(float(optimizer.learning_rate)))

    def _reduce_optimizer_lr(self, optimizer, epoch, name="") -> bool:
        old_lr = self._read_lr(optimizer)
        if old_lr > np.float32(self.min_lr):
            new_lr = max(old_lr * self.factor, self.min_lr)
            optimizer.learning_rate = new_lr
            if self.verbose > 0:
                name_str = f" {name}" if name else ""
                _print(f"\nEpoch {epoch + 1}: ReduceLROnPlateau reducing{name_str} learning rate to {new_lr}.")
            return True
        return False

    def on_train_begin(self, logs=None):
        self._reset()

    def on_epoch_end(self, epoch, logs=None):
        if self.monitor_op is None:
            self._set_monitor_op()
        logs = logs if logs is not None else {}
        optimizer = self.model.optimizer
        group = getattr(optimizer, "optimizers", None)
        if group is not None:
            for opt in group:
                logs[f"learning_rate_{opt.name}"] = self._read_lr(opt)
        else:
            logs["learning_rate"] = self._read_lr(optimizer)
        current = logs.get(self.monitor)
        if current is None:
            warnings.warn(f"Learning rate reduction is conditioned on metric `{self.monitor}` which is not available. "
                          f"Available metrics are: {','.join(list(logs.keys()))}.", stacklevel=3)
            return
        if self.in_cooldown():
            self.cooldown_counter -= 1
            self.wait = 0
        if self._is_improvement(current, self.best):
            self.best = current
            self.wait = 0
        elif not self.in_cooldown():
            self.wait += 1
            if self.wait >= self.patience:
                reduced = False
                if group is not None:
                    for opt in group:
                        if self._reduce_optimizer_lr(opt, epoch, f"{opt.name}"):
                            reduced = True
                elif self._reduce_optimizer_lr(optimizer, epoch):
                    reduced = True
                if reduced:
                    self.cooldown_counter = self.cooldown
                    self.wait = 0

    def in_cooldown(self) -> bool:
        return self.cooldown_counter > 0


class ModelCheckpoint(MonitorCallback):
    """Save the model (`model.save(path)`) or its weights (`model.save_weights(path)`) at the end
    of every epoch, or every `save_freq` batches (keras.callbacks.ModelCheckpoint).

    filepath may hold format fields filled with `epoch` (1-based), `batch` (1-based, when saving
    by batches) and the logs' keys: 'ckpt-{epoch:02d}-{val_loss:.2f}.engine'. The parent folder is
    created if missing; everything else is written by the model's own method. save_best_only:
    save only when `monitor` improves on the best so far (initial_value_threshold: the best to
    beat at the start); with the monitor missing from the logs, warn and save.

    Differences from Keras: the file name's extension is not checked (the model's save method
    chooses the format from it), and mode='auto' is resolved only when save_best_only needs it."""

    def __init__(self, filepath, monitor="val_loss", verbose=0, save_best_only=False, save_weights_only=False,
                 mode="auto", save_freq="epoch", initial_value_threshold=None):
        super().__init__(monitor, mode, initial_value_threshold)
        self.verbose = verbose
        self.filepath = os.fspath(filepath)
        self.save_best_only = save_best_only
        self.save_weights_only = save_weights_only
        self.save_freq = save_freq
        self._batches_seen_since_last_saving = 0
        self._last_batch_seen = None
        self._current_epoch = 0
        if save_freq != "epoch" and (not isinstance(save_freq, int) or isinstance(save_freq, bool) or save_freq < 1):
            raise CallbackError(f"Unrecognized save_freq: {save_freq}. Expected save_freq are 'epoch' or integer "
                                "values >= 1")

    def on_train_batch_end(self, batch, logs=None):
        if self._should_save_on_batch(batch):
            self._save_model(epoch=self._current_epoch, batch=batch, logs=logs)

    def on_epoch_begin(self, epoch, logs=None):
        self._current_epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if self.save_freq == "epoch":
            self._save_model(epoch=epoch, batch=None, logs=logs)

    def _should_save_on_batch(self, batch) -> bool:
        if self.save_freq == "epoch":
            return False
        if self._last_batch_seen is None or batch <= self._last_batch_seen:
            add_batches = batch + 1  # a new epoch
        else:
            add_batches = batch - self._last_batch_seen
        self._batches_seen_since_last_saving += add_batches
        self._last_batch_seen = batch
        if self._batches_seen_since_last_saving >= self.save_freq:
            self._batches_seen_since_last_saving = 0
            return True
        return False

    def _should_save_model(self, epoch, batch, logs, filepath) -> bool:
        logs = logs or {}
        if not self.save_best_only:
            if self.verbose > 0:
                _print(f"\nEpoch {epoch + 1}: saving model to {filepath}")
            return True
        if self.monitor_op is None:
            self._set_monitor_op()
        current = logs.get(self.monitor)
        if current is None:
            warnings.warn(f"Can save best model only with {self.monitor} available.", stacklevel=4)
            return True
        if isinstance(current, np.ndarray) and current.ndim > 0:
            warnings.warn(f"Can save best model only when `monitor` is a scalar value. Received: {current}. "
                          "Falling back to `save_best_only=False`.", stacklevel=4)
            return True
        best_str = "None" if self.best is None else f"{self.best:.5f}"
        if self._is_improvement(current, self.best):
            if self.verbose > 0:
                _print(f"\nEpoch {epoch + 1}: {self.monitor} improved from {best_str} to {current:.5f}, "
                       f"saving model to {filepath}")
            self.best = current
            return True
        if self.verbose > 0:
            _print(f"\nEpoch {epoch + 1}: {self.monitor} did not improve from {best_str}")
        return False

    def _get_file_path(self, epoch, batch, logs) -> str:
        logs = logs or {}
        try:
            if batch is None or "batch" in logs:
                return self.filepath.format(epoch=epoch + 1, **logs)
            return self.filepath.format(epoch=epoch + 1, batch=batch + 1, **logs)
        except (KeyError, IndexError) as e:
            raise CallbackError(f'Failed to format this callback filepath: "{self.filepath}". Reason: {e!r} is not '
                                f"among epoch, batch and the logs' keys {sorted(logs)}") from None

    def _save_model(self, epoch, batch, logs):
        filepath = self._get_file_path(epoch, batch, logs)
        if os.path.isdir(filepath) and not self._is_model_dir(filepath):
            raise CallbackError("Please specify a non-directory filepath for ModelCheckpoint. Filepath used is an "
                                f"existing directory: {filepath}")
        if self._should_save_model(epoch, batch, logs, filepath):
            dirname = os.path.dirname(filepath)
            if dirname:
                os.makedirs(dirname, exist_ok=True)
            if self.save_weights_only:
                self.model.save_weights(filepath)
            else:
                self.model.save(filepath)
            if self.verbose > 0:
                _print(f"\nEpoch {epoch + 1}: finished saving model to {filepath}")

    @staticmethod
    def _is_model_dir(path) -> bool:
        """An .engine model can be a directory (engine/formats/native.py): saving replaces it."""
        return path.rstrip("/\\").endswith(".engine")


class TerminateOnNaN(Callback):
    """Stop training when a batch's loss is NaN or infinite: `model.stop_training = True`, or
    with raise_error=True a RuntimeError at once (keras.callbacks.TerminateOnNaN)."""

    def __init__(self, raise_error: bool = False):
        super().__init__()
        self.raise_error = raise_error

    def on_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is None:
            return
        try:
            bad = not math.isfinite(loss)
        except TypeError:
            bad = bool(np.any(~np.isfinite(np.asarray(loss, dtype=np.float64))))
        if bad:
            if self.raise_error:
                raise RuntimeError(f"NaN or Inf loss encountered at batch {batch}. Loss value: {loss}. "
                                   "Terminating training immediately.")
            _print(f"Batch {batch}: Invalid loss, terminating training")
            self.model.stop_training = True


class LambdaCallback(Callback):
    """A callback from plain functions (keras.callbacks.LambdaCallback): on_epoch_begin /
    on_epoch_end(epoch, logs), on_train_begin / on_train_end(logs), on_train_batch_begin /
    on_train_batch_end(batch, logs), and any other hook by its name as a keyword."""

    def __init__(self, on_epoch_begin=None, on_epoch_end=None, on_train_begin=None, on_train_end=None,
                 on_train_batch_begin=None, on_train_batch_end=None, **kwargs):
        super().__init__()
        self.__dict__.update(kwargs)
        if on_epoch_begin is not None:
            self.on_epoch_begin = on_epoch_begin
        if on_epoch_end is not None:
            self.on_epoch_end = on_epoch_end
        if on_train_begin is not None:
            self.on_train_begin = on_train_begin
        if on_train_end is not None:
            self.on_train_end = on_train_end
        if on_train_batch_begin is not None:
            self.on_train_batch_begin = on_train_batch_begin
        if on_train_batch_end is not None:
            self.on_train_batch_end = on_train_batch_end


class CSVLogger(Callback):
    """Stream each epoch's logs to a CSV file (keras.callbacks.CSVLogger): a header 'epoch' + the
    first epoch's keys, sorted (plus 'val_' columns if that epoch had none), then one row per
    epoch (0-based epoch; 'NA' for a missing key), Keras's csv dialect ('\\r\\n' line ends).
    append=True continues an existing file (header only if it is empty).

    Written safely: each row is formatted completely, then written with one unbuffered write (so
    it is with the operating system at the end of every epoch); if the write fails the file is
    cut back to its previous length, so it never ends in half a row."""

    def __init__(self, filename, separator=",", append=False):
        super().__init__()
        self.sep = separator
        self.filename = os.fspath(filename)
        self.append = append
        self.keys = None
        self.append_header = True
        self.csv_file = None
        self._header_pending = False

    def on_train_begin(self, logs=None):
        self.append_header = True
        if self.append:
            if os.path.exists(self.filename):
                with open(self.filename, "rb") as f:
                    self.append_header = not bool(len(f.readline()))
            mode = "ab"
        else:
            mode = "wb"
        self._close()
        self.csv_file = open(self.filename, mode, buffering=0)  # noqa: SIM115  (open for the whole fit)
        self.keys = None
        self._header_pending = self.append_header

    @staticmethod
    def _handle_value(v):
        if isinstance(v, str):
            return v
        if isinstance(v, collections.abc.Iterable) and not (isinstance(v, np.ndarray) and v.ndim == 0):
            return f'"[{", ".join(map(str, v))}]"'
        return v

    def _format(self, rows) -> bytes:
        sep = self.sep

        class _Dialect(csv.excel):
            delimiter = sep

        buf = io.StringIO()
        writer = csv.writer(buf, dialect=_Dialect)
        for row in rows:
            writer.writerow(row)
        return buf.getvalue().encode("utf-8")

    def _write(self, data: bytes):
        f = self.csv_file
        size = os.fstat(f.fileno()).st_size
        view = memoryview(data)
        try:
            while view:
                n = f.write(view)
                if n is None:  # non-blocking file with nothing written: try again
                    continue
                view = view[n:]
        except BaseException:
            try:
                f.truncate(size)
                f.seek(size)  # (a file opened for writing, not appending, would write past a hole)
            except OSError:
                pass
            raise

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.csv_file is None:  # epoch hooks without on_train_begin
            self.on_train_begin()
        if self.keys is None:
            self.keys = sorted(logs.keys())
            if self.keys and not any(k.startswith("val_") for k in self.keys):
                self.keys.extend([f"val_{k}" for k in self.keys])
        rows = []
        if self._header_pending:
            rows.append(["epoch"] + self.keys)
        rows.append([epoch] + [self._handle_value(logs.get(k, "NA")) for k in self.keys])
        self._write(self._format(rows))
        self._header_pending = False

    def _close(self):
        if self.csv_file is not None and not self.csv_file.closed:
            self.csv_file.close()
        self.csv_file = None

    def on_train_end(self, logs=None):
        self._close()


class ProgbarLogger(Callback):
    """Prints the progress bar and the epoch lines (keras.callbacks.ProgbarLogger); fit adds it
    when verbose != 0. Takes `verbose` ('auto' = 1), `epochs` and `steps` (None: unknown) from
    set_params. `file`: the stream (default sys.stdout at the time of printing).

    Per epoch: 'Epoch 3/10' (when epochs > 1), then the bar (see engine/progbar.py: redrawn on a
    terminal, the final line only otherwise; verbose=2: one line). Validation inside fit prints
    nothing; evaluate and predict outside fit print their own bar."""

    def __init__(self, file=None):
        super().__init__()
        self.seen = 0
        self.progbar = None
        self.target = None
        self.verbose = 1
        self.epochs = 1
        self.file = file
        self._called_in_fit = False

    def set_params(self, params):
        verbose = params.get("verbose", 1)
        if verbose == "auto":
            verbose = 1
        self.verbose = verbose
        self.epochs = params.get("epochs", 1)
        self.target = params.get("steps")

    def _stream(self):
        return sys.stdout if self.file is None else self.file

    def on_train_begin(self, logs=None):
        self._called_in_fit = True

    def on_train_end(self, logs=None):
        self._called_in_fit = False

    def on_test_begin(self, logs=None):
        if not self._called_in_fit:
            self._reset_progbar()
            self._maybe_init_progbar()

    def on_predict_begin(self, logs=None):
        self._reset_progbar()
        self._maybe_init_progbar()

    def on_epoch_begin(self, epoch, logs=None):
        self._reset_progbar()
        self._maybe_init_progbar()
        if self.verbose and self.epochs > 1:
            _print(f"Epoch {epoch + 1}/{self.epochs}", self._stream())

    def on_train_batch_end(self, batch, logs=None):
        self._update_progbar(batch, logs)

    def on_test_batch_end(self, batch, logs=None):
        if not self._called_in_fit:
            self._update_progbar(batch, logs)

    def on_predict_batch_end(self, batch, logs=None):
        self._update_progbar(batch, None)

    def on_epoch_end(self, epoch, logs=None):
        self._finalize_progbar(logs)

    def on_test_end(self, logs=None):
        if not self._called_in_fit:
            self._finalize_progbar(logs)

    def on_predict_end(self, logs=None):
        self._finalize_progbar(logs)

    def _reset_progbar(self):
        self.seen = 0
        self.progbar = None

    def _maybe_init_progbar(self):
        if self.progbar is None:
            self.progbar = Progbar(target=self.target, verbose=self.verbose, unit_name="step",
                                   stateless_metrics=set(), file=self._stream())

    def _update_progbar(self, batch, logs=None):
        if self.progbar is None:
            self._maybe_init_progbar()
        self.seen = batch + 1
        if self.verbose == 1:
            self.progbar.update(self.seen, logs, finalize=False)

    def _finalize_progbar(self, logs):
        if self.progbar is None:
            self._maybe_init_progbar()
        if self.target is None:
            self.target = self.seen
            self.progbar.target = self.target
        self.progbar.update(self.target, logs or {}, finalize=True)


__all__ = ["CSVLogger", "Callback", "CallbackError", "CallbackList", "EarlyStopping", "History", "LambdaCallback",
           "ModelCheckpoint", "MonitorCallback", "ProgbarLogger", "ReduceLROnPlateau", "TerminateOnNaN",
           "pythonify_logs"]
