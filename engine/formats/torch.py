"""PyTorch weight files read without torch: `torch.save` state dicts (.pth/.pt) and
safetensors state dicts, as ordered {name: numpy array}.

    >>> from engine.formats import torch as torch_format
    >>> sd = torch_format.read_state_dict("model.pth")   # OrderedDict: 'layer1.weight' -> ndarray
    >>> net.load_state_dict("model.pth")                 # what users call (engine/nn/torch_mapping.py)

`torch.save` writes a pickle whose tensors point at raw storages: in the zip format (torch
>= 1.6) `<archive>/data.pkl` plus one `<archive>/data/<key>` entry per storage; in the legacy
format, pickles of a magic number, a protocol version and system info, then the object's
pickle, a pickled list of storage keys, and each storage's bytes in that order.

Unpickling is the dangerous part: a pickle may name any global and call it. The pickles go
through the restricted unpickler of torch_pickle.py, which resolves only the globals torch
writes for tensors and their containers, each to an object of ours that builds a
placeholder; any other global is refused naming it, before anything is imported or called.
This module reads the containers (zip entries, the legacy stream), bounds-checked against
the file, and hands the storages' bytes over to turn placeholders into numpy arrays. Element
types are kept, except bfloat16 (numpy has none): it becomes float32, which holds it exactly.
"""

from __future__ import annotations

import io
import os
import re
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np

from ..errors import ModelFormatError
from .torch_pickle import Bad, Storage, TensorRef, materialise, np_dtype, resolve, unpickle

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001
# The legacy format's first pickle (protocol 2, LONG1 of the magic number), for sniffing.
_LEGACY_PREFIX = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"
# Deflate cannot expand data by more than about 1032x; a zip entry claiming more is lying.
_MAX_DEFLATE_RATIO = 1100


# -- the zip format ---------------------------------------------------------------------------

def _read_zip(f, size: int):
    try:
        zf = zipfile.ZipFile(f)
        infos = {i.filename: i for i in zf.infolist()}
    except Exception as e:  # BadZipFile, struct/unicode errors in a corrupt directory, ...
        raise Bad(f"corrupt zip archive ({type(e).__name__}: {e})") from None
    pkl = [n for n in infos if n == "data.pkl" or (n.endswith("/data.pkl") and n.count("/") == 1)]
    if not pkl:
        if "config.json" in infos or "model.weights.h5" in infos:
            raise Bad("this is a Keras archive, not a PyTorch file; read it with engine.load")
        raise Bad("a zip archive without data.pkl: not a file written by torch.save")
    prefix = pkl[0][: -len("data.pkl")]
    if f"{prefix}constants.pkl" in infos or any(n.startswith(f"{prefix}code/") for n in infos):
        raise Bad("this is a TorchScript archive (torch.jit.save), which holds code engine does not "
                   "run; save model.state_dict() or export the model to ONNX instead")

    def entry(name: str) -> bytes:
        info = infos.get(prefix + name)
        if info is None:
            raise Bad(f"the archive has no entry '{prefix + name}'")
        if info.compress_size > size or (info.compress_type == zipfile.ZIP_STORED and info.file_size != info.compress_size) \
                or info.file_size > max(info.compress_size, 1) * _MAX_DEFLATE_RATIO:
            raise Bad(f"zip entry '{info.filename}' claims {info.file_size} bytes "
                       f"({info.compress_size} stored) in a file of {size} bytes")
        try:
            with zf.open(info) as e:
                data = e.read(info.file_size)
        except Exception as e:  # zipfile's many ways of finding a corrupt archive
            raise Bad(f"corrupt zip entry '{info.filename}' ({type(e).__name__}: {e})") from None
        if len(data) != info.file_size:
            raise Bad(f"zip entry '{info.filename}' is truncated")
        return data

    big = False
    if prefix + "byteorder" in infos:
        order = entry("byteorder")
        if order not in (b"little", b"big"):
            raise Bad(f"unknown byte order {order[:20]!r}")
        big = order == b"big"
    data = entry("data.pkl")
    obj, unpickler = unpickle(io.BytesIO(data), data)
    cache: dict[str, bytes] = {}

    def storage_bytes(s: Storage) -> bytes:
        if s.key not in cache:
            cache[s.key] = entry(f"data/{s.key}")
        return cache[s.key]

    return resolve(obj, storage_bytes, big)


# -- the legacy format ------------------------------------------------------------------------

def _read_legacy(f, size: int):
    magic, _ = unpickle(f)
    if magic != _LEGACY_MAGIC:
        raise Bad("not a file written by torch.save (neither a zip archive nor the legacy magic number)")
    protocol, _ = unpickle(f)
    if protocol != _LEGACY_PROTOCOL:
        raise Bad(f"unsupported legacy protocol version {protocol!r} (expected {_LEGACY_PROTOCOL})")
    unpickle(f)  # system info: the writer's byte order, but legacy storages are little-endian always
    pos = f.tell()
    hint = f.read(1 << 20)  # the object's pickle (storages follow it): only to word a refusal
    f.seek(pos)
    obj, unpickler = unpickle(f, hint)
    keys, _ = unpickle(f)
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise Bad("the list of storage keys is malformed")
    raw: dict[str, bytes] = {}
    for key in keys:  # each: int64 element count, then the elements
        s = unpickler.storages.get(key)
        if s is None:
            raise Bad(f"storage '{key}' is listed but no tensor uses it (element size unknown)")
        head = f.read(8)
        if len(head) != 8:
            raise Bad(f"truncated before storage '{key}'")
        numel = int.from_bytes(head, "little", signed=True)
        nbytes = numel * np_dtype(s.dtype, False).itemsize
        if numel < 0 or nbytes > size - f.tell():
            raise Bad(f"storage '{key}' claims {numel} elements ({nbytes} bytes) but only "
                       f"{size - f.tell()} bytes follow")
        raw[key] = f.read(nbytes)
    missing = sorted(set(unpickler.storages) - set(raw))
    if missing:
        raise Bad(f"storages {missing[:5]} are used but not in the file")
    return resolve(obj, lambda s: raw[s.key], False)


# -- entry points -----------------------------------------------------------------------------

def _open(source, name):
    """(file object, size, display name) for a path, bytes or binary file object."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        return io.BytesIO(data), len(data), name or "<bytes>"
    if hasattr(source, "read"):
        data = source.read()
        if not isinstance(data, (bytes, bytearray)):
            raise ModelFormatError(f"{name or 'file object'}: open the file in binary mode ('rb')")
        return io.BytesIO(bytes(data)), len(data), name or getattr(source, "name", "<file object>")
    path = Path(os.fspath(source))
    name = name or str(path)
    try:
        f = open(path, "rb")
        return f, os.fstat(f.fileno()).st_size, name
    except OSError as e:
        raise ModelFormatError(f"{name}: cannot read ({e.strerror or e})") from None


def load(source, name: str | None = None):
    """What a torch.save file holds, with every tensor as a numpy array and containers as
    dict / OrderedDict / list / tuple: torch.load for tensors only, torch not needed.

    >>> load("model.pth")["layer1.weight"].shape
    (500, 1000)
    """
    f, size, name = _open(source, name)
    with f:
        head = f.read(512)
        f.seek(0)
        try:
            if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
                return _read_zip(f, size)
            if len(head) >= 262 and head[257:262] == b"ustar":
                raise Bad("a tar archive: the torch.save format of torch < 0.4 is not supported; "
                           "re-save it with a newer torch")
            if not head:
                raise Bad("empty file")
            return _read_legacy(f, size)
        except Bad as e:
            raise ModelFormatError(f"{name}: {e}") from None
        except OSError as e:
            raise ModelFormatError(f"{name}: cannot read ({e})") from None
        except (ValueError, TypeError, OverflowError, MemoryError) as e:  # what a corrupt file may still reach
            raise ModelFormatError(f"{name}: corrupt file ({type(e).__name__}: {e})") from None


def _zip_names(source) -> list:
    try:
        src = io.BytesIO(source) if isinstance(source, bytes) else source
        return zipfile.ZipFile(src).namelist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return []


def is_torch_file(data: bytes) -> bool:
    """Whether these bytes look like a torch.save or torch.jit.save file (for routing bytes
    given to engine.load)."""
    if data.startswith(_LEGACY_PREFIX):
        return True
    return data.startswith(b"PK\x03\x04") and any(
        n == "data.pkl" or (n.endswith("/data.pkl") and n.count("/") == 1) for n in _zip_names(data))


def not_a_model(source, name: str | None = None) -> ModelFormatError:
    """The error engine.load gives for a .pth/.pt file (a path or the file's bytes): a state
    dict has weights but no network; a TorchScript archive has the network as code."""
    name = name or ("<bytes>" if isinstance(source, bytes) else str(source))
    if any(n.endswith("/constants.pkl") or "/code/" in n for n in _zip_names(source)):
        return ModelFormatError(
            f"{name}: a TorchScript archive (torch.jit.save), whose network is TorchScript code, which "
            "engine does not run; export the module to ONNX (torch.onnx.export, then engine.load the "
            ".onnx) or convert it with engine.from_torch(module, example_inputs)")
    return ModelFormatError(
        f"{name}: a PyTorch .pth/.pt file holds weights (a state dict), not the network, so it "
        "cannot be loaded as a model by itself. Build the network with engine.nn and call "
        f"net.load_state_dict({name!r}); or convert the live module with "
        "engine.from_torch(module, example_inputs) (or torch.onnx.export, then engine.load the .onnx)")


# -- state dicts ------------------------------------------------------------------------------

def read_state_dict(source, name: str | None = None) -> "OrderedDict[str, np.ndarray]":
    """An ordered {name: array} from a torch.save'd state dict (.pth/.pt, zip or legacy) or a
    safetensors file (its keys in natural order: 'layer2' before 'layer10', since safetensors
    keeps no module order). `source`: a path, the file's bytes or a binary file object.

    >>> read_state_dict("model.pth")
    OrderedDict([('layer1.weight', array(...)), ('layer1.bias', array(...)), ...])
    """
    if isinstance(source, (str, os.PathLike)):
        name = name or str(source)
        if Path(os.fspath(source)).suffix.lower() == ".safetensors" or _looks_like_safetensors(source):
            try:
                data = Path(os.fspath(source)).read_bytes()
            except OSError as e:
                raise ModelFormatError(f"{name}: cannot read ({e.strerror or e})") from None
            return read_safetensors(data, name)
    elif isinstance(source, (bytes, bytearray, memoryview)) and bytes(source[8:9]) == b"{":
        return read_safetensors(bytes(source), name or "<bytes>")
    obj = load(source, name)
    return as_state_dict(obj, name or getattr(source, "name", "<bytes>"))


def as_state_dict(obj, name: str) -> "OrderedDict[str, np.ndarray]":
    """`obj` as {str: array}, or ModelFormatError saying what it is instead."""
    if not isinstance(obj, dict):
        raise ModelFormatError(f"{name}: holds a {type(obj).__name__}, not a state dict "
                               "(a mapping of names to tensors)")
    nested = [k for k, v in obj.items() if isinstance(v, dict)]
    if nested:
        raise ModelFormatError(f"{name}: holds a dict of other things ({', '.join(map(repr, list(obj)[:6]))}), "
                               f"with dicts under {', '.join(map(repr, nested[:4]))}: this looks like a "
                               "training checkpoint; pass its state dict, e.g. "
                               f"net.load_state_dict(engine.formats.torch.load(path)[{nested[0]!r}])")
    out = OrderedDict()
    for k, v in obj.items():
        if not isinstance(k, str):
            raise ModelFormatError(f"{name}: key {k!r} is not a string; not a state dict")
        if not isinstance(v, np.ndarray):
            raise ModelFormatError(f"{name}: '{k}' holds a {type(v).__name__}, not a tensor")
        out[k] = v
    return out


def _looks_like_safetensors(path) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(9)
    except OSError:
        return False
    return len(head) == 9 and head[8:9] == b"{"


def _natural(key: str):
    return [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"(\d+)", key)]


_SAFETENSORS_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16",
                       "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8", "U64": "uint64",
                       "U32": "uint32", "U16": "uint16", "U8": "uint8", "BOOL": "bool",
                       "C64": "complex64"}


def read_safetensors(data: bytes, name: str = "<bytes>") -> "OrderedDict[str, np.ndarray]":
    """A safetensors state dict (e.g. safetensors.torch.save_file) as ordered arrays; the
    safetensors package checks the header and offsets. bfloat16 becomes float32."""
    import safetensors

    try:
        entries = safetensors.deserialize(data)
    except Exception as e:  # SafetensorError, or a header that is not what it says
        raise ModelFormatError(f"{name}: corrupt or truncated safetensors file ({e})") from None
    out = OrderedDict()
    for key, e in sorted(entries, key=lambda kv: _natural(kv[0])):
        dtype = _SAFETENSORS_DTYPES.get(e["dtype"])
        if dtype is None:
            raise ModelFormatError(f"{name}: tensor '{key}' has type {e['dtype']}, which is not supported")
        shape = tuple(e["shape"])
        t = TensorRef(Storage(key, dtype, 0), 0, shape, _contiguous_strides(shape), dtype)
        try:
            out[key] = materialise(t, bytes(e["data"]), False, key)
        except Bad as err:
            raise ModelFormatError(f"{name}: {err}") from None
    return out


def _contiguous_strides(shape: tuple) -> tuple:
    strides, step = [], 1
    for d in reversed(shape):
        strides.append(step)
        step *= d
    return tuple(reversed(strides))


__all__ = ["load", "read_state_dict", "read_safetensors", "as_state_dict", "is_torch_file", "not_a_model"]
