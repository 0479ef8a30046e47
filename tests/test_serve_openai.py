"""The OpenAI-compatible routes, driven by the `openai` client against a Server on loopback whose
language model is tests/lm_fakes.py's FakeLanguageModel (SmolLM2's real tokenizer and chat
template, a deterministic fake decoder): the expected text of a greedy run is known exactly."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

openai = pytest.importorskip("openai")
pytest.importorskip("uvicorn")
pytest.importorskip("tokenizers")

from lm_fakes import FakeLoader, greedy_reference, write_lm_version  # noqa: E402
from serve_helpers import write_version  # noqa: E402

from engine.serve.server import Server  # noqa: E402

MAX_CONTEXT = 160
MAX_SEQUENCES = 2


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    repo = tmp_path_factory.mktemp("repo")
    write_lm_version(repo, "smol", 1, {"max_sequences": MAX_SEQUENCES, "max_tokens_per_step": 32,
                                       "max_context": MAX_CONTEXT})
    write_version(repo, "digits", 1)
    loader = FakeLoader()
    with Server(repo, http_port=0, socket_port=None, control="explicit", lm_loader=loader,
                drain_timeout=10) as s:
        yield s, loader.models[0], loader


@pytest.fixture(scope="module")
def client(served):
    s, _, _ = served
    with openai.OpenAI(base_url=f"http://{s.http_address}/v1", api_key="unused", timeout=30, max_retries=0) as c:
        yield c


def chat_ids(lm, messages):
    return lm.tokenizer.encode(lm.chat_template.render(messages, add_generation_prompt=True), add_special_tokens=False)


def expected_text(lm, ids, n):
    return lm.tokenizer.decode(greedy_reference(lm.decoder, ids, n, lm.eos_ids))


def test_config_keys_reach_the_loader(served):
    s, lm, loader = served
    assert loader.kwargs[0] == {"max_sequences": MAX_SEQUENCES, "max_context": MAX_CONTEXT}
    sv = s.manager.resolve("smol")
    assert sv.scheduler.max_sequences == MAX_SEQUENCES and sv.scheduler.max_tokens_per_step == 32


def test_chat_completion(served, client):
    _, lm, _ = served
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2+2?"}]
    r = client.chat.completions.create(model="smol", messages=messages, max_tokens=9, temperature=0)
    ids = chat_ids(lm, messages)
    assert r.object == "chat.completion" and r.model == "smol" and r.id.startswith("chatcmpl-")
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content == expected_text(lm, ids, 9)
    assert r.choices[0].finish_reason == "length"
    assert (r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens) == (len(ids), 9, len(ids) + 9)


def test_completion_text_and_token_prompts(served, client):
    _, lm, _ = served
    r = client.completions.create(model="smol", prompt="Once upon a time", max_tokens=7, temperature=0,
                                  extra_body={"some_future_field": 1})  # unknown fields are ignored
    ids = lm.tokenizer.encode("Once upon a time")
    assert r.object == "text_completion" and r.choices[0].text == expected_text(lm, ids, 7)
    assert r.choices[0].finish_reason == "length" and r.usage.prompt_tokens == len(ids)
    r2 = client.completions.create(model="smol", prompt=[400, 500, 600], max_tokens=5, temperature=0)
    assert r2.choices[0].text == expected_text(lm, [400, 500, 600], 5)
    r3 = client.completions.create(model="smol", prompt="Hello", temperature=0)  # OpenAI's default: 16 tokens
    assert r3.usage.completion_tokens == 16


def test_stop_string(served, client):
    _, lm, _ = served
    ids = lm.tokenizer.encode("abc")
    full = expected_text(lm, ids, 12)
    stop = full[5:8]
    r = client.completions.create(model="smol", prompt="abc", max_tokens=12, temperature=0, stop=[stop])
    assert r.choices[0].text == full[:full.index(stop)] and r.choices[0].finish_reason == "stop"


def test_chat_stream_with_usage(served, client):
    _, lm, _ = served
    messages = [{"role": "user", "content": "Stream please"}]
    chunks = list(client.chat.completions.create(model="smol", messages=messages, max_tokens=11, temperature=0,
                                                 stream=True, stream_options={"include_usage": True}))
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    ids = chat_ids(lm, messages)
    assert text == expected_text(lm, ids, 11)
    finals = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finals == ["length"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 11
    assert chunks[-1].usage.prompt_tokens == len(ids)


def test_completion_stream(served, client):
    _, lm, _ = served
    chunks = list(client.completions.create(model="smol", prompt=[321, 654], max_tokens=6, temperature=0,
                                            stream=True))
    assert "".join(c.choices[0].text for c in chunks) == expected_text(lm, [321, 654], 6)
    assert chunks[-1].choices[0].finish_reason == "length" and chunks[-1].usage is None


def test_models(served, client):
    s, _, _ = served
    assert [m.id for m in client.models.list().data] == ["smol"]  # the tensor model is not listed
    m = client.models.retrieve("smol")
    assert (m.id, m.object) == ("smol", "model")
    with urllib.request.urlopen(f"http://{s.http_address}/v1/models/digits", timeout=10) as r:
        assert "model_version_status" in json.loads(r.read())  # TF Serving's status route still answers
    with pytest.raises(openai.NotFoundError):  # not a language model: TF Serving's 404 answers
        client.models.retrieve("nope")


def test_eight_concurrent_streams_equal_sequential_greedy_runs(served, client):
    _, lm, _ = served
    prompts = [f"Story number {i}: the" + " very" * i for i in range(8)]

    def run(p):
        return "".join(c.choices[0].text for c in client.completions.create(
            model="smol", prompt=p, max_tokens=10, temperature=0, stream=True))
    sequential = [run(p) for p in prompts]
    with ThreadPoolExecutor(8) as pool:
        concurrent = list(pool.map(run, prompts))
    assert concurrent == sequential
    assert sequential == [expected_text(lm, lm.tokenizer.encode(p), 10) for p in prompts]
    # over max_sequences the rest waited (never refused): no step ever held more than MAX_SEQUENCES
    assert max(len(call) for call in lm.decoder.calls) == MAX_SEQUENCES


def test_requests_over_max_sequences_wait_and_complete(served, client):
    s, lm, _ = served
    sv = s.manager.resolve("smol")
    seen_waiting = []

    def watch():
        end = time.monotonic() + 10
        while time.monotonic() < end and not seen_waiting:
            if sv.scheduler.waiting:
                seen_waiting.append(sv.scheduler.waiting)
            time.sleep(0.001)
    t = threading.Thread(target=watch)
    t.start()
    with ThreadPoolExecutor(5) as pool:
        rs = list(pool.map(lambda i: client.completions.create(
            model="smol", prompt=[700 + i], max_tokens=30, temperature=0), range(5)))
    t.join()
    assert seen_waiting and all(r.choices[0].finish_reason == "length" for r in rs)
    assert [r.choices[0].text for r in rs] == [expected_text(lm, [700 + i], 30) for i in range(5)]


def test_disconnect_cancels_and_frees_the_cache(served, client):
    s, lm, _ = served
    sv = s.manager.resolve("smol")
    cancelled = cancelled_count(s)
    stream = client.completions.create(model="smol", prompt="Go on forever", max_tokens=140, temperature=0,
                                       stream=True)
    it = iter(stream)
    next(it), next(it)
    assert sv.scheduler.running == 1 and lm.decoder.kv_usage()[0] > 0
    stream.close()  # the client hangs up mid-stream
    deadline = time.monotonic() + 10
    while (sv.scheduler.running or lm.decoder.kv_usage()[0]) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sv.scheduler.running == 0 and lm.decoder.kv_usage()[0] == 0 and lm.decoder.open_sequences() == 0
    assert cancelled_count(s) == cancelled + 1
    with urllib.request.urlopen(f"http://{s.http_address}/metrics", timeout=10) as r:
        text = r.read().decode()
    assert 'engine_lm_sequences_running{model="smol",version="1"} 0.0' in text
    assert 'engine_lm_kv_blocks_used{model="smol",version="1"} 0.0' in text
    assert 'engine_lm_generations_finished_total{model="smol",reason="cancelled",version="1"}' in text


def test_disconnect_cancels_a_whole_response_request_too(served):
    s, lm, _ = served
    sv = s.manager.resolve("smol")
    cancelled = cancelled_count(s)
    body = json.dumps({"model": "smol", "prompt": [800], "max_tokens": 140}).encode()
    host, port = s.http_address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"POST /v1/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                     b"content-length: %d\r\n\r\n" % len(body) + body)
        deadline = time.monotonic() + 10
        while not sv.scheduler.running and time.monotonic() < deadline:
            time.sleep(0.005)
        assert sv.scheduler.running == 1
    deadline = time.monotonic() + 10  # the client hung up before its answer
    while (sv.scheduler.running or lm.decoder.kv_usage()[0]) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sv.scheduler.running == 0 and lm.decoder.kv_usage()[0] == 0
    assert cancelled_count(s) == cancelled + 1  # cut short, not run to its 140 tokens


def cancelled_count(s):
    return s.metrics.for_language_model("smol", 1).snapshot()["finished"].get("cancelled", 0)


def test_over_long_prompt_is_refused_with_the_numbers(served, client):
    _, lm, _ = served
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model="smol", prompt=[300] * 150, max_tokens=20)
    msg = str(e.value)
    assert "160" in msg and "150" in msg and "20" in msg
    assert e.value.body["code"] == "context_length_exceeded"
    long_chat = [{"role": "user", "content": "word " * 200}]
    with pytest.raises(openai.BadRequestError, match="context is 160 tokens"):
        client.chat.completions.create(model="smol", messages=long_chat)


@pytest.mark.parametrize("kw, param", [
    ({"temperature": 7}, "temperature"), ({"top_p": 0}, "top_p"), ({"n": 2}, "n"), ({"max_tokens": 0}, "max_tokens"),
    ({"stop": [1, 2]}, "stop"), ({"top_k": -3}, "top_k"), ({"logprobs": True}, "logprobs"),
    ({"messages": []}, "messages"), ({"messages": [{"content": "no role"}]}, "messages[0]"),
])
def test_bad_params_are_400_naming_the_field(served, client, kw, param):
    body = {"model": "smol", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3, **kw}
    with pytest.raises(openai.BadRequestError) as e:
        client.post("/chat/completions", body=body, cast_to=object)
    err = e.value.body
    assert e.value.status_code == 400 and err["param"] == param and param.split("[")[0] in err["message"]
    assert err["type"] == "invalid_request_error"


def test_unknown_model_is_404(client):
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "hi"}])
    assert e.value.body["code"] == "model_not_found"


def test_tensor_routes_refuse_a_language_model(served):
    s, _, _ = served
    req = urllib.request.Request(f"http://{s.http_address}/v2/models/smol/infer", method="POST",
                                 data=b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}]}',
                                 headers={"content-type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=10)
    assert e.value.code == 400 and b"/v1/chat/completions" in e.value.read()
    with urllib.request.urlopen(f"http://{s.http_address}/v2/models/smol", timeout=10) as r:
        meta = json.loads(r.read())
    assert meta["platform"] == "gguf" and meta["language_model"]["max_context"] == MAX_CONTEXT
    with urllib.request.urlopen(f"http://{s.http_address}/dashboard/api/models", timeout=10) as r:
        assert "smol" in r.read().decode()


def test_metrics_count_tokens_and_latencies(served, client):
    s, _, _ = served
    before = s.metrics.for_language_model("smol", 1).snapshot()
    r = client.completions.create(model="smol", prompt=[1234, 99], max_tokens=4, temperature=0)
    after = s.metrics.for_language_model("smol", 1).snapshot()
    assert after["generated_tokens"] - before["generated_tokens"] == r.usage.completion_tokens == 4
    assert after["prompt_tokens"] - before["prompt_tokens"] == 2
    assert sum(after["ttft"][0]) - sum(before["ttft"][0]) == 1
    assert sum(after["itl"][0]) - sum(before["itl"][0]) == 3
    with urllib.request.urlopen(f"http://{s.http_address}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    for name in ("engine_lm_time_to_first_token_seconds_bucket", "engine_lm_inter_token_seconds_count",
                 "engine_lm_generated_tokens_total", "engine_lm_prompt_tokens_total",
                 "engine_lm_sequences_waiting", "engine_lm_kv_blocks_total"):
        assert name in text


def test_token_is_required_in_openai_shape(tmp_path):
    write_lm_version(tmp_path, "smol")
    with Server(tmp_path, http_port=0, socket_port=None, control="explicit", lm_loader=FakeLoader(),
                token="s3cret-token-123") as s:
        with openai.OpenAI(base_url=f"http://{s.http_address}/v1", api_key="wrong", timeout=10, max_retries=0) as c:
            with pytest.raises(openai.AuthenticationError) as e:
                c.models.list()
            assert e.value.body["code"] == "invalid_api_key"
        with openai.OpenAI(base_url=f"http://{s.http_address}/v1", api_key="s3cret-token-123", timeout=10,
                           max_retries=0) as c:
            assert [m.id for m in c.models.list().data] == ["smol"]


# -- engine/serve/openai.py alone: parsing and encoding, no server --------------------------

def test_parse_fields_and_defaults():
    from engine.serve import openai as oa
    r = oa.parse_chat({"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": "a"},
                                                                            {"type": "text", "text": "b"}]}],
                       "max_completion_tokens": 5, "max_tokens": 9, "temperature": 0, "top_k": -1, "seed": -1,
                       "stop": "x", "stream": True, "stream_options": {"include_usage": True}, "user": "ignored"})
    assert r.messages == [{"role": "user", "content": "ab"}] and r.max_tokens == 5
    assert r.sampling == {"temperature": 0.0, "seed": 2**64 - 1} and r.stop == ("x",)
    assert r.stream and r.include_usage and r.chat
    c = oa.parse_completion({"model": "m", "prompt": ["only one"]})
    assert c.prompt == "only one" and c.max_tokens is None and c.sampling == {} and not c.stream
    assert oa.parse_completion({"model": "m", "prompt": [[1, 2]]}).prompt == [1, 2]


@pytest.mark.parametrize("body, param", [
    ({"prompt": ["a", "b"]}, "prompt"), ({"prompt": []}, "prompt"), ({"prompt": [1, True]}, "prompt"),
    ({"prompt": "x", "echo": True}, "echo"), ({"prompt": "x", "best_of": 3}, "best_of"),
    ({"prompt": "x", "temperature": "hot"}, "temperature"), ({"prompt": "x", "seed": 1.5}, "seed"),
    ({"prompt": "x", "stop": ["s"] * 17}, "stop"), ({"prompt": "x", "stream": "yes"}, "stream"),
    ({"prompt": "x", "stream_options": {"include_usage": True}}, "stream_options"),
    ({"prompt": "x", "model": ""}, "model"), ({"prompt": "x", "repetition_penalty": 0}, "repetition_penalty"),
])
def test_parse_refuses(body, param):
    from engine.serve import openai as oa
    with pytest.raises(oa.OpenAIError) as e:
        oa.parse_completion({"model": "m", **body})
    assert e.value.param == param and e.value.status == 400


def test_sse_framing_and_error_shape():
    from engine.serve import openai as oa
    assert oa.sse({"a": "é"}) == 'data: {"a":"é"}\n\n'.encode()
    assert oa.SSE_DONE == b"data: [DONE]\n\n"
    assert oa.error_object("no", 404, "model", "model_not_found") == {
        "error": {"message": "no", "type": "invalid_request_error", "param": "model", "code": "model_not_found"}}
    assert oa.usage(3, 4) == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}
