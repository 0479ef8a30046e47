"""Generation over the socket protocol (GENERATE -> TOKEN... -> END, CANCEL; docs/protocol.md)
with engine.serve.client.Client.generate, against FakeLanguageModel (tests/lm_fakes.py)."""

from __future__ import annotations

import socket
import time

import numpy as np
import pytest

pytest.importorskip("tokenizers")

from lm_fakes import FakeLoader, greedy_reference, write_lm_version  # noqa: E402
from serve_helpers import images, write_version  # noqa: E402

from engine.serve import protocol as P  # noqa: E402
from engine.serve.client import Client, ServerError  # noqa: E402
from engine.serve.server import Server  # noqa: E402


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    repo = tmp_path_factory.mktemp("repo")
    write_lm_version(repo, "smol", 1, {"max_context": 128})
    write_version(repo, "digits", 1)
    loader = FakeLoader(step_delay=0.003)
    with Server(repo, http_port=None, socket_port=0, control="explicit", lm_loader=loader, drain_timeout=10) as s:
        with Client(s.socket_address, timeout=20) as c:
            yield s, loader.models[0], c


def expected(lm, ids, n):
    return lm.tokenizer.decode(greedy_reference(lm.decoder, ids, n, lm.eos_ids))


def wait_idle(sv, lm, seconds=10):
    end = time.monotonic() + seconds
    while (sv.scheduler.running or lm.decoder.kv_usage()[0]) and time.monotonic() < end:
        time.sleep(0.01)
    return sv.scheduler.running == 0 and lm.decoder.kv_usage()[0] == 0 and lm.decoder.open_sequences() == 0


def test_generate_streams_tokens_then_end(served):
    _, lm, c = served
    with c.generate("smol", "Once upon a time", max_tokens=9, temperature=0) as g:
        pieces = list(g)
    ids = lm.tokenizer.encode("Once upon a time")
    ref = greedy_reference(lm.decoder, ids, 9, lm.eos_ids)
    assert [p.token_id for p in pieces if p.token_id is not None] == ref
    assert "".join(p.text for p in pieces) == g.text == lm.tokenizer.decode(ref)
    assert g.finish_reason == "length" and (g.model, g.version) == ("smol", 1)
    assert g.usage == {"prompt_tokens": len(ids), "completion_tokens": 9, "total_tokens": len(ids) + 9}


def test_generate_chat_and_token_prompt(served):
    _, lm, c = served
    messages = [{"role": "user", "content": "Hi there"}]
    g = c.generate("smol", messages=messages, max_tokens=5, temperature=0)
    text = "".join(p.text for p in g)
    ids = lm.tokenizer.encode(lm.chat_template.render(messages, add_generation_prompt=True), add_special_tokens=False)
    assert text == expected(lm, ids, 5)
    g2 = c.generate("smol", [500, 600, 700], max_tokens=4, temperature=0, stop=["never"])
    assert "".join(p.text for p in g2) == expected(lm, [500, 600, 700], 4)


def test_tensor_requests_share_the_server(served):
    _, _, c = served
    y = c.predict("digits", images(2))
    assert y.shape == (2, 10) and np.allclose(y.sum(1), 1, atol=1e-5)


def test_hanging_up_cancels_and_frees_the_cache(served):
    s, lm, c = served
    sv = s.manager.resolve("smol")
    before = cancelled(s)
    g = c.generate("smol", "Keep going", max_tokens=100, temperature=0)
    it = iter(g)
    next(it), next(it)
    assert sv.scheduler.running == 1
    g.close()
    assert wait_idle(sv, lm)
    assert cancelled(s) == before + 1  # cut short, not run to its 100 tokens


def cancelled(s):
    return s.metrics.for_language_model("smol", 1).snapshot()["finished"].get("cancelled", 0)


def test_cancel_frame_ends_with_cancelled(served):
    s, lm, c = served
    g = c.generate("smol", [900], max_tokens=100, temperature=0)
    it = iter(g)
    next(it)
    g.cancel()
    rest = list(it)
    assert g.finish_reason == "cancelled" and len(rest) < 99
    assert wait_idle(s.manager.resolve("smol"), lm)


def test_errors_come_back_as_error_frames(served):
    _, _, c = served
    with pytest.raises(ServerError) as e:
        list(c.generate("smol", [300] * 120, max_tokens=20))
    assert e.value.code == 400 and "128" in e.value.message and "120" in e.value.message
    with pytest.raises(ServerError) as e:
        list(c.generate("nope", "hi"))
    assert e.value.code == 404
    with pytest.raises(ServerError) as e:
        list(c.generate("digits", "hi"))
    assert e.value.code == 400 and "not a language model" in e.value.message
    with pytest.raises(ServerError) as e:
        list(c.generate("smol", "hi", temperature=-1))
    assert e.value.code == 400 and "temperature" in e.value.message
    with pytest.raises(ServerError) as e:
        c.predict("smol", images(1))
    assert e.value.code == 400 and "GENERATE" in e.value.message


def test_raw_frames(served):
    """The frames as docs/protocol.md lays them out, without the client."""
    s, lm, _ = served
    host, port = s.socket_address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=20) as sock:
        sock.sendall(P.encode_generate(7, {"model": "smol", "prompt": [450, 451], "max_tokens": 3,
                                           "temperature": 0}))
        reader, frames = P.FrameReader(), []
        while not frames or frames[-1].kind != P.END:
            frames += reader.feed(sock.recv(65536))
    assert [f.kind for f in frames] == [P.TOKEN] * 3 + [P.END] and {f.request_id for f in frames} == {7}
    assert [P.decode_token(f)[0] for f in frames[:3]] == greedy_reference(lm.decoder, [450, 451], 3)
    assert P.decode_end(frames[-1])["finish_reason"] == "length"
