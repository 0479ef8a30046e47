"""A Keras model config (the JSON Keras saves: Keras 2 or Keras 3, Sequential or functional)
rebuilt as an engine.nn model.

Only classes engine.nn implements are built (engine.nn.LAYERS, the Keras ops in
engine.nn.ops); configs are passed to their constructors as keyword arguments after the
training-only fields (initializers, regularizers, constraints) are dropped. Nothing named by
the file is imported or run: a Lambda layer, a TensorFlow op layer or any custom class is
refused with an UnsupportedOpError naming it.

Functional graphs are rebuilt as Keras does (functional_from_config): each layer's inbound
nodes are called once every tensor they read exists, so shared layers and nodes listed
before their inputs work; `inbound_nodes` come in Keras 2's list form
([[layer, node, tensor, kwargs], ...]) or Keras 3's ({"args": [...], "kwargs": {...}} with
`__keras_tensor__` references).
"""

from __future__ import annotations

from typing import Optional

from ..errors import EngineError, ModelFormatError, UnsupportedOpError
from ..nn import Input, Layer, Model, Sequential
from ..nn.activations import Act
from ..nn.attention import MultiHeadAttention
from ..nn.layers import LAYERS
from ..nn.ops import OPS, OpLayer
from ..nn.recurrent import _RNN, Bidirectional

# Fields that only matter to training (or to Keras's bookkeeping): not passed on.
_DROPPED_SUFFIXES = ("_initializer", "_regularizer", "_constraint")
_DROPPED = {"activity_regularizer", "build_config", "compile_config", "shared_object_id"}
_MODELS = ("Sequential", "Functional", "Model")
_TF_OPS = ("TFOpLambda", "SlicingOpLambda", "TensorFlowOpLayer")
_CELLS = {"LSTMCell": "LSTM", "GRUCell": "GRU", "SimpleRNNCell": "SimpleRNN"}


class BuiltModel:
    """The engine.nn model, and its layers in Keras's `model.layers` order with their class
    names (the .keras weight store names its folders after them)."""

    def __init__(self, model, keras_layers: list):
        self.model = model
        self.keras_layers = keras_layers  # [(class_name, layer)]


class _Missing(Exception):
    """An inbound tensor that does not exist yet (its node comes later)."""


class ConfigReader:
    def __init__(self, source: str, keras2: bool):
        self.source, self.keras2 = source, keras2

    def error(self, what: str, cls=ModelFormatError):
        return cls(f"{self.source}: {what}")

    # -- models -----------------------------------------------------------------------------
    def model(self, config) -> BuiltModel:
        if not isinstance(config, dict) or "class_name" not in config:
            raise self.error("the model config is not a Keras model (no class_name)")
        cls, cfg = config["class_name"], config.get("config")
        self._check_safe(config, "model")
        if cls == "Sequential":
            return self._sequential(cfg)
        if cls in ("Functional", "Model"):
            return self._functional(cfg)
        raise self.error(f"model class '{cls}' is not supported (Sequential and functional models are)",
                         UnsupportedOpError)

    def _sequential(self, cfg) -> BuiltModel:
        entries = cfg if isinstance(cfg, list) else (cfg or {}).get("layers")  # Keras 2.0-2.2: a plain list
        if not isinstance(entries, list):
            raise self.error("Sequential config has no layer list")
        name = cfg.get("name") if isinstance(cfg, dict) else None
        model = Sequential(name=name)
        built = []
        for entry in entries:
            if self._class(entry) == "InputLayer":
                model.add(self._input(entry))
                continue
            layer = self.layer(entry)
            built.append((self._class(entry), layer))
            self._add(model, layer, entry)
        shape = cfg.get("build_input_shape") if isinstance(cfg, dict) else None
        if model._input is None and shape is not None:
            model.build(tuple(shape))
        try:
            model._trace()
        except EngineError as e:
            raise self.error(f"cannot build the Sequential model: {e}") from None
        return BuiltModel(model, built)

    def _add(self, model, layer, entry):
        try:
            model.add(layer)
        except EngineError as e:
            raise self.error(f"layer '{layer.name}' ({self._class(entry)}): {e}") from None

    def _functional(self, cfg) -> BuiltModel:
        if not isinstance(cfg, dict) or not isinstance(cfg.get("layers"), list):
            raise self.error("functional config has no layer list")
        outputs: dict[str, dict] = {}   # layer name -> {node index: [tensors]}
        objects: dict[str, object] = {}
        built, pending = [], []
        for entry in cfg["layers"]:
            name = self._name(entry)
            if name in objects:
                raise self.error(f"two layers are named '{name}'")
            if self._class(entry) == "InputLayer":
                t = self._input(entry)
                objects[name] = t
                outputs[name] = {0: [t]}
                built.append(("InputLayer", None))
                continue
            obj = self._op(entry) if self._is_op(entry) else self.layer(entry)
            objects[name] = obj
            if not isinstance(obj, OpLayer):
                built.append((self._class(entry), obj))
            nodes = entry.get("inbound_nodes") or []
            if not isinstance(nodes, list):
                raise self.error(f"layer '{name}': inbound_nodes is not a list")
            pending += [(name, i, node) for i, node in enumerate(nodes)]
        while pending:
            left = []
            for name, i, node in pending:
                try:
                    result = self._call(objects[name], node, outputs, name)
                except _Missing:
                    left.append((name, i, node))
                    continue
                outputs.setdefault(name, {})[i] = result if isinstance(result, list) else [result]
            if len(left) == len(pending):
                names = sorted({n for n, _, _ in left})
                raise self.error(f"the graph cannot be built: layers {names} read tensors no layer produces")
            pending = left
        ins = [self._tensor(ref, outputs, "input_layers") for ref in self._refs(cfg.get("input_layers"))]
        outs = [self._tensor(ref, outputs, "output_layers") for ref in self._refs(cfg.get("output_layers"))]
        try:
            model = Model(ins, outs, name=cfg.get("name"))
        except EngineError as e:
            raise self.error(f"cannot build the functional model: {e}") from None
        return BuiltModel(model, built)

    @staticmethod
    def _refs(v) -> list:
        """input_layers / output_layers: [name, node, tensor], a list of them, or a dict of them."""
        if isinstance(v, dict):
            v = list(v.values())
        if isinstance(v, list) and v and isinstance(v[0], str):
            return [v]
        return v if isinstance(v, list) else []

    def _tensor(self, ref, outputs, what: str):
        try:
            name, node, index = ref[0], ref[1], ref[2]
            return outputs[name][node][index]
        except (KeyError, IndexError, TypeError):
            raise self.error(f"{what}: {ref!r} names no tensor of the model") from None

    # -- calls ------------------------------------------------------------------------------
    def _call(self, obj, node, outputs, name):
        if isinstance(node, dict):  # Keras 3: {"args": [...], "kwargs": {...}}
            args = [self._resolve(a, outputs) for a in node.get("args", [])]
            kwargs = {k: self._resolve(v, outputs) for k, v in (node.get("kwargs") or {}).items()}
        elif isinstance(node, list):  # Keras 2: [[layer, node, tensor, kwargs], ...]
            args, kwargs = self._keras2_node(node, outputs, name)
        else:
            raise self.error(f"layer '{name}': an inbound node is neither a list nor a dict")
        kwargs.pop("training", None)
        try:
            if isinstance(obj, (OpLayer, MultiHeadAttention)):  # MultiHeadAttention(query, value, key=...)
                return obj(*args, **kwargs)
            if not args:
                raise EngineError("called without inputs")
            if isinstance(obj, (_RNN, Bidirectional)) and isinstance(args[0], list) and len(args) == 1:
                args = [args[0][0], args[0][1:]]  # Keras 2 listed initial states as extra inputs
            if len(args) > 1:
                if not isinstance(obj, (_RNN, Bidirectional)) or len(args) > 2 or "initial_state" in kwargs:
                    raise UnsupportedOpError(f"{len(args)} positional arguments")
                kwargs["initial_state"] = args[1]
            if isinstance(obj, (_RNN, Bidirectional)) and kwargs.get("initial_state") is not None and \
                    self.keras2 and "mask" not in kwargs and not isinstance(args[0], list):
                kwargs["mask"] = args[0].mask  # Keras 2 kept an input's mask with initial states
            return obj(args[0], **kwargs)
        except _Missing:
            raise
        except EngineError as e:
            cls = type(e) if isinstance(e, UnsupportedOpError) else ModelFormatError
            raise self.error(f"layer '{name}' ({type(obj).__name__}): {e}", cls) from None

    def _keras2_node(self, node, outputs, name):
        tensors, kwargs = [], {}
        for item in node:
            if not isinstance(item, list) or len(item) < 3:
                raise self.error(f"layer '{name}': bad inbound node entry {item!r}")
            tensors.append(self._lookup(item[0], item[1], item[2], outputs))
            if len(item) > 3 and isinstance(item[3], dict) and item[3]:
                kwargs.update({k: self._resolve_keras2(v, outputs) for k, v in item[3].items()})
        return ([tensors[0]] if len(tensors) == 1 else [tensors]), kwargs

    def _resolve_keras2(self, v, outputs):
        if isinstance(v, list) and len(v) in (3, 4) and isinstance(v[0], str) and isinstance(v[1], int):
            return self._lookup(v[0], v[1], v[2], outputs)
        if isinstance(v, list):
            return [self._resolve_keras2(x, outputs) for x in v]
        return v

    def _resolve(self, v, outputs):
        if isinstance(v, dict) and v.get("class_name") == "__keras_tensor__":
            hist = (v.get("config") or {}).get("keras_history")
            if not isinstance(hist, list) or len(hist) != 3:
                raise self.error(f"a tensor reference has no keras_history: {v!r}")
            return self._lookup(*hist, outputs)
        if isinstance(v, dict) and v.get("class_name") == "__tensor__":
            raise self.error("a call argument holds a constant tensor, which is not supported", UnsupportedOpError)
        if isinstance(v, list):
            return [self._resolve(x, outputs) for x in v]
        if isinstance(v, dict):
            return {k: self._resolve(x, outputs) for k, x in v.items()}
        return v

    @staticmethod
    def _lookup(name, node, index, outputs):
        try:
            return outputs[name][node][index]
        except (KeyError, IndexError, TypeError):
            raise _Missing() from None

    # -- layers -----------------------------------------------------------------------------
    @staticmethod
    def _class(entry) -> Optional[str]:
        return entry.get("class_name") if isinstance(entry, dict) else None

    def _name(self, entry) -> str:
        if not isinstance(entry, dict):
            raise self.error(f"a layer entry is not a dict: {entry!r}")
        cfg = entry.get("config")
        name = entry.get("name") or (cfg.get("name") if isinstance(cfg, dict) else None)
        if not isinstance(name, str) or not name:
            raise self.error(f"a {self._class(entry)} layer has no name")
        return name

    def _check_safe(self, entry, name: str) -> None:
        """Refuse what would need code from outside Keras: custom classes, Lambda, TF ops."""
        cls = self._class(entry)
        module = entry.get("module")
        registered = entry.get("registered_name")
        where = f"layer '{name}'"
        if cls == "Lambda":
            raise self.error(f"{where} is a Lambda layer, which holds Python code; it is refused and never run "
                             "(rebuild the model without it, or export to ONNX)", UnsupportedOpError)
        if cls in _TF_OPS:
            fn = (entry.get("config") or {}).get("function")
            raise self.error(f"{where} is a TensorFlow op layer ({cls} '{fn}'), which needs TensorFlow; it is "
                             "refused (export to ONNX instead)", UnsupportedOpError)
        custom = (isinstance(module, str) and module.split(".")[0] != "keras") or \
            (isinstance(registered, str) and ">" in registered)
        if custom:
            raise self.error(f"{where} is a custom object ({registered or cls}, module {module!r}); custom code is "
                             "never imported or run (export to ONNX instead)", UnsupportedOpError)

    def _is_op(self, entry) -> bool:
        cls, module = self._class(entry), entry.get("module")
        if cls not in OPS and not (isinstance(module, str) and module.startswith("keras.src.ops")):
            return False
        if isinstance(module, str):
            return module.startswith("keras.src.ops")
        cfg = entry.get("config") or {}
        return cls not in LAYERS or "trainable" not in cfg  # a legacy .h5 names ops like layers

    def _op(self, entry) -> OpLayer:
        name, cls = self._name(entry), self._class(entry)
        self._check_safe(entry, name)
        if cls not in OPS:
            raise self.error(f"layer '{name}' is the Keras op '{cls}', which is not supported (supported ops: "
                             f"{', '.join(sorted(OPS))})", UnsupportedOpError)
        cfg = {k: v for k, v in (entry.get("config") or {}).items() if k != "name"}
        try:
            return OPS[cls](name=name, **cfg)
        except (EngineError, TypeError) as e:
            raise self.error(f"op '{name}' ({cls}): unsupported configuration ({e})", UnsupportedOpError) from None

    def _input(self, entry):
        name, cfg = self._name(entry), dict(entry.get("config") or {})
        shape = cfg.get("batch_shape", cfg.get("batch_input_shape"))
        if shape is None:
            raise self.error(f"input '{name}' has no batch_shape")
        if cfg.get("ragged") or cfg.get("sparse"):
            raise self.error(f"input '{name}': ragged and sparse inputs are not supported", UnsupportedOpError)
        # Keras never holds a model to the batch size it was built with (a Sequential built by
        # fit() saves its first batch's size), so the batch dim stays free.
        try:
            return Input(batch_shape=(None,) + tuple(shape[1:]), dtype=cfg.get("dtype"), name=name)
        except EngineError as e:
            raise self.error(f"input '{name}': {e}") from None

    def layer(self, entry) -> Layer:
        """An engine.nn layer for one layer config (nested ones included)."""
        name, cls = self._name(entry), self._class(entry)
        self._check_safe(entry, name)
        if cls in _MODELS:
            raise self.error(f"layer '{name}' is a nested {cls} model, which is not supported yet",
                             UnsupportedOpError)
        cfg = {k: v for k, v in dict(entry.get("config") or {}).items()
               if k not in _DROPPED and not k.endswith(_DROPPED_SUFFIXES)}
        if cls == "RNN":
            cls, cfg = self._rnn_cell(name, cfg)
        if cls not in LAYERS:
            raise self.error(f"layer '{name}': Keras class '{cls}' is not supported", UnsupportedOpError)
        for key in ("activation", "recurrent_activation"):
            if key in cfg:
                cfg[key] = self._activation(cfg[key], name)
        for key in ("layer", "backward_layer"):
            if isinstance(cfg.get(key), dict):
                cfg[key] = self.layer(cfg[key])
        try:
            return LAYERS[cls](**cfg)
        except TypeError as e:
            raise self.error(f"layer '{name}' ({cls}): unsupported configuration ({e})", UnsupportedOpError) from None
        except EngineError as e:
            cls_e = UnsupportedOpError if isinstance(e, UnsupportedOpError) or "unsupported" in str(e) \
                else ModelFormatError
            raise self.error(f"layer '{name}' ({cls}): {e}", cls_e) from None

    def _rnn_cell(self, name, cfg):
        """keras.layers.RNN(cell) with one built-in cell: the matching layer."""
        cell = cfg.pop("cell", None)
        ccls = self._class(cell) if isinstance(cell, dict) else None
        if ccls not in _CELLS:
            raise self.error(f"layer '{name}': an RNN of cell {ccls!r} is not supported (LSTMCell, GRUCell, "
                             "SimpleRNNCell are)", UnsupportedOpError)
        self._check_safe(cell, name)
        inner = {k: v for k, v in (cell.get("config") or {}).items()
                 if k not in _DROPPED and not k.endswith(_DROPPED_SUFFIXES) and k not in ("name", "trainable", "dtype")}
        return _CELLS[ccls], {**inner, **cfg}

    def _activation(self, v, name):
        if isinstance(v, dict):  # a serialised function {"class_name": "function", "config": "relu"}
            if v.get("class_name") == "function" and isinstance(v.get("config"), str):
                v = v["config"]
            else:
                raise self.error(f"layer '{name}': activation {v.get('class_name')!r} is not supported",
                                 UnsupportedOpError)
        if self.keras2 and v == "hard_sigmoid":  # Keras 2: clip(0.2·x + 0.5, 0, 1)
            return Act("hard_sigmoid", 0.2, 0.5)
        return v
