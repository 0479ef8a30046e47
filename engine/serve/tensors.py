"""Tensor descriptions shared by every front end: KServe v2 datatype names, and the input and
output signatures a served model exposes."""

from __future__ import annotations

from typing import NamedTuple, Optional

import numpy as np

from ..errors import EngineError

# KServe v2 / Triton datatype name -> engine dtype name (engine/dtypes.py)
_DATATYPES = {
    "BOOL": "bool", "UINT8": "uint8", "UINT16": "uint16", "UINT32": "uint32", "UINT64": "uint64",
    "INT8": "int8", "INT16": "int16", "INT32": "int32", "INT64": "int64",
    "FP16": "float16", "FP32": "float32", "FP64": "float64", "BF16": "bfloat16",
}
_BY_DTYPE = {v: k for k, v in _DATATYPES.items()}


class RequestError(EngineError, ValueError):
    """A request is malformed or breaks a limit (HTTP 400 / an error frame)."""
    status = 400


class NotFoundError(EngineError, LookupError):
    """The request names a model, version, input or output that does not exist (HTTP 404)."""
    status = 404


class UnavailableError(EngineError):
    """The model exists but no version of it is ready, or the server is stopping (HTTP 503)."""
    status = 503


def datatype_to_dtype(datatype: str) -> str:
    """'FP32' -> 'float32'."""
    try:
        return _DATATYPES[datatype]
    except (KeyError, TypeError):
        raise RequestError(f"unknown datatype {datatype!r}; expected one of {sorted(_DATATYPES)}") from None


def dtype_to_datatype(dtype: str) -> str:
    """'float32' -> 'FP32'."""
    return _BY_DTYPE[str(dtype)]


def numpy_dtype(datatype: str) -> np.dtype:
    name = datatype_to_dtype(datatype)
    if name == "bfloat16":
        raise RequestError("datatype BF16 has no numpy type; send FP32")
    return np.dtype(name)


class TensorSpec(NamedTuple):
    """One input or output of a served model. `shape` holds -1 for free dims (the batch dim
    included when the model batches); `model_name` is the model's own name, which a config
    may alias to `name`."""
    name: str
    datatype: str
    shape: tuple
    model_name: Optional[str] = None

    def as_json(self) -> dict:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}
