"""Learning-rate schedules: Keras 3's names, arguments and formulas, evaluated in Python (float64)
once per optimizer step; the optimizer writes the value into the native update's
hyperparameter buffer, so a planned training step never has to be planned again.

    s = ExponentialDecay(0.1, decay_steps=1000, decay_rate=0.96, staircase=True)
    opt = engine.optimizers.Adam(learning_rate=s)
    s(2500)          # 0.1 * 0.96**2: the step is the optimizer's iteration count (0-based)

`LinearWarmup(after, warmup_steps)` (ours; Keras has warmup only inside CosineDecay) ramps
linearly from `initial_learning_rate` to `after(0)` over `warmup_steps`, then runs `after`
from its step 0: `LinearWarmup(CosineDecay(lr, n), w, init)` equals Keras's
`CosineDecay(init, n, warmup_target=lr, warmup_steps=w)`.
"""

from __future__ import annotations

import math
import numbers

from .errors import EngineError


def _number(cls: str, name: str, value, *, positive=False, nonneg=False) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise EngineError(f"{cls}: {name} must be a finite number, got {value!r}")
    if positive and not value > 0:
        raise EngineError(f"{cls}: {name} must be > 0, got {value!r}")
    if nonneg and not value >= 0:
        raise EngineError(f"{cls}: {name} must be >= 0, got {value!r}")
    return value


class LearningRateSchedule:
    """Base class: `schedule(step) -> float` for the 0-based optimizer iteration `step`."""

    def __call__(self, step: int) -> float:
        raise NotImplementedError

    def get_config(self) -> dict:
        raise NotImplementedError

    @classmethod
    def from_config(cls, config: dict):
        return cls(**config)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items() if k != "name")
        return f"{type(self).__name__}({args})"


class _RateDecay(LearningRateSchedule):
    """initial_learning_rate, decay_steps, decay_rate, staircase: what ExponentialDecay and
    InverseTimeDecay share; p = step / decay_steps, floored with staircase."""

    def __init__(self, initial_learning_rate, decay_steps, decay_rate, staircase=False, name=None):
        c = type(self).__name__
        self.initial_learning_rate = _number(c, "initial_learning_rate", initial_learning_rate, nonneg=True)
        self.decay_steps = _number(c, "decay_steps", decay_steps, positive=True)
        self.decay_rate = _number(c, "decay_rate", decay_rate, nonneg=True)
        self.staircase = bool(staircase)
        self.name = name or c

    def _p(self, step):
        p = step / self.decay_steps
        return math.floor(p) if self.staircase else p

    def get_config(self):
        return {"initial_learning_rate": self.initial_learning_rate, "decay_steps": self.decay_steps,
                "decay_rate": self.decay_rate, "staircase": self.staircase, "name": self.name}


class ExponentialDecay(_RateDecay):
    """initial_learning_rate · decay_rate ^ (step / decay_steps) (floored with staircase)."""

    def __call__(self, step):
        return self.initial_learning_rate * self.decay_rate ** self._p(step)


class InverseTimeDecay(_RateDecay):
    """initial_learning_rate / (1 + decay_rate · step / decay_steps) (floored with staircase)."""

    def __call__(self, step):
        return self.initial_learning_rate / (1 + self.decay_rate * self._p(step))


class PiecewiseConstantDecay(LearningRateSchedule):
    """values[0] while step <= boundaries[0], values[i] while boundaries[i-1] < step <= boundaries[i],
    values[-1] after the last boundary (a step schedule)."""

    def __init__(self, boundaries, values, name="PiecewiseConstant"):
        c = type(self).__name__
        boundaries, values = list(boundaries), list(values)
        if len(boundaries) != len(values) - 1:
            raise EngineError(f"{c}: boundaries must have one element less than values, got "
                              f"{len(boundaries)} boundaries and {len(values)} values")
        for b in boundaries:
            _number(c, "each boundary", b)
        for v in values:
            _number(c, "each value", v, nonneg=True)
        if any(b1 <= b0 for b0, b1 in zip(boundaries, boundaries[1:])):
            raise EngineError(f"{c}: boundaries must be strictly increasing, got {boundaries}")
        self.boundaries, self.values, self.name = boundaries, values, name

    def __call__(self, step):
        for b, v in zip(self.boundaries, self.values):
            if step <= b:
                return v
        return self.values[-1]

    def get_config(self):
        return {"boundaries": list(self.boundaries), "values": list(self.values), "name": self.name}


class CosineDecay(LearningRateSchedule):
    """Keras 3's CosineDecay: with warmup_target, a linear ramp from initial_learning_rate to
    warmup_target over warmup_steps, then (or else, from initial_learning_rate) a cosine decay
    to alpha · that rate over decay_steps, constant afterwards."""

    def __init__(self, initial_learning_rate, decay_steps, alpha=0.0, name="CosineDecay", warmup_target=None,
                 warmup_steps=0):
        c = type(self).__name__
        self.initial_learning_rate = _number(c, "initial_learning_rate", initial_learning_rate, nonneg=True)
        self.decay_steps = _number(c, "decay_steps", decay_steps, positive=True)
        self.alpha = _number(c, "alpha", alpha)
        self.name = name
        self.warmup_target = None if warmup_target is None else _number(c, "warmup_target", warmup_target, nonneg=True)
        self.warmup_steps = _number(c, "warmup_steps", warmup_steps, nonneg=True)
        if self.warmup_target is not None and self.warmup_steps <= 0:
            raise EngineError(f"{c}: warmup_target needs warmup_steps > 0, got {warmup_steps!r}")

    def _decay(self, step, from_lr):
        cosine = 0.5 * (1.0 + math.cos(math.pi * step / self.decay_steps))
        return from_lr * ((1 - self.alpha) * cosine + self.alpha)

    def __call__(self, step):
        if self.warmup_target is None:
            return self._decay(min(step, self.decay_steps), self.initial_learning_rate)
        step = min(step, self.decay_steps + self.warmup_steps)
        if step < self.warmup_steps:
            delta = self.warmup_target - self.initial_learning_rate
            return delta * (step / self.warmup_steps) + self.initial_learning_rate
        return self._decay(step - self.warmup_steps, self.warmup_target)

    def get_config(self):
        return {"initial_learning_rate": self.initial_learning_rate, "decay_steps": self.decay_steps,
                "alpha": self.alpha, "name": self.name, "warmup_target": self.warmup_target,
                "warmup_steps": self.warmup_steps}


class LinearWarmup(LearningRateSchedule):
    """Linear ramp from initial_learning_rate to after(0) over warmup_steps, then after(step −
    warmup_steps). `after` is a schedule or a constant learning rate."""

    def __init__(self, after, warmup_steps, initial_learning_rate=0.0, name="LinearWarmup"):
        c = type(self).__name__
        if not isinstance(after, LearningRateSchedule):
            after = Constant(_number(c, "after", after, nonneg=True))
        self.after = after
        self.warmup_steps = _number(c, "warmup_steps", warmup_steps, positive=True)
        self.initial_learning_rate = _number(c, "initial_learning_rate", initial_learning_rate, nonneg=True)
        self.name = name

    def __call__(self, step):
        if step < self.warmup_steps:
            delta = self.after(0) - self.initial_learning_rate
            return delta * (step / self.warmup_steps) + self.initial_learning_rate
        return self.after(step - self.warmup_steps)

    def get_config(self):
        return {"after": serialize(self.after), "warmup_steps": self.warmup_steps,
                "initial_learning_rate": self.initial_learning_rate, "name": self.name}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["after"] = deserialize(config["after"])
        return cls(**config)


class Constant(LearningRateSchedule):
    """The same learning rate at every step (what LinearWarmup ramps to when given a number)."""

    def __init__(self, learning_rate, name="Constant"):
        self.learning_rate = _number(type(self).__name__, "learning_rate", learning_rate, nonneg=True)
        self.name = name

    def __call__(self, step):
        return self.learning_rate

    def get_config(self):
        return {"learning_rate": self.learning_rate, "name": self.name}


SCHEDULES = {cls.__name__: cls for cls in (ExponentialDecay, InverseTimeDecay, PiecewiseConstantDecay, CosineDecay,
                                           LinearWarmup, Constant)}


_KERAS_NAMES = ("ExponentialDecay", "InverseTimeDecay", "PiecewiseConstantDecay", "CosineDecay")


def serialize(schedule: LearningRateSchedule) -> dict:
    """The shape of Keras's serialized schedules, so Keras reads back the ones it has."""
    name = type(schedule).__name__
    module = "keras.optimizers.schedules" if name in _KERAS_NAMES else "engine.schedules"
    return {"module": module, "class_name": name, "config": schedule.get_config(), "registered_name": None}


def deserialize(config: dict) -> LearningRateSchedule:
    """A schedule from serialize()'s dict (or Keras's, for the schedules named here)."""
    if not isinstance(config, dict) or "class_name" not in config:
        raise EngineError(f"learning rate schedule: expected a dict with 'class_name' and 'config', got {config!r}")
    cls = SCHEDULES.get(config["class_name"])
    if cls is None:
        raise EngineError(f"unknown learning rate schedule {config['class_name']!r}; known: {', '.join(SCHEDULES)}")
    try:
        return cls.from_config(dict(config.get("config", {})))
    except TypeError as e:
        raise EngineError(f"{config['class_name']}: bad config: {e}") from None
