"""The HTTP front (engine/serve/http.py, kserve.py, tfserving.py) on real servers over loopback:
every route through tritonclient.http (JSON and binary tensors) and plain HTTP, the TF Serving
REST forms, the repository API, metrics, auth, and every bad input and limit answered with its
status and a message naming what is wrong, the server serving on afterwards.

Expected outputs come from engine.load(file).predict / .run of the same file, or numpy; file
hashes from hashlib; metrics are read with prometheus_client's own parser.
"""

import gzip
import hashlib
import http.client
import json
import socket
import threading
import time
import zlib

import numpy as np
import pytest
import tritonclient.http as triton
from prometheus_client.parser import text_string_to_metric_families
from serve_helpers import images, write_version
from tritonclient.utils import InferenceServerException

import engine
from engine import nn
from engine.serve.http import create_app
from engine.serve.limits import Limits
from engine.serve.server import Server

RTOL, ATOL = 1e-6, 1e-7  # batched vs unbatched: float rounding, not bit for bit
LIMIT = 1 << 20          # the servers' max_request_bytes
TOKEN = "test-token-0123"


# -- models and servers -----------------------------------------------------------------


def pair_model():
    """Inputs 'a' and 'b' (4 each); outputs 'scores' (Dense(3) of a + b) and 'product' (a * b)."""
    nn.set_random_seed(1)
    a, b = nn.Input((4,), name="a"), nn.Input((4,), name="b")
    scores = nn.Dense(3, name="scores")(nn.Add()([a, b]))
    return nn.Model(inputs=[a, b], outputs=[scores, nn.Multiply(name="product")([a, b])])


def ids_model():
    """An INT32 input 'ids' (5 token ids < 10) -> 'logits' (2)."""
    nn.set_random_seed(2)
    ids = nn.Input((5,), dtype="int32", name="ids")
    return nn.Model(inputs=ids, outputs=nn.Dense(2, name="logits")(nn.Flatten()(nn.Embedding(10, 3)(ids))))


def write_half_model(path):
    """ONNX: FP16 input 'x' (3) -> 'y' = FP32 cast of x, 'z' = x + x in FP16."""
    import onnx
    from onnx import TensorProto, helper
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT16, [None, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 3])
    z = helper.make_tensor_value_info("z", TensorProto.FLOAT16, [None, 3])
    graph = helper.make_graph([helper.make_node("Cast", ["x"], ["y"], to=TensorProto.FLOAT),
                               helper.make_node("Add", ["x", "x"], ["z"])], "half", [x], [y, z])
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    root = tmp_path_factory.mktemp("http") / "models"
    paths = {"digits": write_version(root, "digits", 1, config={"version_policy": {"all": True}}),
             "digits2": write_version(root, "digits", 2, seed=5),
             "pair": write_version(root, "pair", 1, model=pair_model()),
             "ids": write_version(root, "ids", 1, model=ids_model()),
             "half": write_half_model(root / "half" / "1" / "model.onnx"),
             "spare": write_version(root, "spare", 1, seed=7)}
    return root, paths


@pytest.fixture(scope="module")
def refs(repo):
    return {k: engine.load(p) for k, p in repo[1].items()}


def _serve(root, **kw):
    kw.setdefault("limits", Limits(max_request_bytes=LIMIT, read_timeout_s=0.5))
    return Server(root, http_port=0, socket_port=None, control="explicit", **kw).start()


@pytest.fixture(scope="module")
def server(repo):
    s = _serve(repo[0])
    yield s
    s.stop(timeout=10)


@pytest.fixture(scope="module")
def token_server(repo):
    s = _serve(repo[0], token=TOKEN)
    yield s
    s.stop(timeout=10)


@pytest.fixture
def broken_server(tmp_path):
    """A repository whose model 'broken' has only a corrupt version: known, never ready."""
    root = tmp_path / "models"
    write_version(root, "digits", 1)
    (root / "broken" / "1").mkdir(parents=True)
    (root / "broken" / "1" / "model.engine").write_bytes(b"not a model at all")
    s = _serve(root)
    yield s
    s.stop(timeout=10)


@pytest.fixture(scope="module")
def client(server):
    c = triton.InferenceServerClient(server.http_address, network_timeout=30)
    yield c
    c.close()


# -- plain HTTP helpers -------------------------------------------------------------------


def call(server, method, path, body=None, headers=None, timeout=10):
    """(status, {lower-case header: value}, body bytes) of one request on a fresh connection."""
    host, port = server.http_address.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


def post_json(server, path, doc, headers=None):
    status, hdrs, body = call(server, "POST", path, json.dumps(doc).encode(), headers)
    return status, hdrs, json.loads(body) if body else None


def v2_tensor(name, a, datatype="FP32"):
    return {"name": name, "shape": list(a.shape), "datatype": datatype, "data": a.ravel().tolist()}


def expect_error(result, status, *words):
    """The answer is `status` with a JSON {"error": message} naming every one of `words`."""
    got, _, body = result
    doc = json.loads(body) if isinstance(body, bytes) else body
    assert got == status, doc
    assert set(doc) >= {"error"}, doc
    for w in words:
        assert w in doc["error"], (w, doc["error"])
    return doc["error"]


def check_digits(server, refs, rows=2, seed=11):
    """A good request answers correctly (run after each bad one: the server serves on)."""
    x = images(rows, seed=seed)
    status, _, doc = post_json(server, "/v2/models/digits/versions/1/infer", {"inputs": [v2_tensor("x", x)]})
    assert status == 200, doc
    y = np.asarray(doc["outputs"][0]["data"], np.float32).reshape(doc["outputs"][0]["shape"])
    np.testing.assert_allclose(y, refs["digits"].predict(x), rtol=RTOL, atol=ATOL)


def raw_exchange(server, data: bytes, wait: float = 5.0) -> bytes:
    """Send raw bytes and read until the server closes the connection (or `wait` passes)."""
    host, port = server.http_address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=wait) as s:
        s.sendall(data)
        got, deadline = b"", time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                chunk = s.recv(1 << 16)
            except socket.timeout:
                break
            if not chunk:
                return got
            got += chunk
        raise AssertionError(f"the server kept the connection open; got {got[:200]!r}")


def raw_status(answer: bytes) -> tuple:
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), head.decode("latin-1").lower(), body


# -- health, metadata -------------------------------------------------------------------------


def test_health_and_server_metadata(server, client):
    assert client.is_server_live() and client.is_server_ready()
    assert call(server, "GET", "/v2/health/live")[0] == 200
    status, hdrs, body = call(server, "HEAD", "/v2/health/live")
    assert (status, body) == (200, b"") and int(hdrs["content-length"]) > 0
    status, _, body = call(server, "GET", "/v2/health/ready")
    assert (status, json.loads(body)) == (200, {"ready": True})
    meta = client.get_server_metadata()
    assert meta["name"] == "engine" and meta["version"] == engine.__version__
    assert {"binary_tensor_data", "model_repository"} <= set(meta["extensions"])


def test_model_metadata_and_ready(server, client, repo):
    sha1 = hashlib.sha256(repo[1]["digits"].read_bytes()).hexdigest()
    meta = client.get_model_metadata("digits")
    assert meta["name"] == "digits" and meta["versions"] == ["1", "2"]
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 8, 8, 1]}]
    assert meta["outputs"] == [{"name": "probs", "datatype": "FP32", "shape": [-1, 10]}]
    v1 = client.get_model_metadata("digits", "1")
    assert v1["versions"] == ["1"] and v1["sha256"] == sha1
    pair = client.get_model_metadata("pair")
    assert [i["name"] for i in pair["inputs"]] == ["a", "b"]
    assert [o["name"] for o in pair["outputs"]] == ["scores", "product"]
    assert client.is_model_ready("digits") and client.is_model_ready("digits", "2")
    assert not client.is_model_ready("digits", "3") and not client.is_model_ready("nope")
    status, hdrs, _ = call(server, "GET", "/v2/models/digits/versions/1")
    assert status == 200 and hdrs["x-model-sha256"] == sha1 and hdrs["x-model-version"] == "1"
    expect_error(call(server, "GET", "/v2/models/nope"), 404, "nope")
    expect_error(call(server, "GET", "/v2/models/digits/versions/3/ready"), 404, "version 3")


# -- KServe v2 inference ------------------------------------------------------------------


@pytest.mark.parametrize("binary_in", [True, False])
@pytest.mark.parametrize("binary_out", [True, False, None])
def test_triton_client_infer(client, refs, repo, binary_in, binary_out):
    x = images(3, seed=1)
    inp = triton.InferInput("x", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=binary_in)
    outputs = None if binary_out is None else [triton.InferRequestedOutput("probs", binary_data=binary_out)]
    result = client.infer("digits", [inp], outputs=outputs, request_id="req-7")
    np.testing.assert_allclose(result.as_numpy("probs"), refs["digits2"].predict(x), rtol=RTOL, atol=ATOL)
    resp = result.get_response()
    assert resp["id"] == "req-7" and resp["model_name"] == "digits" and resp["model_version"] == "2"
    assert resp["parameters"]["sha256"] == hashlib.sha256(repo[1]["digits2"].read_bytes()).hexdigest()


def test_versions_route_to_their_own_file(client, refs):
    x = images(2, seed=2)
    for version, key in (("1", "digits"), ("2", "digits2")):
        inp = triton.InferInput("x", list(x.shape), "FP32").set_data_from_numpy(x)
        y = client.infer("digits", [inp], model_version=version).as_numpy("probs")
        np.testing.assert_allclose(y, refs[key].predict(x), rtol=RTOL, atol=ATOL)
    assert not np.allclose(refs["digits"].predict(x), refs["digits2"].predict(x))


def test_plain_json_headers_and_nested_data(server, refs, repo):
    x = images(2, seed=3)
    doc = {"id": "n1", "inputs": [{"name": "x", "shape": [2, 8, 8, 1], "datatype": "FP32", "data": x.tolist()}]}
    status, hdrs, out = post_json(server, "/v2/models/digits/versions/1/infer", doc)
    assert status == 200 and hdrs["content-type"] == "application/json"
    assert hdrs["x-model-version"] == "1"
    assert hdrs["x-model-sha256"] == hashlib.sha256(repo[1]["digits"].read_bytes()).hexdigest()
    assert out["id"] == "n1" and out["model_version"] == "1"
    (o,) = out["outputs"]
    assert (o["name"], o["datatype"], o["shape"]) == ("probs", "FP32", [2, 10])
    np.testing.assert_allclose(np.asarray(o["data"], np.float32).reshape(2, 10), refs["digits"].predict(x),
                               rtol=RTOL, atol=ATOL)


def test_multi_input_multi_output(client, server, refs):
    rng = np.random.default_rng(4)
    a, b = rng.standard_normal((3, 4), dtype=np.float32), rng.standard_normal((3, 4), dtype=np.float32)
    want = refs["pair"].run({"a": a, "b": b})
    ins = [triton.InferInput("a", [3, 4], "FP32").set_data_from_numpy(a),
           triton.InferInput("b", [3, 4], "FP32").set_data_from_numpy(b, binary_data=False)]
    result = client.infer("pair", ins)
    for name in ("scores", "product"):
        np.testing.assert_allclose(result.as_numpy(name), want[name], rtol=RTOL, atol=ATOL)
    only = client.infer("pair", ins, outputs=[triton.InferRequestedOutput("product", binary_data=False)])
    assert [o["name"] for o in only.get_response()["outputs"]] == ["product"]
    np.testing.assert_allclose(only.as_numpy("product"), want["product"], rtol=RTOL, atol=ATOL)
    # One output binary, one JSON, decoded by hand: the binary part follows the JSON header.
    doc = {"inputs": [v2_tensor("a", a), v2_tensor("b", b)],
           "outputs": [{"name": "product", "parameters": {"binary_data": True}}, {"name": "scores"}]}
    status, hdrs, body = call(server, "POST", "/v2/models/pair/infer", json.dumps(doc).encode())
    assert status == 200 and hdrs["content-type"] == "application/octet-stream"
    n = int(hdrs["inference-header-content-length"])
    head = json.loads(body[:n])
    prod, scores = head["outputs"]
    assert prod["parameters"]["binary_data_size"] == 3 * 4 * 4 == len(body) - n and "data" not in prod
    np.testing.assert_array_equal(np.frombuffer(body[n:], np.float32).reshape(3, 4), want["product"])
    np.testing.assert_allclose(np.asarray(scores["data"], np.float32).reshape(3, 3), want["scores"],
                               rtol=RTOL, atol=ATOL)


def test_fp16_as_json_floats_and_binary(client, server):
    x = np.array([[1.5, -2.25, 1024.0], [0.0009765625, 3.0, -0.5]], np.float16)  # exact in FP16, and x + x
    status, _, out = post_json(server, "/v2/models/half/infer", {"inputs": [v2_tensor("x", x, "FP16")]})
    assert status == 200, out
    by_name = {o["name"]: o for o in out["outputs"]}
    assert by_name["y"]["datatype"] == "FP32" and by_name["z"]["datatype"] == "FP16"
    np.testing.assert_array_equal(np.asarray(by_name["y"]["data"], np.float32).reshape(2, 3), x.astype(np.float32))
    np.testing.assert_array_equal(np.asarray(by_name["z"]["data"], np.float16).reshape(2, 3), x + x)
    inp = triton.InferInput("x", [2, 3], "FP16").set_data_from_numpy(x)
    result = client.infer("half", [inp])
    assert result.as_numpy("z").dtype == np.float16
    np.testing.assert_array_equal(result.as_numpy("z"), x + x)


def test_int32_inputs(client, server, refs):
    ids = np.array([[0, 1, 2, 3, 4], [9, 8, 7, 6, 5]], np.int32)
    want = refs["ids"].predict(ids)
    for binary in (True, False):
        inp = triton.InferInput("ids", [2, 5], "INT32").set_data_from_numpy(ids, binary_data=binary)
        np.testing.assert_allclose(client.infer("ids", [inp]).as_numpy("logits"), want, rtol=RTOL, atol=ATOL)
    bad = {"inputs": [{"name": "ids", "shape": [1, 5], "datatype": "INT32", "data": [0, 1, 2.5, 3, 4]}]}
    expect_error(post_json(server, "/v2/models/ids/infer", bad), 400, "'ids'", "integers")
    bad["inputs"][0]["data"] = [0, 1, 2, 3, 2 ** 40]
    expect_error(post_json(server, "/v2/models/ids/infer", bad), 400, "'ids'", "INT32")


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_compressed_request(client, refs, algorithm):
    x = images(2, seed=5)
    inp = triton.InferInput("x", list(x.shape), "FP32").set_data_from_numpy(x)
    y = client.infer("digits", [inp], model_version="1", request_compression_algorithm=algorithm).as_numpy("probs")
    np.testing.assert_allclose(y, refs["digits"].predict(x), rtol=RTOL, atol=ATOL)


def test_chunked_request_body(server, refs):
    x = images(4, seed=6)
    body = json.dumps({"inputs": [v2_tensor("x", x)]}).encode()
    pieces = [body[i:i + 1000] for i in range(0, len(body), 1000)]
    host, port = server.http_address.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request("POST", "/v2/models/digits/versions/1/infer", body=iter(pieces), encode_chunked=True)
        r = conn.getresponse()
        out = json.loads(r.read())
    finally:
        conn.close()
    assert r.status == 200, out
    np.testing.assert_allclose(np.asarray(out["outputs"][0]["data"], np.float32).reshape(4, 10),
                               refs["digits"].predict(x), rtol=RTOL, atol=ATOL)


def test_concurrent_requests_each_get_their_own_rows(server, refs):
    """64 clients at once, 3 requests each: batched on the server, every answer its own."""
    errors, host_port = [], server.http_address.rsplit(":", 1)

    def client_thread(i):
        conn = http.client.HTTPConnection(host_port[0], int(host_port[1]), timeout=30)
        try:
            for j in range(3):
                x = images(1 + (i + j) % 3, seed=1000 + 10 * i + j)
                conn.request("POST", "/v2/models/digits/versions/1/infer",
                             json.dumps({"inputs": [v2_tensor("x", x)]}).encode())
                r = conn.getresponse()
                out = json.loads(r.read())
                y = np.asarray(out["outputs"][0]["data"], np.float32).reshape(out["outputs"][0]["shape"])
                np.testing.assert_allclose(y, refs["digits"].predict(x), rtol=RTOL, atol=ATOL)
        except (AssertionError, OSError, ValueError, KeyError) as e:  # an assert in a thread would be lost
            errors.append(f"client {i}: {e!r}")
        finally:
            conn.close()

    threads = [threading.Thread(target=client_thread, args=(i,)) for i in range(64)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors[:3]


# -- TF Serving REST ----------------------------------------------------------------------


def test_tfserving_row_format(server, refs):
    x = images(3, seed=7)
    status, hdrs, out = post_json(server, "/v1/models/digits/versions/1:predict",
                                  {"signature_name": "serving_default", "instances": x.tolist()})
    assert status == 200 and hdrs["x-model-version"] == "1"
    np.testing.assert_allclose(np.asarray(out["predictions"], np.float32), refs["digits"].predict(x),
                               rtol=RTOL, atol=ATOL)
    status, _, out = post_json(server, "/v1/models/digits:predict", {"instances": x.tolist()})
    assert status == 200
    np.testing.assert_allclose(np.asarray(out["predictions"], np.float32), refs["digits2"].predict(x),
                               rtol=RTOL, atol=ATOL)


def test_tfserving_row_objects_multi_io_and_int_values(server, refs):
    a = np.arange(8, dtype=np.float32).reshape(2, 4)
    b = np.arange(8, 0, -1, dtype=np.float32).reshape(2, 4)
    rows = [{"a": [int(v) for v in a[i]], "b": [int(v) for v in b[i]]} for i in range(2)]  # ints into FP32
    status, _, out = post_json(server, "/v1/models/pair:predict", {"instances": rows})
    assert status == 200, out
    want = refs["pair"].run({"a": a, "b": b})
    assert len(out["predictions"]) == 2 and set(out["predictions"][0]) == {"scores", "product"}
    for name in ("scores", "product"):
        got = np.asarray([p[name] for p in out["predictions"]], np.float32)
        np.testing.assert_allclose(got, want[name], rtol=RTOL, atol=ATOL)


def test_tfserving_columnar_format(server, refs):
    x = images(2, seed=8)
    status, _, out = post_json(server, "/v1/models/digits/versions/2:predict", {"inputs": x.tolist()})
    assert status == 200
    np.testing.assert_allclose(np.asarray(out["outputs"], np.float32), refs["digits2"].predict(x),
                               rtol=RTOL, atol=ATOL)
    a, b = np.ones((1, 4), np.float32), np.full((1, 4), 2.0, np.float32)
    status, _, out = post_json(server, "/v1/models/pair:predict", {"inputs": {"a": a.tolist(), "b": b.tolist()}})
    want = refs["pair"].run({"a": a, "b": b})
    assert status == 200 and set(out["outputs"]) == {"scores", "product"}
    for name in ("scores", "product"):
        np.testing.assert_allclose(np.asarray(out["outputs"][name], np.float32), want[name], rtol=RTOL, atol=ATOL)


def test_tfserving_status(server):
    status, _, body = call(server, "GET", "/v1/models/digits")
    assert status == 200
    assert json.loads(body) == {"model_version_status": [
        {"version": v, "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}} for v in ("1", "2")]}
    status, _, body = call(server, "GET", "/v1/models/digits/versions/2")
    assert status == 200 and [s["version"] for s in json.loads(body)["model_version_status"]] == ["2"]
    expect_error(call(server, "GET", "/v1/models/nope"), 404, "nope")
    expect_error(call(server, "GET", "/v1/models/digits/versions/9"), 404, "version 9")


@pytest.mark.parametrize("path, doc, status, words", [
    ("/v1/models/digits:predict", {"instances": [[[[{"b64": "AAAA"}]]]]}, 400, ["b64"]),
    ("/v1/models/digits:predict", {"signature_name": "other", "instances": [[1]]}, 400, ["other", "serving_default"]),
    ("/v1/models/digits:predict", {"nothing": 1}, 400, ["instances", "inputs"]),
    ("/v1/models/digits:predict", {"instances": [1], "inputs": [1]}, 400, ["exactly one"]),
    ("/v1/models/digits:predict", {"instances": []}, 400, ["non-empty"]),
    ("/v1/models/digits:predict", {"instances": [[["x"]]]}, 400, ["'x'", "strings"]),
    ("/v1/models/digits:predict", {"instances": [[[[0.5]]]]}, 400, ["'x'", "shape"]),
    ("/v1/models/pair:predict", {"instances": [[1, 2, 3, 4]]}, 400, ["2 inputs", "'a'", "'b'"]),
    ("/v1/models/pair:predict", {"instances": [{"a": [1] * 4, "b": [1] * 4}, {"a": [1] * 4}]}, 400, ["instances[1]"]),
    ("/v1/models/pair:predict", {"inputs": {"a": [[1] * 4], "c": [[1] * 4]}}, 404, ["'c'"]),
    ("/v1/models/pair:predict", {"inputs": {"a": [[1] * 4]}}, 400, ["missing input 'b'"]),
    ("/v1/models/nope:predict", {"instances": [[1]]}, 404, ["nope"]),
    ("/v1/models/digits/versions/9:predict", {"instances": [[1]]}, 404, ["version 9"]),
    ("/v1/models/digits:classify", {"instances": [[1]]}, 404, [":classify"]),
    ("/v1/models/digits/labels/stable:predict", {"instances": [[1]]}, 404, ["labels"]),
])
def test_tfserving_errors(server, refs, path, doc, status, words):
    expect_error(post_json(server, path, doc), status, *words)
    check_digits(server, refs)


# -- repository API -----------------------------------------------------------------------


def test_repository_index_load_unload(server, client, refs):
    index = {(e["name"], e["version"]): e for e in client.get_model_repository_index()}
    assert {("digits", "1"), ("digits", "2"), ("pair", "1"), ("spare", "1")} <= set(index)
    assert all(index[k]["state"] == "READY" for k in index)
    x = images(1, seed=9)
    inp = triton.InferInput("x", [1, 8, 8, 1], "FP32").set_data_from_numpy(x)
    client.unload_model("spare")
    assert not client.is_model_ready("spare")
    index = {(e["name"], e["version"]): e for e in client.get_model_repository_index()}
    assert index[("spare", "1")]["state"] == "UNAVAILABLE" and "unload" in index[("spare", "1")]["reason"]
    status, _, ready_only = post_json(server, "/v2/repository/index", {"ready": True})
    assert status == 200 and ("spare", "1") not in {(e["name"], e["version"]) for e in ready_only}
    with pytest.raises(InferenceServerException) as e:
        client.infer("spare", [inp])
    assert e.value.status() == "503" and "spare" in e.value.message()
    client.load_model("spare")
    assert client.is_model_ready("spare")
    np.testing.assert_allclose(client.infer("spare", [inp]).as_numpy("probs"), refs["spare"].predict(x),
                               rtol=RTOL, atol=ATOL)


def test_repository_errors(server, client):
    with pytest.raises(InferenceServerException) as e:
        client.load_model("nope")
    assert e.value.status() == "404" and "nope" in e.value.message()
    with pytest.raises(InferenceServerException) as e:
        client.load_model("spare", config='{"max_batch_size": 8}')
    assert e.value.status() == "400" and "config" in e.value.message()
    with pytest.raises(InferenceServerException) as e:
        client.unload_model("nope")
    assert e.value.status() == "404"
    expect_error(call(server, "POST", "/v2/repository/index", b"[1"), 400, "not valid JSON")
    expect_error(post_json(server, "/v2/repository/index", {"ready": "yes"}), 400, "'ready'")
    expect_error(call(server, "POST", "/v2/repository/models/spare/reload", b""), 404, "no route")
    assert client.is_model_ready("spare")


def test_not_ready_model_and_server(broken_server):
    s = broken_server
    status, _, body = call(s, "GET", "/v2/health/ready")
    assert (status, json.loads(body)["ready"]) == (400, False)
    error = expect_error(call(s, "GET", "/v2/models/broken/ready"), 400, "broken")
    assert "version 1 failed" in error
    x = images(1)
    expect_error(post_json(s, "/v2/models/broken/infer", {"inputs": [v2_tensor("x", x)]}), 503, "broken", "failed")
    (entry,) = [e for e in post_json(s, "/v2/repository/index", {})[2] if e["name"] == "broken"]
    assert entry["state"] == "FAILED" and entry["reason"]
    st = json.loads(call(s, "GET", "/v1/models/broken")[2])["model_version_status"]
    assert st[0]["state"] == "END" and st[0]["status"]["error_code"] == "UNKNOWN" and st[0]["status"]["error_message"]
    assert post_json(s, "/v2/models/digits/infer", {"inputs": [v2_tensor("x", x)]})[0] == 200


# -- metrics, auth ------------------------------------------------------------------------


def _samples(server, headers=None):
    status, hdrs, body = call(server, "GET", "/metrics", headers=headers)
    assert status == 200 and hdrs["content-type"].startswith("text/plain")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(body.decode()) for s in fam.samples}


def test_metrics_count_requests_and_latency(server, refs):
    labels = (("model", "pair"), ("version", "1"))
    before = _samples(server)
    a = np.ones((1, 4), np.float32)
    for _ in range(3):
        assert post_json(server, "/v2/models/pair/infer", {"inputs": [v2_tensor("a", a), v2_tensor("b", a)]})[0] == 200
    assert post_json(server, "/v2/models/pair/infer", {"inputs": [v2_tensor("a", a)]})[0] == 400
    assert call(server, "POST", "/v2/models/pair/infer", b"{oops")[0] == 400
    after = _samples(server)

    def delta(name, lab=labels):
        key = (name, tuple(sorted(lab)))
        return after.get(key, 0) - before.get(key, 0)
    assert delta("engine_requests_total") == 3  # accepted; the two refused are failures
    assert delta("engine_request_seconds_count") == 3
    assert delta("engine_request_queue_seconds_count") == delta("engine_request_compute_seconds_count") == 3
    assert delta("engine_batch_size_sum") == 3
    assert after[("engine_requests_in_flight", tuple(sorted(labels)))] == 0
    assert delta("engine_request_seconds_bucket", labels + (("le", "+Inf"),)) == 3
    assert delta("engine_request_failures_total", labels + (("reason", "RequestError"),)) == 2
    assert after[("engine_model_state", tuple(sorted(labels + (("engine_model_state", "ready"),))))] == 1


def test_auth(token_server, refs):
    s = token_server
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    assert call(s, "GET", "/v2/health/live")[0] == 200 and call(s, "GET", "/v2/health/ready")[0] == 200
    x = images(1, seed=12)
    doc = {"inputs": [v2_tensor("x", x)]}
    for headers in (None, {"Authorization": "Bearer wrong-token-000"}, {"Authorization": f"Basic {TOKEN}"},
                    {"Authorization": TOKEN}):
        for method, path, body in (("POST", "/v2/models/digits/infer", json.dumps(doc).encode()),
                                   ("GET", "/metrics", None), ("GET", "/v2/models/digits", None),
                                   ("POST", "/v1/models/digits:predict", b'{"instances": [1]}'),
                                   ("POST", "/v2/repository/index", b""), ("GET", "/v2/no/such/route", None)):
            status, hdrs, out = call(s, method, path, body, headers)
            expect_error((status, hdrs, out), 401, "Bearer")
            assert hdrs["www-authenticate"] == "Bearer"
    c = triton.InferenceServerClient(s.http_address)
    try:
        assert c.is_server_live() and c.is_server_ready()
        with pytest.raises(InferenceServerException) as e:
            c.get_model_metadata("digits")
        assert e.value.status() == "401"
        inp = triton.InferInput("x", [1, 8, 8, 1], "FP32").set_data_from_numpy(x)
        y = c.infer("digits", [inp], model_version="1", headers=bearer).as_numpy("probs")
        np.testing.assert_allclose(y, refs["digits"].predict(x), rtol=RTOL, atol=ATOL)
        assert c.get_model_metadata("digits", headers=bearer)["name"] == "digits"
    finally:
        c.close()
    assert _samples(s, bearer)[("engine_requests_total", (("model", "digits"), ("version", "1")))] >= 1


# -- bad requests ----------------------------------------------------------------------------


def _binary_body(x, size=None, extra=b"", header_extra=None):
    head = {"inputs": [{"name": "x", "shape": list(x.shape), "datatype": "FP32",
                        "parameters": {"binary_data_size": x.nbytes if size is None else size}}]}
    head.update(header_extra or {})
    h = json.dumps(head).encode()
    return h + x.tobytes() + extra, {"Inference-Header-Content-Length": str(len(h))}


X1 = images(1, seed=13)
GOOD = v2_tensor("x", X1)


def _with(**changes):
    return {"inputs": [{**GOOD, **changes}]}


@pytest.mark.parametrize("path, body, headers, status, words", [
    ("/v2/models/digits/infer", b"{not json", None, 400, ["not valid JSON"]),
    ("/v2/models/digits/infer", b"[1, 2]", None, 400, ["JSON object"]),
    ("/v2/models/digits/infer", b"{}", None, 400, ["'inputs'"]),
    ("/v2/models/digits/infer", {"inputs": [GOOD, GOOD]}, None, 400, ["'x'", "twice"]),
    ("/v2/models/digits/infer", _with(datatype="FP64"), None, 400, ["'x'", "FP64", "FP32"]),
    ("/v2/models/digits/infer", _with(datatype="BYTES", data=["a"]), None, 400, ["BYTES", "not supported"]),
    ("/v2/models/digits/infer", _with(datatype="FP8"), None, 400, ["'FP8'"]),
    ("/v2/models/digits/infer", _with(shape=[8, 8, 1]), None, 400, ["'x'", "[8, 8, 1]", "does not match"]),
    ("/v2/models/digits/infer", _with(shape=[1, 8, 8, 1, 1]), None, 400, ["'x'", "shape"]),
    ("/v2/models/digits/infer", _with(shape=[1, 8, 8, 2]), None, 400, ["'x'", "64 values for shape [1, 8, 8, 2]"]),
    ("/v2/models/digits/infer", _with(shape=[1, 8, -8, 1]), None, 400, ["'x'", "'shape'"]),
    ("/v2/models/digits/infer", _with(shape=[2, 8, 8, 1], data=np.zeros(127).tolist()), None, 400,
     ["127 values", "128"]),
    ("/v2/models/digits/infer", _with(shape=[65, 8, 8, 1], data=np.zeros(65 * 64).tolist()), None, 400,
     ["batch of 65", "1 to 64"]),
    ("/v2/models/digits/infer", _with(data=["a"] * 64), None, 400, ["'x'", "strings"]),
    ("/v2/models/digits/infer", _with(data=[None] * 64), None, 400, ["'x'", "nulls"]),
    ("/v2/models/digits/infer", _with(data=[[1, 2], [3]]), None, 400, ["'x'", "rectangular"]),
    ("/v2/models/digits/infer", _with(data=[1e39] * 64), None, 400, ["'x'", "range of FP32"]),
    ("/v2/models/digits/infer", _with(data=None), None, 400, ["'x'", "'data'"]),
    ("/v2/models/digits/infer", {"inputs": [{**GOOD, "name": "y"}]}, None, 404, ["'y'", "['x']"]),
    ("/v2/models/pair/infer", {"inputs": [v2_tensor("a", np.ones((1, 4)))]}, None, 400, ["missing input 'b'"]),
    ("/v2/models/digits/infer", {"inputs": [GOOD], "outputs": [{"name": "nope"}]}, None, 404, ["'nope'", "probs"]),
    ("/v2/models/digits/infer", {"inputs": [GOOD], "outputs": [{"name": "probs", "parameters": {"classification": 2}}]},
     None, 400, ["classification"]),
    ("/v2/models/digits/infer", {"inputs": [GOOD], "id": 5}, None, 400, ["'id'"]),
    ("/v2/models/digits/infer", {"inputs": [GOOD], "parameters": {"binary_data_output": "yes"}}, None, 400,
     ["binary_data_output"]),
    ("/v2/models/nope/infer", {"inputs": [GOOD]}, None, 404, ["unknown model 'nope'"]),
    ("/v2/models/digits/versions/7/infer", {"inputs": [GOOD]}, None, 404, ["version 7"]),
    ("/v2/models/digits/versions/one/infer", {"inputs": [GOOD]}, None, 400, ["positive integer", "'one'"]),
    # the binary tensor extension: sizes must add up
    ("/v2/models/digits/infer", *_binary_body(X1, size=100), 400, ["'x'", "binary_data_size is 100", "256"]),
    ("/v2/models/digits/infer", *_binary_body(X1, extra=b"\0" * 8), 400, ["256 bytes", "264"]),
    ("/v2/models/digits/infer", _binary_body(X1)[0], None, 400, ["not valid JSON", "Inference-Header-Content-Length"]),
    ("/v2/models/digits/infer", _binary_body(X1)[0][:-4], _binary_body(X1)[1], 400, ["'x'", "past the end"]),
    ("/v2/models/digits/infer", _binary_body(X1)[0], {"Inference-Header-Content-Length": "999999"}, 400,
     ["Inference-Header-Content-Length is 999999"]),
    ("/v2/models/digits/infer", _binary_body(X1)[0], {"Inference-Header-Content-Length": "abc"}, 400,
     ["inference-header-content-length", "integer"]),
    ("/v2/models/digits/infer", *_binary_body(X1, header_extra={"inputs": [{
        "name": "x", "shape": [1, 8, 8, 1], "datatype": "FP32", "parameters": {"shared_memory_region": "r"}}]}),
     400, ["shared memory"]),
    # routes and methods
    ("/v2/nothing", b"", None, 404, ["no route /v2/nothing"]),
    ("/v2/models/digits/explain", b"", None, 404, ["no route"]),
    ("/v2/health/live", b"", None, 405, ["POST", "GET"]),
])
def test_bad_requests(server, refs, path, body, headers, status, words):
    if isinstance(body, dict):
        body = json.dumps(body).encode()
    expect_error(call(server, "POST", path, body, headers), status, *words)
    check_digits(server, refs)


def test_wrong_method_says_which(server, refs):
    status, hdrs, body = call(server, "GET", "/v2/models/digits/infer")
    expect_error((status, hdrs, body), 405, "GET", "POST")
    assert hdrs["allow"] == "POST"
    expect_error(call(server, "DELETE", "/metrics"), 405, "DELETE")
    check_digits(server, refs)


def test_unsupported_and_broken_content_encoding(server, refs):
    body = json.dumps({"inputs": [GOOD]}).encode()
    expect_error(call(server, "POST", "/v2/models/digits/infer", body, {"Content-Encoding": "br"}), 415, "'br'")
    expect_error(call(server, "POST", "/v2/models/digits/infer", body, {"Content-Encoding": "gzip"}), 400,
                 "gzip", "decompress")
    truncated = gzip.compress(body)[:-20]
    expect_error(call(server, "POST", "/v2/models/digits/infer", truncated, {"Content-Encoding": "gzip"}), 400,
                 "truncated")
    check_digits(server, refs)


def test_compressed_body_over_the_limit_when_inflated(server, refs):
    bomb = zlib.compress(b" " * (LIMIT + 1000), 9)  # a few KiB that inflate past the limit
    assert len(bomb) < LIMIT // 100
    expect_error(call(server, "POST", "/v2/models/digits/infer", bomb, {"Content-Encoding": "deflate"}), 413,
                 "inflates", str(LIMIT))
    check_digits(server, refs)


def test_body_over_limit_refused_from_content_length(server, refs):
    head = (f"POST /v2/models/digits/infer HTTP/1.1\r\nHost: x\r\nContent-Length: {LIMIT + 1}\r\n\r\n").encode()
    status, head_text, body = raw_status(raw_exchange(server, head))  # nothing of the body sent: refused first
    assert status == 413 and "connection: close" in head_text
    assert str(LIMIT + 1) in json.loads(body)["error"] and str(LIMIT) in json.loads(body)["error"]
    check_digits(server, refs)


@pytest.mark.parametrize("times_limit", [1, 3])
def test_chunked_body_over_limit_counted_while_reading(server, refs, times_limit):
    # The client sends the whole body before it reads: the server drains what is over the limit
    # before it answers, so the client gets the 413 rather than a connection reset.
    chunk = b"x" * 65536
    n = times_limit * LIMIT // len(chunk) + 1
    data = b"POST /v2/models/digits/infer HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    data += (b"%x\r\n" % len(chunk) + chunk + b"\r\n") * n
    status, head_text, body = raw_status(raw_exchange(server, data, wait=10))
    assert status == 413 and "connection: close" in head_text and "limit" in json.loads(body)["error"]
    check_digits(server, refs)


def test_stalled_body_times_out_and_others_are_served(server, refs):
    host, port = server.http_address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(b"POST /v2/models/digits/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{\"inputs\"")
        t0 = time.monotonic()
        check_digits(server, refs)  # served while the stalled body waits
        got = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            got += chunk
        waited = time.monotonic() - t0
    status, head_text, body = raw_status(got)
    assert status == 408 and "connection: close" in head_text
    assert "0.5 s" in json.loads(body)["error"]
    assert 0.3 < waited < 3.0
    check_digits(server, refs)


def test_compute_failure_is_500_and_isolated(server, refs, monkeypatch):
    sv = server.manager.resolve("pair")

    def fail(feeds):
        raise RuntimeError("kernel exploded")
    monkeypatch.setattr(sv.batcher, "_run", fail)
    a = np.ones((1, 4), np.float32)
    doc = {"inputs": [v2_tensor("a", a), v2_tensor("b", a)]}
    expect_error(post_json(server, "/v2/models/pair/infer", doc), 500, "'pair'", "kernel exploded")
    check_digits(server, refs)  # other models unaffected
    monkeypatch.undo()
    status, _, out = post_json(server, "/v2/models/pair/infer", doc)
    assert status == 200
    np.testing.assert_allclose(np.asarray(out["outputs"][1]["data"], np.float32), [1, 1, 1, 1])


def test_lifespan_messages_are_answered(server):
    app = create_app(server.manager)
    sent, inbox = [], [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]

    async def receive():
        return inbox.pop(0)

    async def send(msg):
        sent.append(msg["type"])
    import asyncio
    asyncio.run(app({"type": "lifespan"}, receive, send))
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
