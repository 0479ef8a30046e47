"""The dashboard (`/`) in a real headless browser: Debian's chromium + chromedriver through
Selenium (no browser download). Expected values come from the API, the model file on disk and
numpy, never from the dashboard's own code. Screenshots go to test-artifacts/dashboard/."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import struct
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
pytestmark = pytest.mark.skipif(not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)),
                                reason="needs Debian's chromium and chromium-driver packages")
webdriver = pytest.importorskip("selenium.webdriver")
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException, TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from engine.serve import Server
from engine.serve.demo import write_demo

EPOCHS = 6
TOKEN = "dash-token-1234"
SHOTS = Path(__file__).resolve().parents[1] / "test-artifacts" / "dashboard"


# -- fixtures ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    repo = tmp_path_factory.mktemp("dashrepo")
    write_demo(repo, epochs=EPOCHS, log=lambda *a: None)
    return repo


@pytest.fixture(scope="module")
def server(repo):
    with Server(repo, http_port=0, socket_port=None, control="explicit") as s:
        yield s


@pytest.fixture(scope="module")
def browser():
    os.environ.setdefault("SE_OFFLINE", "1")  # never let Selenium Manager fetch a browser
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1440,1100",
              "--disable-dev-shm-usage"):
        opts.add_argument(a)
    driver = webdriver.Chrome(options=opts, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(20)
    SHOTS.mkdir(parents=True, exist_ok=True)
    try:
        yield driver
    finally:
        driver.quit()


def _http(address: str, method: str, path: str, body=None, token=None) -> tuple:
    host, port = address.rsplit(":", 1)
    c = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        c.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
        r = c.getresponse()
        return r.status, dict(r.getheaders()), r.read()
    finally:
        c.close()


def _infer(address: str, x: np.ndarray, token=None) -> np.ndarray:
    """The reference: a direct v2 infer through the API."""
    body = {"inputs": [{"name": "x", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}]}
    status, _, data = _http(address, "POST", "/v2/models/digits/infer", body, token)
    assert status == 200, data
    out = json.loads(data)["outputs"][0]
    return np.asarray(out["data"], np.float32).reshape(out["shape"])


def _open(driver, server, query="?poll=250"):
    driver.get(f"http://{server.http_address}/{query}")
    return _wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, '[data-model="digits"] [data-sha256]'))


def _wait(driver, cond, timeout=15.0):
    # the cards are redrawn on every model poll: an element found a moment ago may be gone
    return WebDriverWait(driver, timeout, poll_frequency=0.05,
                         ignored_exceptions=(NoSuchElementException, StaleElementReferenceException)).until(cond)


def _png_gray(a: np.ndarray) -> bytes:
    """An 8-bit grayscale PNG written by hand (zlib), with no colour chunks to reinterpret."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    h, w = a.shape
    raw = b"".join(b"\0" + a[y].tobytes() for y in range(h))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)) +
            chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


# -- routes without a browser -------------------------------------------------------------

def test_static_files_types_and_no_traversal(server):
    a = server.http_address
    for path, ctype in (("/", "text/html"), ("/dashboard/app.js", "text/javascript"),
                        ("/dashboard/style.css", "text/css"), ("/dashboard/vendor/uPlot.iife.min.js", "text/javascript"),
                        ("/dashboard/vendor/uPlot.min.css", "text/css")):
        status, headers, body = _http(a, "GET", path)
        assert status == 200 and headers["content-type"].startswith(ctype), (path, status, headers)
        assert "default-src 'self'" in headers["content-security-policy"] and body
    assert b"cdn" not in _http(a, "GET", "/")[2].lower()  # everything is served from here
    for path in ("/dashboard/../dashboard.py", "/dashboard/%2e%2e/dashboard.py", "/dashboard/..%2fhttp.py",
                 "/dashboard//etc/passwd", "/dashboard/vendor/../../dashboard.py", "/dashboard/api/nope"):
        status, _, body = _http(a, "GET", path)
        assert status == 404 and b"error" in body, (path, status)
    assert _http(a, "POST", "/", {})[0] == 405


def test_api_models_matches_repository_and_v2(server, repo):
    status, _, body = _http(server.http_address, "GET", "/dashboard/api/models")
    assert status == 200
    (m,) = json.loads(body)["models"]
    (v,) = m["versions"]
    path = repo / "digits" / "1" / "model.engine"
    assert v["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest() and v["size"] == path.stat().st_size
    assert v["state"] == "READY" and v["reason"] == ""
    meta = json.loads(_http(server.http_address, "GET", "/v2/models/digits")[2])
    assert v["inputs"] == meta["inputs"] and v["outputs"] == meta["outputs"]
    assert m["config"] == json.loads((repo / "digits" / "config.json").read_text())
    assert set(v["history"]) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert all(len(h) == EPOCHS for h in v["history"].values())


# -- the page -------------------------------------------------------------------------------

def test_page_renders_model_card(server, repo, browser):
    _open(browser, server)
    card = browser.find_element(By.CSS_SELECTOR, '[data-model="digits"]')
    path = repo / "digits" / "1" / "model.engine"
    sha = card.find_element(By.CSS_SELECTOR, "[data-sha256]")
    assert sha.text == hashlib.sha256(path.read_bytes()).hexdigest()
    assert card.find_element(By.CSS_SELECTOR, "[data-size]").get_attribute("data-size") == str(path.stat().st_size)
    assert card.find_element(By.CSS_SELECTOR, "[data-state]").get_attribute("data-state") == "READY"
    io = [r.text.split() for r in card.find_elements(By.CSS_SELECTOR, "tr[data-io]")]
    assert io == [["input", "x", "FP32", "[-1,8,8,1]"], ["output", "probs", "FP32", "[-1,10]"]]
    _wait(browser, lambda d: card.find_element(By.CSS_SELECTOR, '[data-chart="rate"] canvas'))
    browser.save_screenshot(str(SHOTS / "page.png"))
    _open(browser, server, "?poll=250&theme=dark")
    browser.save_screenshot(str(SHOTS / "page-dark.png"))


def test_training_curves_drawn(server, browser):
    _open(browser, server)
    for metric in ("loss", "accuracy"):
        plot = _wait(browser, lambda d, m=metric: d.find_element(By.CSS_SELECTOR, f'[data-curve="{m}"]'))
        assert plot.get_attribute("data-points") == str(EPOCHS)
        _wait(browser, lambda d, p=plot: p.find_elements(By.CSS_SELECTOR, "canvas"))
        labels = {e.text for e in plot.find_elements(By.CSS_SELECTOR, ".u-legend .u-label")}
        assert {metric, f"val_{metric}"} <= labels


def test_charts_follow_a_bounded_load(server, repo, browser):
    _open(browser, server)
    js_rate = ("const L = window.engineDashboard.cards.get('digits').live.rate; return [L.data[0], L.data[1]];")
    _wait(browser, lambda d: len(d.execute_script(js_rate)[0]) >= 2)  # two polls before the load
    t_before, _ = browser.execute_script(js_rate)
    n_threads, per_thread = 2, 150
    x = np.asarray(json.loads((repo / "digits" / "request.json").read_text())["inputs"][0]["data"], np.float32)
    body = json.dumps({"inputs": [{"name": "x", "shape": [1, 8, 8, 1], "datatype": "FP32", "data": x.tolist()}]})
    errors = []

    def load():
        host, port = server.http_address.rsplit(":", 1)
        c = http.client.HTTPConnection(host, int(port), timeout=10)
        try:
            t0 = time.perf_counter()
            for i in range(per_thread):  # paced over ~2 s
                c.request("POST", "/v2/models/digits/infer", body=body, headers={"Content-Type": "application/json"})
                r = c.getresponse()
                r.read()
                if r.status != 200:
                    errors.append(r.status)
                time.sleep(max(0.0, t0 + 2.0 * (i + 1) / per_thread - time.perf_counter()))
        finally:
            c.close()

    threads = [threading.Thread(target=load) for _ in range(n_threads)]
    for t in threads:
        t.start()
    mid = None
    for t in threads:
        t.join(timeout=30)
        if mid is None:
            mid = browser.execute_script(js_rate)
    assert not errors and not any(t.is_alive() for t in threads)
    n = n_threads * per_thread

    def integral(d):  # the rates shown, times their intervals: the requests counted since the first point
        t, rate = browser.execute_script(js_rate)
        return sum(r * (t[i] - t[i - 1]) for i, r in enumerate(rate) if i > 0 and t[i - 1] >= t_before[-1])

    try:
        _wait(browser, lambda d: abs(integral(d) - n) < 1e-6 * n)
    except TimeoutException:
        raise AssertionError(f"the page's rates add up to {integral(browser)} requests, not {n}: "
                             f"{browser.execute_script(js_rate)}") from None
    t, rate = browser.execute_script(js_rate)
    assert len(t) > len(t_before) and max(rate) > 20  # points were added and the rate rose while the load ran
    card = browser.find_element(By.CSS_SELECTOR, '[data-model="digits"]')
    lat = browser.execute_script("return window.engineDashboard.cards.get('digits').live.latency.data;")
    compute_p50 = [v for v in lat[3] if v is not None]
    assert compute_p50 and all(0 < v < 5000 for v in compute_p50)  # ms, from the compute histogram deltas
    batch = [v for v in browser.execute_script(
        "return window.engineDashboard.cards.get('digits').live.batch.data[1];") if v is not None]
    assert batch and all(1 <= v <= 64 for v in batch)
    # the chart's point count and its data, read in one script so that no poll lands between them
    shown, held = browser.execute_script(
        "const L = window.engineDashboard.cards.get('digits').live.rate;"
        "return [arguments[0].querySelector('[data-chart=\"rate\"]').dataset.points, L.data[0].length];", card)
    assert int(shown) == held >= len(t)
    browser.save_screenshot(str(SHOTS / "load.png"))

    # errors: requests the model refuses (wrong shape) are counted by the server and charted
    js_err = "const L = window.engineDashboard.cards.get('digits').live.errors; return [L.data[0], L.data[1]];"
    t_mark = browser.execute_script(js_err)[0][-1]
    bad = {"inputs": [{"name": "x", "shape": [1, 8, 8, 2], "datatype": "FP32", "data": [0.0] * 128}]}
    for _ in range(5):
        assert _http(server.http_address, "POST", "/v2/models/digits/infer", bad)[0] == 400

    def errors_shown(d):
        t, e = d.execute_script(js_err)
        return sum(r * (t[i] - t[i - 1]) for i, r in enumerate(e) if i > 0 and t[i - 1] >= t_mark)

    _wait(browser, lambda d: abs(errors_shown(d) - 5) < 1e-6)


def test_try_it_json_matches_api(server, repo, browser):
    _open(browser, server)
    x = np.asarray(json.loads((repo / "digits" / "request.json").read_text())["inputs"][0]["data"],
                   np.float32).reshape(1, 8, 8, 1)
    area = browser.find_element(By.CSS_SELECTOR, '[data-model="digits"] textarea[data-input="x"]')
    assert np.array_equal(np.asarray(json.loads(area.get_attribute("value"))), np.zeros((1, 8, 8, 1)))  # prefilled
    browser.execute_script("arguments[0].value = arguments[1];", area, json.dumps(x.tolist()))
    browser.find_element(By.CSS_SELECTOR, '[data-model="digits"] [data-action="infer"]').click()
    out = _wait(browser, lambda d: d.find_element(By.CSS_SELECTOR, 'pre[data-output="probs"]'))
    shown = np.asarray(json.loads(out.text), np.float32)
    expected = _infer(server.http_address, x)
    np.testing.assert_allclose(shown, expected.ravel(), rtol=1e-6, atol=0)
    top = browser.find_element(By.CSS_SELECTOR, 'ol.top-classes li').get_attribute("data-class")
    assert int(top) == int(np.argmax(expected))
    browser.save_screenshot(str(SHOTS / "try-json.png"))


def test_try_it_image_upload(server, browser, tmp_path):
    _open(browser, server)
    img = (np.random.default_rng(3).random((8, 8)) * 255).astype(np.uint8)
    img[2:6, 3:5] = 255  # some structure, so the classes differ from a blank image's
    png = tmp_path / "digit.png"
    png.write_bytes(_png_gray(img))
    browser.find_element(By.CSS_SELECTOR, '[data-model="digits"] input[data-image="x"]').send_keys(str(png))
    out = _wait(browser, lambda d: d.find_element(By.CSS_SELECTOR, 'pre[data-output="probs"]'))
    shown = np.asarray(json.loads(out.text), np.float32)
    expected = _infer(server.http_address, (img / 255.0).astype(np.float32).reshape(1, 8, 8, 1))
    np.testing.assert_allclose(shown, expected.ravel(), rtol=1e-4, atol=1e-6)
    browser.save_screenshot(str(SHOTS / "try-image.png"))


def test_unload_and_load_buttons_change_state(server, browser):
    _open(browser, server)

    def state(d):
        return d.find_element(By.CSS_SELECTOR, '[data-model="digits"] [data-state]').get_attribute("data-state")

    browser.find_element(By.CSS_SELECTOR, '[data-model="digits"] [data-action="unload"]').click()
    _wait(browser, lambda d: state(d) == "UNAVAILABLE")
    assert [s.state for s in server.manager.status("digits")] == ["unavailable"]
    _wait(browser, lambda d: "unloaded by request" in d.find_element(By.CSS_SELECTOR, '[data-model="digits"] .reason').text)
    browser.save_screenshot(str(SHOTS / "unloaded.png"))
    browser.find_element(By.CSS_SELECTOR, '[data-model="digits"] [data-action="load"]').click()
    _wait(browser, lambda d: state(d) == "READY")
    assert [s.state for s in server.manager.status("digits")] == ["ready"]


# -- auth -------------------------------------------------------------------------------------

def test_token_is_enforced_and_prompted(repo, browser):
    with Server(repo, http_port=0, socket_port=None, control="explicit", token=TOKEN) as s:
        a = s.http_address
        for path in ("/dashboard/api/models", "/dashboard/api/stats"):
            assert _http(a, "GET", path)[0] == 401
            assert _http(a, "GET", path, token="wrong-token-000")[0] == 401
            assert _http(a, "GET", path, token=TOKEN)[0] == 200
        assert _http(a, "GET", "/")[0] == 200 and _http(a, "GET", "/dashboard/app.js")[0] == 200
        assert _http(a, "POST", "/v2/repository/models/digits/unload", {})[0] == 401

        browser.get(f"http://{a}/?poll=250")
        form = _wait(browser, lambda d: d.find_element(By.ID, "auth") if d.find_element(By.ID, "auth").is_displayed()
                     else None)
        assert not browser.find_elements(By.CSS_SELECTOR, "[data-model]")
        browser.save_screenshot(str(SHOTS / "auth-prompt.png"))
        browser.find_element(By.ID, "token").send_keys("wrong-token-000")
        form.submit()
        _wait(browser, lambda d: d.find_element(By.ID, "auth-error").is_displayed())
        browser.find_element(By.ID, "token").send_keys(TOKEN)
        browser.find_element(By.ID, "token-ok").click()
        _wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, '[data-model="digits"] [data-state="READY"]'))
        assert browser.execute_script("return sessionStorage.getItem('engine-serve-token')") == TOKEN
        # buttons go through the token too
        browser.find_element(By.CSS_SELECTOR, '[data-model="digits"] [data-action="unload"]').click()
        _wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, '[data-model="digits"] [data-state="UNAVAILABLE"]'))
        assert [st.state for st in s.manager.status("digits")] == ["unavailable"]


def test_models_never_loaded_are_listed_for_loading(tmp_path):
    """control="none" loads nothing: the page still lists the repository's models, not loaded."""
    import urllib.request
    from engine.serve import Server
    from serve_helpers import write_version
    repo = tmp_path / "models"
    write_version(repo, "digits", 1)
    with Server(repo, http_port=0, socket_port=None, control="none") as s:
        with urllib.request.urlopen(f"http://{s.http_address}/dashboard/api/models", timeout=10) as r:
            models = json.loads(r.read())["models"]
        assert [(m["name"], [(v["version"], v["state"], v["reason"]) for v in m["versions"]]) for m in models] == \
            [("digits", [(1, "UNAVAILABLE", "not loaded")])]
        s.manager.load_model("digits")
        with urllib.request.urlopen(f"http://{s.http_address}/dashboard/api/models", timeout=10) as r:
            models = json.loads(r.read())["models"]
        assert models[0]["versions"][0]["state"] == "READY"
