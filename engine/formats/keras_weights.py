"""Keras weights (HDF5 groups, read by h5_tree) into the layers of a rebuilt engine.nn model.

Two layouts:
- legacy (.h5 of Keras 2 and Keras 3's `model.save("x.h5")`): `model_weights/<layer name>`
  with attribute `weight_names`, the arrays in Keras's order;
- Keras 3 (`model.weights.h5` inside a .keras zip): `layers/<folder>/vars/<i>`, the folder
  named after the layer's class in snake case (`dense`, `dense_1`, ... in model.layers order;
  the `vars` group's `name` attribute names the layer), sub-layers in their own folders
  (`cell` of an RNN, `forward_layer` / `backward_layer` of Bidirectional, `layer` of
  TimeDistributed, `query_dense` ... `output_dense` of MultiHeadAttention).

Every array's shape is checked against the layer before it is read, so a file cannot make
the reader allocate more than the layer needs.
"""

from __future__ import annotations

import numpy as np

from ..errors import EngineError, ModelFormatError
from ..nn.attention import MultiHeadAttention
from ..nn.base import snake_case
from ..nn.recurrent import _RNN, Bidirectional, TimeDistributed
from .h5_tree import Dataset


def _text(v) -> str:
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)


def _read(source: str, layer, items: list) -> list:
    """The arrays of datasets `items` [(label, h5_tree.Dataset)], checked against the layer's
    weights (count, shapes, numeric types)."""
    want = [w.shape for w in layer.weights]
    if len(items) != len(want):
        raise ModelFormatError(f"{source}: layer '{layer.name}': the file holds {len(items)} weight arrays, the "
                               f"layer has {len(want)} {want}")
    for (label, ds), shape in zip(items, want):
        if not isinstance(ds, Dataset):
            raise ModelFormatError(f"{source}: layer '{layer.name}': weight '{label}' is not an array")
        if ds.problem:
            raise ModelFormatError(f"{source}: layer '{layer.name}': weight '{label}' cannot be read: {ds.problem}")
        if tuple(ds.shape) != tuple(shape):
            raise ModelFormatError(f"{source}: layer '{layer.name}': weight '{label}' has shape {tuple(ds.shape)}, "
                                   f"the layer's configuration needs {tuple(shape)}")
        if ds.dtype.kind not in "fiub":
            raise ModelFormatError(f"{source}: layer '{layer.name}': weight '{label}' has type {ds.dtype}, not numeric")
    arrays = []
    for label, ds in items:
        try:
            arrays.append(np.asarray(ds[()], dtype=np.float32))
        except (OSError, ValueError, TypeError) as e:
            raise ModelFormatError(f"{source}: layer '{layer.name}': cannot read weight '{label}' (truncated or "
                                   f"corrupt file: {e})") from None
    return arrays


def _assign(source: str, layer, arrays: list) -> None:
    try:
        layer.set_weights(arrays)
    except EngineError as e:
        raise ModelFormatError(f"{source}: layer '{layer.name}': {e}") from None


def set_legacy(source: str, group, built) -> None:
    """Weights from a legacy HDF5 `model_weights` group."""
    for _, layer in built.keras_layers:
        if layer is None or not layer.weights:
            continue
        g = group.get(layer.name)
        if g is None:
            raise ModelFormatError(f"{source}: layer '{layer.name}' has no weights in the file (model_weights/"
                                   f"{layer.name} is missing)")
        names = g.attrs.get("weight_names", [])
        names = [_text(n) for n in (names if isinstance(names, list) else [names])]
        items = []
        for n in names:
            try:
                items.append((n, g[n]))
            except (KeyError, OSError, ValueError):
                raise ModelFormatError(f"{source}: layer '{layer.name}': weight '{n}' is missing") from None
        _assign(source, layer, _read(source, layer, items))


def set_v3(source: str, h5, built) -> None:
    """Weights from the Keras 3 store (model.weights.h5 of a .keras file)."""
    root = h5.get("layers")
    if root is None:
        if any(layer is not None and layer.weights for _, layer in built.keras_layers):
            raise ModelFormatError(f"{source}: model.weights.h5 has no 'layers' group")
        return
    by_name = {}
    for folder in root:
        vars_group = root[folder].get("vars")
        if vars_group is not None and "name" in vars_group.attrs:
            by_name.setdefault(_text(vars_group.attrs["name"]), folder)
    used: dict[str, int] = {}
    for cls, layer in built.keras_layers:
        base = snake_case(cls)
        folder = base if base not in used else f"{base}_{used[base] + 1}"
        used[base] = used.get(base, -1) + 1
        if layer is None or not layer.weights:
            continue
        folder = by_name.get(layer.name, folder)
        if folder not in root:
            raise ModelFormatError(f"{source}: layer '{layer.name}' has no weights in the file (layers/{folder} is "
                                   "missing)")
        _assign(source, layer, _read(source, layer, _v3_items(source, root[folder], layer, f"layers/{folder}")))


def _v3_items(source: str, group, layer, path: str) -> list:
    def sub(name):
        g = group.get(name)
        if g is None:
            raise ModelFormatError(f"{source}: layer '{layer.name}': {path}/{name} is missing")
        return g

    if isinstance(layer, Bidirectional):
        return (_v3_items(source, sub("forward_layer"), layer.forward_layer, f"{path}/forward_layer")
                + _v3_items(source, sub("backward_layer"), layer.backward_layer, f"{path}/backward_layer"))
    if isinstance(layer, TimeDistributed):
        return _v3_items(source, sub("layer"), layer.layer, f"{path}/layer")
    if isinstance(layer, _RNN):
        return _vars(sub("cell"), f"{path}/cell")
    if isinstance(layer, MultiHeadAttention):  # one folder per projection, in the weights' order
        dense = ["query_dense", "key_dense"] + (["_gate_dense"] if layer.use_gate else []) + ["value_dense",
                                                                                              "output_dense"]
        return [item for d in dense for item in _vars(sub(d), f"{path}/{d}")]
    return _vars(group, path)


def _vars(group, path: str) -> list:
    v = group.get("vars")
    if v is None:
        return []
    keys = sorted((k for k in v if k.isdigit()), key=int)
    return [(f"{path}/vars/{k}", v[k]) for k in keys]
