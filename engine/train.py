"""The training step as one native program: forward (training form), loss, reverse pass and
optimizer update, planned once per batch signature like an inference plan.

A Trainer owns the trained values (float32 arrays, updated in place by the program's update
steps), the non-trainable state the forward updates (BatchNorm moving statistics) and binds
the optimizer's state arrays and hyper buffer [lr, step, grad_scale]. Each call passes the
batch; nothing is allocated per step except the outputs handed back.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Optional

import numpy as np

from . import _C, dtypes
from .autograd import GradBuilder, differentiate, training_graph
from .errors import EngineError
from .graph import Graph, Node, Value
from .ops.registry import TensorType
from .passes import optimize_training
from .runtime.plan import Plan, Schedule

HYPER = "optimizer/hyper"
TARGET, WEIGHT = "target", "sample_weight"
_MAX_PLANS = 4  # batch signatures kept (the full batch, the last partial one, validation...)


class Trainer:
    """Training and evaluation programs for one forward graph.

    graph: the forward graph in training form (engine.nn: to_graph(training=True)), whose
    initializers include the trained values; `trainable`: names of those trained;
    `state`: names of non-trainable values the forward updates; `eval_graph`: the forward for
    evaluation (inference form; its initializers are read as constants when it is planned)."""

    def __init__(self, graph: Graph, trainable: list[str], state: list[str], loss, optimizer, seed: int = 0):
        self.graph = graph
        self.loss = loss
        self.optimizer = optimizer
        self.seed = int(seed)
        self.trainable = list(trainable)
        self.state = list(state)
        self.values = {k: np.array(graph.initializers[k], np.float32, copy=True, order="C")
                       for k in self.trainable + self.state}
        if not self.optimizer.built:
            self.optimizer.build([self.values[k] for k in self.trainable])
        elif [tuple(s) for s in optimizer._shapes] != [self.values[k].shape for k in self.trainable]:
            raise EngineError(f"{type(optimizer).__name__}: this optimizer was built for other parameters "
                              f"(shapes {optimizer._shapes}); use a new optimizer for this model")
        self._pool = _C.ContextPool()
        self._train: OrderedDict = OrderedDict()
        self._eval: OrderedDict = OrderedDict()
        self.unused: list[str] = []  # trained values no gradient reaches (Keras warns about them)

    def same_values(self, graph: Graph, trainable: list, state: list) -> bool:
        """Whether `graph` trains the same values (names and shapes) as this trainer."""
        return (list(trainable) == self.trainable and list(state) == self.state
                and all(graph.initializers[k].shape == v.shape for k, v in self.values.items()))

    def load_values(self, graph: Graph) -> None:
        """Copy `graph`'s weights into the trained values (in place: plans point at them)."""
        for k, v in self.values.items():
            np.copyto(v, graph.initializers[k], casting="same_kind")

    # -- data ------------------------------------------------------------------------------
    def _types(self, feeds: dict, target: np.ndarray, weight) -> dict:
        types = {k: TensorType(tuple(v.shape), dtypes.from_numpy(v.dtype)) for k, v in feeds.items()}
        types[TARGET] = TensorType(tuple(target.shape), dtypes.from_numpy(target.dtype))
        if weight is not None:
            types[WEIGHT] = TensorType(tuple(weight.shape), "float32")
        return types

    def _loss_fn(self, with_weight: bool):
        out_name = self.graph.outputs[0].name

        def emit(gb: GradBuilder, outputs):
            return self.loss.emit(gb, out_name, TARGET, WEIGHT if with_weight else None)
        return emit

    # -- the training program ----------------------------------------------------------------
    def _build_train(self, types: dict, with_weight: bool):
        g = self.graph
        settings = {"seed": self.seed, "step_counter": HYPER}
        types = dict(types)
        types[HYPER] = TensorType((3,), "float64")
        gb, loss_name, grads = differentiate(g, types, self.trainable, loss=self._loss_fn(with_weight),
                                             settings=settings)
        opt = self.optimizer
        updated = [(k, grads[k]) for k in self.trainable if grads[k] is not None]
        self.unused = [k for k in self.trainable if grads[k] is None]
        if getattr(opt, "global_clipnorm", None):
            gb.node("GlobalNormScale", [gr for _, gr in updated] + [HYPER], outputs=[],
                    attrs={"clipnorm": float(opt.global_clipnorm)})
        slot_inputs = []
        for i, k in enumerate(self.trainable):
            names = [f"optimizer/{k}/{s}" for s in opt._slot_names()]
            for n, a in zip(names, opt._slots[i]):
                gb.types[n] = TensorType(tuple(a.shape), "float32")
            slot_inputs.append(names)
        for i, k in enumerate(self.trainable):
            if grads[k] is None:
                continue
            step, ints, floats = opt.update_step(int(self.values[k].size))
            gb.node("OptimizerUpdate", [k, grads[k], *slot_inputs[i], HYPER], outputs=[],
                    attrs={"step": step, "ints": ints, "floats": floats})
        loss_out = gb.node("Identity", [loss_name], base="loss_value")
        outs = [loss_out] + [v.name for v in g.outputs]
        data = [Value(k, t.shape, t.dtype) for k, t in types.items() if k != HYPER]
        variables = [Value(k, self.values[k].shape, "float32") for k in self.trainable + self.state]
        slots = [Value(n, gb.types[n].shape, "float32") for names in slot_inputs for n in names]
        inputs = data + variables + slots + [Value(HYPER, (3,), "float64")]
        consts = {k: v for k, v in g.initializers.items() if k not in self.values}
        graph = optimize_training(training_graph(gb, inputs, outs, consts))
        bound = {**self.values, HYPER: opt._hyper}
        for i, names in enumerate(slot_inputs):
            bound.update(zip(names, opt._slots[i]))
        plan = Plan(Schedule(graph), {v.name: v.shape for v in inputs}, {},
                    input_dtypes={v.name: v.dtype for v in inputs})
        return plan, [v.name for v in inputs], bound

    def train_batch(self, feeds: dict, target: np.ndarray, weight: Optional[np.ndarray] = None):
        """One step on one batch: returns (loss, [outputs]). Updates the values in place."""
        types = self._types(feeds, target, weight)
        key = tuple(sorted((k, t) for k, t in types.items()))
        entry = self._train.get(key)
        if entry is None:
            entry = self._train[key] = self._build_train(types, weight is not None)
            while len(self._train) > _MAX_PLANS:
                self._train.popitem(last=False)
        else:
            self._train.move_to_end(key)
        plan, names, bound = entry
        opt = self.optimizer
        step = opt._iterations + 1
        opt._hyper[0] = opt._lr_for_step(step)
        opt._hyper[1] = step
        opt._hyper[2] = 1.0
        given = dict(feeds)
        given[TARGET] = target
        if weight is not None:
            given[WEIGHT] = weight
        arrays = [given[n] if n in given else bound[n] for n in names]
        results = plan.run(arrays, self._pool)
        opt._iterations = step
        return float(results[0]), results[1:]

    # -- evaluation (forward in inference form + loss) ---------------------------------------
    def eval_batch(self, eval_graph: Graph, feeds: dict, target: np.ndarray, weight=None, version=None):
        """(loss, [outputs]) of `eval_graph` (its weights as constants) on one batch; plans are
        kept per (version, signature): pass a new `version` when the weights changed."""
        types = self._types(feeds, target, weight)
        key = (version, tuple(sorted((k, t) for k, t in types.items())))
        entry = self._eval.get(key)
        if entry is None:
            for k in [k for k in self._eval if k[0] != version]:
                del self._eval[k]
            gb = GradBuilder({**{k: TensorType(tuple(v.shape), dtypes.from_numpy(v.dtype))
                                 for k, v in eval_graph.initializers.items()}, **types},
                             dict(eval_graph.initializers))
            for node in eval_graph.nodes:
                gb._names.add(node.name)
                gb.add(Node(node.op, list(node.inputs), list(node.outputs), dict(node.attrs), node.name))
            loss_name = self.loss.emit(gb, eval_graph.outputs[0].name, TARGET, WEIGHT if weight is not None else None)
            _drop_unused_outputs(gb)
            outs = [gb.node("Identity", [loss_name], base="loss_value")] + [v.name for v in eval_graph.outputs]
            inputs = [Value(k, t.shape, t.dtype) for k, t in types.items()]
            graph = training_graph(gb, inputs, outs, eval_graph.initializers)
            plan = Plan(Schedule(graph), {v.name: v.shape for v in inputs}, {},
                        input_dtypes={v.name: v.dtype for v in inputs})
            entry = self._eval[key] = (plan, [v.name for v in inputs])
        plan, names = entry
        given = dict(feeds)
        given[TARGET] = target
        if weight is not None:
            given[WEIGHT] = weight
        results = plan.run([given[n] for n in names], self._pool)
        return float(results[0]), results[1:]


def _drop_unused_outputs(gb: GradBuilder) -> None:
    """In evaluation nothing needs the loss kernels' gradient outputs."""
    for node in gb.nodes:
        if node.op == "SoftmaxXent" and len(node.outputs) > 1:
            node.outputs[1] = ""
