"""The restricted unpickler for torch.save files, and tensors cut from storage bytes.

A pickle can call anything it names, so torch's pickles never reach pickle.load. Here:

- the pickle is scanned first (`pickletools.genops`): only the opcodes of containers and
  calls (no INST/OBJ, extension registry, out-of-band buffers), every length field within
  the bytes there, memo slots in sequence;
- `find_class` resolves only the globals torch writes for tensors (the rebuild functions,
  storage classes, dtypes) to objects of ours that build placeholders and refuse BUILD, plus
  `collections.OrderedDict`; anything else is refused by name, nothing imported or called;
- placeholders become numpy arrays (`resolve`) once the container format has read the
  storages' bytes, every size, stride and offset checked against those bytes.
"""

from __future__ import annotations

import math
import os
import pickle
from collections import OrderedDict

import numpy as np

# A tensor may view more elements than its storage holds only through zero strides
# (expand()); materialising such a view is capped so a tiny file cannot claim terabytes.
_MAX_EXPANDED_BYTES = 1 << 30
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


class Bad(Exception):
    """Internal: the file is refused for this reason (the caller adds the file's name)."""


_STATE_DICT_HINT = ("engine reads tensors and the containers torch writes for them (a state dict); "
                    "save model.state_dict() with torch.save, or export the model to ONNX")


# -- what the unpickler hands out -------------------------------------------------------------

class Storage:
    """A storage the pickle refers to: bytes to be read later from the archive."""

    __slots__ = ("key", "dtype", "numel", "elem_offset")

    def __init__(self, key: str, dtype: str, numel: int, elem_offset: int = 0):
        self.key, self.dtype, self.numel, self.elem_offset = key, dtype, numel, elem_offset

    def __setstate__(self, state):  # BUILD on it: refused (no object of ours can be altered)
        raise Bad("the pickle tries to modify a storage object (BUILD); refused")


class TensorRef:
    """A tensor to be cut out of a storage once its bytes are read."""

    __slots__ = ("storage", "offset", "size", "stride", "dtype")

    def __init__(self, storage: Storage, offset: int, size: tuple, stride: tuple, dtype: str):
        self.storage, self.offset, self.size, self.stride, self.dtype = storage, offset, size, stride, dtype

    def __setstate__(self, state):
        raise Bad("the pickle tries to modify a tensor object (BUILD); refused")


class _Global:
    """What an allowed global resolves to: callable the way torch's function is (building
    placeholders), a storage class or a dtype by name. Never altered by the pickle."""

    __slots__ = ("qualname", "kind", "value")

    def __init__(self, qualname: str, kind: str, value):
        self.qualname, self.kind, self.value = qualname, kind, value

    def __call__(self, *args):
        if self.kind != "function":
            raise Bad(f"the pickle calls {self.qualname}, which torch never does in a saved "
                       "tensor; refused")
        try:
            return self.value(*args)
        except TypeError as e:  # wrong argument count: a forged call
            raise Bad(f"bad arguments to {self.qualname} ({e})") from None

    def __setstate__(self, state):
        raise Bad(f"the pickle tries to modify {self.qualname} (BUILD); refused")


def _ints(v, what: str, n: int | None = None) -> tuple:
    if not isinstance(v, (tuple, list)) or len(v) > _MAX_DIMS or (n is not None and len(v) != n):
        raise Bad(f"tensor {what} must be a tuple of at most {_MAX_DIMS} ints, got {type(v).__name__}")
    if not all(type(i) is int and i >= 0 for i in v):
        raise Bad(f"tensor {what} must hold non-negative ints, got {str(v)[:80]}")
    return tuple(v)


def _tensor(storage, storage_offset, size, stride, dtype=None) -> TensorRef:
    if not isinstance(storage, Storage):
        raise Bad(f"a tensor's storage is a {type(storage).__name__}, not a storage")
    if type(storage_offset) is not int or storage_offset < 0:
        raise Bad(f"tensor storage offset must be a non-negative int, got {storage_offset!r}")
    size = _ints(size, "size")
    stride = _ints(stride, "stride", len(size))
    return TensorRef(storage, storage.elem_offset + storage_offset, size, stride, dtype or storage.dtype)


def _rebuild_tensor(storage, storage_offset, size, stride):
    return _tensor(storage, storage_offset, size, stride)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks, metadata=None):
    return _tensor(storage, storage_offset, size, stride)


def _rebuild_tensor_v3(storage, storage_offset, size, stride, requires_grad, backward_hooks, dtype,
                       metadata=None):
    # Newer element types travel as untyped (byte) storages with the dtype beside them;
    # offsets and strides count elements of that dtype.
    if not (isinstance(dtype, _Global) and dtype.kind == "dtype"):
        raise Bad(f"_rebuild_tensor_v3 expects a torch dtype, got {type(dtype).__name__}")
    return _tensor(storage, storage_offset, size, stride, dtype.value)


def _rebuild_parameter(data, requires_grad, backward_hooks, state=None):
    if not isinstance(data, TensorRef):
        raise Bad(f"a parameter wraps a {type(data).__name__}, not a tensor")
    return data  # a Parameter's data is all a state dict needs


def _rebuild_from_type_v2(func, new_type, args, state):
    # Tensor subclasses (Parameter with attributes) are saved as the plain tensor's rebuild
    # call plus the type; the type must be torch's own, and the extra state is dropped.
    if not (isinstance(func, _Global) and func.kind == "function" and func.value is not _rebuild_from_type_v2):
        raise Bad("_rebuild_from_type_v2 must wrap a tensor rebuild function")
    if not (isinstance(new_type, _Global) and new_type.kind == "tensor_type"):
        raise Bad("_rebuild_from_type_v2 names a type other than torch.Tensor / Parameter")
    if not isinstance(args, tuple):
        raise Bad("_rebuild_from_type_v2: arguments must be a tuple")
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
    storage references (to Storage placeholders); everything else is refused by name."""

    def __init__(self, file, data_for_hint: bytes = b""):
        super().__init__(file)
        self._hint_source = data_for_hint
        self.storages: dict[str, Storage] = {}  # key -> first reference (dtype for legacy reads)

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
            raise Bad(f"tensors of type torch.{name} are not supported (no numpy equivalent)")
        raise Bad(self._refusal(_python3_name(module, name)))

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
            raise Bad(f"unknown persistent reference {str(pid)[:80]!r}")
        stype, key, _location, numel = pid[1:5]
        if not (isinstance(stype, _Global) and stype.kind == "storage"):
            raise Bad("a storage reference without a storage class")
        if not isinstance(key, str) or not 0 < len(key) <= 64 or type(numel) is not int or numel < 0:
            raise Bad(f"malformed storage reference (key {str(key)[:70]!r}, numel {str(numel)[:30]})")
        offset = 0
        view = pid[5] if len(pid) == 6 else None
        if view is not None:  # very old files: a view into another storage, offset in elements
            if not (isinstance(view, tuple) and len(view) == 3 and type(view[1]) is int and view[1] >= 0):
                raise Bad("malformed storage view metadata")
            offset = view[1]
        first = self.storages.setdefault(key, Storage(key, stype.value, numel))
        if first.dtype != stype.value:
            raise Bad(f"storage '{key}' is referenced as {first.dtype} and as {stype.value}")
        return first if not offset else Storage(key, stype.value, numel, offset)


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
                raise Bad(f"the pickle uses opcode {op.name} (at byte {at - pos}), which torch never "
                           "writes; refused")
            if op.name in ("PUT", "BINPUT", "LONG_BINPUT"):
                if not isinstance(arg, int) or arg > memo:
                    raise Bad(f"the pickle stores to memo slot {str(arg)[:20]} out of sequence; refused")
                memo = max(memo, arg + 1)
            elif op.name == "MEMOIZE":
                memo += 1
    except Bad:
        raise
    except Exception as e:  # truncated or malformed: genops says where
        raise Bad(f"corrupt or truncated pickle ({type(e).__name__}: {e})") from None
    file.seek(pos)


def unpickle(file, hint: bytes = b""):
    """(object, unpickler) from a file object positioned at a pickle."""
    _check_opcodes(file)
    u = _RestrictedUnpickler(file, hint)
    try:
        return u.load(), u
    except Bad:
        raise
    except RecursionError:
        raise Bad("the pickle is nested too deeply") from None
    except MemoryError:
        raise Bad("the pickle asks for more memory than there is") from None
    except Exception as e:  # UnpicklingError, EOFError, ValueError, ... from malformed data
        raise Bad(f"corrupt or truncated pickle ({type(e).__name__}: {e})") from None


# -- tensors from storage bytes ---------------------------------------------------------------

def np_dtype(dtype: str, big_endian: bool) -> np.dtype:
    dt = np.dtype("uint16" if dtype == "bfloat16" else dtype)
    return dt.newbyteorder(">") if big_endian and dt.itemsize > 1 else dt


def materialise(t: TensorRef, raw: bytes, big_endian: bool, key: str) -> np.ndarray:
    dt = np_dtype(t.dtype, big_endian)
    count = math.prod(t.size)
    if count == 0:
        out = np.empty(t.size, dt)
    else:
        last = t.offset + sum((s - 1) * st for s, st in zip(t.size, t.stride))  # highest element read
        have = len(raw) // dt.itemsize
        if last >= have:
            raise Bad(f"tensor '{key}' (size {t.size}, stride {t.stride}, offset {t.offset}) reads "
                       f"element {last} of a storage holding {have} {t.dtype} elements")
        if count > have and count * dt.itemsize > _MAX_EXPANDED_BYTES:
            raise Bad(f"tensor '{key}' expands {have} stored elements to {count}; refused")
        base = np.frombuffer(raw, dt, count=have)[t.offset:]
        view = np.lib.stride_tricks.as_strided(base, t.size, [st * dt.itemsize for st in t.stride],
                                               writeable=False)
        out = np.array(view, order="C", copy=True)
    if dt.byteorder == ">":
        out = out.astype(dt.newbyteorder("="))
    if t.dtype == "bfloat16":  # the top half of a float32
        out = (out.astype(np.uint32) << 16).view(np.float32)
    return out


def resolve(obj, storage_bytes, big_endian: bool):
    """`obj` with every placeholder replaced: tensors by arrays, containers rebuilt
    (shared objects resolved once, so a pickle of repeated references cannot explode)."""
    memo: dict[int, object] = {}

    def walk(o, key):
        if o is None or isinstance(o, (str, bytes, bool, int, float, complex)):
            return o
        if id(o) in memo:
            return memo[id(o)]
        if isinstance(o, TensorRef):
            r = materialise(o, storage_bytes(o.storage), big_endian, key)
        elif isinstance(o, Storage):  # a storage saved by itself: its elements, flat
            raw = storage_bytes(o)
            r = materialise(TensorRef(o, 0, (len(raw) // np_dtype(o.dtype, False).itemsize,), (1,), o.dtype),
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
        raise Bad("the data is nested too deeply") from None
    except TypeError as e:  # e.g. a tensor used as a dict key
        raise Bad(f"malformed data ({e})") from None
