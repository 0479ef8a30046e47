"""The model manager: repository layout and config.json, version policies, request checks,
batched results vs unbatched predict, hot reload under load with no failed request, failed
loads keeping the old version, the repository API."""

import json
import threading
import time

import numpy as np
import pytest

import engine
from engine.serve.config import ConfigError, parse_config, read_config
from engine.serve.manager import ModelManager
from engine.serve.repository import sha256_file
from engine.serve.tensors import NotFoundError, RequestError, UnavailableError
from serve_helpers import images, remove_version, write_version


def infer_sync(mgr, name, x, version=None, inline=False, timeout=10):
    box, ev = {}, threading.Event()

    def done(sv, outputs, error):
        box.update(sv=sv, outputs=outputs, error=error)
        ev.set()
    mgr.infer(name, version, {"x": x}, done, inline=inline)
    assert ev.wait(timeout), "request never completed"
    if box["error"] is not None:
        raise box["error"]
    return box["sv"], box["outputs"]["probs"]


@pytest.fixture
def repo(tmp_path):
    return tmp_path / "models"


def started(repo, **kw):
    kw.setdefault("control", "explicit")
    mgr = ModelManager(repo, **kw)
    mgr.start()
    return mgr


# -- config.json -----------------------------------------------------------------------

def test_config_defaults_and_full_form(tmp_path):
    assert read_config(tmp_path).max_batch_size == 64
    cfg = parse_config({"max_batch_size": 16, "dynamic_batching": {"preferred_batch_sizes": [8, 4],
                                                                    "max_queue_delay_us": 100},
                        "instances": 2, "threads_per_instance": 1, "version_policy": {"latest": {"num_versions": 2}},
                        "inputs": [{"name": "x", "shape": [-1, 8, 8, 1], "datatype": "FP32"}],
                        "warmup": {"batch_sizes": [1, 4]}})
    assert cfg.preferred_batch_sizes == (4, 8) and cfg.max_queue_delay_us == 100
    assert cfg.version_policy == ("latest", 2) and cfg.selects([1, 2, 3]) == [2, 3]
    assert parse_config({"version_policy": {"all": True}}).selects([3, 1]) == [1, 3]
    assert parse_config({"version_policy": {"specific": [1, 3]}}).selects([1, 2, 3]) == [1, 3]


@pytest.mark.parametrize("raw, words", [
    ({"max_batch_sise": 4}, "unknown key"),
    ({"max_batch_size": -1}, "max_batch_size"),
    ({"max_batch_size": "8"}, "max_batch_size"),
    ({"instances": 0}, "instances"),
    ({"version_policy": {"newest": 1}}, "version_policy"),
    ({"dynamic_batching": {"max_queue_delay": 5}}, "unknown key"),
    ({"max_batch_size": 4, "dynamic_batching": {"preferred_batch_sizes": [8]}}, "exceed"),
    ({"inputs": [{"name": "x", "datatype": "FLOAT"}]}, "datatype"),
    ({"inputs": [{"name": "x", "shape": [1, "a"]}]}, "shape"),
    ({"model_file": "../other/model.onnx"}, "model_file"),
    ({"warmup": 3}, "warmup"),
])
def test_config_errors_name_the_key(raw, words):
    with pytest.raises(ConfigError, match=words):
        parse_config(raw, "models/m/config.json")


def test_unreadable_config_is_reported_and_keeps_serving(repo):
    write_version(repo, "digits", 1)
    mgr = started(repo)
    (repo / "digits" / "config.json").write_text("{not json")
    mgr.sync()
    assert any(r["state"] == "FAILED" and "config.json" in r["reason"] for r in mgr.index())
    infer_sync(mgr, "digits", images(1))  # the loaded version still serves
    mgr.close()


# -- loading and requests --------------------------------------------------------------

def test_serves_like_predict_and_names_version_and_sha(repo):
    path = write_version(repo, "digits", 1)
    mgr = started(repo)
    x = images(3)
    sv, y = infer_sync(mgr, "digits", x)
    np.testing.assert_allclose(y, engine.load(path).predict(x), rtol=1e-6, atol=1e-7)
    assert (sv.name, sv.version, sv.sha256) == ("digits", 1, sha256_file(path))
    meta = sv.metadata()
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 8, 8, 1]}]
    assert meta["outputs"] == [{"name": "probs", "datatype": "FP32", "shape": [-1, 10]}]
    mgr.close()


@pytest.mark.parametrize("inline", [False, True])
def test_64_concurrent_clients_get_their_own_rows(repo, inline):
    path = write_version(repo, "digits", 1)
    mgr = started(repo)
    ref_model = engine.load(path)
    xs = [images(1 + i % 4, seed=i) for i in range(64)]
    out, errs = [None] * 64, []
    start = threading.Barrier(64)

    def client(i):
        start.wait()
        try:
            for _ in range(5):
                out[i] = infer_sync(mgr, "digits", xs[i], inline=inline)[1]
        except Exception as e:  # surfaced below
            errs.append(e)
    threads = [threading.Thread(target=client, args=(i,)) for i in range(64)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errs
    for i, x in enumerate(xs):
        np.testing.assert_allclose(out[i], ref_model.predict(x), rtol=1e-6, atol=1e-7)
    snap = mgr.metrics.for_version("digits", 1).snapshot()
    assert snap["requests"] == snap["completed"] == 64 * 5 and snap["in_flight"] == 0
    assert snap["batch_size"][1] == 64 * 5  # the batch sizes add up to every request
    mgr.close()


def test_bad_requests_are_refused_alone(repo):
    write_version(repo, "digits", 1, config={"max_batch_size": 8})
    mgr = started(repo)
    cases = [
        (("nope", None, {"x": images(1)}), NotFoundError, "unknown model"),
        (("digits", 7, {"x": images(1)}), NotFoundError, "no version 7"),
        (("digits", None, {"y": images(1)}), NotFoundError, "no input 'y'"),
        (("digits", None, {}), RequestError, "missing input 'x'"),
        (("digits", None, {"x": images(1).astype(np.float64)}), RequestError, "FP64"),
        (("digits", None, {"x": np.zeros((1, 8, 7, 1), np.float32)}), RequestError, "shape"),
        (("digits", None, {"x": np.zeros((8, 8, 1), np.float32)}), RequestError, "shape"),
        (("digits", None, {"x": images(9)}), RequestError, "batch of 9"),
    ]
    for args, exc, words in cases:
        with pytest.raises(exc, match=words):
            mgr.infer(*args, done=lambda *a: pytest.fail("a refused request must not complete"))
    infer_sync(mgr, "digits", images(2))
    fails = mgr.metrics.failures.labels("digits", "1", "RequestError")._value.get()
    assert fails == 5
    mgr.close()


def test_fixed_batch_model_is_served_unbatched(repo):
    from engine import nn
    nn.set_random_seed(1)
    m = nn.Sequential([nn.Input((4,), batch_size=1, name="x"), nn.Dense(3, name="probs")])
    path = write_version(repo, "fixed", 1, model=m)
    mgr = started(repo)
    sv = mgr.resolve("fixed")
    assert sv.max_batch_size == 0 and sv.inputs[0].shape == (1, 4)
    x = np.ones((1, 4), np.float32)
    _, y = infer_sync(mgr, "fixed", x)
    np.testing.assert_allclose(y, engine.load(path).predict(x), rtol=1e-6)
    mgr.close()


def test_config_aliases_and_checks_the_signature(repo):
    write_version(repo, "digits", 1, config={"inputs": [{"name": "image", "shape": [-1, 8, 8, 1]}]})
    mgr = started(repo)
    sv = mgr.resolve("digits")
    assert [s.name for s in sv.inputs] == ["image"]
    done = threading.Event()
    mgr.infer("digits", None, {"image": images(1)}, lambda *a: done.set())
    assert done.wait(5)
    (repo / "digits" / "config.json").write_text(json.dumps({"inputs": [{"name": "x", "shape": [-1, 9, 8, 1]}]}))
    with pytest.raises(engine.EngineError, match=r"shape \[-1, 9, 8, 1\]"):
        mgr.load_model("digits")
    st = mgr.status("digits")[0]  # the version loaded before keeps serving, and the reason is shown
    assert st.state == "ready" and "reload failed" in st.reason
    assert mgr.is_ready("digits")
    mgr.close()


# -- versions and hot reload -----------------------------------------------------------

def test_version_policy_latest_and_explicit_version(repo):
    write_version(repo, "digits", 1, seed=1)
    write_version(repo, "digits", 3, seed=3, config={"version_policy": {"latest": 2}})
    write_version(repo, "digits", 2, seed=2)
    mgr = started(repo)
    assert [s.version for s in mgr.ready_versions("digits")] == [2, 3]
    assert infer_sync(mgr, "digits", images(1))[0].version == 3
    assert infer_sync(mgr, "digits", images(1), version=2)[0].version == 2
    with pytest.raises(NotFoundError, match="version 1"):
        mgr.resolve("digits", 1)
    mgr.close()


def test_hot_reload_under_load_fails_no_request(repo):
    write_version(repo, "digits", 1, seed=1)
    mgr = started(repo, control="poll", poll_interval=0.05)
    stop, errors, served = threading.Event(), [], []
    x = images(1)

    def client(inline):
        while not stop.is_set():
            try:
                sv, _ = infer_sync(mgr, "digits", x, inline=inline)
                served.append(sv.version)
            except Exception as e:
                errors.append(e)

    threads = [threading.Thread(target=client, args=(i % 2 == 0,)) for i in range(8)]
    for t in threads:
        t.start()
    time.sleep(0.2)
    path2 = write_version(repo, "digits", 2, seed=2)
    _wait_for(lambda: mgr.is_ready("digits", 2))
    remove_version(repo, "digits", 1)
    _wait_for(lambda: not mgr.is_ready("digits", 1))
    time.sleep(0.2)
    stop.set()
    for t in threads:
        t.join(10)
    mgr.close()
    assert not errors, errors[:3]
    assert served and served[-1] == 2 and 1 in served
    assert [r["state"] for r in mgr.index() if r["version"] == "1"] == ["UNAVAILABLE"]
    st = [s for s in mgr.status("digits") if s.version == 2][0]
    assert st.sha256 == sha256_file(path2)


def test_corrupt_new_version_keeps_old_serving(repo):
    write_version(repo, "digits", 1)
    mgr = started(repo)
    bad = repo / "digits" / "2"
    bad.mkdir()
    (bad / "model.engine").write_bytes(b"\x00" * 100)
    mgr.sync()
    assert infer_sync(mgr, "digits", images(1))[0].version == 1
    st = {s.version: s for s in mgr.status("digits")}
    assert st[2].state == "failed" and st[2].reason
    mgr.close()


def test_replaced_file_in_same_version_is_swapped(repo):
    write_version(repo, "digits", 1, seed=1)
    mgr = started(repo)
    old_sha = mgr.resolve("digits").sha256
    time.sleep(0.01)  # a new mtime
    path = write_version(repo, "digits", 1, seed=5)
    mgr.sync()
    sv, y = infer_sync(mgr, "digits", images(1))
    assert sv.sha256 == sha256_file(path) != old_sha
    np.testing.assert_allclose(y, engine.load(path).predict(images(1)), rtol=1e-6)
    # the same version replaced by a corrupt file: the loaded bytes keep serving
    (repo / "digits" / "1" / "model.engine").write_bytes(b"garbage")
    mgr.sync()
    assert infer_sync(mgr, "digits", images(1))[0].sha256 == sv.sha256
    mgr.close()


def test_unload_and_load_through_the_api(repo):
    write_version(repo, "digits", 1)
    mgr = started(repo, control="poll", poll_interval=0.05)
    mgr.unload_model("digits")
    time.sleep(0.2)  # the poller must not bring it back
    with pytest.raises(UnavailableError):
        mgr.resolve("digits")
    mgr.load_model("digits")
    assert mgr.is_ready("digits")
    with pytest.raises(NotFoundError):
        mgr.load_model("../etc")
    mgr.close()


def test_close_answers_in_flight_requests(repo):
    write_version(repo, "digits", 1)
    mgr = started(repo)
    answered = []
    for i in range(200):
        mgr.infer("digits", None, {"x": images(1)}, lambda sv, o, e: answered.append(e))
    mgr.close()
    assert len(answered) == 200 and all(e is None for e in answered)
    with pytest.raises(UnavailableError, match="stopping"):
        mgr.resolve("digits")


def _wait_for(cond, timeout=20.0):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_pth_state_dict_served_in_its_architecture(repo):
    torch = pytest.importorskip("torch")
    from engine import nn
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3))
    folder = repo / "tnet" / "1"
    folder.mkdir(parents=True)
    torch.save(module.state_dict(), folder / "model.pth")
    nn.Sequential([nn.Input((6,), name="x"), nn.Dense(5, activation="relu"), nn.Dense(3, name="probs")]).save(
        folder / "net.keras")
    (repo / "tnet" / "config.json").write_text(json.dumps({"architecture": "net.keras"}))
    mgr = started(repo)
    x = np.random.default_rng(0).random((4, 6), dtype=np.float32)
    _, y = infer_sync(mgr, "tnet", x)
    np.testing.assert_allclose(y, module(torch.from_numpy(x)).detach().numpy(), rtol=1e-5, atol=1e-6)
    mgr.close()


def test_pth_without_architecture_is_reported(repo):
    folder = repo / "tnet" / "1"
    folder.mkdir(parents=True)
    (folder / "model.pth").write_bytes(b"PK\x03\x04")
    mgr = started(repo)
    assert "architecture" in mgr.status("tnet")[0].reason
    mgr.close()


def test_onnx_symbolic_batch_dim_is_batched(repo):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(6, 3), torch.nn.Softmax(-1))
    folder = repo / "lin" / "1"
    folder.mkdir(parents=True)
    torch.onnx.export(module, (torch.zeros(2, 6),), str(folder / "model.onnx"), input_names=["x"],
                      output_names=["probs"], dynamic_axes={"x": {0: "batch"}, "probs": {0: "batch"}}, dynamo=False)
    mgr = started(repo)
    sv = mgr.resolve("lin")
    assert sv.max_batch_size == 64 and sv.inputs[0].shape == (-1, 6)
    x = np.random.default_rng(0).random((3, 6), dtype=np.float32)
    _, y = infer_sync(mgr, "lin", x)
    np.testing.assert_allclose(y, module(torch.from_numpy(x)).detach().numpy(), rtol=1e-5, atol=1e-6)
    mgr.close()
