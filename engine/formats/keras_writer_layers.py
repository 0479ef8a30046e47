"""Keras 3 configs and weights of engine.nn layers, for the Keras writer (keras_writer.py).

Every engine.nn layer class is the Keras class of the same name and keeps Keras's constructor
arguments as attributes, so its Keras config is rebuilt from those, with the keys, defaults and
forms Keras 3.15's `get_config()` writes (tuples as lists, `axis` of LayerNormalization as a
list, a DTypePolicy dict, ...). Weights keep Keras's order and layouts; only their variable
names differ in one place (DepthwiseConv's `depthwise_kernel` is Keras's `kernel`).

Training-only arguments: initializers are written as the Keras initializer they name (a
parameterised one with its parameters; a custom callable as the slot's Keras default, since
the weights themselves are saved); regularizers and constraints are written as given (a name,
a Keras config dict, or an object with get_config), and null where engine.nn drops them
(SeparableConv's pointwise ones).

Anything Keras cannot express is a SaveError naming the layer: a custom layer class, an
activation Keras 3 does not have (or Keras 2's hard_sigmoid), BatchNormalization over
several axes, a Keras op engine.nn made for a mask that a model uses explicitly.
"""

from __future__ import annotations

import inspect

import numpy as np

from ..errors import SaveError
from ..nn import initializers as _inits
from ..nn.attention import MultiHeadAttention
from ..nn.base import snake_case
from ..nn.layers import LAYERS
from ..nn.ops import OPS
from ..nn.recurrent import _RNN, Bidirectional, TimeDistributed

KERAS_VERSION = "3.15.1"  # the Keras release whose file layout and configs these mirror

# Keras 3 activation names (keras.activations); engine.nn's "identity" is Keras's "linear".
KERAS_ACTIVATIONS = frozenset([
    "celu", "elu", "exponential", "gelu", "glu", "hard_shrink", "hard_sigmoid", "hard_silu", "hard_swish", "hard_tanh",
    "leaky_relu", "linear", "log_sigmoid", "log_softmax", "mish", "relu", "relu6", "selu", "sigmoid", "silu",
    "soft_shrink", "softmax", "softplus", "softsign", "sparse_plus", "sparse_sigmoid", "sparsemax", "squareplus",
    "swish", "tanh", "tanh_shrink", "threshold"])

# Names Keras writes under another name of the same function.
_ACT_ALIASES = {"identity": "linear", "swish": "silu", "hard_swish": "hard_silu"}

# Keras layers whose call takes a mask (Keras fills it in from the input), and those whose
# call records training=False: the kwargs of their functional nodes.
MASK_ARG = frozenset({"SimpleRNN", "LSTM", "GRU", "Bidirectional", "TimeDistributed", "GlobalAveragePooling1D",
                      "BatchNormalization", "Softmax"})
TRAINING_ARG = frozenset({"SimpleRNN", "LSTM", "GRU", "Dropout", "SpatialDropout1D", "SpatialDropout2D",
                          "SpatialDropout3D", "GaussianNoise", "GaussianDropout", "AlphaDropout"})
# Layers Keras builds without recording a build_config (no build() of their own).
_NO_BUILD_CONFIG = frozenset({
    "Activation", "Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D", "GaussianNoise",
    "GaussianDropout", "AlphaDropout", "ActivityRegularization", "Masking", "Identity", "MaxPooling1D",
    "MaxPooling2D", "MaxPooling3D", "AveragePooling1D", "AveragePooling2D", "AveragePooling3D",
    "GlobalAveragePooling1D", "GlobalAveragePooling2D", "GlobalAveragePooling3D", "GlobalMaxPooling1D",
    "GlobalMaxPooling2D", "GlobalMaxPooling3D", "Reshape", "UnitNormalization", "ReLU", "LeakyReLU", "ELU",
    "Softmax"})
_CELLS = {"SimpleRNN": "simple_rnn_cell", "LSTM": "lstm_cell", "GRU": "gru_cell"}
# MultiHeadAttention's sub-layers in a .keras file: (folder, name); Keras numbers the names of the
# softmax and the dropout (softmax_3), which nothing reads back.
_ATTENTION_PARTS = (("query_dense", "query"), ("key_dense", "key"), ("_gate_dense", "gate"),
                    ("value_dense", "value"), ("output_dense", "attention_output"), ("_softmax", "softmax"),
                    ("_dropout_layer", "dropout"))
_VAR_NAMES = {"DepthwiseConv1D": {"depthwise_kernel": "kernel"}, "DepthwiseConv2D": {"depthwise_kernel": "kernel"}}

_VS = {"seed": None, "input_axes": None, "output_axes": None}
_INIT_DEFAULTS = {
    "GlorotUniform": _VS, "GlorotNormal": _VS, "HeUniform": _VS, "HeNormal": _VS, "LecunUniform": _VS,
    "LecunNormal": _VS, "Zeros": {}, "Ones": {}, "Orthogonal": {"seed": None, "gain": 1.0},
    "RandomUniform": {"seed": None, "minval": -0.05, "maxval": 0.05},
    "RandomNormal": {"seed": None, "mean": 0.0, "stddev": 0.05},
    "TruncatedNormal": {"seed": None, "mean": 0.0, "stddev": 0.05}, "Constant": {"value": 0.0}}
_INIT_CLASSES = {"glorot_uniform": "GlorotUniform", "glorot_normal": "GlorotNormal", "he_uniform": "HeUniform",
                 "he_normal": "HeNormal", "lecun_uniform": "LecunUniform", "lecun_normal": "LecunNormal",
                 "zeros": "Zeros", "ones": "Ones", "orthogonal": "Orthogonal", "random_uniform": "RandomUniform",
                 "random_normal": "RandomNormal", "truncated_normal": "TruncatedNormal", "constant": "Constant"}


def plain(v):
    """v with numpy scalars/arrays and tuples as JSON types."""
    if isinstance(v, dict):
        return {str(k): plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [plain(x) for x in v]
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, np.generic):
        return v.item()
    return v


def policy(name: str) -> dict:
    return {"module": "keras", "class_name": "DTypePolicy", "config": {"name": name}, "registered_name": None}


def shape_list(shape):
    """A shape (or a list of shapes) as Keras writes it: lists, None for unknown dims."""
    if isinstance(shape, list):
        return [shape_list(s) for s in shape]
    return [None if d is None else int(d) for d in shape]


def _err(layer, what: str) -> SaveError:
    return SaveError(f"save_keras: layer '{layer.name}' ({type(layer).__name__}): {what}")


def _act(layer, act) -> str:
    if act.alpha is not None or act.beta is not None:
        raise _err(layer, f"activation {act.name!r} with parameters ({act.alpha}, {act.beta}) (Keras 2's "
                          "hard_sigmoid) has no Keras 3 name")
    name = _ACT_ALIASES.get(act.name, act.name)
    if name not in KERAS_ACTIVATIONS:
        raise _err(layer, f"activation {name!r} is not a Keras activation")
    return name


def _init(fn, default: str) -> dict:
    """A Keras initializer config for an engine.nn initializer function."""
    name, params = getattr(fn, "__name__", None), {}
    if name == "<lambda>":  # initializers.get with parameters: `lambda shape: fn(shape, **params)`
        try:
            free = inspect.getclosurevars(fn).nonlocals
        except (TypeError, ValueError):
            free = {}
        inner, params = free.get("fn"), free.get("params")
        ok = inner in _inits.INITIALIZERS.values() and isinstance(params, dict)
        name, params = (inner.__name__, params) if ok else (None, {})
    elif fn not in _inits.INITIALIZERS.values():
        name = None
    cls = _INIT_CLASSES.get(name, default)
    config = dict(_INIT_DEFAULTS[cls])
    if cls == _INIT_CLASSES.get(name):
        config.update({k: plain(v) for k, v in params.items() if k in config})
    return {"module": "keras.initializers", "class_name": cls, "config": config, "registered_name": None}


def _obj(layer, v, what: str):
    """A regularizer / constraint as Keras serialises it (None stays None)."""
    if v is None or isinstance(v, str):
        return v
    if isinstance(v, dict) and "class_name" in v:
        return plain(v)
    get_config = getattr(v, "get_config", None)
    if callable(get_config):
        module = "keras.regularizers" if "regularizer" in what else "keras.constraints"
        return {"module": module, "class_name": type(v).__name__, "config": plain(get_config()),
                "registered_name": None}
    raise _err(layer, f"{what} {v!r} cannot be written (give a name, a Keras config dict or an object with "
                      "get_config)")


def _regs(layer, names: tuple, values: tuple) -> dict:
    return {n: _obj(layer, v, n) for n, v in zip(names, values)}


def _pairs(pairs, rank: int):
    return list(pairs[0]) if rank == 1 else [list(p) for p in pairs]


# -- configs, by family (the keys after name / trainable / dtype) ------------------------------

def _dense(x):
    c = {"units": x.units, "activation": _act(x, x.activation), "use_bias": x.use_bias,
         "kernel_initializer": _init(x.kernel_initializer, "GlorotUniform"),
         "bias_initializer": _init(x.bias_initializer, "Zeros")}
    c.update(_regs(x, ("kernel_regularizer", "bias_regularizer", "kernel_constraint", "bias_constraint"),
                   x.regularizers))
    c["quantization_config"] = None
    return c


def _conv(x):
    cls = type(x).__name__
    depthwise, separable = cls.startswith("Depthwise"), cls.startswith("Separable")
    c = {"depth_multiplier": x.depth_multiplier} if depthwise or separable else {}
    if not depthwise:
        c["filters"] = x.filters
    c.update({"kernel_size": list(x.kernel_size), "strides": list(x.strides), "padding": x.padding})
    if cls.endswith("Transpose"):
        c["output_padding"] = None if x.output_padding is None else list(x.output_padding)
    c.update({"data_format": "channels_last", "dilation_rate": list(x.dilation_rate)})
    if not (depthwise or separable or cls.endswith("Transpose")):
        c["groups"] = x.groups
    c.update({"activation": _act(x, x.activation), "use_bias": x.use_bias})
    k = "depthwise" if depthwise or separable else "kernel"
    c[f"{k}_initializer"] = _init(x.kernel_initializer, "GlorotUniform")
    if separable:
        c["pointwise_initializer"] = _init(x.pointwise_initializer, "GlorotUniform")
    c["bias_initializer"] = _init(x.bias_initializer, "Zeros")
    kr, br, kc, bc = x.regularizers
    c.update(_regs(x, (f"{k}_regularizer",), (kr,)))
    if separable:
        c["pointwise_regularizer"] = None
    c.update(_regs(x, ("bias_regularizer", "activity_regularizer", f"{k}_constraint"),
                   (br, x.activity_regularizer, kc)))
    if separable:
        c["pointwise_constraint"] = None
    c["bias_constraint"] = _obj(x, bc, "bias_constraint")
    return c


def _pool(x):
    return {"pool_size": list(x.pool_size), "padding": x.padding, "strides": list(x.strides),
            "data_format": "channels_last"}


def _global_pool(x):
    return {"data_format": "channels_last", "keepdims": x.keepdims}


def _embedding(x):
    c = {"input_dim": x.input_dim, "output_dim": x.output_dim,
         "embeddings_initializer": _init(x.embeddings_initializer, "RandomUniform")}
    c.update(_regs(x, ("embeddings_regularizer", "activity_regularizer", "embeddings_constraint"),
                   (x.regularizers[0], x.activity_regularizer, x.regularizers[1])))
    c.update({"mask_zero": x.mask_zero, "quantization_config": None})
    return c


def _rnn(x):
    cls = type(x).__name__
    cfg = x._config
    c = {"return_sequences": x.return_sequences, "return_state": x.return_state, "go_backwards": x.go_backwards,
         "stateful": False, "unroll": bool(cfg.get("unroll", False)), "zero_output_for_mask": x.zero_output_for_mask,
         "units": x.units, "activation": _act(x, x.activation)}
    if cls != "SimpleRNN":
        c["recurrent_activation"] = _act(x, x.recurrent_activation)
    c.update({"use_bias": x.use_bias, "kernel_initializer": _init(x.kernel_initializer, "GlorotUniform"),
              "recurrent_initializer": _init(x.recurrent_initializer, "Orthogonal"),
              "bias_initializer": _init(x.bias_initializer, "Zeros")})
    if cls == "LSTM":
        c["unit_forget_bias"] = bool(x.unit_forget_bias)
    kr, rr, br, kc, rc, bc = x.regularizers
    c.update(_regs(x, ("kernel_regularizer", "recurrent_regularizer", "bias_regularizer", "activity_regularizer",
                       "kernel_constraint", "recurrent_constraint", "bias_constraint"),
                   (kr, rr, br, x.activity_regularizer, kc, rc, bc)))
    c.update({"dropout": float(x.dropout), "recurrent_dropout": float(x.recurrent_dropout)})
    if cls == "GRU":
        c["reset_after"] = x.reset_after
    if cls != "SimpleRNN":
        c["seed"] = cfg.get("seed")
    return c


def _batch_norm(x):
    axis = x.axis
    if isinstance(axis, (list, tuple)):
        if len(axis) != 1:
            raise _err(x, f"axis={list(axis)}: Keras's BatchNormalization normalizes over one axis")
        axis = axis[0]
    g, b, mm, mv = x.inits
    c = {"axis": axis, "momentum": x.momentum, "epsilon": x.epsilon, "center": x.center, "scale": x.scale,
         "beta_initializer": _init(b, "Zeros"), "gamma_initializer": _init(g, "Ones"),
         "moving_mean_initializer": _init(mm, "Zeros"), "moving_variance_initializer": _init(mv, "Ones")}
    c.update(_regs(x, ("beta_regularizer", "gamma_regularizer", "beta_constraint", "gamma_constraint"),
                   x.regularizers))
    c.update({"synchronized": False, "renorm": False, "renorm_clipping": None, "renorm_momentum": 0.99})
    return c


def _norm_common(x, c):
    c.update({"epsilon": x.epsilon, "center": x.center, "scale": x.scale})
    if type(x).__name__ == "LayerNormalization":
        c["rms_scaling"] = bool(x.rms_scaling)
    c.update({"beta_initializer": _init(x.beta_initializer, "Zeros"),
              "gamma_initializer": _init(x.gamma_initializer, "Ones")})
    c.update(_regs(x, ("beta_regularizer", "gamma_regularizer", "beta_constraint", "gamma_constraint"),
                   x.regularizers))
    return c


def _array(v):
    """Rescaling's scale / offset: a number, or Keras's numpy form."""
    v = np.asarray(v, np.float32)
    return float(v) if v.ndim == 0 else {"class_name": "__numpy__", "config": {"value": v.tolist(), "dtype": "float32"}}


def _attention(x):
    c = {"num_heads": x.num_heads, "key_dim": x.key_dim, "value_dim": x.value_dim, "dropout": x.dropout,
         "use_bias": x.use_bias, "use_gate": x.use_gate, "output_shape": plain(x.out_dims),
         "attention_axes": [1], "sliding_window": x.sliding_window,  # Keras writes its axes once built
         "kernel_initializer": _init(x.kernel_initializer, "GlorotUniform"),
         "bias_initializer": _init(x.bias_initializer, "Zeros"),
         "activity_regularizer": _obj(x, x.activity_regularizer, "activity_regularizer"), "seed": x.seed}
    c.update(_regs(x, ("kernel_regularizer", "bias_regularizer", "kernel_constraint", "bias_constraint"),
                   x.regularizers))
    return c


def _normalization(x):
    mean = None if x.input_mean is None else plain(x.input_mean)
    var = None if x.input_variance is None else plain(x.input_variance)
    return {"axis": list(x.axis), "invert": x.invert, "mean": mean, "variance": var}


_CONFIGS = {
    "Dense": _dense,
    "Activation": lambda x: {"activation": _act(x, x.activation)},
    "Dropout": lambda x: {"rate": x.rate, "seed": x.seed, "noise_shape": plain(x.noise_shape)},
    # Keras's SpatialDropout configs hold no `trainable` and their dtype as a plain name
    "SpatialDropout1D": lambda x: {"rate": x.rate, "seed": x.seed, "name": x.name, "dtype": x.dtype_policy},
    "SpatialDropout2D": lambda x: {"rate": x.rate, "seed": x.seed, "name": x.name, "dtype": x.dtype_policy,
                                   "data_format": "channels_last"},
    "GaussianNoise": lambda x: {"stddev": x.stddev, "seed": x.seed},
    "GaussianDropout": lambda x: {"rate": x.rate, "seed": x.seed},
    "AlphaDropout": lambda x: {"rate": x.rate, "seed": x.seed, "noise_shape": plain(x.noise_shape)},
    "ActivityRegularization": lambda x: {"l1": x.l1, "l2": x.l2},
    "Embedding": _embedding,
    "Masking": lambda x: {"mask_value": x.mask_value},
    "Identity": lambda x: {},
    "Flatten": lambda x: {"data_format": "channels_last"},
    "Reshape": lambda x: {"target_shape": list(x.target_shape)},
    "Permute": lambda x: {"dims": list(x.dims)},
    "RepeatVector": lambda x: {"n": x.n},
    "Cropping1D": lambda x: {"cropping": _pairs(x.cropping, 1)},
    "UpSampling1D": lambda x: {"size": x.size[0]},
    "UpSampling2D": lambda x: {"size": list(x.size), "data_format": "channels_last", "interpolation": x.interpolation},
    "UpSampling3D": lambda x: {"size": list(x.size), "data_format": "channels_last"},
    "BatchNormalization": _batch_norm,
    "LayerNormalization": lambda x: _norm_common(x, {"axis": list(x.axis) if isinstance(x.axis, (list, tuple))
                                                     else [x.axis]}),
    "GroupNormalization": lambda x: _norm_common(x, {"groups": x.groups, "axis": x.axis}),
    "UnitNormalization": lambda x: {"axis": plain(x.axis)},
    "ReLU": lambda x: {"max_value": x.max_value, "negative_slope": x.negative_slope, "threshold": x.threshold},
    "LeakyReLU": lambda x: {"negative_slope": x.negative_slope},
    "PReLU": lambda x: {"alpha_initializer": _init(x.alpha_initializer, "Zeros"),
                        **_regs(x, ("alpha_regularizer", "alpha_constraint"), x.regularizers),
                        "shared_axes": x.shared_axes},
    "ELU": lambda x: {"alpha": x.alpha},
    "Softmax": lambda x: {"axis": x.axis},
    "SimpleRNN": _rnn, "LSTM": _rnn, "GRU": _rnn,
    "Rescaling": lambda x: {"scale": _array(x.scale), "offset": _array(x.offset)},
    "Normalization": _normalization,
    "Concatenate": lambda x: {"axis": x.axis},
    "Dot": lambda x: {"axes": plain(x.axes), "normalize": x.normalize},
    "Bidirectional": lambda x: {"merge_mode": x.merge_mode, "layer": serialize(x.forward_layer),
                                "backward_layer": serialize(x.backward_layer)},
    "TimeDistributed": lambda x: {"layer": serialize(x.layer)},
    "MultiHeadAttention": _attention,
}
_CONFIGS["SpatialDropout3D"] = _CONFIGS["SpatialDropout2D"]
for _n in ("Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum"):
    _CONFIGS[_n] = lambda x: {}
for _r in ("1D", "2D", "3D"):
    for _p in ("Conv", "DepthwiseConv", "SeparableConv"):
        _CONFIGS[_p + _r] = _conv
    _CONFIGS[f"Conv{_r}Transpose"] = _conv
    _CONFIGS[f"MaxPooling{_r}"] = _CONFIGS[f"AveragePooling{_r}"] = _pool
    _CONFIGS[f"GlobalAveragePooling{_r}"] = _CONFIGS[f"GlobalMaxPooling{_r}"] = _global_pool
    _CONFIGS[f"ZeroPadding{_r}"] = lambda x: {"padding": _pairs(x.padding, x.rank), "data_format": "channels_last"}
    if _r != "1D":
        _CONFIGS[f"Cropping{_r}"] = lambda x: {"cropping": _pairs(x.cropping, x.rank), "data_format": "channels_last"}
for _n in ("DepthwiseConv3D", "SeparableConv3D"):
    _CONFIGS.pop(_n)

SUPPORTED = frozenset(n for n in _CONFIGS if n in LAYERS)


def keras_class(layer) -> str:
    """The Keras class name of an engine.nn layer (SaveError for anything else)."""
    name = type(layer).__name__
    if LAYERS.get(name) is not type(layer) or name not in _CONFIGS:
        raise _err(layer, "not a Keras layer class engine.nn can write (custom layers and subclasses of "
                          "engine.nn layers have no Keras config)")
    return name


def layer_config(layer) -> dict:
    """The layer's Keras `get_config()`."""
    cls = keras_class(layer)
    if "/" in layer.name:
        raise _err(layer, "Keras layer names cannot contain '/'; rename the layer")
    if cls.startswith("SpatialDropout"):
        return plain(_CONFIGS[cls](layer))
    base = {"name": layer.name, "trainable": bool(layer.trainable), "dtype": policy(layer.dtype_policy)}
    config = {**base, **_CONFIGS[cls](layer)}
    if "activity_regularizer" not in config and layer.activity_regularizer is not None:
        # every Keras layer takes one, though most leave it out of their configs
        config["activity_regularizer"] = _obj(layer, layer.activity_regularizer, "activity_regularizer")
    return plain(config)


def build_config(layer):
    if type(layer).__name__ in _NO_BUILD_CONFIG or layer.input_shape is None:
        return None
    if isinstance(layer, MultiHeadAttention):  # build(query_shape, value_shape, key_shape=None)
        names = ("query_shape", "value_shape", "key_shape")
        return {"shapes_dict": {n: shape_list(s) for n, s in zip(names, layer.input_shape)}}
    return {"input_shape": shape_list(layer.input_shape)}


def serialize(layer) -> dict:
    """The layer as Keras 3 serialises an object (nested layers, and .keras configs)."""
    out = {"module": "keras.layers", "class_name": keras_class(layer), "config": layer_config(layer),
           "registered_name": None}
    bc = build_config(layer)
    if bc is not None:
        out["build_config"] = bc
    return out


# -- weights ----------------------------------------------------------------------------------

def own_weights(layer) -> list:
    """[(Keras variable name, array)] of a layer without sub-layers, in Keras's order."""
    rename = _VAR_NAMES.get(type(layer).__name__, {})
    out = [(rename.get(n, n), w) for n, w in zip(layer.weight_names, layer.weights)]
    if type(layer).__name__ == "Normalization":  # Keras counts the samples it adapted to in an int32
        out = [(n, np.asarray(w, np.int32) if n == "count" else w) for n, w in out]
    if layer.dtype_policy in ("float64", "float16"):  # Keras keeps such a layer's variables in that type
        out = [(n, w.astype(layer.dtype_policy) if w.dtype == np.float32 else w) for n, w in out]
    if type(layer).__name__ == "LayerNormalization" and layer.rms_scaling and not layer.scale:
        # Keras gives an rms_scaling layer a gamma even without scale; engine.nn uses ones
        out.insert(0, ("gamma", np.ones(tuple(layer.input_shape[a] for a in layer.axes), np.float32)))
    return out


def legacy_weights(layer, prefix: str = "") -> list:
    """[(variable path, array)]: the weight names a legacy .h5 file lists for the layer (a
    wrapped layer's variables are named from the wrapped layer, as in a model Keras loaded)."""
    path = f"{prefix}{layer.name}"
    if isinstance(layer, Bidirectional):
        return legacy_weights(layer.forward_layer) + legacy_weights(layer.backward_layer)
    if isinstance(layer, TimeDistributed):
        return legacy_weights(layer.layer)
    if isinstance(layer, _RNN):
        path += "/" + _CELLS[type(layer).__name__]
    return [(f"{path}/{n}", w) for n, w in own_weights(layer)]


def store_tree(layer) -> dict:
    """The layer's groups in a .keras weights file: {"name", "vars": [arrays], "children": {attr: tree}}."""
    tree = {"name": layer.name, "vars": [], "children": {}}
    if isinstance(layer, Bidirectional):
        tree["children"] = {"forward_layer": store_tree(layer.forward_layer),
                            "backward_layer": store_tree(layer.backward_layer)}
    elif isinstance(layer, TimeDistributed):
        tree["children"] = {"layer": store_tree(layer.layer)}
    elif isinstance(layer, _RNN):
        cell = {"name": _CELLS[type(layer).__name__], "vars": [w for _, w in own_weights(layer)], "children": {}}
        tree["children"] = {"cell": cell}
    elif isinstance(layer, MultiHeadAttention):  # an EinsumDense per projection; a softmax and a dropout
        weights = dict(own_weights(layer))
        tree["children"] = {folder: {"name": name, "children": {},
                                     "vars": [w for n, w in weights.items() if n.startswith(name + "/")]}
                            for folder, name in _ATTENTION_PARTS if folder != "_gate_dense" or layer.use_gate}
    else:
        tree["vars"] = [w for _, w in own_weights(layer)]
    return tree


# -- Keras ops (a functional model may call them on its tensors) --------------------------------

_OP_CONFIGS = {"Cast": lambda op: {"dtype": op.to}, "ExpandDims": lambda op: {"axis": op.axis},
               "Any": lambda op: {"axis": op.axis, "keepdims": op.keepdims},
               "All": lambda op: {"axis": op.axis, "keepdims": op.keepdims},
               "ZerosLike": lambda op: {"dtype": op.to}, "OnesLike": lambda op: {"dtype": op.to},
               "Concatenate": lambda op: {"axis": op.axis}}


def op_class(op) -> str:
    name = type(op).__name__
    if OPS.get(name) is not type(op):
        raise SaveError(f"save_keras: '{op.name}' ({name}) is an internal op of engine.nn with no Keras "
                        "equivalent; the model uses its result explicitly, which a Keras file cannot hold")
    return name


def op_entry(op, name: str) -> dict:
    """(module, class name, config) of a Keras op."""
    cls = op_class(op)
    module = "keras.src.ops.core" if cls == "Cast" else "keras.src.ops.numpy"
    config = {"name": name, **_OP_CONFIGS.get(cls, lambda op: {})(op)}
    return {"module": module, "class_name": cls, "config": plain(config), "registered_name": cls}


def op_unique_name(op, taken: set) -> str:
    """Keras's auto name for an op (snake case of its class), unique among `taken`."""
    base = snake_case(type(op).__name__) if "/" in op.name or op.name in taken else op.name
    name, k = base, 0
    while name in taken:
        k += 1
        name = f"{base}_{k}"
    taken.add(name)
    return name
