"""What engine.nn models add to the training loop (engine/fit.py): their training graph, the
trained values written back to the layers, and checkpoints that hold the optimizer state and
the History.

The training graph is the model's graph emitted in training form (GraphBuilder.training):
weights are trained values named "<layer>/<weight>", and each layer's trainable flag decides
which of them the optimizer updates.
"""

from __future__ import annotations

import weakref

import numpy as np

from .. import optimizers as _optimizers
from ..errors import EngineError
from ..fit import TrainingError, TrainingMixin

_OPT_PREFIX = "optimizer/"


class NetworkTraining(TrainingMixin):
    """Mixed into engine.nn's Sequential and Model."""

    _graph_cache = None  # (kind, layer versions, graph)

    def _graph_for(self, training: bool):
        key = ("train" if training else "eval", self._layer_versions())
        cached = self.__dict__.get("_graphs", {})
        if cached.get(key[0], (None,))[0] != key[1]:
            cached[key[0]] = (key[1], self.to_graph(training=training))
            self.__dict__["_graphs"] = cached
        return cached[key[0]][1], key[1]

    def _architecture(self):
        return tuple(id(layer) for layer in self.layers)

    def _training_parts(self, key_only: bool = False):
        if key_only:
            return self._layer_versions()
        graph, key = self._graph_for(True)
        for layer in self.layers:  # reads of a layer's weights write back pending steps first
            layer._training_owner = weakref.ref(self)
        trainable, state = [], []
        for layer in self.layers:
            for full, short, owner, frozen in _named_weights(layer):
                if full not in graph.initializers:
                    continue
                fixed = short in getattr(owner, "non_trainable_names", ())
                if fixed:
                    state.append(full)
                elif not frozen:
                    trainable.append(full)
        if not trainable:
            raise TrainingError(f"{self.name}: no trainable weights (every layer is frozen)")
        return graph, trainable, state, key

    def _eval_parts(self):
        return self._graph_for(False)

    def _store_values(self, values: dict) -> None:
        for layer in self.layers:
            names = [full for full, _, _, _ in _named_weights(layer)]  # the order of layer.weights
            if not any(n in values for n in names):
                continue
            current = layer.get_weights()
            layer._assign([np.array(values[n], copy=True) if n in values else w for n, w in zip(names, current)])

    def _input_names(self):
        return [v.name for v in self._graph_for(False)[0].inputs]

    def _input_dtype(self, name: str) -> str:
        for v in self._graph_for(False)[0].inputs:
            if v.name == name:
                return v.dtype
        return "float32"

    # -- checkpoints -----------------------------------------------------------------------
    def _training_metadata(self) -> tuple[dict, dict]:
        """(JSON-able metadata, extra tensors) describing the training state, for save()."""
        meta, extra = {}, {}
        meta["weight_order"] = [full for layer in self.layers for full, _, _, _ in _named_weights(layer)]
        history = getattr(self, "history", None)
        if history is not None and getattr(history, "history", None):
            meta["history"] = {k: [float(v) for v in vs] for k, vs in history.history.items()}
        opt = getattr(self, "optimizer", None)
        if getattr(self, "compiled", False) and opt is not None:
            meta["optimizer"] = _optimizers.serialize(opt)
            meta["loss"] = self.loss.get_config()
            if opt.built and self._trainer is not None:
                state = opt.get_state()
                meta["optimizer_state"] = {"iterations": state["iterations"], "slot_names": state["slot_names"],
                                           "params": list(self._trainer.trainable)}
                for p, arrays in zip(self._trainer.trainable, state["slots"]):
                    for n, a in zip(state["slot_names"], arrays):
                        extra[f"{_OPT_PREFIX}{p}/{n}"] = a
        return meta, extra

    def save_weights(self, filepath, overwrite: bool = True) -> None:
        """Weights (and, when compiled, the optimizer state) as a native .engine checkpoint."""
        self.save(filepath)

    def load_weights(self, filepath, skip_mismatch: bool = False) -> None:
        """Weights from a model file (.engine, .h5, .keras); an .engine checkpoint written by
        save() also restores the optimizer state, so training resumes where it stopped."""
        from .. import load
        from ..formats import native

        loaded = load(filepath)
        values = loaded.get_weights()
        mine = {full: w for layer in self.layers
                for (full, _, _, _), w in zip(_named_weights(layer), layer.weights)}
        meta = loaded.metadata.get("training", {}) if isinstance(loaded.metadata, dict) else {}
        order = meta.get("weight_order")
        if order and any(k not in values for k in mine) and len(order) == len(mine):
            # the same architecture built again gets other layer names: match by order (as Keras)
            renamed = dict(zip(order, mine))
            state = meta.get("optimizer_state")
            if state:
                state["params"] = [renamed.get(p, p) for p in state["params"]]
            extra_names = renamed
            values = {renamed[k]: v for k, v in values.items() if k in renamed}
        else:
            extra_names = {}
        missing = [k for k in mine if k not in values]
        if missing and not skip_mismatch:
            raise EngineError(f"{self.name}: {filepath} has no weights named {missing[:5]}"
                              f"{' ...' if len(missing) > 5 else ''}")
        for k, w in mine.items():
            if k in values and np.shape(values[k]) != np.shape(w):
                raise EngineError(f"{self.name}: weight '{k}' has shape {np.shape(w)}, {filepath} holds "
                                  f"{np.shape(values[k])}")
        self._store_values({k: v for k, v in values.items() if k in mine})
        state = meta.get("optimizer_state")
        if state and getattr(self, "compiled", False):
            extra = native.load_extra(filepath)
            back = {v: k for k, v in extra_names.items()}
            slots = [[extra[f"{_OPT_PREFIX}{back.get(p, p)}/{n}"] for n in state["slot_names"]] for p in state["params"]]
            mine_order = list(self._training_parts()[1])
            if state["params"] != mine_order:
                raise EngineError(f"{self.name}: the checkpoint's optimizer state is for weights "
                                  f"{state['params'][:4]}..., this model trains {mine_order[:4]}...")
            self._trainer = None
            self.optimizer.set_state({"iterations": state["iterations"], "slot_names": state["slot_names"],
                                      "slots": slots})


def _named_weights(layer, frozen: bool = False) -> list:
    """(graph name, weight name, owning layer, frozen) of every weight of `layer`, its wrapped
    layers' included (Bidirectional, TimeDistributed), in the order of layer.weights."""
    frozen = frozen or not layer.trainable
    out = [(f"{layer.name}/{n}", n, layer, frozen) for n in layer.weight_names]
    for sub in layer._sublayers:
        out += _named_weights(sub, frozen)
    return out

