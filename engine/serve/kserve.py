"""KServe v2 / Open Inference Protocol inference messages over HTTP, as Triton writes them, so
`tritonclient.http` works unchanged.

A request body is JSON, optionally followed by raw tensor bytes (the binary tensor data
extension): the `Inference-Header-Content-Length` header then gives the JSON's length, and
each input with `parameters.binary_data_size` takes that many bytes, in input order, from what
follows. Without the header every input carries `data` (flat or nested, row-major).

    {"id": "7", "inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [0.5, 1]}],
     "outputs": [{"name": "probs", "parameters": {"binary_data": true}}]}

A response lists outputs the same way; outputs asked for in binary (per output, or all with
`parameters.binary_data_output`) carry `parameters.binary_data_size` instead of `data`, their
bytes follow the JSON, and the response carries `Inference-Header-Content-Length`. BYTES
tensors and shared memory are not supported (a 400 says so).
"""

from __future__ import annotations

import math
from typing import NamedTuple, Optional

import numpy as np
import orjson

from .tensors import NotFoundError, RequestError, dtype_to_datatype, numpy_dtype

_DUMPS_OPTS = orjson.OPT_SERIALIZE_NUMPY
# Looked up per tensor, so dicts rather than the functions (np.dtype.name alone costs ~2 us).
_NUMERIC = ("BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32", "FP64")
_NUMPY = {d: numpy_dtype(d) for d in _NUMERIC}
_DATATYPE = {v: k for k, v in _NUMPY.items()}


class InferRequest(NamedTuple):
    inputs: dict                 # name -> numpy array in the datatype the request declared
    id: Optional[str]
    outputs: Optional[tuple]     # ((name, binary), ...) or None: every output
    binary_output: bool          # the default for outputs not asked for by name


def loads(body, what: str = "the request body"):
    """orjson.loads with a 400 that says where the JSON broke."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise RequestError(f"{what} is not valid JSON: {e}") from None


def dumps(obj) -> bytes:
    """JSON bytes; numpy arrays and scalars are written as (nested) lists of numbers. JSON has
    no NaN or infinity: they are written as null."""
    return orjson.dumps(obj, option=_DUMPS_OPTS)


def decode_request(body: bytes, header_length: Optional[int]) -> InferRequest:
    """Parse an inference request body; RequestError (400) names the input and field at fault.

    >>> decode_request(b'{"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": [1, 2]}]}', None).inputs
    {'x': array([1., 2.], dtype=float32)}
    """
    if header_length is None:
        header, binary = body, None
    else:
        if not 0 < header_length <= len(body):
            raise RequestError(f"Inference-Header-Content-Length is {header_length}, but the body is "
                               f"{len(body)} bytes")
        header, binary = memoryview(body)[:header_length], body
    try:
        req = orjson.loads(header)
    except orjson.JSONDecodeError as e:
        hint = ""
        if header_length is None and b'"binary_data_size"' in body:
            hint = " (binary tensor data needs the Inference-Header-Content-Length header)"
        raise RequestError(f"the inference request is not valid JSON: {e}{hint}") from None
    if not isinstance(req, dict):
        raise RequestError("the inference request must be a JSON object")
    specs = req.get("inputs")
    if not isinstance(specs, list) or not specs:
        raise RequestError("the inference request needs a non-empty 'inputs' list")
    inputs, offset = {}, header_length or 0
    for i, spec in enumerate(specs):
        name, arr, size = _input(spec, i, binary, offset)
        if name in inputs:
            raise RequestError(f"input '{name}' is given twice")
        inputs[name] = arr
        offset += size
    if binary is not None and offset != len(binary):
        raise RequestError(f"the binary input data adds up to {offset - header_length} bytes, but "
                           f"{len(binary) - header_length} follow the JSON header")
    req_id = req.get("id")
    if req_id is not None and not isinstance(req_id, str):
        raise RequestError(f"'id' must be a string, got {type(req_id).__name__}")
    params = _parameters(req, "the request")
    binary_output = params.get("binary_data_output", False)
    if not isinstance(binary_output, bool):
        raise RequestError("parameters.binary_data_output must be true or false")
    return InferRequest(inputs, req_id, _requested(req.get("outputs"), binary_output), binary_output)


def _input(spec, i: int, binary, offset: int):
    """(name, array, bytes taken from the binary part) for one entry of 'inputs'."""
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        raise RequestError(f"inputs[{i}] must be an object with a string 'name'")
    name = spec["name"]
    datatype, shape = spec.get("datatype"), spec.get("shape")
    if datatype == "BYTES":
        raise RequestError(f"input '{name}': datatype BYTES is not supported by this server")
    dtype = _NUMPY.get(datatype) if isinstance(datatype, str) else None
    if dtype is None:
        if not isinstance(datatype, str):
            raise RequestError(f"input '{name}' needs a 'datatype' string such as \"FP32\"")
        try:
            numpy_dtype(datatype)  # raises, naming the datatypes there are
        except RequestError as e:
            raise RequestError(f"input '{name}': {e}") from None
    count = _count(shape)
    if count is None:
        raise RequestError(f"input '{name}' needs a 'shape' list of non-negative integers, got {shape!r}")
    params = _parameters(spec, f"input '{name}'")
    if "shared_memory_region" in params:
        raise RequestError(f"input '{name}': shared memory is not supported; send the data in the body")
    size = params.get("binary_data_size")
    if size is None:
        data = spec.get("data")
        if data is None:
            raise RequestError(f"input '{name}' has neither 'data' nor parameters.binary_data_size")
        arr = json_array(data, dtype, f"input '{name}'")
        if arr.size != count:
            raise RequestError(f"input '{name}': {arr.size} values for shape {shape}, which holds {count}")
        return name, arr.reshape(shape), 0
    if binary is None:
        raise RequestError(f"input '{name}' has binary_data_size but the request has no "
                           "Inference-Header-Content-Length header")
    if type(size) is not int or size < 0:
        raise RequestError(f"input '{name}': binary_data_size must be a non-negative integer, got {size!r}")
    if size != count * dtype.itemsize:
        raise RequestError(f"input '{name}': binary_data_size is {size} bytes, but shape {shape} of "
                           f"{datatype} takes {count * dtype.itemsize}")
    if offset + size > len(binary):
        raise RequestError(f"input '{name}': its {size} bytes of binary data run past the end of the body "
                           f"({len(binary) - offset} left)")
    arr = np.frombuffer(binary, dtype, count, offset).reshape(shape)
    if not arr.flags.aligned:  # an odd offset: kernels may assume aligned elements
        arr = arr.copy()
    return name, arr, size


def _count(shape) -> Optional[int]:
    """Elements in `shape`, or None if it is not a list of non-negative ints."""
    if type(shape) is not list:
        return None
    count = 1
    for d in shape:
        if type(d) is not int or d < 0:
            return None
        count *= d
    return count


def _parameters(obj: dict, what: str) -> dict:
    params = obj.get("parameters")
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise RequestError(f"{what}: 'parameters' must be an object")
    return params


def _requested(outputs, binary_default: bool) -> Optional[tuple]:
    if outputs is None:
        return None
    if not isinstance(outputs, list):
        raise RequestError("'outputs' must be a list of {\"name\": ...} objects")
    out = []
    for i, o in enumerate(outputs):
        if not isinstance(o, dict) or not isinstance(o.get("name"), str):
            raise RequestError(f"outputs[{i}] must be an object with a string 'name'")
        params = _parameters(o, f"output '{o['name']}'")
        if params.get("classification"):
            raise RequestError(f"output '{o['name']}': the classification extension is not supported")
        if "shared_memory_region" in params:
            raise RequestError(f"output '{o['name']}': shared memory is not supported")
        binary = params.get("binary_data", binary_default)
        if not isinstance(binary, bool):
            raise RequestError(f"output '{o['name']}': parameters.binary_data must be true or false")
        out.append((o["name"], binary))
    return tuple(out)


def check_outputs(req: InferRequest, served) -> None:
    """NotFoundError (404) for an asked-for output the version does not have; checked before
    the request is queued so a typo costs no compute."""
    if req.outputs:
        names = {s.name for s in served.outputs}
        for name, _ in req.outputs:
            if name not in names:
                raise NotFoundError(f"model '{served.name}' version {served.version} has no output "
                                    f"'{name}'; its outputs are {sorted(names)}")


# What JSON values may fill each kind of tensor. Float tensors read values as numpy's float()
# does (numbers, and like pydantic's lax mode numeric strings and true/false); integer tensors
# take integers only (range-checked), BOOL true/false. Nulls, other strings, objects and ragged
# lists are refused, never guessed at.
_ACCEPTS = {"f": "iufbU", "i": "iu", "u": "iu", "b": "b"}
_KIND_NAMES = {"f": "numbers", "i": "integers", "u": "integers", "b": "true/false values"}
_GOT = {"U": "strings", "S": "strings", "O": "nulls or objects", "b": "true/false values",
        "f": "non-integer numbers", "i": "integers", "u": "integers"}


def json_array(data, dtype: np.dtype, what: str) -> np.ndarray:
    """JSON values (a number, or flat or nested lists) as an array of `dtype`.

    >>> json_array([[1, 2.5]], np.dtype("float32"), "input 'x'")
    array([[1. , 2.5]], dtype=float32)
    """
    if dtype.kind == "f" and type(data) is list and data and type(data[0]) is not list:
        # The common case, a flat list of numbers, in one pass (np.array scans twice). Python's
        # sum proves every item a finite number (a null, a string or a list raises; JSON has
        # no NaN or infinity) without a numpy reduction, which would release and retake the GIL
        # the instance threads contend for; a value past the type's range raises in the cast.
        try:
            finite = math.isfinite(sum(data))
        except TypeError:
            finite = False
        if finite:
            try:
                with np.errstate(over="raise"):
                    return np.fromiter(data, dtype, len(data))
            except (FloatingPointError, TypeError, ValueError):
                pass  # the strict path below names what is wrong
    with np.errstate(over="ignore", invalid="ignore"):  # overflow is refused below, not warned of
        a = _json_array(data, dtype, what)
    if dtype.kind == "f" and not np.isfinite(a).all():
        raise RequestError(f"{what}: values beyond the range of {_DATATYPE[dtype]}")
    return a


def _json_array(data, dtype: np.dtype, what: str) -> np.ndarray:
    try:
        a = np.array(data)
    except (ValueError, TypeError, OverflowError):
        raise RequestError(f"{what}: data is not a rectangular array of numbers") from None
    if a.size == 0:
        return a.astype(dtype)
    want = dtype.kind
    if a.dtype.kind not in _ACCEPTS[want]:
        got = _GOT.get(a.dtype.kind, "other values")
        raise RequestError(f"{what}: {_DATATYPE[dtype]} data must be {_KIND_NAMES[want]}, got {got}")
    if want in "iu" and a.dtype != dtype:
        info = np.iinfo(dtype)
        lo, hi = a.min(), a.max()
        if lo < info.min or hi > info.max:
            raise RequestError(f"{what}: values from {lo} to {hi} do not fit {_DATATYPE[dtype]} "
                               f"({info.min} to {info.max})")
    try:
        return a.astype(dtype, copy=False)
    except ValueError:  # a string that is not a number
        raise RequestError(f"{what}: {_DATATYPE[dtype]} data must be numbers, got strings") from None


def encode_response(served, outputs: dict, req: InferRequest) -> tuple:
    """(body, json header length or None when nothing is binary) answering `req` with `outputs`
    ({name: array}) computed by `served` (a ServedVersion).

    >>> body, header_length = encode_response(served, {"probs": y}, req)
    """
    if req.outputs is None:
        wanted = [(s.name, req.binary_output) for s in served.outputs]
    else:
        wanted = req.outputs
    entries, blobs = [], []
    for name, binary in wanted:
        a = outputs.get(name)
        if a is None:
            raise NotFoundError(f"model '{served.name}' version {served.version} produced no output '{name}'")
        a = np.ascontiguousarray(a)
        entry = {"name": name, "datatype": _DATATYPE.get(a.dtype) or dtype_to_datatype(a.dtype.name),
                 "shape": a.shape}
        if binary:
            entry["parameters"] = {"binary_data_size": a.nbytes}
            blobs.append(a)
        else:
            entry["data"] = a.reshape(-1)
        entries.append(entry)
    resp = {"model_name": served.name, "model_version": str(served.version)}
    if req.id is not None:
        resp["id"] = req.id
    resp["parameters"] = {"sha256": served.sha256}
    resp["outputs"] = entries
    header = dumps(resp)
    if not blobs:
        return header, None
    return b"".join([header, *blobs]), len(header)


def server_metadata(version: str) -> dict:
    return {"name": "engine", "version": version, "extensions": ["binary_tensor_data", "model_repository"]}
