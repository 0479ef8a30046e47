"""Language models in the model repository: what a version folder must hold, the config keys,
and unload / hot reload draining the scheduler (generations in flight finish)."""

from __future__ import annotations

import json
import os
import threading

import pytest

pytest.importorskip("tokenizers")

from lm_fakes import FakeLoader, greedy_reference, write_lm_version  # noqa: E402

from engine.lm.sampling import SamplingParams  # noqa: E402
from engine.serve.config import ConfigError, parse_config  # noqa: E402
from engine.serve.manager import ModelManager  # noqa: E402
from engine.serve.repository import VersionFiles, scan_model  # noqa: E402
from engine.serve.tensors import UnavailableError  # noqa: E402


def test_hf_folder_needs_its_config_json(tmp_path):
    folder = tmp_path / "hf" / "1"
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"weights")
    assert "config.json" in scan_model(tmp_path / "hf").versions[1]
    (folder / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    files = scan_model(tmp_path / "hf").versions[1]
    assert isinstance(files, VersionFiles) and files.path.name == "model.safetensors"
    before = files.fingerprint
    (folder / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"], "x": 1}))
    assert scan_model(tmp_path / "hf").versions[1].fingerprint != before  # an edited config.json reloads


def test_hf_folder_is_loaded_as_the_folder(tmp_path):
    folder = tmp_path / "hf" / "1"
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"weights")
    (folder / "config.json").write_text("{}")
    loader = FakeLoader()
    m = ModelManager(tmp_path, control="explicit", lm_loader=lambda p, **kw: loader(p / "model.safetensors", **kw))
    m.start()
    try:
        assert m.resolve("hf").scheduler is not None
    finally:
        m.close()


@pytest.mark.parametrize("key", ["max_sequences", "max_tokens_per_step", "max_context"])
def test_language_model_config_keys(key):
    assert getattr(parse_config({key: 7}), key) == 7
    with pytest.raises(ConfigError, match=key):
        parse_config({key: 0})
    with pytest.raises(ConfigError, match=key):
        parse_config({key: "8"})


class Collect:
    def __init__(self):
        self.events, self.done = [], threading.Event()

    def __call__(self, e):
        self.events.append(e)
        if e.finish_reason:
            self.done.set()


def test_unload_drains_running_generations(tmp_path):
    write_lm_version(tmp_path, "smol")
    loader = FakeLoader(step_delay=0.005)
    m = ModelManager(tmp_path, control="explicit", lm_loader=loader)
    m.start()
    try:
        sv = m.resolve("smol")
        sink = Collect()
        sv.scheduler.submit([321, 432], SamplingParams(temperature=0), 40, (), sink)
        m.unload_model("smol")  # returns once drained
        assert sink.done.is_set() and sink.events[-1].finish_reason == "length"
        ids = [e.token_id for e in sink.events if e.token_id is not None]
        assert ids == greedy_reference(loader.models[0].decoder, [321, 432], 40)
        assert loader.models[0].decoder.open_sequences() == 0
        with pytest.raises(UnavailableError, match="unloaded"):
            m.resolve("smol")
    finally:
        m.close()


def test_hot_reload_serves_new_requests_on_the_new_file_while_the_old_finishes(tmp_path):
    path = tmp_path / "smol" / "1" / "model.gguf"
    write_lm_version(tmp_path, "smol")
    loader = FakeLoader(step_delay=0.005)
    m = ModelManager(tmp_path, control="explicit", lm_loader=loader)
    m.start()
    try:
        old = m.resolve("smol")
        sink = Collect()
        old.scheduler.submit([111], SamplingParams(temperature=0), 40, (), sink)
        path.write_bytes(b"GGUF placeholder, new bytes")
        os.utime(path, ns=(1, 1))
        m.sync()  # loads the new file, publishes it, drains the old one
        new = m.resolve("smol")
        assert new is not old and new.sha256 != old.sha256 and len(loader.models) == 2
        assert sink.done.is_set() and sink.events[-1].finish_reason == "length"
        assert loader.models[0].decoder.open_sequences() == 0
    finally:
        m.close()


def test_a_model_that_cannot_run_fails_its_warm_up_and_the_old_version_serves(tmp_path):
    write_lm_version(tmp_path, "smol", 1)
    loader = FakeLoader()
    m = ModelManager(tmp_path, control="explicit", lm_loader=loader)
    m.start()
    try:
        old = m.resolve("smol")
        broken = FakeLoader()

        def poisoned(path, **kw):  # its decoder refuses every forward with the BOS token
            lm = broken(path, **kw)
            lm.decoder.poison = frozenset({lm.tokenizer.bos_id})
            return lm
        m.lm_loader = poisoned
        path = tmp_path / "smol" / "1" / "model.gguf"
        path.write_bytes(b"GGUF placeholder, broken bytes")
        os.utime(path, ns=(2, 2))
        m.sync()
        assert m.resolve("smol") is old
        (st,) = m.status("smol")
        assert "warm-up failed" in st.reason and "poisoned" in st.reason
        assert broken.models[0].decoder.open_sequences() == 0
    finally:
        m.close()
