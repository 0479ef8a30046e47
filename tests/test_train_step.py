"""engine.train.Trainer: the native training step (forward, loss, reverse pass, optimizer
update as one planned program) on a two-layer MLP (Dense relu -> Dense -> Softmax), against the
same model and optimizer in torch (float64): loss per step, returned outputs and the weights
after each step. SGD, Adam (20 steps), RMSprop, Adagrad, SGD with momentum and Nesterov;
clipnorm, clipvalue, global_clipnorm; sample weights; a batch of one; two batch sizes (two
plans) in one trainer."""

from __future__ import annotations

import numpy as np
import pytest

from engine import losses, optimizers
from engine.graph import Graph, Node, Value
from engine.train import Trainer

torch = pytest.importorskip("torch")
F = torch.nn.functional

IN, HID, OUT = 6, 9, 5
NAMES = ["w1", "b1", "w2", "b2"]


def mlp(seed=0, hidden_act="relu"):
    rng = np.random.default_rng(seed)
    init = {"w1": (rng.standard_normal((IN, HID)) / np.sqrt(IN)).astype(np.float32),
            "b1": (0.1 * rng.standard_normal(HID)).astype(np.float32),
            "w2": (rng.standard_normal((HID, OUT)) / np.sqrt(HID)).astype(np.float32),
            "b2": (0.1 * rng.standard_normal(OUT)).astype(np.float32)}
    nodes = [Node("Dense", ["x", "w1", "b1"], ["h"], {"activation": hidden_act}),
             Node("Dense", ["h", "w2", "b2"], ["z"]),
             Node("Softmax", ["z"], ["p"], {"axis": -1})]
    graph = Graph([Value("x", (None, IN))], [Value("p", (None, OUT))], nodes, init)
    return graph, init


def batch(rng, n, sparse=True):
    x = rng.standard_normal((n, IN)).astype(np.float32)
    labels = rng.integers(0, OUT, n)
    return x, (labels if sparse else np.eye(OUT, dtype=np.float32)[labels])


ACTS = {"relu": F.relu, "tanh": torch.tanh, "gelu": F.gelu, "elu": F.elu}


class TorchMLP:
    """The same model in float64 torch."""

    def __init__(self, init, hidden_act="relu"):
        self.P = {k: torch.tensor(v.astype(np.float64), requires_grad=True) for k, v in init.items()}
        self.act = ACTS[hidden_act]

    def params(self):
        return [self.P[k] for k in NAMES]

    def forward(self, x):
        h = self.act(torch.tensor(x, dtype=torch.float64) @ self.P["w1"] + self.P["b1"])
        return h @ self.P["w2"] + self.P["b2"]

    def loss(self, x, target, weight=None):
        """Keras's sum_over_batch_size cross-entropy: Σ w·l / N; (loss, softmax output)."""
        z = self.forward(x)
        logp = torch.log_softmax(z, -1)
        t = torch.tensor(target)
        per = -logp.gather(1, t.view(-1, 1))[:, 0] if t.dtype == torch.int64 else -(t.double() * logp).sum(-1)
        if weight is not None:
            per = per * torch.tensor(weight, dtype=torch.float64)
        return per.sum() / len(x), torch.softmax(z, -1)

    def grads(self, x, target, weight=None):
        for p in self.params():
            p.grad = None
        loss, probs = self.loss(x, target, weight)
        loss.backward()
        return float(loss.detach()), probs.detach().numpy(), {k: self.P[k].grad.clone() for k in NAMES}

    def numpy(self):
        return {k: v.detach().numpy() for k, v in self.P.items()}


def assert_weights(trainer, ref, rtol, atol, what=""):
    for k, want in ref.numpy().items():
        np.testing.assert_allclose(trainer.values[k], want, rtol=rtol, atol=atol, err_msg=f"{what} {k}")


def make(opt, loss="sparse_categorical_crossentropy", seed=0, hidden_act="relu"):
    graph, init = mlp(seed, hidden_act)
    trainer = Trainer(graph, NAMES, [], losses.get(loss), opt)
    return trainer, TorchMLP(init, hidden_act), graph, init


# -- SGD ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("loss", ["sparse_categorical_crossentropy", "categorical_crossentropy"])
@pytest.mark.parametrize("n", [1, 8, 13])
def test_one_sgd_step_equals_torch(loss, n):
    lr = 0.5
    trainer, ref, graph, init = make(optimizers.SGD(learning_rate=lr), loss)
    x, y = batch(np.random.default_rng(n), n, sparse=loss.startswith("sparse"))
    got_loss, outs = trainer.train_batch({"x": x}, y)
    want_loss, probs, grads = ref.grads(x, y)
    np.testing.assert_allclose(got_loss, want_loss, rtol=1e-6)
    np.testing.assert_allclose(outs[0], probs, rtol=1e-5, atol=1e-7)  # the forward, before the update
    with torch.no_grad():
        for k in NAMES:
            ref.P[k] -= lr * grads[k]
    assert_weights(trainer, ref, rtol=1e-6, atol=1e-6)
    assert trainer.optimizer.iterations == 1 and trainer.unused == []
    for k in NAMES:  # the graph's own arrays are copies, not trained in place
        np.testing.assert_array_equal(graph.initializers[k], init[k])
        assert not np.array_equal(trainer.values[k], init[k]), k


@pytest.mark.parametrize("hidden_act", ["tanh", "gelu", "elu"])
def test_sgd_steps_other_hidden_activations(hidden_act):
    # gelu / elu derivatives read the pre-activation (not fused in the training graph)
    trainer, ref, _, _ = make(optimizers.SGD(learning_rate=0.3), hidden_act=hidden_act)
    opt = torch.optim.SGD(ref.params(), lr=0.3)
    rng = np.random.default_rng(1)
    for _ in range(3):
        x, y = batch(rng, 7)
        got, _ = trainer.train_batch({"x": x}, y)
        want, _, _ = ref.grads(x, y)
        opt.step()
        np.testing.assert_allclose(got, want, rtol=1e-5)
    assert_weights(trainer, ref, rtol=1e-5, atol=1e-6)


# -- Adam --------------------------------------------------------------------------------------

@pytest.mark.parametrize("scale", [1.0, 1e-5], ids=["plain", "tiny_gradients"])
def test_adam_20_steps_track_torch(scale):
    # tiny gradients (sample weights of 1e-5): where ε's place (Keras's or torch's) shows
    trainer, ref, _, _ = make(optimizers.Adam(learning_rate=0.01, convention="torch"))
    opt = torch.optim.Adam(ref.params(), lr=0.01, foreach=False)  # eps 1e-8, torch's convention
    rng = np.random.default_rng(2)
    for step in range(20):
        x, y = batch(rng, 16)
        w = np.full(16, scale, np.float32)
        got, _ = trainer.train_batch({"x": x}, y, w)
        want, _, _ = ref.grads(x, y, w)
        opt.step()
        np.testing.assert_allclose(got, want, rtol=1e-6, err_msg=f"loss at step {step}")
        assert_weights(trainer, ref, rtol=1e-5, atol=1e-6, what=f"step {step}")
    assert trainer.optimizer.iterations == 20


def test_adam_keras_convention_steps():
    """The default (Keras) convention: p -= lr·sqrt(1−β2^t)/(1−β1^t) · m / (sqrt(v) + ε), ε = 1e-7,
    written out here in float64."""
    lr, b1, b2, eps = 0.01, 0.9, 0.999, 1e-7
    trainer, ref, _, _ = make(optimizers.Adam(learning_rate=lr))
    m = {k: torch.zeros_like(v) for k, v in ref.P.items()}
    v = {k: torch.zeros_like(p) for k, p in ref.P.items()}
    rng = np.random.default_rng(3)
    for t in range(1, 11):
        x, y = batch(rng, 10)
        sw = np.full(10, 1e-5 if t % 2 else 1.0, np.float32)  # tiny gradients every other step
        got, _ = trainer.train_batch({"x": x}, y, sw)
        want, _, grads = ref.grads(x, y, sw)
        np.testing.assert_allclose(got, want, rtol=1e-5, err_msg=f"loss at step {t}")
        with torch.no_grad():
            for k in NAMES:
                m[k] = b1 * m[k] + (1 - b1) * grads[k]
                v[k] = b2 * v[k] + (1 - b2) * grads[k] ** 2
                ref.P[k] -= lr * np.sqrt(1 - b2 ** t) / (1 - b1 ** t) * m[k] / (torch.sqrt(v[k]) + eps)
        assert_weights(trainer, ref, rtol=1e-5, atol=1e-6, what=f"step {t}")


# -- other optimizers, torch's convention ------------------------------------------------------

TORCH_OPTS = {  # id -> (engine optimizer, torch optimizer factory)
    "rmsprop": (lambda: optimizers.RMSprop(learning_rate=0.01, convention="torch"),
                lambda ps: torch.optim.RMSprop(ps, lr=0.01, foreach=False)),
    "rmsprop_momentum_centered": (
        lambda: optimizers.RMSprop(learning_rate=0.01, momentum=0.8, centered=True, convention="torch"),
        lambda ps: torch.optim.RMSprop(ps, lr=0.01, momentum=0.8, centered=True, foreach=False)),
    "adagrad": (lambda: optimizers.Adagrad(learning_rate=0.1, convention="torch"),
                lambda ps: torch.optim.Adagrad(ps, lr=0.1, foreach=False)),
    "adagrad_decay_init": (
        lambda: optimizers.Adagrad(learning_rate=0.1, lr_decay=0.2, initial_accumulator_value=0.3, convention="torch"),
        lambda ps: torch.optim.Adagrad(ps, lr=0.1, lr_decay=0.2, initial_accumulator_value=0.3, foreach=False)),
    "sgd_momentum": (lambda: optimizers.SGD(learning_rate=0.1, momentum=0.9, convention="torch"),
                     lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, foreach=False)),
    "sgd_nesterov": (lambda: optimizers.SGD(learning_rate=0.1, momentum=0.9, nesterov=True, convention="torch"),
                     lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True, foreach=False)),
    "sgd_dampening": (lambda: optimizers.SGD(learning_rate=0.1, momentum=0.5, dampening=0.3, convention="torch"),
                      lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.5, dampening=0.3, foreach=False)),
    "adamw": (lambda: optimizers.AdamW(learning_rate=0.01, weight_decay=0.1, convention="torch"),
              lambda ps: torch.optim.AdamW(ps, lr=0.01, weight_decay=0.1, foreach=False)),
}


@pytest.mark.parametrize("name", list(TORCH_OPTS))
def test_torch_convention_optimizers(name):
    ours, theirs = TORCH_OPTS[name]
    trainer, ref, _, _ = make(ours())
    opt = theirs(ref.params())
    rng = np.random.default_rng(4)
    for step in range(3):  # the first step, then state carried over
        x, y = batch(rng, 9)
        got, _ = trainer.train_batch({"x": x}, y)
        want, _, _ = ref.grads(x, y)
        opt.step()
        np.testing.assert_allclose(got, want, rtol=1e-5, err_msg=f"loss at step {step}")
        assert_weights(trainer, ref, rtol=1e-5, atol=1e-6, what=f"{name} step {step}")


def test_sgd_momentum_nesterov_keras_convention():
    """Keras: v = μ·v − lr·g; p += μ·v − lr·g (Nesterov)."""
    lr, mu = 0.1, 0.9
    trainer, ref, _, _ = make(optimizers.SGD(learning_rate=lr, momentum=mu, nesterov=True))
    vel = {k: torch.zeros_like(p) for k, p in ref.P.items()}
    rng = np.random.default_rng(5)
    for step in range(3):
        x, y = batch(rng, 9)
        trainer.train_batch({"x": x}, y)
        _, _, grads = ref.grads(x, y)
        with torch.no_grad():
            for k in NAMES:
                vel[k] = mu * vel[k] - lr * grads[k]
                ref.P[k] += mu * vel[k] - lr * grads[k]
        assert_weights(trainer, ref, rtol=1e-5, atol=1e-6, what=f"step {step}")


# -- gradient clipping ---------------------------------------------------------------------------

@pytest.mark.parametrize("clip", ["clipnorm", "global_clipnorm", "clipvalue"])
def test_clipping_applied_in_the_step(clip):
    lr, c = 0.5, {"clipnorm": 0.6, "global_clipnorm": 0.08, "clipvalue": 0.01}[clip]
    trainer, ref, _, _ = make(optimizers.SGD(learning_rate=lr, **{clip: c}))
    rng = np.random.default_rng(6)
    for step in range(2):
        x, y = batch(rng, 11)
        trainer.train_batch({"x": x}, y)
        _, _, grads = ref.grads(x, y)
        norms = {k: float(torch.linalg.vector_norm(g)) for k, g in grads.items()}
        total = float(np.sqrt(sum(n ** 2 for n in norms.values())))
        if clip == "clipnorm":
            assert max(norms.values()) > c > min(norms.values())  # some clipped, some not
            scaled = {k: g * min(1.0, c / norms[k]) for k, g in grads.items()}
        elif clip == "global_clipnorm":
            assert total > c
            scaled = {k: g * (c / total) for k, g in grads.items()}
        else:
            scaled = {k: torch.clamp(g, -c, c) for k, g in grads.items()}
        with torch.no_grad():
            for k in NAMES:
                ref.P[k] -= lr * scaled[k]
        assert_weights(trainer, ref, rtol=1e-5, atol=1e-6, what=f"{clip} step {step}")


def test_global_clipnorm_not_reached_leaves_gradients():
    trainer, ref, _, _ = make(optimizers.SGD(learning_rate=0.5, global_clipnorm=1e6))
    x, y = batch(np.random.default_rng(7), 5)
    trainer.train_batch({"x": x}, y)
    _, _, grads = ref.grads(x, y)
    with torch.no_grad():
        for k in NAMES:
            ref.P[k] -= 0.5 * grads[k]
    assert_weights(trainer, ref, rtol=1e-6, atol=1e-6)


# -- data: sample weights, batch of one, several batch sizes ------------------------------------

@pytest.mark.parametrize("loss", ["sparse_categorical_crossentropy", "categorical_crossentropy"])
def test_sample_weights(loss):
    trainer, ref, _, _ = make(optimizers.SGD(learning_rate=0.4), loss)
    opt = torch.optim.SGD(ref.params(), lr=0.4)
    rng = np.random.default_rng(8)
    for step in range(3):
        x, y = batch(rng, 10, sparse=loss.startswith("sparse"))
        w = rng.uniform(0, 3, 10).astype(np.float32)
        w[step] = 0.0  # a sample that does not count
        got, _ = trainer.train_batch({"x": x}, y, w)
        want, _, _ = ref.grads(x, y, w)
        opt.step()
        np.testing.assert_allclose(got, want, rtol=1e-5)
        assert_weights(trainer, ref, rtol=1e-5, atol=1e-6, what=f"step {step}")
    # weights of one give the unweighted step; the weighted and unweighted plans coexist
    x, y = batch(rng, 10, sparse=loss.startswith("sparse"))
    a, _ = trainer.train_batch({"x": x}, y, np.ones(10, np.float32))
    want, _, _ = ref.grads(x, y)
    opt.step()
    np.testing.assert_allclose(a, want, rtol=1e-5)
    b, _ = trainer.train_batch({"x": x}, y)
    want, _, _ = ref.grads(x, y)
    opt.step()
    np.testing.assert_allclose(b, want, rtol=1e-5)
    assert_weights(trainer, ref, rtol=1e-5, atol=1e-6)


def test_batch_of_one():
    trainer, ref, _, _ = make(optimizers.Adam(learning_rate=0.01, convention="torch"))
    opt = torch.optim.Adam(ref.params(), lr=0.01, foreach=False)
    rng = np.random.default_rng(9)
    for step in range(5):
        x, y = batch(rng, 1)
        got, outs = trainer.train_batch({"x": x}, y)
        want, probs, _ = ref.grads(x, y)
        opt.step()
        np.testing.assert_allclose(got, want, rtol=1e-5)
        assert outs[0].shape == (1, OUT)
        np.testing.assert_allclose(outs[0], probs, rtol=1e-5, atol=1e-7)
        assert_weights(trainer, ref, rtol=1e-5, atol=1e-6, what=f"step {step}")


def test_two_batch_sizes_share_the_weights_and_state():
    trainer, ref, _, _ = make(optimizers.Adam(learning_rate=0.01, convention="torch"))
    opt = torch.optim.Adam(ref.params(), lr=0.01, foreach=False)
    rng = np.random.default_rng(10)
    for step, n in enumerate([8, 3, 8, 3, 3, 8]):
        x, y = batch(rng, n)
        got, outs = trainer.train_batch({"x": x}, y)
        want, probs, _ = ref.grads(x, y)
        opt.step()
        np.testing.assert_allclose(got, want, rtol=1e-5, err_msg=f"loss at step {step} (batch {n})")
        np.testing.assert_allclose(outs[0], probs, rtol=1e-5, atol=1e-7)
        assert_weights(trainer, ref, rtol=1e-5, atol=1e-6, what=f"step {step} (batch {n})")
    assert len(trainer._train) == 2  # one plan per batch signature
    assert trainer.optimizer.iterations == 6


def test_eval_batch_reads_the_trained_weights():
    trainer, ref, graph, _ = make(optimizers.SGD(learning_rate=0.5))
    opt = torch.optim.SGD(ref.params(), lr=0.5)
    rng = np.random.default_rng(11)
    x, y = batch(rng, 6)
    trainer.train_batch({"x": x}, y)
    ref.grads(x, y)
    opt.step()
    xe, ye = batch(rng, 4)
    for version in (1, 2):
        eval_graph = graph.replace(initializers={k: trainer.values[k].copy() for k in NAMES})
        got, outs = trainer.eval_batch(eval_graph, {"x": xe}, ye, version=version)
        with torch.no_grad():
            want, probs = ref.loss(xe, ye)
        np.testing.assert_allclose(got, float(want), rtol=1e-5)
        np.testing.assert_allclose(outs[0], probs.numpy(), rtol=1e-5, atol=1e-7)
        trainer.train_batch({"x": x}, y)
        ref.grads(x, y)
        opt.step()
