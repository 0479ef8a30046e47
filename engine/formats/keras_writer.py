"""engine.nn models saved as Keras 3 files, which Keras (`keras.saving.load_model`) and
engine.load read back.

    >>> save_keras(model, "model.h5")      # Keras 3's legacy HDF5: model_config + model_weights
    >>> save_keras(model, "model.keras")   # Keras 3's zip: config.json, metadata.json, model.weights.h5

What is written mirrors Keras 3.15 (`model.save`): the model config with Keras's class names and
layer configs (keras_writer_layers.py), functional graphs as Keras 3 inbound nodes, weights under
the names and in the groups Keras uses (legacy: `model_weights/<layer>/<variable path>` with
`weight_names`; .keras: `layers/<snake_case class>[_n]/vars/<i>`, sub-layers in their own groups),
`keras_version` and `backend` ("tensorflow": the layouts are Keras's canonical ones, the same on
every backend). A compiled model (`model.optimizer`, optional `model.loss`,
`model.compiled_metrics`) gets a `training_config` / `compile_config`; optimizer weights are not
written.

Safety: everything that can fail on the model (a layer Keras cannot express) fails before the
file system is touched. The file is written to a temporary name in the target's folder and
renamed over the target, so a failure never leaves a half-written file; files get the
permissions the umask gives. An existing target is replaced only if it is a Keras model file
(an HDF5 file with a model config, or a zip with a config.json) or empty; a directory, a link
or any other file is refused with a SaveError.
"""

from __future__ import annotations

import datetime
import io
import json
import os
import secrets
import shutil
import tempfile
import warnings
import zipfile
from pathlib import Path

import numpy as np

from ..errors import EngineError, SaveError
from . import keras_writer_layers as kl

BACKEND = "tensorflow"
_SUFFIXES = {".h5": "h5", ".hdf5": "h5", ".keras": "keras"}
_ATTR_LIMIT = 64512  # HDF5's object-header limit Keras splits name lists at
_COMPILE_DEFAULTS = {"run_eagerly": False, "steps_per_execution": 1, "jit_compile": False}


def save_keras(model, path) -> None:
    """Save an engine.nn Sequential or functional Model as a Keras file: `.h5` / `.hdf5`
    (Keras 3's legacy HDF5 format) or `.keras` (Keras 3's zip format)."""
    if not isinstance(path, (str, os.PathLike)):
        raise EngineError(f"save_keras: expected a path (str or os.PathLike), got {type(path).__name__}")
    text = os.fsdecode(os.fspath(path))
    path = Path(text)
    fmt = _SUFFIXES.get(path.suffix.lower())
    if fmt is None or not path.name.strip() or text.endswith(("/", os.sep)):
        raise SaveError(f"save_keras: '{path}' must end in .h5, .hdf5 or .keras")
    try:
        import h5py
    except ImportError:
        raise SaveError("save_keras: writing Keras files needs h5py (pip install engine[keras])") from None
    spec = _Spec(model)  # every model problem is raised here, before the file system is touched
    if fmt == "h5" and spec.ops:
        warnings.warn(f"save_keras: '{path}' holds Keras op nodes ({', '.join(spec.ops)}), which Keras 3's legacy "
                      "HDF5 loader cannot rebuild (engine.load can); save as .keras for Keras", stacklevel=2)
    _check_replaceable(path, fmt)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if fmt == "h5":
            _write_atomic(path, lambda f: _write_h5(f, spec, h5py))
        else:
            _write_atomic(path, lambda f: _write_zip(f, spec, h5py, path.parent))
    except EngineError:
        raise
    except OSError as e:
        raise SaveError(f"save_keras: could not write '{path}': {e}") from e


# -- the model as Keras sees it -----------------------------------------------------------

class _Spec:
    """The Keras model config (legacy and .keras forms) and weights of an engine.nn model."""

    def __init__(self, model):
        from ..nn.models import Model, Sequential

        if not isinstance(model, (Sequential, Model)):
            raise SaveError(f"save_keras: expected an engine.nn Sequential or Model, got {type(model).__name__}")
        try:
            inputs, outputs = model._trace()
        except EngineError as e:
            raise SaveError(f"save_keras: model '{model.name}' cannot be built: {e}") from None
        if "/" in model.name:
            raise SaveError(f"save_keras: Keras model names cannot contain '/' (model '{model.name}')")
        self.name = model.name
        self.compile = _compile_config(model)
        self.ops: list = []  # names of the Keras op nodes written
        if isinstance(model, Sequential):
            self._sequential(model, inputs[0])
        else:
            self._functional(inputs, outputs)

    def _sequential(self, model, t):
        layers = model.layers
        for layer in layers:
            if layer.is_op:
                raise SaveError(f"save_keras: '{layer.name}' ({type(layer).__name__}) is a Keras op; a Keras "
                                "Sequential model holds layers only")
        _unique([t.name] + [layer.name for layer in layers])
        entries = [(layer, kl.layer_config(layer)) for layer in layers]
        self.input_entry = _input_config(t)
        config = {"name": self.name, "trainable": True, "dtype": kl.policy("float32")}
        self.legacy = {"class_name": "Sequential", "config": {
            **config, "layers": [{"class_name": "InputLayer", "config": self.input_entry}] +
            [{"class_name": kl.keras_class(layer), "config": c} for layer, c in entries],
            "build_input_shape": kl.shape_list(t.shape)}}
        self.v3 = {"module": "keras", "class_name": "Sequential", "config": {
            **config, "layers": [_v3_input(self.input_entry)] + [_v3_layer(layer, c) for layer, c in entries],
            "build_input_shape": kl.shape_list(t.shape)}, "registered_name": None,
            "build_config": {"input_shape": kl.shape_list(t.shape)}}
        self.layers = layers  # Keras's model.layers: no InputLayer in a Sequential
        self.weight_prefix = self.name + "/"  # Sequential builds its layers inside its name scope

    def _functional(self, inputs, outputs):
        order = _keras_order(inputs, outputs)
        calls = [c for c in order if not isinstance(c, _InputNode)]
        nodes: dict = {}  # id(layer) -> its calls, in the order Keras numbers its nodes
        for c in calls:
            nodes.setdefault(id(c.layer), []).append(c)
        layers = {id(c.layer): c.layer for c in calls if not c.layer.is_op}
        _unique([t.name for t in inputs] + [layer.name for layer in layers.values()])
        names, taken = {}, {t.name for t in inputs} | {layer.name for layer in layers.values()}
        for c in calls:  # layers keep their names; ops get Keras's auto names
            if c.layer.is_op and id(c.layer) not in names:
                names[id(c.layer)] = kl.op_unique_name(c.layer, taken)

        def ref(t):
            hist = [t.name, 0, 0] if t.call is None else \
                [names.get(id(t.layer), t.layer.name), nodes[id(t.layer)].index(t.call), t.index]
            return {"class_name": "__keras_tensor__",
                    "config": {"shape": kl.shape_list(t.shape), "dtype": t.dtype, "keras_history": hist}}

        legacy, v3, done, model_layers = [], [], set(), []
        for c in order:
            if isinstance(c, _InputNode):
                entry = _input_config(c.tensor)
                legacy.append({"class_name": "InputLayer", "config": entry, "name": c.tensor.name, "inbound_nodes": []})
                v3.append({**_v3_input(entry), "name": c.tensor.name, "inbound_nodes": []})
                model_layers.append(c)
                continue
            layer = c.layer
            if id(layer) in done:
                continue
            done.add(id(layer))
            inbound = [_node(n, ref) for n in nodes[id(layer)]]
            if layer.is_op:
                name = names[id(layer)]
                self.ops.append(name)
                op = kl.op_entry(layer, name)
                legacy.append({"class_name": op["class_name"], "config": op["config"], "name": name,
                               "inbound_nodes": inbound})
                v3.append({**op, "name": name, "inbound_nodes": inbound})
                continue
            config = kl.layer_config(layer)
            legacy.append({"class_name": kl.keras_class(layer), "config": config, "name": layer.name,
                           "inbound_nodes": inbound})
            v3.append({**_v3_layer(layer, config), "name": layer.name, "inbound_nodes": inbound})
            model_layers.append(layer)

        def io_refs(ts):
            refs = [ref(t)["config"]["keras_history"] for t in ts]
            return refs[0] if len(refs) == 1 else refs

        config = {"name": self.name, "trainable": True, "layers": None,
                  "input_layers": io_refs(inputs), "output_layers": io_refs(outputs)}
        self.legacy = {"class_name": "Functional", "config": {**config, "layers": legacy}}
        self.v3 = {"module": "keras.src.models.functional", "class_name": "Functional",
                   "config": {**config, "layers": v3},
                   "registered_name": "Functional", "build_config": {"input_shape": None}}
        self.layers = model_layers  # Keras's model.layers: InputLayers (as _InputNode) and layers, by depth
        self.weight_prefix = ""

    # -- weights ---------------------------------------------------------------------------
    def legacy_layers(self):
        """(name, [(weight path, array)]) per entry of Keras's model.layers."""
        for layer in self.layers:
            if isinstance(layer, _InputNode):
                yield layer.tensor.name, []
            else:
                yield layer.name, kl.legacy_weights(layer, self.weight_prefix)

    def v3_layers(self):
        """(folder, tree) per entry of Keras's model.layers, folders named as Keras names them."""
        used: dict = {}
        for layer in self.layers:
            base = "input_layer" if isinstance(layer, _InputNode) else kl.snake_case(kl.keras_class(layer))
            folder = base if base not in used else f"{base}_{used[base] + 1}"
            used[base] = used.get(base, -1) + 1
            if isinstance(layer, _InputNode):
                yield folder, {"name": layer.tensor.name, "vars": [], "children": {}}
            else:
                yield folder, kl.store_tree(layer)


def _unique(names: list) -> None:
    seen = set()
    for n in names:
        if "/" in n:
            raise SaveError(f"save_keras: Keras layer and input names cannot contain '/' ('{n}')")
        if n in seen:
            raise SaveError(f"save_keras: two layers or inputs are named '{n}'; Keras needs unique names")
        seen.add(n)


def _input_config(t) -> dict:
    return {"batch_shape": kl.shape_list(t.shape), "dtype": t.dtype, "sparse": False, "ragged": False,
            "name": t.name, "optional": False}


def _v3_input(entry: dict) -> dict:
    return {"module": "keras.layers", "class_name": "InputLayer", "config": entry, "registered_name": None}


def _v3_layer(layer, config: dict) -> dict:
    out = {"module": "keras.layers", "class_name": kl.keras_class(layer), "config": config, "registered_name": None}
    bc = kl.build_config(layer)
    if bc is not None:
        out["build_config"] = bc
    return out


# -- the functional graph -----------------------------------------------------------------------

class _InputNode:
    """A model input, as the node of its InputLayer."""

    def __init__(self, tensor):
        self.tensor, self.layer = tensor, None


def _explicit_masks(c) -> list:
    """Masks passed to the call explicitly (not the inputs' own, which Keras fills in itself)."""
    return [m for m, own in zip(c.masks, c.input_masks) if m is not None and m is not own]


def _extra(c) -> list:
    return [t for v in c.extra.values() for t in (v if isinstance(v, list) else [v])]


def _keras_parents(c) -> list:
    """The tensors the call's node reads in the graph Keras rebuilds from the config, in
    Keras's order: the arguments, then the keyword arguments by name (initial_state, mask).
    Only masks written in the config are edges: the masks Keras fills in while rebuilding
    are not part of its graph."""
    if c.layer.is_op:
        return list(c.inputs)
    if type(c.layer).__name__ == "MultiHeadAttention":
        args, kwargs = _attention_arguments(c)
        return args + [kwargs[k] for k in sorted(kwargs)]
    return list(c.inputs) + _extra(c) + _explicit_masks(c)


def _keras_order(inputs, outputs) -> list:
    """Every node written (_InputNode or call, ops included) in the order of Keras's
    `Functional.operations` for the graph it rebuilds from the config: operations by depth
    from the outputs (deepest first), ties by first visit of a depth-first walk from the
    outputs (keras.src.ops.function.map_graph). Keras numbers weights by this order (legacy
    .h5) and names weight folders by it (.keras)."""
    input_nodes = {id(t): _InputNode(t) for t in inputs}

    def node_of(t):
        return t.call if t.call is not None else input_nodes.setdefault(id(t), _InputNode(t))

    def op_key(n):
        return id(n.tensor) if isinstance(n, _InputNode) else id(n.layer)

    post, index, finished, parents = [], {}, set(), {}
    for t in outputs:
        stack = [(node_of(t), False)]
        while stack:  # iterative post-order walk, parents in order
            n, done = stack.pop()
            if done:
                if id(n) not in finished:
                    finished.add(id(n))
                    post.append(n)
                continue
            if id(n) in finished:
                continue
            index.setdefault(op_key(n), len(index))
            ps = [] if isinstance(n, _InputNode) else [node_of(p) for p in _keras_parents(n)]
            parents[id(n)] = ps
            stack.append((n, True))
            stack += [(p, False) for p in reversed(ps) if id(p) not in finished]
    node_depth, op_depth = {}, {}
    for n in reversed(post):
        d = max(node_depth.setdefault(id(n), 0), op_depth.get(op_key(n), 0))
        op_depth[op_key(n)] = node_depth[id(n)] = d
        for p in parents[id(n)]:
            node_depth[id(p)] = max(d + 1, node_depth.get(id(p), 0))
    by_op: dict = {}
    for n in post:
        by_op.setdefault(op_key(n), []).append(n)
    order = []
    for k in sorted(by_op, key=lambda k: (-op_depth[k], index[k])):
        order += by_op[k]  # each operation's nodes, in topological order
    return order


def _node(c, ref) -> dict:
    """One inbound node: the call's arguments and keyword arguments as Keras records them."""
    layer = c.layer
    if layer.is_op:
        it = iter(c.inputs)
        args = [ref(next(it)) if a is None else kl.plain(a) for a in c.args]
        if type(layer).__name__ == "Concatenate":  # keras.ops.concatenate([a, b, ...])
            args = [args]
        return {"args": args, "kwargs": {}}
    cls = kl.keras_class(layer)
    if cls == "MultiHeadAttention":
        return _attention_node(c, ref)
    args = [ref(c.inputs[0])] if c.single else [[ref(t) for t in c.inputs]]
    kwargs = {}
    explicit = _explicit_masks(c)
    if explicit and cls not in kl.MASK_ARG:
        raise SaveError(f"save_keras: layer '{layer.name}' ({cls}) is called with an explicit mask, which Keras's "
                        f"{cls} does not take")
    if "initial_state" in c.extra:
        kwargs["initial_state"] = [ref(t) for t in c.extra["initial_state"]]
    if cls in kl.TRAINING_ARG:
        kwargs["training"] = False
    if cls in kl.MASK_ARG and c.single and (not c.extra or explicit):
        m = c.masks[0]
        kwargs["mask"] = ref(m) if m is not None and m is not c.input_masks[0] else None
    return {"args": args, "kwargs": kwargs}


def _attention_arguments(c) -> tuple:
    """A MultiHeadAttention call as Keras records it: [query, value] and {keyword: tensor}."""
    if c.masks[0] is not None and c.masks[0] is not c.input_masks[0]:
        raise SaveError(f"save_keras: layer '{c.layer.name}' (MultiHeadAttention) is called with an explicit "
                        "query_mask, which Keras 3.15 ignores (it reads the query's own mask only)")
    kwargs = {"key": c.inputs[2]} if len(c.inputs) > 2 else {}
    for name, m, own in zip(("value_mask", "key_mask"), c.masks[1:], c.input_masks[1:] + [None]):
        if m is not None and m is not own:
            kwargs[name] = m
    if "attention_mask" in c.extra:
        kwargs["attention_mask"] = c.extra["attention_mask"]
    return list(c.inputs[:2]), kwargs


def _attention_node(c, ref) -> dict:
    args, tensors = _attention_arguments(c)
    kwargs = {k: ref(t) for k, t in tensors.items()}
    if c.options["scores"]:
        kwargs["return_attention_scores"] = True
    if c.options["causal"]:
        kwargs["use_causal_mask"] = True
    return {"args": [ref(t) for t in args], "kwargs": kwargs}


# -- compile information ------------------------------------------------------------------------

def _compile_config(model):
    """Keras's compile config (optimizer serialised, loss, metrics) of a compiled model, or None.
    What Keras could not rebuild is left out with a warning: metrics Keras cannot name alone,
    the whole compile information for an optimizer or loss (the model then loads uncompiled)."""
    opt = getattr(model, "optimizer", None)
    if opt is None:
        return None
    where = f"save_keras: model '{model.name}'"
    try:
        from .. import optimizers
        if isinstance(opt, str):
            opt = optimizers.get(opt)
        serialized = optimizers.serialize(opt)
        if "convention" in serialized["config"]:
            raise ValueError(f"the optimizer uses {serialized['config']['convention']}'s convention, which Keras's "
                             f"{serialized['class_name']} does not have")
        loss = _loss(getattr(model, "loss", None))
        json.dumps([serialized, loss])
    except (EngineError, ValueError, TypeError, KeyError, AttributeError) as e:
        warnings.warn(f"{where} is saved without its compile information ({e})", stacklevel=4)
        return None
    metrics, weighted = getattr(model, "compiled_metrics", None), getattr(model, "weighted_metrics", None)
    if metrics is None and isinstance(getattr(model, "_metric_ids", None), list):  # engine.nn's compile()
        ids = model._metric_ids
        metrics = [m for m, w in ids if not w] or None
        weighted = [m for m, w in ids if w] or None
    try:
        metrics, weighted = _metrics(metrics), _metrics(weighted)
    except ValueError as e:
        warnings.warn(f"{where} is saved without its metrics ({e})", stacklevel=4)
        metrics = weighted = None
    return {"optimizer": kl.plain(serialized), "loss": loss, "loss_weights": kl.plain(getattr(model, "loss_weights", None)),
            "metrics": metrics, "weighted_metrics": weighted, **_COMPILE_DEFAULTS}


# engine.losses class -> (Keras's name for it, the config keys Keras's class takes)
_KERAS_LOSSES = {
    "MeanSquaredError": ("mean_squared_error", {"reduction", "name"}),
    "MeanAbsoluteError": ("mean_absolute_error", {"reduction", "name"}),
    "Huber": ("huber", {"delta", "reduction", "name"}),
    "BinaryCrossentropy": ("binary_crossentropy", {"from_logits", "label_smoothing", "axis", "reduction", "name"}),
    "CategoricalCrossentropy": ("categorical_crossentropy",
                                {"from_logits", "label_smoothing", "axis", "reduction", "name"}),
    "SparseCategoricalCrossentropy": ("sparse_categorical_crossentropy",
                                      {"from_logits", "ignore_class", "reduction", "axis", "name"}),
    "KLDivergence": ("kl_divergence", {"reduction", "name"}),
    "CosineSimilarity": ("cosine_similarity", {"axis", "reduction", "name"}),
}


def _loss(v):
    """A loss as Keras's compile config holds it: a name (as a user compiling with a name gives
    it), or a Keras loss config."""
    if v is None or isinstance(v, str):
        return v
    if isinstance(v, dict) and "class_name" in v:
        return kl.plain(v)
    if isinstance(v, (list, tuple)):
        return [_loss(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _loss(x) for k, x in v.items()}
    from .. import losses

    cls = type(v).__name__
    if isinstance(v, losses.Loss) and cls in _KERAS_LOSSES:
        name, keys = _KERAS_LOSSES[cls]
        config, default = kl.plain(v.get_config()), kl.plain(type(v)().get_config())
        if config == default:
            return name
        extra = {k for k in config if k not in keys and config[k] != default.get(k)}
        if extra:
            raise ValueError(f"Keras's {cls} has no {', '.join(sorted(extra))}")
        return {"module": "keras.losses", "class_name": cls,
                "config": {k: x for k, x in config.items() if k in keys}, "registered_name": None}
    if callable(v) and not isinstance(v, type) and getattr(v, "__name__", "<lambda>") != "<lambda>":
        return v.__name__  # a loss function: Keras's compile config holds its name
    raise ValueError(f"the loss {v!r} has no Keras form")


def _metrics(v):
    """Metrics as Keras's compile config holds them: the names a user gives compile()."""
    if v is None or isinstance(v, str):
        return v
    if isinstance(v, (list, tuple)):
        return [_metrics(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _metrics(x) for k, x in v.items()}
    raise ValueError(f"the metric {v!r} is not given by name")


# Keras 3.15's legacy loader fails on these short names of losses (it looks them up among the
# metrics); their long names load everywhere.
_LOSS_NAMES = {"mse": "mean_squared_error", "mae": "mean_absolute_error", "mape": "mean_absolute_percentage_error",
               "msle": "mean_squared_logarithmic_error"}


def _long_names(v):
    if isinstance(v, str):
        return _LOSS_NAMES.get(v, v)
    if isinstance(v, list):
        return [_long_names(x) for x in v]
    if isinstance(v, dict) and "class_name" not in v:
        return {k: _long_names(x) for k, x in v.items()}
    return v


def _legacy_training_config(compile_config: dict) -> dict:
    config = {k: v for k, v in compile_config.items() if k != "optimizer"}
    config["loss"] = _long_names(config["loss"])
    opt = compile_config["optimizer"]
    config["optimizer_config"] = {"class_name": opt["class_name"], "config": opt["config"]}
    return config


# -- writing ------------------------------------------------------------------------------------

def _names_attr(group, name: str, values: list) -> None:
    """A list of names as an attribute, split in chunks past HDF5's header limit (Keras's
    save_attributes_to_hdf5_group)."""
    data = np.asarray([v.encode("utf8") for v in values])
    n = 1
    while any(c.nbytes > _ATTR_LIMIT for c in np.array_split(data, n)):
        n += 1
    if n == 1:
        group.attrs[name] = data
    else:
        for i, chunk in enumerate(np.array_split(data, n)):
            group.attrs[f"{name}{i}"] = chunk


def _json_attr(text: str):
    # Keras writes bytes (a fixed-length string); past HDF5's header limit only a
    # variable-length string fits, which every reader takes as well.
    data = text.encode("utf8")
    return data if len(data) < _ATTR_LIMIT else text


def _dataset(group, name: str, value: np.ndarray) -> None:
    ds = group.create_dataset(name, value.shape, dtype=value.dtype)
    if value.shape:
        ds[...] = value
    else:
        ds[()] = value


def _write_h5(f, spec: _Spec, h5py) -> None:
    with h5py.File(f, "w") as h5:
        h5.attrs["keras_version"] = kl.KERAS_VERSION
        h5.attrs["backend"] = BACKEND
        h5.attrs["model_config"] = _json_attr(json.dumps(spec.legacy))
        if spec.compile is not None:
            h5.attrs["training_config"] = _json_attr(json.dumps(_legacy_training_config(spec.compile)))
        group = h5.create_group("model_weights")
        layers = list(spec.legacy_layers())
        _names_attr(group, "layer_names", [name for name, _ in layers])
        group.attrs["backend"] = BACKEND.encode("utf8")
        group.attrs["keras_version"] = kl.KERAS_VERSION.encode("utf8")
        for name, weights in sorted(layers, key=lambda item: item[0]):
            g = group.create_group(name)
            _names_attr(g, "weight_names", [p for p, _ in weights])
            for p, w in weights:
                _dataset(g, p, np.asarray(w))
        _names_attr(group.create_group("top_level_model_weights"), "weight_names", [])


def _write_store(f, spec: _Spec, h5py) -> None:
    """model.weights.h5 as Keras's H5IOStore lays it out."""

    def put(h5, path: str, tree: dict) -> None:
        vars_group = h5.create_group(f"{path}/vars" if path else "vars")
        vars_group.attrs["name"] = tree["name"]
        for i, w in enumerate(tree["vars"]):
            vars_group[str(i)] = np.asarray(w)
        for attr, child in tree["children"].items():
            put(h5, f"{path}/{attr}", child)

    with h5py.File(f, "w") as h5:
        put(h5, "", {"name": spec.name, "vars": [], "children": {}})
        for folder, tree in spec.v3_layers():
            put(h5, f"layers/{folder}", tree)


def _write_zip(f, spec: _Spec, h5py, folder: Path) -> None:
    now = datetime.datetime.now()
    config = dict(spec.v3)
    config["compile_config"] = spec.compile or {}
    metadata = {"keras_version": kl.KERAS_VERSION, "date_saved": now.strftime("%Y-%m-%d@%H:%M:%S")}
    stamp = now.timetuple()[:6]
    with tempfile.TemporaryFile(dir=folder) as weights:  # unnamed: nothing is left behind
        _write_store(weights, spec, h5py)
        size = weights.seek(0, io.SEEK_END)
        weights.seek(0)
        with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED) as zf:
            zf.writestr(zipfile.ZipInfo("metadata.json", stamp), json.dumps(metadata))
            zf.writestr(zipfile.ZipInfo("config.json", stamp), json.dumps(config))
            with zf.open(zipfile.ZipInfo("model.weights.h5", stamp), "w", force_zip64=size >= 1 << 31) as out:
                shutil.copyfileobj(weights, out, 1 << 20)


def _write_atomic(path: Path, write) -> None:
    """write(f) into a new temporary file beside `path`, flushed to disk, then renamed over it."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
    try:
        with os.fdopen(fd, "w+b") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _check_replaceable(path: Path, fmt: str) -> None:
    """Refuse to replace anything but a Keras model file (or an empty file)."""
    if not os.path.lexists(path):
        return
    if path.is_symlink():
        raise SaveError(f"save_keras: '{path}' is a symbolic link; refusing to replace it (save to "
                        f"'{os.path.realpath(path)}' to write its target)")
    if path.is_dir():
        raise SaveError(f"save_keras: '{path}' is a directory; refusing to replace it. Save to a path inside it, "
                        f"e.g. '{path / ('model' + path.suffix)}'")
    if not path.is_file():
        raise SaveError(f"save_keras: '{path}' exists and is not a regular file; refusing to replace it")
    if path.stat().st_size and not _is_keras_model(path, fmt):
        raise SaveError(f"save_keras: '{path}' exists and is not a Keras model file; refusing to overwrite it "
                        "(remove it first)")


def _is_keras_model(path: Path, fmt: str) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(8)
        if head.startswith(b"\x89HDF\r\n\x1a\n"):
            from . import h5_tree  # the file is not ours: read in a child, as every HDF5 file is
            return "model_config" in h5_tree.read(path, str(path), ()).attrs
        if head.startswith(b"PK"):
            with zipfile.ZipFile(path) as zf:
                return "config.json" in zf.namelist()
    except (OSError, EngineError, zipfile.BadZipFile, ValueError, EOFError):
        return False
    return False


__all__ = ["BACKEND", "save_keras"]
