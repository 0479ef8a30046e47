"""Optimizers (engine/optimizers.py on the native *_update kernels) against torch.optim and
Keras 3 (torch backend): 20 steps on the same parameters and gradients, equal to 1e-6 relative.

convention="torch" is checked against torch.optim, convention="keras" (the default) against
Keras; Keras tests are skipped when keras is not installed (pip install keras)."""

import os

import numpy as np
import pytest

from engine import _C, EngineError, KernelError, optimizers as O, schedules as S

torch = pytest.importorskip("torch")

STEPS = 20
SHAPES = [(1,), (7,), (13, 17), (4099,)]  # a lone element, a tail only, whole vectors + tail
BIG = [(1_000_003,)]                       # split over threads


def _keras():
    os.environ.setdefault("KERAS_BACKEND", "torch")
    keras = pytest.importorskip("keras")
    if keras.backend.backend() != "torch":
        pytest.skip(f"keras runs on the {keras.backend.backend()} backend here, not torch")
    return keras


def _data(shapes, seed=0, steps=STEPS, gscale=1.0):
    rng = np.random.default_rng(seed)
    params = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    grads = [[(gscale * rng.standard_normal(s)).astype(np.float32) for s in shapes] for _ in range(steps)]
    return params, grads


def run_engine(opt, params, grads):
    ps = [p.copy() for p in params]
    for gs in grads:
        opt.apply(gs, ps)
    return ps


def run_torch(cls, kwargs, params, grads):
    ts = [torch.tensor(p.copy(), requires_grad=True) for p in params]
    opt = cls(ts, foreach=False, **kwargs)
    for gs in grads:
        for t, g in zip(ts, gs):
            t.grad = torch.from_numpy(g.copy())
        opt.step()
    return [t.detach().numpy() for t in ts]


def run_keras(name, kwargs, params, grads):
    keras = _keras()
    vs = [keras.Variable(p.copy()) for p in params]
    opt = getattr(keras.optimizers, name)(**kwargs)
    for gs in grads:
        opt.apply([torch.from_numpy(g.copy()) for g in gs], vs)
    return [np.asarray(v.numpy()) for v in vs]


def assert_close(got, want, rtol=1e-6, atol=1e-7):
    """1e-6 relative; near zero (|p| < 0.1 for these N(0, 1) parameters) 1e-7 absolute, since a
    parameter that crosses zero has no meaningful relative error."""
    for i, (g, w) in enumerate(zip(got, want)):
        assert g.shape == w.shape
        np.testing.assert_allclose(g, w, rtol=rtol, atol=atol, equal_nan=True, err_msg=f"parameter {i}")


TORCH_CASES = [
    ("SGD", dict(learning_rate=0.1), torch.optim.SGD, dict(lr=0.1)),
    ("SGD", dict(learning_rate=0.1, momentum=0.9), torch.optim.SGD, dict(lr=0.1, momentum=0.9)),
    ("SGD", dict(learning_rate=0.05, momentum=0.8, dampening=0.3), torch.optim.SGD,
     dict(lr=0.05, momentum=0.8, dampening=0.3)),
    ("SGD", dict(learning_rate=0.1, momentum=0.9, nesterov=True, weight_decay=0.01), torch.optim.SGD,
     dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01)),
    ("SGD", dict(), torch.optim.SGD, dict()),  # torch's defaults
    ("Adam", dict(), torch.optim.Adam, dict()),
    ("Adam", dict(learning_rate=0.01, amsgrad=True), torch.optim.Adam, dict(lr=0.01, amsgrad=True)),
    ("Adam", dict(learning_rate=0.01, beta_1=0.3, beta_2=0.9, epsilon=1e-5, weight_decay=0.1), torch.optim.Adam,
     dict(lr=0.01, betas=(0.3, 0.9), eps=1e-5, weight_decay=0.1)),
    ("AdamW", dict(), torch.optim.AdamW, dict()),
    ("AdamW", dict(learning_rate=0.01, weight_decay=0.1, amsgrad=True), torch.optim.AdamW,
     dict(lr=0.01, weight_decay=0.1, amsgrad=True)),
    ("RMSprop", dict(), torch.optim.RMSprop, dict()),
    ("RMSprop", dict(learning_rate=0.001, momentum=0.9), torch.optim.RMSprop, dict(lr=0.001, momentum=0.9)),
    ("RMSprop", dict(learning_rate=0.001, centered=True), torch.optim.RMSprop, dict(lr=0.001, centered=True)),
    ("RMSprop", dict(learning_rate=0.001, rho=0.9, momentum=0.5, centered=True, weight_decay=0.01),
     torch.optim.RMSprop, dict(lr=0.001, alpha=0.9, momentum=0.5, centered=True, weight_decay=0.01)),
    ("Adagrad", dict(), torch.optim.Adagrad, dict()),
    ("Adagrad", dict(learning_rate=0.1, lr_decay=0.05, initial_accumulator_value=0.1, weight_decay=0.01),
     torch.optim.Adagrad, dict(lr=0.1, lr_decay=0.05, initial_accumulator_value=0.1, weight_decay=0.01)),
]

KERAS_CASES = [
    ("SGD", dict()),
    ("SGD", dict(learning_rate=0.1, momentum=0.9)),
    ("SGD", dict(learning_rate=0.1, momentum=0.9, nesterov=True)),
    ("SGD", dict(learning_rate=0.1, momentum=0.5, weight_decay=0.01)),
    ("Adam", dict()),
    ("Adam", dict(learning_rate=0.01, amsgrad=True)),
    ("Adam", dict(learning_rate=0.01, beta_1=0.3, beta_2=0.9, epsilon=1e-5, weight_decay=0.1)),
    ("AdamW", dict()),
    ("AdamW", dict(learning_rate=0.01, weight_decay=0.1, amsgrad=True)),
    ("RMSprop", dict()),
    ("RMSprop", dict(momentum=0.9)),
    ("RMSprop", dict(centered=True)),
    ("RMSprop", dict(rho=0.8, momentum=0.5, centered=True, weight_decay=0.01)),
    ("Adagrad", dict()),
    ("Adagrad", dict(learning_rate=0.1, initial_accumulator_value=0.5, epsilon=1e-3, weight_decay=0.01)),
    ("Adam", dict(learning_rate=0.01, clipnorm=1.0)),
    ("Adam", dict(learning_rate=0.01, clipvalue=0.5)),
    ("SGD", dict(learning_rate=0.1, momentum=0.9, global_clipnorm=2.0)),
    ("RMSprop", dict(clipnorm=0.5, momentum=0.9)),
]


def _ids(cases):
    return [f"{c[0]}-" + ",".join(f"{k}={v}" for k, v in c[1].items()) for c in cases]


# -- 20 steps against the references ---------------------------------------------------------

@pytest.mark.parametrize("name,ours,ref,theirs", TORCH_CASES, ids=_ids(TORCH_CASES))
def test_torch_convention_matches_torch(name, ours, ref, theirs):
    params, grads = _data(SHAPES)
    got = run_engine(getattr(O, name)(convention="torch", **ours), params, grads)
    assert_close(got, run_torch(ref, theirs, params, grads))
    assert not np.array_equal(got[-1], params[-1])  # it did move


@pytest.mark.parametrize("name,kwargs", KERAS_CASES, ids=_ids(KERAS_CASES))
def test_keras_convention_matches_keras(name, kwargs):
    params, grads = _data(SHAPES)
    want = run_keras(name, kwargs, params, grads)
    assert_close(run_engine(getattr(O, name)(**kwargs), params, grads), want)


ISA_TORCH = [TORCH_CASES[i] for i in (3, 6, 13, 15)]
ISA_KERAS = [KERAS_CASES[i] for i in (12, 15, 16, 17)]


@pytest.mark.parametrize("name,ours,ref,theirs", ISA_TORCH, ids=_ids(ISA_TORCH))
def test_every_isa_torch(isa, name, ours, ref, theirs):
    params, grads = _data(SHAPES + [(70_001,)])  # the last one is split over threads
    got = run_engine(getattr(O, name)(convention="torch", **ours), params, grads)
    assert_close(got, run_torch(ref, theirs, params, grads))


@pytest.mark.parametrize("name,kwargs", ISA_KERAS, ids=_ids(ISA_KERAS))
def test_every_isa_keras(isa, name, kwargs):
    params, grads = _data(SHAPES + [(70_001,)])
    want = run_keras(name, kwargs, params, grads)
    assert_close(run_engine(getattr(O, name)(**kwargs), params, grads), want)


def test_big_tensor_torch(threads):
    params, grads = _data(BIG, seed=1)
    got = run_engine(O.Adam(convention="torch", learning_rate=0.01, weight_decay=0.01), params, grads)
    assert_close(got, run_torch(torch.optim.Adam, dict(lr=0.01, weight_decay=0.01), params, grads))


def test_big_tensor_keras_clipnorm(threads):
    params, grads = _data(BIG, seed=2, steps=5)  # clipnorm: the norm's partial sums are split too
    want = run_keras("Adam", dict(clipnorm=100.0), params, grads)
    assert_close(run_engine(O.Adam(clipnorm=100.0), params, grads), want)


# -- NaN gradients propagate -----------------------------------------------------------------

def _with_nan(shapes, step=5, index=3):
    params, grads = _data(shapes)
    for gs in grads[step:step + 1]:
        for g in gs:
            g.reshape(-1)[min(index, g.size - 1)] = np.nan
    return params, grads


@pytest.mark.parametrize("name,ours,ref,theirs", [TORCH_CASES[1], TORCH_CASES[6], TORCH_CASES[13]],
                         ids=_ids([TORCH_CASES[1], TORCH_CASES[6], TORCH_CASES[13]]))
def test_nan_gradient_propagates_torch(name, ours, ref, theirs):
    params, grads = _with_nan(SHAPES)
    got = run_engine(getattr(O, name)(convention="torch", **ours), params, grads)
    assert all(np.isnan(g).any() for g in got)
    assert_close(got, run_torch(ref, theirs, params, grads))  # NaN exactly where torch has it


@pytest.mark.parametrize("kwargs", [dict(clipvalue=0.5), dict(clipnorm=1.0), dict(global_clipnorm=1.0), dict()],
                         ids=["clipvalue", "clipnorm", "global_clipnorm", "none"])
def test_nan_gradient_propagates_keras(kwargs):
    params, grads = _with_nan(SHAPES)
    want = run_keras("Adam", kwargs, params, grads)
    got = run_engine(O.Adam(**kwargs), params, grads)
    assert all(np.isnan(g).any() for g in got)  # no silent clamp, whatever the clipping
    assert_close(got, want)


# -- schedules ---------------------------------------------------------------------------------

STEPS_TO_CHECK = [0, 1, 2, 5, 10, 99, 100, 101, 150, 999, 1000, 1001, 1100, 2500, 100_000]
SCHEDULE_CASES = [
    ("ExponentialDecay", dict(initial_learning_rate=0.1, decay_steps=1000, decay_rate=0.96)),
    ("ExponentialDecay", dict(initial_learning_rate=0.1, decay_steps=100, decay_rate=0.5, staircase=True)),
    ("InverseTimeDecay", dict(initial_learning_rate=0.1, decay_steps=100, decay_rate=0.5)),
    ("InverseTimeDecay", dict(initial_learning_rate=0.1, decay_steps=100, decay_rate=0.5, staircase=True)),
    ("PiecewiseConstantDecay", dict(boundaries=[100, 1000], values=[0.1, 0.05, 0.01])),
    ("CosineDecay", dict(initial_learning_rate=0.1, decay_steps=1000)),
    ("CosineDecay", dict(initial_learning_rate=0.1, decay_steps=1000, alpha=0.1)),
    ("CosineDecay", dict(initial_learning_rate=0.001, decay_steps=1000, alpha=0.05, warmup_target=0.1,
                         warmup_steps=100)),
]


@pytest.mark.parametrize("name,kwargs", SCHEDULE_CASES, ids=_ids(SCHEDULE_CASES))
def test_schedules_match_keras(name, kwargs):
    keras = _keras()
    ours, theirs = getattr(S, name)(**kwargs), getattr(keras.optimizers.schedules, name)(**kwargs)
    want = [float(theirs(step)) for step in STEPS_TO_CHECK]
    # Keras evaluates in float32: 0.96f ** 100 is 2e-6 off the float64 value we compute, and
    # cos(π·0.999) near the end of a cosine decay cancels; so relative 1e-6 with an absolute
    # floor of 1e-7 of the schedule's largest rate (tighter than the float32 the kernels get).
    atol = 1e-7 * max(want)
    for step, w in zip(STEPS_TO_CHECK, want):
        rtol = 1e-6 if step < 10_000 else 1e-5
        np.testing.assert_allclose(ours(step), w, rtol=rtol, atol=atol, err_msg=f"step {step}")


def test_linear_warmup_is_keras_cosine_warmup():
    keras = _keras()
    ours = S.LinearWarmup(S.CosineDecay(0.1, 1000, alpha=0.05), warmup_steps=100, initial_learning_rate=0.001)
    theirs = keras.optimizers.schedules.CosineDecay(0.001, 1000, alpha=0.05, warmup_target=0.1, warmup_steps=100)
    for step in STEPS_TO_CHECK:
        np.testing.assert_allclose(ours(step), float(theirs(step)), rtol=1e-6, atol=1e-8, err_msg=f"step {step}")
    constant = S.LinearWarmup(0.5, warmup_steps=10)
    assert [constant(s) for s in (0, 5, 10, 50)] == [0.0, 0.25, 0.5, 0.5]


def test_schedule_inside_optimizer_matches_keras():
    keras = _keras()
    params, grads = _data(SHAPES)
    sched = dict(initial_learning_rate=0.1, decay_steps=3, decay_rate=0.5, staircase=True)
    want = run_keras("SGD", dict(learning_rate=keras.optimizers.schedules.ExponentialDecay(**sched), momentum=0.9),
                     params, grads)
    opt = O.SGD(learning_rate=S.ExponentialDecay(**sched), momentum=0.9)
    assert_close(run_engine(opt, params, grads), want)
    assert opt.learning_rate == 0.1 * 0.5 ** (STEPS // 3)  # the rate of the next step


def test_adagrad_lr_decay_is_keras_inverse_time_decay():
    keras = _keras()
    params, grads = _data(SHAPES)
    want = run_keras("Adagrad", dict(learning_rate=keras.optimizers.schedules.InverseTimeDecay(0.1, 1, 0.05)),
                     params, grads)
    assert_close(run_engine(O.Adagrad(learning_rate=0.1, lr_decay=0.05), params, grads), want)


# -- checkpoints: get_state / set_state resume exactly --------------------------------------------

def test_resume_from_state_equals_uninterrupted_torch():
    params, grads = _data(SHAPES)
    want = run_torch(torch.optim.Adam, dict(lr=0.01, amsgrad=True), params, grads)
    first = O.Adam(convention="torch", learning_rate=0.01, amsgrad=True)
    ps = run_engine(first, params, grads[:10])
    state = first.get_state()
    assert state["iterations"] == 10 and state["slot_names"] == ["momentum", "velocity", "velocity_hat"]
    resumed = O.Adam(convention="torch", learning_rate=0.01, amsgrad=True)
    resumed.set_state(state)
    assert_close(run_engine(resumed, ps, grads[10:]), want)


def test_resume_from_state_with_schedule_keras():
    keras = _keras()
    params, grads = _data(SHAPES)
    want = run_keras("RMSprop", dict(learning_rate=keras.optimizers.schedules.CosineDecay(0.01, 15), momentum=0.5),
                     params, grads)
    first = O.RMSprop(learning_rate=S.CosineDecay(0.01, 15), momentum=0.5)
    ps = run_engine(first, params, grads[:7])
    resumed = O.RMSprop(learning_rate=S.CosineDecay(0.01, 15), momentum=0.5)
    resumed.set_state(first.get_state())
    assert_close(run_engine(resumed, ps, grads[7:]), want)


def test_set_state_refuses_mismatches():
    opt = O.Adam()
    opt.build([np.zeros(3, np.float32)])
    state = opt.get_state()
    with pytest.raises(EngineError, match="slot names"):
        O.SGD(momentum=0.9).set_state(state)
    bad = dict(state, slots=[[np.zeros(3, np.float32), np.zeros(4, np.float32)]])
    with pytest.raises(EngineError, match="shape"):
        O.Adam().set_state(bad)
    with pytest.raises(EngineError, match="iterations"):
        O.Adam().set_state(dict(state, iterations=-1))
    with pytest.raises(EngineError, match="get_state"):
        O.Adam().set_state({"slots": []})


# -- names, configs, defaults -------------------------------------------------------------------

def test_get_by_name_has_keras_defaults():
    keras = _keras()
    for name in ("sgd", "adam", "AdamW", "RMSPROP", "adagrad"):
        ours, theirs = O.get(name).get_config(), keras.optimizers.get(name).get_config()
        for key in theirs:
            if key != "name":
                assert ours[key] == pytest.approx(theirs[key]), (name, key)


def test_config_round_trip_and_keras_reads_it():
    keras = _keras()
    opt = O.Adam(learning_rate=S.CosineDecay(0.01, 100, warmup_target=0.1, warmup_steps=10), clipnorm=1.0,
                 amsgrad=True)
    config = opt.get_config()
    assert O.Adam.from_config(config).get_config() == config
    assert O.deserialize(O.serialize(opt)).get_config() == config
    theirs = keras.optimizers.Adam.from_config(dict(config))  # Keras reads our config as its own
    assert theirs.clipnorm == 1.0 and theirs.amsgrad is True
    assert float(theirs.learning_rate) == pytest.approx(opt.learning_rate)
    torch_cfg = O.RMSprop(convention="torch").get_config()
    assert torch_cfg["convention"] == "torch" and torch_cfg["rho"] == 0.99
    assert O.get({"class_name": "RMSprop", "config": torch_cfg}).convention == "torch"


def test_reads_a_keras_config():
    keras = _keras()
    config = keras.optimizers.RMSprop(learning_rate=0.01, momentum=0.5, centered=True).get_config()
    params, grads = _data(SHAPES)
    want = run_keras("RMSprop", dict(learning_rate=0.01, momentum=0.5, centered=True), params, grads)
    assert_close(run_engine(O.RMSprop.from_config(config), params, grads), want)


def test_unknown_name_lists_known():
    with pytest.raises(EngineError, match=r"unknown optimizer 'adamax'.*sgd, adam, adamw, rmsprop, adagrad"):
        O.get("adamax")
    with pytest.raises(EngineError, match="unknown optimizer 'Nope'"):
        O.get({"class_name": "Nope", "config": {}})
    with pytest.raises(EngineError, match="expected a name"):
        O.get(3)
    with pytest.raises(EngineError, match="unknown learning rate schedule 'Step'"):
        S.deserialize({"class_name": "Step", "config": {}})


@pytest.mark.parametrize("make,fragment", [
    (lambda: O.Adam(learning_rate=-0.1), "learning_rate must be >= 0"),
    (lambda: O.SGD(learning_rate=float("nan")), "learning_rate must be a finite number"),
    (lambda: O.Adam(learning_rate="fast"), "learning_rate must be a finite number"),
    (lambda: O.Adam(beta_1=1.0), r"beta_1 must be in \[0, 1\)"),
    (lambda: O.Adam(beta_2=-0.1), "beta_2 must be >= 0"),
    (lambda: O.AdamW(beta_2=1.5), r"beta_2 must be in \[0, 1\)"),
    (lambda: O.Adam(epsilon=-1e-8), "epsilon must be >= 0"),
    (lambda: O.SGD(momentum=1.5), r"momentum must be in \[0, 1\]"),
    (lambda: O.RMSprop(rho=1.0), r"rho must be in \[0, 1\)"),
    (lambda: O.Adagrad(initial_accumulator_value=-1), "initial_accumulator_value must be >= 0"),
    (lambda: O.Adam(weight_decay=-0.01), "weight_decay must be >= 0"),
    (lambda: O.Adam(clipnorm=1.0, clipvalue=1.0), "only one of clipnorm, clipvalue and global_clipnorm"),
    (lambda: O.Adam(clipnorm=-1.0), "clipnorm must be >= 0"),
    (lambda: O.Adam(convention="jax"), "convention must be one of keras, torch"),
    (lambda: O.SGD(dampening=0.1), "dampening is a torch-convention option"),
    (lambda: O.SGD(nesterov=True, convention="torch"), "nesterov needs momentum > 0"),
    (lambda: O.Adam(use_ema=True), "use_ema=True is not supported"),
    (lambda: O.Adam.from_config({"beta_3": 0.5}), "beta_3"),
    (lambda: S.ExponentialDecay(0.1, 0, 0.9), "decay_steps must be > 0"),
    (lambda: S.PiecewiseConstantDecay([10, 5], [1.0, 0.5, 0.1]), "strictly increasing"),
    (lambda: S.PiecewiseConstantDecay([10], [1.0]), "one element less"),
    (lambda: S.CosineDecay(0.1, 100, warmup_target=0.2), "warmup_target needs warmup_steps > 0"),
], ids=lambda v: v if isinstance(v, str) else "")
def test_bad_arguments(make, fragment):
    with pytest.raises(EngineError, match=fragment):
        make()


def test_bad_apply_arguments():
    p = np.zeros((3, 4), np.float32)
    opt = O.SGD()
    with pytest.raises(EngineError, match="2 parameters but 1 gradients"):
        opt.apply([p], [p, p])
    with pytest.raises(EngineError, match="gradient 0 must be a C-contiguous float32 numpy array, got float64"):
        opt.apply([np.zeros((3, 4))], [p])
    with pytest.raises(EngineError, match=r"parameter 0 must be a C-contiguous float32 numpy array, got float32 array \(not contiguous\)"):
        opt.apply([p], [np.zeros((4, 3), np.float32).T])
    with pytest.raises(EngineError, match=r"gradient 0 has shape \(12,\), parameter 0 has \(3, 4\)"):
        opt.apply([np.zeros(12, np.float32)], [p])
    ro = p.copy()
    ro.flags.writeable = False
    with pytest.raises(EngineError, match="parameter 0 is read-only"):
        opt.apply([p], [ro])
    opt.apply([p], [p])
    with pytest.raises(EngineError, match=r"built for parameters of shapes \[\(3, 4\)\]"):
        opt.apply([np.zeros(5, np.float32)], [np.zeros(5, np.float32)])
    assert opt.iterations == 1


# -- the registry steps in a hand-built Program (how a planned training step will use them) ------

F32, F64 = 1, 11


def _adam_program(n, hyper, m, v, amsgrad=0):
    prog = _C.Program()
    p, g, sm, sv, h = (prog.new_slot() for _ in range(5))
    prog.bind_const(sm, m)
    prog.bind_const(sv, v)
    prog.bind_const(h, hyper)
    prog.add_step("adam_update", F32, [p, g, sm, sv, h], [p, sm, sv], [F32] * 4 + [F64], [F32] * 3,
                  [n, 1, 0, amsgrad], [0.0, 0.0, 0.0, 0.9, 0.999, 1e-8])
    prog.set_io([(g, F32, 4 * n)], [(p, F32, 4 * n)])
    return prog


def test_program_reads_lr_and_step_at_run_time():
    n = 1001
    params, grads = _data([(n,)])
    hyper = np.zeros(3, np.float64)
    m, v = np.zeros(n, np.float32), np.zeros(n, np.float32)
    prog, pool = _adam_program(n, hyper, m, v), _C.ContextPool(1)
    p = params[0].copy()
    t = torch.tensor(params[0].copy(), requires_grad=True)
    ref = torch.optim.Adam([t], lr=0.01, foreach=False)
    for k, (g,) in enumerate(grads):
        lr = 0.01 * 0.8 ** k  # the same program, a new rate every step
        hyper[:] = (lr, k + 1, 1.0)
        prog.run([g], [p], pool)
        ref.param_groups[0]["lr"] = lr
        t.grad = torch.from_numpy(g.copy())
        ref.step()
    assert_close([p], [t.detach().numpy()])
    assert_close([m, v], [ref.state[t]["exp_avg"].numpy(), ref.state[t]["exp_avg_sq"].numpy()])


def test_program_step_checks():
    n = 8
    hyper, m, v = np.zeros(3, np.float64), np.zeros(n, np.float32), np.zeros(n, np.float32)
    prog = _C.Program()
    p, g, sm, sv, h = (prog.new_slot() for _ in range(5))

    def add(ins, outs, ints, floats, name="adam_update", types=None):
        prog.add_step(name, F32, ins, outs, types if types is not None else [F32] * (len(ins) - 1) + [F64],
                      [F32] * len(outs), ints, floats)

    good = [0.0, 0.0, 0.0, 0.9, 0.999, 1e-8]
    with pytest.raises(KernelError, match="expected 6 inputs"):  # amsgrad needs a third state
        add([p, g, sm, sv, h], [p, sm, sv], [n, 0, 0, 1], good)
    with pytest.raises(KernelError, match="output 1 must be its state's input slot"):
        add([p, g, sm, sv, h], [p, sv, sm], [n, 0, 0, 0], good)
    with pytest.raises(KernelError, match=r"beta_1 must be in \[0, 1\)"):
        add([p, g, sm, sv, h], [p, sm, sv], [n, 0, 0, 0], [0.0, 0.0, 0.0, 1.0, 0.999, 1e-8])
    with pytest.raises(KernelError, match="hyperparameter buffer must be float64"):
        add([p, g, sm, sv, h], [p, sm, sv], [n, 0, 0, 0], good, types=[F32] * 5)
    with pytest.raises(KernelError, match="unknown convention 7"):
        add([p, g, sm, sv, h], [p, sm, sv], [n, 7, 0, 0], good)
    with pytest.raises(KernelError, match="dampening is a torch-convention option"):
        add([p, g, sm, h], [p, sm], [n, 0, 0, 0], [0.0, 0.0, 0.0, 0.9, 0.5], name="sgd_update")
    prog = _adam_program(n, hyper, m, v)
    hyper[:] = (0.1, 0, 1.0)  # step 0: bias correction would divide by zero
    with pytest.raises(KernelError, match="step must be a whole number >= 1, got 0"):
        prog.run([np.ones(n, np.float32)], [np.ones(n, np.float32)], _C.ContextPool(1))
