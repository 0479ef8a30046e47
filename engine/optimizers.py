"""Optimizers on fused native kernels: SGD, Adam, AdamW, RMSprop, Adagrad, with Keras 3's
constructor names and defaults.

    opt = engine.optimizers.get("adam")               # or Adam(learning_rate=1e-3, clipnorm=1.0)
    opt.apply(grads, params)                          # Keras's order; float32 arrays, params updated in place
    ckpt = opt.get_state(); ...; opt.set_state(ckpt)  # resume exactly

Each update is one native pass per parameter tensor (engine/optim.h), run as the registry's
`*_update` steps in a small Program built once for the parameters' shapes; the learning rate
(schedules included) and the step count reach the kernels through a float64 buffer written
before each call, the way a planned training step will feed them.

`convention="keras"` (the default) follows Keras's update formulas and defaults;
`convention="torch"` follows torch.optim's (formulas, defaults where they differ, L2 weight
decay except AdamW's). docs/training.md lists the differences.

`apply(grads, trainable_variables)` and `apply_gradients([(grad, param), ...])` take Keras's
argument order, so code written for Keras optimizers calls them the same way.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from . import _C, dtypes
from . import schedules as _schedules
from .errors import EngineError

CONVENTIONS = ("keras", "torch")
_F32, _F64 = dtypes.code("float32"), dtypes.code("float64")
_DECAY_NONE, _DECAY_COUPLED, _DECAY_DECOUPLED = 0, 1, 2


def _real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


class Optimizer:
    """Base class. Subclasses set `_kernel`, `_slot_names()`, `_kernel_params()` and defaults."""

    _kernel = ""
    _defaults: dict = {}   # {convention: {argument: value}} for arguments whose default differs

    def __init__(self, learning_rate, weight_decay=None, clipnorm=None, clipvalue=None, global_clipnorm=None,
                 use_ema=False, ema_momentum=0.99, ema_overwrite_frequency=None, loss_scale_factor=None,
                 gradient_accumulation_steps=None, name=None, convention="keras"):
        cls = type(self).__name__
        if convention not in CONVENTIONS:
            raise EngineError(f"{cls}: convention must be one of {', '.join(CONVENTIONS)}, got {convention!r}")
        self.convention = convention
        # Keras options this engine does not implement: accepted at their defaults so Keras
        # configs load, refused otherwise rather than silently ignored.
        unsupported = {"use_ema": (use_ema, False), "ema_overwrite_frequency": (ema_overwrite_frequency, None),
                       "loss_scale_factor": (loss_scale_factor, None),
                       "gradient_accumulation_steps": (gradient_accumulation_steps, None)}
        for arg, (value, default) in unsupported.items():
            if value != default:
                raise EngineError(f"{cls}: {arg}={value!r} is not supported")
        self.ema_momentum = ema_momentum
        self.learning_rate = self._default("learning_rate", learning_rate)
        weight_decay = self._default("weight_decay", weight_decay)
        self.weight_decay = None if weight_decay is None else self._check("weight_decay", weight_decay, lo=0)
        clips = {"clipnorm": clipnorm, "clipvalue": clipvalue, "global_clipnorm": global_clipnorm}
        for arg, value in clips.items():
            if value is not None:
                self._check(arg, value, lo=0)
        if sum(v is not None for v in clips.values()) > 1:
            raise EngineError(f"{cls}: only one of clipnorm, clipvalue and global_clipnorm can be set, got "
                              + ", ".join(f"{k}={v!r}" for k, v in clips.items()))
        self.clipnorm, self.clipvalue, self.global_clipnorm = clipnorm, clipvalue, global_clipnorm
        self.name = name or cls
        self._iterations = 0
        self._shapes = None   # the parameters' shapes once built
        self._slots = []      # per parameter: its state arrays, in _slot_names() order
        self._hyper = np.zeros(3, np.float64)  # [lr, step, grad_scale]: see engine/optim.h
        self._program = None
        self._pool = None

    # -- arguments --
    def _default(self, arg, value):
        if value is None:
            return self._defaults.get(self.convention, {}).get(arg)
        return value

    def _check(self, arg, value, lo=None, hi=None, hi_open=False):
        """value as float, or EngineError naming the optimizer and argument."""
        cls = type(self).__name__
        if not _real(value):
            raise EngineError(f"{cls}: {arg} must be a finite number, got {value!r}")
        if lo is not None and value < lo:
            raise EngineError(f"{cls}: {arg} must be >= {lo}, got {value!r}")
        if hi is not None and (value >= hi if hi_open else value > hi):
            raise EngineError(f"{cls}: {arg} must be in [{lo}, {hi}{')' if hi_open else ']'}, got {value!r}")
        return float(value)

    @property
    def learning_rate(self) -> float:
        """The learning rate of the next update (a schedule evaluated at `iterations`)."""
        return self._lr_at(self._iterations)

    @learning_rate.setter
    def learning_rate(self, value):
        if isinstance(value, _schedules.LearningRateSchedule):
            self._learning_rate = value
        else:
            self._learning_rate = self._check("learning_rate", value, lo=0)

    def _lr_at(self, iteration: int) -> float:
        lr = self._learning_rate
        return float(lr(iteration)) if isinstance(lr, _schedules.LearningRateSchedule) else lr

    @property
    def iterations(self) -> int:
        """Updates applied so far."""
        return self._iterations

    # -- state --
    def _slot_names(self) -> tuple:
        return ()

    def _slot_init(self, name: str) -> float:
        return 0.0

    def build(self, params) -> None:
        """Create the optimizer state for parameters of these shapes (apply() does it on first use)."""
        shapes = [tuple(np.shape(p)) for p in params]
        self._slots = [[np.full(s, self._slot_init(n), np.float32) for n in self._slot_names()] for s in shapes]
        self._shapes = shapes
        self._program = self._make_program(shapes)

    @property
    def built(self) -> bool:
        return self._shapes is not None

    def get_state(self) -> dict:
        """Copies of the state: {"iterations", "slot_names", "slots": [[array per slot name] per parameter]}."""
        return {"iterations": self._iterations, "slot_names": list(self._slot_names()),
                "slots": [[a.copy() for a in arrays] for arrays in self._slots]}

    def set_state(self, state: dict) -> None:
        """Restore get_state()'s dict (builds the optimizer from its shapes if needed)."""
        cls = type(self).__name__
        try:
            iterations, names, slots = state["iterations"], list(state["slot_names"]), state["slots"]
        except (KeyError, TypeError):
            raise EngineError(f"{cls}.set_state: expected get_state()'s dict with iterations, slot_names and "
                              "slots") from None
        if isinstance(iterations, bool) or not isinstance(iterations, numbers.Integral) or iterations < 0:
            raise EngineError(f"{cls}.set_state: iterations must be an int >= 0, got {iterations!r}")
        if names != list(self._slot_names()):
            raise EngineError(f"{cls}.set_state: slot names {names} do not match this optimizer's "
                              f"{list(self._slot_names())}")
        arrays = [[np.asarray(a) for a in per] for per in slots]
        if any(len(per) != len(names) for per in arrays):
            raise EngineError(f"{cls}.set_state: each parameter needs {len(names)} slot arrays")
        shapes = [tuple(per[0].shape) if per else None for per in arrays]
        if not names:  # stateless (plain SGD): nothing fixes the shapes, keep what is built
            shapes = self._shapes if self._shapes is not None and len(self._shapes) == len(arrays) else None
        for i, per in enumerate(arrays):
            for n, a in zip(names, per):
                if a.shape != shapes[i]:
                    raise EngineError(f"{cls}.set_state: parameter {i} slot {n!r} has shape {a.shape}, "
                                      f"expected {shapes[i]}")
        if shapes is not None and (self._shapes is None or [tuple(s) for s in self._shapes] != shapes):
            self.build([np.empty(s, np.float32) for s in shapes])
        for dst, src in zip(self._slots, arrays):
            for d, s in zip(dst, src):
                np.copyto(d, s, casting="same_kind")  # in place: the program points at these arrays
        self._iterations = int(iterations)

    # -- the native program --
    def _decay_mode(self) -> int:
        if not self.weight_decay:
            return _DECAY_NONE
        return _DECAY_DECOUPLED if self.convention == "keras" else _DECAY_COUPLED

    def _kernel_params(self) -> tuple[int, list[float]]:
        """(flag, kind-specific floats) after [weight_decay, clipnorm, clipvalue]."""
        raise NotImplementedError

    def update_step(self, size: int) -> tuple[str, list, list]:
        """(registry step, ints, floats) updating one parameter of `size` elements: slots
        [param, grad, state..., hyper] -> [param, state...] (in place)."""
        flag, extra = self._kernel_params()
        common = [float(self.weight_decay or 0), float(self.clipnorm or 0), float(self.clipvalue or 0)]
        return (self._kernel, [size, CONVENTIONS.index(self.convention), self._decay_mode(), flag], common + extra)

    def _make_program(self, shapes):
        prog = _C.Program()
        params = [prog.new_slot() for _ in shapes]
        grads = [prog.new_slot() for _ in shapes]
        hyper = prog.new_slot()
        prog.bind_const(hyper, self._hyper)
        sizes = [math.prod(s) for s in shapes]
        if self.global_clipnorm:
            prog.add_step("global_norm_scale", _F32, grads, [hyper], [_F32] * len(grads), [_F64], sizes,
                          [float(self.global_clipnorm)])
        for i, n in enumerate(sizes):
            states = []
            for a in self._slots[i]:
                states.append(prog.new_slot())
                prog.bind_const(states[-1], a)
            ins = [params[i], grads[i], *states, hyper]
            kernel, ints, floats = self.update_step(n)
            prog.add_step(kernel, _F32, ins, [params[i], *states], [_F32] * (len(ins) - 1) + [_F64],
                          [_F32] * (1 + len(states)), ints, floats)
        prog.set_io([(g, _F32, 4 * n) for g, n in zip(grads, sizes)], [(p, _F32, 4 * n) for p, n in zip(params, sizes)])
        self._pool = _C.ContextPool(1)
        return prog

    def _lr_for_step(self, step: int) -> float:
        return self._lr_at(step - 1)

    # -- updates --
    def apply(self, grads, trainable_variables) -> None:
        """One update of `trainable_variables` (float32 arrays, changed in place) from `grads`
        (same shapes), in Keras's argument order."""
        cls = type(self).__name__
        params, grads = list(trainable_variables), list(grads)
        if len(params) != len(grads):
            raise EngineError(f"{cls}.apply: {len(params)} parameters but {len(grads)} gradients")
        for i, (p, g) in enumerate(zip(params, grads)):
            for what, a in (("parameter", p), ("gradient", g)):
                if not isinstance(a, np.ndarray) or a.dtype != np.float32 or not a.flags.c_contiguous:
                    got = f"{a.dtype} array" if isinstance(a, np.ndarray) else type(a).__name__
                    raise EngineError(f"{cls}.apply: {what} {i} must be a C-contiguous float32 numpy array, "
                                      f"got {got}{'' if not isinstance(a, np.ndarray) or a.flags.c_contiguous else ' (not contiguous)'}")
            if g.shape != p.shape:
                raise EngineError(f"{cls}.apply: gradient {i} has shape {g.shape}, parameter {i} has {p.shape}")
            if not p.flags.writeable:
                raise EngineError(f"{cls}.apply: parameter {i} is read-only")
        if not self.built:
            self.build(params)
        elif [p.shape for p in params] != self._shapes:
            raise EngineError(f"{cls}.apply: built for parameters of shapes {self._shapes}, got "
                              f"{[p.shape for p in params]}")
        step = self._iterations + 1
        self._hyper[0] = self._lr_for_step(step)
        self._hyper[1] = step
        self._hyper[2] = 1.0
        self._program.run(grads, params, self._pool)
        self._iterations = step

    def apply_gradients(self, grads_and_vars) -> None:
        """Keras's form: an iterable of (gradient, parameter) pairs."""
        pairs = list(grads_and_vars)
        self.apply([g for g, _ in pairs], [p for _, p in pairs])

    # -- config --
    def get_config(self) -> dict:
        lr = self._learning_rate
        config = {
            "name": self.name,
            "learning_rate": _schedules.serialize(lr) if isinstance(lr, _schedules.LearningRateSchedule) else lr,
            "weight_decay": self.weight_decay, "clipnorm": self.clipnorm, "global_clipnorm": self.global_clipnorm,
            "clipvalue": self.clipvalue, "use_ema": False, "ema_momentum": self.ema_momentum,
            "ema_overwrite_frequency": None, "loss_scale_factor": None, "gradient_accumulation_steps": None,
        }
        if self.convention != "keras":  # absent for Keras's own convention, so Keras reads the config as is
            config["convention"] = self.convention
        return config

    @classmethod
    def from_config(cls, config: dict):
        config = dict(config)
        if isinstance(config.get("learning_rate"), dict):
            config["learning_rate"] = _schedules.deserialize(config["learning_rate"])
        try:
            return cls(**config)
        except TypeError as e:
            raise EngineError(f"{cls.__name__}.from_config: {e}") from None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(learning_rate={self._learning_rate!r}, convention={self.convention!r})"


class SGD(Optimizer):
    """Keras: v = momentum·v − lr·g; p += v (nesterov: p += momentum·v − lr·g).
    torch: v = momentum·v + (1 − dampening)·g (v₁ = g); p −= lr·v (nesterov: lr·(g + momentum·v))."""

    _kernel = "sgd_update"
    _defaults = {"keras": {"learning_rate": 0.01}, "torch": {"learning_rate": 0.001}}

    def __init__(self, learning_rate=None, momentum=0.0, nesterov=False, weight_decay=None, clipnorm=None,
                 clipvalue=None, global_clipnorm=None, dampening=0.0, name=None, convention="keras", **kwargs):
        super().__init__(learning_rate, weight_decay, clipnorm, clipvalue, global_clipnorm, name=name,
                         convention=convention, **kwargs)
        self.momentum = self._check("momentum", momentum, lo=0, hi=1)
        self.nesterov = bool(nesterov)
        self.dampening = self._check("dampening", dampening, lo=0, hi=1)
        if self.dampening and convention != "torch":
            raise EngineError("SGD: dampening is a torch-convention option (convention='torch')")
        if convention == "torch" and self.nesterov and (self.momentum <= 0 or self.dampening != 0):
            raise EngineError("SGD: nesterov needs momentum > 0 and dampening 0")

    def _slot_names(self):
        return ("momentum",) if self.momentum != 0 else ()

    def _kernel_params(self):
        return int(self.nesterov), [self.momentum, self.dampening]

    def get_config(self):
        config = super().get_config()
        config.update(momentum=self.momentum, nesterov=self.nesterov)
        if self.dampening:
            config["dampening"] = self.dampening
        return config


class Adam(Optimizer):
    """Keras: p −= lr·sqrt(1−β2^t)/(1−β1^t) · m / (sqrt(v) + ε).
    torch: p −= lr/(1−β1^t) · m / (sqrt(v)/sqrt(1−β2^t) + ε). amsgrad: v replaced by its running max."""

    _kernel = "adam_update"
    _defaults = {"keras": {"epsilon": 1e-7}, "torch": {"epsilon": 1e-8}}

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=None, amsgrad=False, weight_decay=None,
                 clipnorm=None, clipvalue=None, global_clipnorm=None, name=None, convention="keras", **kwargs):
        super().__init__(learning_rate, weight_decay, clipnorm, clipvalue, global_clipnorm, name=name,
                         convention=convention, **kwargs)
        self.beta_1 = self._check("beta_1", beta_1, lo=0, hi=1, hi_open=True)
        self.beta_2 = self._check("beta_2", beta_2, lo=0, hi=1, hi_open=True)
        self.epsilon = self._check("epsilon", self._default("epsilon", epsilon), lo=0)
        self.amsgrad = bool(amsgrad)

    def _slot_names(self):
        return ("momentum", "velocity", "velocity_hat") if self.amsgrad else ("momentum", "velocity")

    def _kernel_params(self):
        return int(self.amsgrad), [self.beta_1, self.beta_2, self.epsilon]

    def get_config(self):
        config = super().get_config()
        config.update(beta_1=self.beta_1, beta_2=self.beta_2, epsilon=self.epsilon, amsgrad=self.amsgrad)
        return config


class AdamW(Adam):
    """Adam with decoupled weight decay, p −= lr·wd·p before the update, in both conventions."""

    _defaults = {"keras": {"epsilon": 1e-7, "weight_decay": 0.004}, "torch": {"epsilon": 1e-8, "weight_decay": 0.01}}

    def __init__(self, learning_rate=0.001, weight_decay=None, beta_1=0.9, beta_2=0.999, epsilon=None, amsgrad=False,
                 clipnorm=None, clipvalue=None, global_clipnorm=None, name=None, convention="keras", **kwargs):
        super().__init__(learning_rate, beta_1, beta_2, epsilon, amsgrad, weight_decay, clipnorm, clipvalue,
                         global_clipnorm, name=name, convention=convention, **kwargs)

    def _decay_mode(self):
        return _DECAY_DECOUPLED if self.weight_decay else _DECAY_NONE


class RMSprop(Optimizer):
    """Keras: ms = ρ·ms + (1−ρ)·g²; Δ = lr·g / sqrt(ms + ε); momentum buffer b = μ·b + Δ; p −= b.
    torch: Δ = g / (sqrt(ms) + ε); b = μ·b + Δ; p −= lr·b. centered: ms − mean(g)² under the sqrt."""

    _kernel = "rmsprop_update"
    _defaults = {"keras": {"learning_rate": 0.001, "rho": 0.9, "epsilon": 1e-7},
                 "torch": {"learning_rate": 0.01, "rho": 0.99, "epsilon": 1e-8}}

    def __init__(self, learning_rate=None, rho=None, momentum=0.0, epsilon=None, centered=False, weight_decay=None,
                 clipnorm=None, clipvalue=None, global_clipnorm=None, name=None, convention="keras", **kwargs):
        super().__init__(learning_rate, weight_decay, clipnorm, clipvalue, global_clipnorm, name=name,
                         convention=convention, **kwargs)
        self.rho = self._check("rho", self._default("rho", rho), lo=0, hi=1, hi_open=True)
        self.momentum = self._check("momentum", momentum, lo=0, hi=1)
        self.epsilon = self._check("epsilon", self._default("epsilon", epsilon), lo=0)
        self.centered = bool(centered)

    def _slot_names(self):
        return (("velocity",) + (("momentum",) if self.momentum > 0 else ())
                + (("average_gradient",) if self.centered else ()))

    def _kernel_params(self):
        return int(self.centered), [self.rho, self.momentum, self.epsilon]

    def get_config(self):
        config = super().get_config()
        config.update(rho=self.rho, momentum=self.momentum, epsilon=self.epsilon, centered=self.centered)
        return config


class Adagrad(Optimizer):
    """Keras: acc += g²; p −= lr·g / sqrt(acc + ε). torch: p −= lr·g / (sqrt(acc) + ε).
    lr_decay (torch's): the step-t rate is lr / (1 + (t − 1)·lr_decay), in either convention."""

    _kernel = "adagrad_update"
    _defaults = {"keras": {"learning_rate": 0.001, "initial_accumulator_value": 0.1, "epsilon": 1e-7},
                 "torch": {"learning_rate": 0.01, "initial_accumulator_value": 0.0, "epsilon": 1e-10}}

    def __init__(self, learning_rate=None, initial_accumulator_value=None, epsilon=None, weight_decay=None,
                 clipnorm=None, clipvalue=None, global_clipnorm=None, lr_decay=0.0, name=None, convention="keras",
                 **kwargs):
        super().__init__(learning_rate, weight_decay, clipnorm, clipvalue, global_clipnorm, name=name,
                         convention=convention, **kwargs)
        self.initial_accumulator_value = self._check(
            "initial_accumulator_value", self._default("initial_accumulator_value", initial_accumulator_value), lo=0)
        self.epsilon = self._check("epsilon", self._default("epsilon", epsilon), lo=0)
        self.lr_decay = self._check("lr_decay", lr_decay, lo=0)

    def _slot_names(self):
        return ("accumulator",)

    def _slot_init(self, name):
        return self.initial_accumulator_value

    def _kernel_params(self):
        return 0, [self.epsilon]

    def _lr_for_step(self, step):
        return self._lr_at(step - 1) / (1 + (step - 1) * self.lr_decay)

    def get_config(self):
        config = super().get_config()
        config.update(initial_accumulator_value=self.initial_accumulator_value, epsilon=self.epsilon)
        if self.lr_decay:
            config["lr_decay"] = self.lr_decay
        return config


OPTIMIZERS = {cls.__name__.lower(): cls for cls in (SGD, Adam, AdamW, RMSprop, Adagrad)}


def get(identifier) -> Optimizer:
    """An optimizer from a name ("adam", case-insensitive, with default arguments), a Keras-style
    {"class_name", "config"} dict, or an Optimizer (returned as is)."""
    if isinstance(identifier, Optimizer):
        return identifier
    if isinstance(identifier, str):
        cls = OPTIMIZERS.get(identifier.lower())
        if cls is None:
            raise EngineError(f"unknown optimizer {identifier!r}; known: {', '.join(OPTIMIZERS)}")
        return cls()
    if isinstance(identifier, dict) and "class_name" in identifier:
        return deserialize(identifier)
    raise EngineError(f"optimizer: expected a name, a config dict or an Optimizer, got {type(identifier).__name__}")


def serialize(optimizer: Optimizer) -> dict:
    return {"module": "keras.optimizers", "class_name": type(optimizer).__name__,
            "config": optimizer.get_config(), "registered_name": None}


def deserialize(config: dict) -> Optimizer:
    name = str(config.get("class_name", ""))
    cls = OPTIMIZERS.get(name.lower())
    if cls is None:
        raise EngineError(f"unknown optimizer {name!r}; known: {', '.join(OPTIMIZERS)}")
    return cls.from_config(config.get("config", {}))
