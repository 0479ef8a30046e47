"""The real thing: SmolLM2 (GGUF) through engine.load, the native decoder and the scheduler,
served over the OpenAI API. 8 concurrent greedy streams, with prompts prefilled in chunks, must
give exactly the tokens of 8 sequential runs, and of LanguageModel.chat without the server."""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor

import pytest

openai = pytest.importorskip("openai")

from gguf_smollm2 import smollm2_path  # noqa: E402

from engine.serve.server import Server  # noqa: E402

pytestmark = pytest.mark.slow
TOKENS = 12


def test_smollm2_streams_equal_single_greedy_runs(tmp_path):
    folder = tmp_path / "smol" / "1"
    folder.mkdir(parents=True)
    os.symlink(smollm2_path(), folder / "model.gguf")
    (tmp_path / "smol" / "config.json").write_text(json.dumps(
        {"max_sequences": 8, "max_tokens_per_step": 16, "max_context": 512}))  # 16: prompts go in chunks
    messages = [[{"role": "user", "content": f"Say something about the number {i}."}] for i in range(8)]
    with Server(tmp_path, http_port=0, socket_port=None, control="explicit") as s:
        lm = s.manager.resolve("smol").lm
        with openai.OpenAI(base_url=f"http://{s.http_address}/v1", api_key="x", timeout=120, max_retries=0) as c:
            def stream(m):
                chunks = c.chat.completions.create(model="smol", messages=m, max_tokens=TOKENS, temperature=0,
                                                   stream=True, stream_options={"include_usage": True})
                chunks = list(chunks)
                return "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices), chunks[-1].usage
            sequential = [stream(m) for m in messages]
            with ThreadPoolExecutor(8) as pool:
                concurrent = list(pool.map(stream, messages))
        assert [t for t, _ in concurrent] == [t for t, _ in sequential]
        for m, (text, usage) in list(zip(messages, concurrent))[:3]:
            assert text == lm.chat(m, max_new_tokens=TOKENS)
            assert usage.prompt_tokens == len(lm.chat_ids(m)) and usage.completion_tokens <= TOKENS
