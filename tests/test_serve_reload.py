"""Hot reload through the real fronts: HTTP and socket clients keep calling while version 2 is
added and version 1 removed; no request fails, and every answer is the named version's."""

import http.client
import json
import threading
import time

import numpy as np

import engine
from engine.serve import Client, Server
from engine.serve.repository import sha256_file
from serve_helpers import images, remove_version, write_version


def test_reload_under_load_through_http_and_socket(tmp_path):
    repo = tmp_path / "models"
    paths = {1: write_version(repo, "digits", 1, seed=1)}
    x = images(2, seed=3)
    refs = {1: engine.load(paths[1]).predict(x)}
    shas = {1: sha256_file(paths[1])}
    body = json.dumps({"inputs": [{"name": "x", "shape": [2, 8, 8, 1], "datatype": "FP32",
                                   "data": x.ravel().tolist()}]}).encode()
    answers, failures, stop = [], [], threading.Event()

    with Server(repo, http_port=0, socket_port=0, control="poll", poll_interval=0.05) as s:
        host, port = s.http_address.split(":")

        def http_client():
            conn = http.client.HTTPConnection(host, int(port), timeout=10)
            while not stop.is_set():
                try:
                    conn.request("POST", "/v2/models/digits/infer", body=body)
                    r = conn.getresponse()
                    data = r.read()
                    if r.status != 200:
                        failures.append((r.status, data[:200]))
                        continue
                    reply = json.loads(data)
                    y = np.array(reply["outputs"][0]["data"], np.float32).reshape(2, 10)
                    answers.append((int(reply["model_version"]), reply["parameters"]["sha256"], y))
                except Exception as e:  # counted, then the test fails on it
                    failures.append(repr(e))
            conn.close()

        def socket_client():
            with Client(s.socket_address, timeout=10) as c:
                while not stop.is_set():
                    try:
                        r = c.infer("digits", x)
                        answers.append((r.version, r.sha256, r.outputs["probs"]))
                    except Exception as e:
                        failures.append(repr(e))

        threads = [threading.Thread(target=f) for f in (http_client, http_client, socket_client, socket_client)]
        for t in threads:
            t.start()
        try:
            time.sleep(0.3)
            paths[2] = write_version(repo, "digits", 2, seed=2)
            refs[2], shas[2] = engine.load(paths[2]).predict(x), sha256_file(paths[2])
            _wait_for(lambda: s.manager.is_ready("digits", 2))
            time.sleep(0.2)
            remove_version(repo, "digits", 1)
            _wait_for(lambda: not s.manager.is_ready("digits", 1))
            time.sleep(0.3)
        finally:
            stop.set()
            for t in threads:
                t.join(20)

    assert not failures, failures[:5]
    served = [v for v, _, _ in answers]
    assert 1 in served and 2 in served and served[-1] == 2
    for v, sha, y in answers:  # each answer is the version it names, bytes and numbers
        assert sha == shas[v]
        np.testing.assert_allclose(y, refs[v], rtol=1e-5, atol=1e-6)


def _wait_for(cond, timeout=20.0):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)
