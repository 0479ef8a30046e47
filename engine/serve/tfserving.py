"""TensorFlow Serving's REST predict API and model status, for clients written against it.

    POST /v1/models/digits[/versions/1]:predict
    {"instances": [row, row, ...]}                 -> {"predictions": [out_row, ...]}
    {"instances": [{"x": row, "y": row}, ...]}     -> {"predictions": [{"probs": out_row, ...}, ...]}
    {"inputs": tensor} or {"inputs": {"x": t, ...}} -> {"outputs": tensor} or {"outputs": {"probs": t, ...}}

The row ("instances") form stacks rows along dim 0; the columnar ("inputs") form sends whole
tensors. JSON carries no datatypes: values become the model input's dtype (integers into a
float input are fine; fractions into an integer input are refused). Base64 ("b64") values
carry strings, which no model here takes. Errors are {"error": message}.
"""

from __future__ import annotations

import numpy as np

from .kserve import dumps, json_array, loads
from .tensors import RequestError, numpy_dtype

SIGNATURES = (None, "", "serving_default")
_STATES = {"loading": "LOADING", "ready": "AVAILABLE", "unloading": "UNLOADING", "unavailable": "END",
           "failed": "END"}


def decode_predict(body: bytes, served) -> tuple:
    """({input name: array}, "row" | "columnar") for a predict body, typed as `served` takes them.

    >>> feeds, form = decode_predict(b'{"instances": [[1, 2], [3, 4]]}', served)   # form == "row"
    """
    req = loads(body, "the predict request")
    if not isinstance(req, dict):
        raise RequestError("the predict request must be a JSON object")
    sig = req.get("signature_name")
    if sig not in SIGNATURES:
        raise RequestError(f"signature_name {sig!r} not found; this model has only 'serving_default'")
    if ("instances" in req) == ("inputs" in req):
        raise RequestError("the predict request needs exactly one of 'instances' (row format) or 'inputs' "
                           "(columnar format)")
    if "instances" in req:
        return _rows(req["instances"], served), "row"
    return _columns(req["inputs"], served), "columnar"


def _rows(instances, served) -> dict:
    if not isinstance(instances, list) or not instances:
        raise RequestError("'instances' must be a non-empty list of rows")
    if not isinstance(instances[0], dict):
        spec = _only_input(served, "instances")
        return {spec.name: _array(instances, spec)}
    names = instances[0].keys()
    for i, row in enumerate(instances):
        if not isinstance(row, dict) or row.keys() != names:
            raise RequestError(f"instances[{i}] must be an object with the same keys as instances[0] "
                               f"({sorted(names)})")
    feeds = {}
    for name in names:
        spec = served.input_spec(name)
        feeds[name] = _array([row[name] for row in instances], spec)
    return feeds


def _columns(inputs, served) -> dict:
    if not isinstance(inputs, dict):
        spec = _only_input(served, "inputs")
        return {spec.name: _array(inputs, spec)}
    if not inputs:
        raise RequestError("'inputs' is an empty object")
    return {name: _array(value, served.input_spec(name)) for name, value in inputs.items()}


def _only_input(served, key: str):
    if len(served.inputs) != 1:
        raise RequestError(f"model '{served.name}' has {len(served.inputs)} inputs "
                           f"({[s.name for s in served.inputs]}); send '{key}' as objects keyed by input name")
    return served.inputs[0]


def _array(value, spec) -> np.ndarray:
    if _has_b64(value):
        raise RequestError(f"input '{spec.name}': base64 ('b64') values carry strings, which this server "
                           "does not support; send numbers")
    return json_array(value, numpy_dtype(spec.datatype), f"input '{spec.name}'")


def _has_b64(value) -> bool:
    while isinstance(value, list) and value:
        value = value[0]
    return isinstance(value, dict) and "b64" in value


def encode_predict(outputs: dict, form: str) -> bytes:
    """The predict answer in the request's form.

    >>> encode_predict({"probs": np.array([[0.25, 0.75]], np.float32)}, "row")
    b'{"predictions":[[0.25,0.75]]}'
    """
    if form == "columnar":
        if len(outputs) == 1:
            (y,) = outputs.values()
            return dumps({"outputs": np.ascontiguousarray(y)})
        return dumps({"outputs": {k: np.ascontiguousarray(v) for k, v in outputs.items()}})
    if len(outputs) == 1:
        (y,) = outputs.values()
        return dumps({"predictions": np.ascontiguousarray(y)})
    ys = {k: np.ascontiguousarray(v) for k, v in outputs.items()}
    rows = {v.shape[0] if v.ndim else None for v in ys.values()}
    if len(rows) != 1 or None in rows:
        shapes = {k: list(v.shape) for k, v in ys.items()}
        raise RequestError(f"the outputs differ in dim 0 ({shapes}), so they cannot be given per instance; "
                           "use the columnar 'inputs' form")
    (n,) = rows
    return dumps({"predictions": [{k: v[i] for k, v in ys.items()} for i in range(n)]})


def model_status(statuses: list, version=None) -> dict:
    """TF Serving's GetModelStatus response for manager.status(name) (one version, or all).

    >>> model_status(manager.status("digits"))["model_version_status"][0]["state"]
    'AVAILABLE'
    """
    out = []
    for st in statuses:
        if version is not None and st.version != version:
            continue
        failed = st.state == "failed"
        out.append({"version": str(st.version), "state": _STATES.get(st.state, "END"),
                    "status": {"error_code": "UNKNOWN" if failed else "OK",
                               "error_message": st.reason if failed else ""}})
    return {"model_version_status": out}
