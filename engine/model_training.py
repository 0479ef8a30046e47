"""What a loaded model (engine.load(...)) adds to the training loop (engine/fit.py), so an ONNX,
Keras or .pth model fine-tunes like an engine.nn one:

    m = engine.load("model.onnx"); m.compile(optimizer=Adam(1e-4), loss="mse"); m.fit(x, y)

The training graph is the imported graph (before the inference passes fuse it). Trained values
are its float32 weights of rank >= 1, except the running statistics of BatchNormalization
(updated by its training form instead) and whatever `compile(..., trainable=[...])` leaves out.
After each epoch the trained values become the model's weights (set_weights), so predict()
sees them.
"""

from __future__ import annotations

from .fit import TrainingError, TrainingMixin

_STATE_INPUTS = {"BatchNormalization": (3, 4), "KerasBatchNorm": (3, 4)}


class LoadedModelTraining(TrainingMixin):

    def compile(self, optimizer="rmsprop", loss=None, metrics=None, trainable=None, **kw):
        """Keras's compile; `trainable`: the weight names to train (default: every float
        weight of rank >= 1 but normalisation running statistics)."""
        if trainable is not None:
            unknown = [n for n in trainable if n not in self.graph.initializers]
            if unknown:
                raise TrainingError(f"compile: the model has no weights {unknown[:5]}; its weights are "
                                    f"{sorted(self.graph.initializers)[:20]}")
        self._trainable_names = None if trainable is None else list(trainable)
        super().compile(optimizer=optimizer, loss=loss, metrics=metrics, **kw)

    @property
    def name(self) -> str:
        return str(self.graph.metadata.get("name") or "model")

    def _training_parts(self, key_only: bool = False):
        key = id(self._compiled)
        if key_only:
            return key
        g = self.graph
        state = []
        source = {n.outputs[0]: n.inputs[0] for n in g.nodes if n.op == "Identity" and n.inputs}
        for node in g.nodes:
            for k in _STATE_INPUTS.get(node.op, ()):
                name = node.inputs[k] if k < len(node.inputs) else ""
                while name in source:  # exporters pass running statistics through Identity
                    name = source[name]
                if name in g.initializers:
                    state.append(name)
        state = list(dict.fromkeys(state))
        if self._trainable_names is not None:
            trainable = [n for n in self._trainable_names if n not in state]
        else:
            trainable = [k for k, v in g.initializers.items()
                         if v.dtype.name == "float32" and v.ndim >= 1 and v.size > 1 and k not in state]
        if not trainable:
            raise TrainingError(f"{self.name}: no float32 weights to train")
        return g, trainable, state, key

    def _architecture(self):
        return id(self.graph.nodes)

    def _eval_parts(self):
        return self.graph, id(self._compiled)

    def _store_values(self, values: dict) -> None:
        self.set_weights(values)

    def _input_names(self):
        return [i.name for i in self.inputs]

    def _input_dtype(self, name: str) -> str:
        for i in self.inputs:
            if i.name == name:
                return i.dtype
        return "float32"
