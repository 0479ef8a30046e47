"""PyTorch weight files read without torch: `torch.save` state dicts (.pth/.pt) and
safetensors state dicts, as ordered {name: numpy array}.

    >>> from engine.formats import torch as torch_format
    >>> sd = torch_format.read_state_dict("model.pth")   # OrderedDict: 'layer1.weight' -> ndarray
    >>> net.load_state_dict("model.pth")                 # what users call (engine/nn/torch_mapping.py)

`torch.save` writes a pickle whose tensors point at raw storages: in the zip format (torch
>= 1.6) `<archive>/data.pkl` plus one `<archive>/data/<key>` entry per storage; in the legacy
format, pickles of a magic number, a protocol version and system info, then the object's
pickle, a pickled list of storage keys, and each storage's bytes in that order.

Unpickling is the dangerous part: a pickle may name any global and call it. This reader's
unpickler resolves only the globals torch writes for tensors and their containers
(OrderedDict, the tensor/parameter rebuild functions, storage classes, dtypes), each to an
object of ours that builds a placeholder; any other global is refused naming it, before
anything is imported or called. Placeholders become numpy arrays once the storages are
read, every size and offset checked against the bytes really there. Element types are
kept, except bfloat16 (numpy has none): it becomes float32, which holds it exactly.
"""

from __future__ import annotations

import io
import math
import os
import pickle
import re
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np

from ..errors import ModelFormatError

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001
# The legacy format's first pickle (protocol 2, LONG1 of the magic number), for sniffing.
_LEGACY_PREFIX = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"
# A tensor may view more elements than its storage holds only through zero strides
# (expand()); materialising such a view is capped so a tiny file cannot claim terabytes.
_MAX_EXPANDED_BYTES = 1 << 30
# Deflate cannot expand data by more than about 1032x; a zip entry claiming more is lying.
_MAX_DEFLATE_RATIO = 1100
_MAX_DIMS = 64

# torch storage class -> element type (the tensor's type for _rebuild_tensor_v2).
_STORAGE_TYPES = {
    "FloatStorage": "float32", "DoubleStorage": "float64", "HalfStorage": "float16",
    "BFloat16Storage": "bfloat16", "LongStorage": "int64", "IntStorage": "int32",
    "ShortStorage": "int16", "CharStorage": "int8", "ByteStorage": "uint8", "BoolStorage": "bool",
    "ComplexFloatStorage": "complex64", "ComplexDoubleStorage": "complex128",
    "UntypedStorage": "uint8",
}
# torch dtype globals (pickled by name, e.g. 'torch uint16' for _rebuild_tensor_v3).
_DTYPE_NAMES = {
    "float32": "float32", "float": "float32", "float64": "float64", "double": "float64",
    "float16": "float16", "half": "float16", "bfloat16": "bfloat16", "int64": "int64",
    "long": "int64", "int32": "int32", "int": "int32", "int16": "int16", "short": "int16",
    "int8": "int8", "uint8": "uint8", "bool": "bool", "uint16": "uint16", "uint32": "uint32",
    "uint64": "uint64", "complex64": "complex64", "cfloat": "complex64",
    "complex128": "complex128", "cdouble": "complex128",
}
# dtypes torch can save that have no numpy type and no exact wider one we could use.
_UNSUPPORTED_DTYPES = ("float8_e5m2", "float8_e4m3fn", "float8_e5m2fnuz", "float8_e4m3fnuz",
                       "float8_e8m0fnu", "float4_e2m1fn_x2", "complex32", "bits8", "bits16",
                       "bits1x8", "bits2x4", "bits4x2", "quint8", "qint8", "qint32", "quint4x2",
                       "quint2x4")


class _Bad(Exception):
    """Internal: the file is refused for this reason (the caller adds the file's name)."""


_STATE_DICT_HINT = ("engine reads tensors and the containers torch writes for them (a state dict); "
                    "save model.state_dict() with torch.save, or export the model to ONNX")


# -- what the unpickler hands out -------------------------------------------------------------

class _Storage:
    """A storage the pickle refers to: bytes to be read later from the archive."""

    __slots__ = ("key", "dtype", "numel", "elem_offset")

    def __init__(self, key: str, dtype: str, numel: int, elem_offset: int = 0):
        self.key, self.dtype, self.numel, self.elem_offset = key, dtype, numel, elem_offset

    def __setstate__(self, state):  # BUILD on it: refused (no object of ours can be altered)
        raise _Bad("the pickle tries to modify a storage object (BUILD); refused")


class _TensorRef:
    """A tensor to be cut out of a storage once its bytes are read."""

    __slots__ = ("storage", "offset", "size", "stride", "dtype")

    def __init__(self, storage: _Storage, offset: int, size: tuple, stride: tuple, dtype: str):
        self.storage, self.offset, self.size, self.stride, self.dtype = storage, offset, size, stride, dtype

    def __setstate__(self, state):
        raise _Bad("the pickle tries to modify a tensor object (BUILD); refused")


class _Global:
    """What an allowed global resolves to: callable the way torch's function is (building
    placeholders), a storage class or a dtype by name. Never altered by the pickle."""

    __slots__ = ("qualname", "kind", "value")

    def __init__(self, qualname: str, kind: str, value):
        self.qualname, self.kind, self.value = qualname, kind, value

    def __call__(self, *args):
        if self.kind != "function":
            raise _Bad(f"the pickle calls {self.qualname}, which torch never does in a saved "
                       "tensor; refused")
        try:
            return self.value(*args)
        except TypeError as e:  # wrong argument count: a forged call
            raise _Bad(f"bad arguments to {self.qualname} ({e})") from None

    def __setstate__(self, state):
        raise _Bad(f"the pickle tries to modify {self.qualname} (BUILD); refused")


def _ints(v, what: str, n: int | None = None) -> tuple:
    if not isinstance(v, (tuple, list)) or len(v) > _MAX_DIMS or (n is not None and len(v) != n):
        raise _Bad(f"tensor {what} must be a tuple of at most {_MAX_DIMS} ints, got {type(v).__name__}")
    if not all(type(i) is int and i >= 0 for i in v):
        raise _Bad(f"tensor {what} must hold non-negative ints, got {str(v)[:80]}")
    return tuple(v)


def _tensor(storage, storage_offset, size, stride, dtype=None) -> _TensorRef:
    if not isinstance(storage, _Storage):
        raise _Bad(f"a tensor's storage is a {type(storage).__name__}, not a storage")
    if type(storage_offset) is not int or storage_offset < 0:
        raise _Bad(f"tensor storage offset must be a non-negative int, got {storage_offset!r}")
    size = _ints(size, "size")
    stride = _ints(stride, "stride", len(size))
    return _TensorRef(storage, storage.elem_offset + storage_offset, size, stride, dtype or storage.dtype)


def _rebuild_tensor(storage, storage_offset, size, stride):
    return _tensor(storage, storage_offset, size, stride)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks, metadata=None):
    return _tensor(storage, storage_offset, size, stride)


def _rebuild_tensor_v3(storage, storage_offset, size, stride, requires_grad, backward_hooks, dtype,
                       metadata=None):
    # Newer element types travel as untyped (byte) storages with the dtype beside them;
    # offsets and strides count elements of that dtype.
    if not (isinstance(dtype, _Global) and dtype.kind == "dtype"):
        raise _Bad(f"_rebuild_tensor_v3 expects a torch dtype, got {type(dtype).__name__}")
    return _tensor(storage, storage_offset, size, stride, dtype.value)


def _rebuild_parameter(data, requires_grad, backward_hooks, state=None):
    if not isinstance(data, _TensorRef):
        raise _Bad(f"a parameter wraps a {type(data).__name__}, not a tensor")
    return data  # a Parameter's data is all a state dict needs


def _rebuild_from_type_v2(func, new_type, args, state):
    # Tensor subclasses (Parameter with attributes) are saved as the plain tensor's rebuild
    # call plus the type; the type must be torch's own, and the extra state is dropped.
    if not (isinstance(func, _Global) and func.kind == "function" and func.value is not _rebuild_from_type_v2):
        raise _Bad("_rebuild_from_type_v2 must wrap a tensor rebuild function")
    if not (isinstance(new_type, _Global) and new_type.kind == "tensor_type"):
        raise _Bad("_rebuild_from_type_v2 names a type other than torch.Tensor / Parameter")
    if not isinstance(args, tuple):
        raise _Bad("_rebuild_from_type_v2: arguments must be a tuple")
    return func(*args)


_FUNCTIONS = {
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor_v3"): _rebuild_tensor_v3,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type_v2,
}
_TENSOR_TYPES = {("torch", "Tensor"), ("torch.nn.parameter", "Parameter"), ("torch.nn", "Parameter")}


class _RestrictedUnpickler(pickle.Unpickler):
    """pickle.Unpickler that resolves only torch's tensor globals (to objects of ours) and
    storage references (to _Storage placeholders); everything else is refused by name."""

    def __init__(self, file, data_for_hint: bytes = b""):
        super().__init__(file)
        self._hint_source = data_for_hint
        self.storages: dict[str, _Storage] = {}  # key -> first reference (dtype for legacy reads)

    def find_class(self, module, name):
        qual = f"{module}.{name}"
        if (module, name) == ("collections", "OrderedDict"):
            return OrderedDict  # a plain container; torch writes it for every state dict
        if (module, name) in _FUNCTIONS:
            return _Global(qual, "function", _FUNCTIONS[module, name])
        if (module, name) in _TENSOR_TYPES:
            return _Global(qual, "tensor_type", None)
        if module in ("torch", "torch.storage", "torch.cuda") and name in _STORAGE_TYPES:
            return _Global(qual, "storage", _STORAGE_TYPES[name])
        if module == "torch" and name in _DTYPE_NAMES:
            return _Global(qual, "dtype", _DTYPE_NAMES[name])
        if module == "torch" and name in _UNSUPPORTED_DTYPES:
            raise _Bad(f"tensors of type torch.{name} are not supported (no numpy equivalent)")
        raise _Bad(self._refusal(_python3_name(module, name)))

    def _refusal(self, qual: str) -> str:
        if qual.startswith("'torch.nn.") or b"torch.nn.modules" in self._hint_source:
            return (f"this file holds a whole pickled torch.nn module (it names {qual}), which only "
                    "torch can rebuild by running its code; refused. Save model.state_dict() instead "
                    "(torch.save(model.state_dict(), path)) and load it with net.load_state_dict(path), "
                    "or export the model to ONNX")
        return (f"the pickle names the global {qual}, which a PyTorch state dict never needs; refused "
                f"(nothing was imported or run). {_STATE_DICT_HINT}")

    def persistent_load(self, pid):
        # ('storage', storage class, key, location, numel[, legacy view metadata])
        if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"):
            raise _Bad(f"unknown persistent reference {str(pid)[:80]!r}")
        stype, key, _location, numel = pid[1:5]
        if not (isinstance(stype, _Global) and stype.kind == "storage"):
            raise _Bad("a storage reference without a storage class")
        if not isinstance(key, str) or not 0 < len(key) <= 64 or type(numel) is not int or numel < 0:
            raise _Bad(f"malformed storage reference (key {str(key)[:70]!r}, numel {str(numel)[:30]})")
        offset = 0
        view = pid[5] if len(pid) == 6 else None
        if view is not None:  # very old files: a view into another storage, offset in elements
            if not (isinstance(view, tuple) and len(view) == 3 and type(view[1]) is int and view[1] >= 0):
                raise _Bad("malformed storage view metadata")
            offset = view[1]
        first = self.storages.setdefault(key, _Storage(key, stype.value, numel))
        if first.dtype != stype.value:
            raise _Bad(f"storage '{key}' is referenced as {first.dtype} and as {stype.value}")
        return first if not offset else _Storage(key, stype.value, numel, offset)


def _python3_name(module: str, name: str) -> str:
    """The global's Python 3 name (protocol-2 pickles spell some the Python 2 way, e.g.
    __builtin__.eval): only to name it in a message; nothing is imported."""
    import _compat_pickle

    written = f"{module}.{name}"
    if (module, name) in _compat_pickle.NAME_MAPPING:
        module, name = _compat_pickle.NAME_MAPPING[module, name]
    elif module in _compat_pickle.IMPORT_MAPPING:
        module = _compat_pickle.IMPORT_MAPPING[module]
    qual = f"{module}.{name}"
    return f"'{qual}'" if qual == written else f"'{qual}' (written '{written}')"


# The opcodes torch's pickles (protocol 2) and plain containers use. Anything else (INST/OBJ
# calls, extension registry lookups, out-of-band buffers) is refused before unpickling starts.
_OPCODES = frozenset("""PROTO FRAME STOP MARK POP POP_MARK DUP NONE NEWTRUE NEWFALSE INT BININT BININT1
    BININT2 LONG LONG1 LONG4 FLOAT BINFLOAT STRING BINSTRING SHORT_BINSTRING UNICODE BINUNICODE
    SHORT_BINUNICODE BINUNICODE8 BINBYTES SHORT_BINBYTES BINBYTES8 EMPTY_LIST APPEND APPENDS LIST
    EMPTY_TUPLE TUPLE TUPLE1 TUPLE2 TUPLE3 EMPTY_DICT DICT SETITEM SETITEMS EMPTY_SET ADDITEMS
    FROZENSET PUT BINPUT LONG_BINPUT GET BINGET LONG_BINGET MEMOIZE GLOBAL STACK_GLOBAL REDUCE
    BUILD NEWOBJ PERSID BINPERSID""".split())


class _Capped:
    """read/readline of a file capped at its end, so a corrupt length field cannot make the
    pickle scanner ask for more memory than the file holds."""

    def __init__(self, f, end: int):
        self.f, self.end = f, end

    def read(self, n: int = -1) -> bytes:
        left = max(self.end - self.f.tell(), 0)
        return self.f.read(left if n is None or n < 0 else min(n, left))

    def readline(self) -> bytes:
        return self.f.readline(max(self.end - self.f.tell(), 0))

    def tell(self) -> int:
        return self.f.tell()


def _check_opcodes(file) -> None:
    """Scan the pickle before anything runs it: only the opcodes above; every length field
    satisfied by bytes really there; memo indices in sequence (pickle's C reader sizes its
    memo from the largest index: one forged index would make it allocate gigabytes)."""
    import pickletools

    pos = file.tell()
    end = file.seek(0, os.SEEK_END)
    file.seek(pos)
    memo = 0
    try:
        for op, arg, at in pickletools.genops(_Capped(file, end)):
            if op.name not in _OPCODES:
                raise _Bad(f"the pickle uses opcode {op.name} (at byte {at - pos}), which torch never "
                           "writes; refused")
            if op.name in ("PUT", "BINPUT", "LONG_BINPUT"):
                if not isinstance(arg, int) or arg > memo:
                    raise _Bad(f"the pickle stores to memo slot {str(arg)[:20]} out of sequence; refused")
                memo = max(memo, arg + 1)
            elif op.name == "MEMOIZE":
                memo += 1
    except _Bad:
        raise
    except Exception as e:  # truncated or malformed: genops says where
        raise _Bad(f"corrupt or truncated pickle ({type(e).__name__}: {e})") from None
    file.seek(pos)


def _unpickle(file, hint: bytes = b""):
    """(object, unpickler) from a file object positioned at a pickle."""
    _check_opcodes(file)
    u = _RestrictedUnpickler(file, hint)
    try:
        return u.load(), u
    except _Bad:
        raise
    except RecursionError:
        raise _Bad("the pickle is nested too deeply") from None
    except MemoryError:
        raise _Bad("the pickle asks for more memory than there is") from None
    except Exception as e:  # UnpicklingError, EOFError, ValueError, ... from malformed data
        raise _Bad(f"corrupt or truncated pickle ({type(e).__name__}: {e})") from None


# -- tensors from storage bytes ---------------------------------------------------------------

def _np_dtype(dtype: str, big_endian: bool) -> np.dtype:
    dt = np.dtype("uint16" if dtype == "bfloat16" else dtype)
    return dt.newbyteorder(">") if big_endian and dt.itemsize > 1 else dt


def _materialise(t: _TensorRef, raw: bytes, big_endian: bool, key: str) -> np.ndarray:
    dt = _np_dtype(t.dtype, big_endian)
    count = math.prod(t.size)
    if count == 0:
        out = np.empty(t.size, dt)
    else:
        last = t.offset + sum((s - 1) * st for s, st in zip(t.size, t.stride))  # highest element read
        have = len(raw) // dt.itemsize
        if last >= have:
            raise _Bad(f"tensor '{key}' (size {t.size}, stride {t.stride}, offset {t.offset}) reads "
                       f"element {last} of a storage holding {have} {t.dtype} elements")
        if count > have and count * dt.itemsize > _MAX_EXPANDED_BYTES:
            raise _Bad(f"tensor '{key}' expands {have} stored elements to {count}; refused")
        base = np.frombuffer(raw, dt, count=have)[t.offset:]
        view = np.lib.stride_tricks.as_strided(base, t.size, [st * dt.itemsize for st in t.stride],
                                               writeable=False)
        out = np.array(view, order="C", copy=True)
    if dt.byteorder == ">":
        out = out.astype(dt.newbyteorder("="))
    if t.dtype == "bfloat16":  # the top half of a float32
        out = (out.astype(np.uint32) << 16).view(np.float32)
    return out


def _resolve(obj, storage_bytes, big_endian: bool):
    """`obj` with every placeholder replaced: tensors by arrays, containers rebuilt
    (shared objects resolved once, so a pickle of repeated references cannot explode)."""
    memo: dict[int, object] = {}

    def walk(o, key):
        if o is None or isinstance(o, (str, bytes, bool, int, float, complex)):
            return o
        if id(o) in memo:
            return memo[id(o)]
        if isinstance(o, _TensorRef):
            r = _materialise(o, storage_bytes(o.storage), big_endian, key)
        elif isinstance(o, _Storage):  # a storage saved by itself: its elements, flat
            raw = storage_bytes(o)
            r = _materialise(_TensorRef(o, 0, (len(raw) // _np_dtype(o.dtype, False).itemsize,), (1,), o.dtype),
                             raw, big_endian, key)
        elif isinstance(o, dict):
            r = OrderedDict() if isinstance(o, OrderedDict) else {}
            memo[id(o)] = r
            for k, v in o.items():
                r[walk(k, key)] = walk(v, f"{key}.{k}" if key else str(k))
        elif isinstance(o, list):
            r = []
            memo[id(o)] = r
            r.extend(walk(v, f"{key}[{i}]") for i, v in enumerate(o))
        elif isinstance(o, tuple):
            r = tuple(walk(v, f"{key}[{i}]") for i, v in enumerate(o))
        elif isinstance(o, (set, frozenset)):
            r = type(o)(walk(v, key) for v in o)
        elif isinstance(o, _Global):
            r = o.qualname  # e.g. a dtype stored as a value: its name
        else:
            r = o
        memo[id(o)] = r
        return r

    try:
        return walk(obj, "")
    except RecursionError:
        raise _Bad("the data is nested too deeply") from None
    except TypeError as e:  # e.g. a tensor used as a dict key
        raise _Bad(f"malformed data ({e})") from None


# -- the zip format ---------------------------------------------------------------------------

def _read_zip(f, size: int):
    try:
        zf = zipfile.ZipFile(f)
        infos = {i.filename: i for i in zf.infolist()}
    except Exception as e:  # BadZipFile, struct/unicode errors in a corrupt directory, ...
        raise _Bad(f"corrupt zip archive ({type(e).__name__}: {e})") from None
    pkl = [n for n in infos if n == "data.pkl" or (n.endswith("/data.pkl") and n.count("/") == 1)]
    if not pkl:
        if "config.json" in infos or "model.weights.h5" in infos:
            raise _Bad("this is a Keras archive, not a PyTorch file; read it with engine.load")
        raise _Bad("a zip archive without data.pkl: not a file written by torch.save")
    prefix = pkl[0][: -len("data.pkl")]
    if f"{prefix}constants.pkl" in infos or any(n.startswith(f"{prefix}code/") for n in infos):
        raise _Bad("this is a TorchScript archive (torch.jit.save), which holds code engine does not "
                   "run; save model.state_dict() or export the model to ONNX instead")

    def entry(name: str) -> bytes:
        info = infos.get(prefix + name)
        if info is None:
            raise _Bad(f"the archive has no entry '{prefix + name}'")
        if info.compress_size > size or (info.compress_type == zipfile.ZIP_STORED and info.file_size != info.compress_size) \
                or info.file_size > max(info.compress_size, 1) * _MAX_DEFLATE_RATIO:
            raise _Bad(f"zip entry '{info.filename}' claims {info.file_size} bytes "
                       f"({info.compress_size} stored) in a file of {size} bytes")
        try:
            with zf.open(info) as e:
                data = e.read(info.file_size)
        except Exception as e:  # zipfile's many ways of finding a corrupt archive
            raise _Bad(f"corrupt zip entry '{info.filename}' ({type(e).__name__}: {e})") from None
        if len(data) != info.file_size:
            raise _Bad(f"zip entry '{info.filename}' is truncated")
        return data

    big = False
    if prefix + "byteorder" in infos:
        order = entry("byteorder")
        if order not in (b"little", b"big"):
            raise _Bad(f"unknown byte order {order[:20]!r}")
        big = order == b"big"
    data = entry("data.pkl")
    obj, unpickler = _unpickle(io.BytesIO(data), data)
    cache: dict[str, bytes] = {}

    def storage_bytes(s: _Storage) -> bytes:
        if s.key not in cache:
            cache[s.key] = entry(f"data/{s.key}")
        return cache[s.key]

    return _resolve(obj, storage_bytes, big)


# -- the legacy format ------------------------------------------------------------------------

def _read_legacy(f, size: int):
    magic, _ = _unpickle(f)
    if magic != _LEGACY_MAGIC:
        raise _Bad("not a file written by torch.save (neither a zip archive nor the legacy magic number)")
    protocol, _ = _unpickle(f)
    if protocol != _LEGACY_PROTOCOL:
        raise _Bad(f"unsupported legacy protocol version {protocol!r} (expected {_LEGACY_PROTOCOL})")
    _unpickle(f)  # system info: the writer's byte order, but legacy storages are little-endian always
    pos = f.tell()
    hint = f.read(1 << 20)  # the object's pickle (storages follow it): only to word a refusal
    f.seek(pos)
    obj, unpickler = _unpickle(f, hint)
    keys, _ = _unpickle(f)
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise _Bad("the list of storage keys is malformed")
    raw: dict[str, bytes] = {}
    for key in keys:  # each: int64 element count, then the elements
        s = unpickler.storages.get(key)
        if s is None:
            raise _Bad(f"storage '{key}' is listed but no tensor uses it (element size unknown)")
        head = f.read(8)
        if len(head) != 8:
            raise _Bad(f"truncated before storage '{key}'")
        numel = int.from_bytes(head, "little", signed=True)
        nbytes = numel * _np_dtype(s.dtype, False).itemsize
        if numel < 0 or nbytes > size - f.tell():
            raise _Bad(f"storage '{key}' claims {numel} elements ({nbytes} bytes) but only "
                       f"{size - f.tell()} bytes follow")
        raw[key] = f.read(nbytes)
    missing = sorted(set(unpickler.storages) - set(raw))
    if missing:
        raise _Bad(f"storages {missing[:5]} are used but not in the file")
    return _resolve(obj, lambda s: raw[s.key], False)


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
                raise _Bad("a tar archive: the torch.save format of torch < 0.4 is not supported; "
                           "re-save it with a newer torch")
            if not head:
                raise _Bad("empty file")
            return _read_legacy(f, size)
        except _Bad as e:
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
        t = _TensorRef(_Storage(key, dtype, 0), 0, shape, _contiguous_strides(shape), dtype)
        try:
            out[key] = _materialise(t, bytes(e["data"]), False, key)
        except _Bad as err:
            raise ModelFormatError(f"{name}: {err}") from None
    return out


def _contiguous_strides(shape: tuple) -> tuple:
    strides, step = [], 1
    for d in reversed(shape):
        strides.append(step)
        step *= d
    return tuple(reversed(strides))


__all__ = ["load", "read_state_dict", "read_safetensors", "as_state_dict", "is_torch_file", "not_a_model"]
