"""A Hugging Face folder (a tiny random Llama with SmolLM2's tokenizer) served for real: engine.load,
the native decoder and sampling behind the scheduler, the `openai` client in front. The reference
is transformers' own greedy generation of the same checkpoint."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pytest

openai = pytest.importorskip("openai")
torch = pytest.importorskip("torch")

from gguf_smollm2 import smollm2_reference  # noqa: E402
from lm_tiny_models import llama_folder  # noqa: E402

from engine.serve.server import Server  # noqa: E402

VOCAB, EOS, TOKENS = 49152, 2, 10


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    repo = tmp_path_factory.mktemp("repo")
    folder = repo / "tiny" / "1"
    model = llama_folder(folder, vocab_size=VOCAB, layers=2, seed=5, bos_token_id=1, eos_token_id=EOS)
    tok = smollm2_reference()
    tok.save_pretrained(str(folder))
    (repo / "tiny" / "config.json").write_text(json.dumps({"max_sequences": 4, "max_tokens_per_step": 8}))
    with Server(repo, http_port=0, socket_port=None, control="explicit") as s:
        with openai.OpenAI(base_url=f"http://{s.http_address}/v1", api_key="x", timeout=60, max_retries=0) as c:
            yield s, c, model, tok


def reference_text(model, tok, ids):
    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), max_new_tokens=TOKENS, do_sample=False, eos_token_id=EOS,
                             pad_token_id=EOS)[0, len(ids):].tolist()
    return tok.decode(out, skip_special_tokens=True)


def test_concurrent_streams_equal_transformers_greedy(served):
    s, c, model, tok = served
    prompts = [tok(f"Item {i}: the story of a {'very ' * i}long day").input_ids for i in range(8)]

    def run(ids):  # 8 streams over 4 sequences: half wait; prompts of 10-25 tokens go in chunks of 8
        chunks = c.completions.create(model="tiny", prompt=ids, max_tokens=TOKENS, temperature=0, stream=True)
        return "".join(ch.choices[0].text for ch in chunks)
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(run, prompts))
    assert got == [reference_text(model, tok, ids) for ids in prompts]
    assert sum(len(t) > 20 for t in got) >= 6  # real text, not a run of immediate EOS
    sv = s.manager.resolve("tiny")
    assert sv.scheduler.running == 0 and sv.lm.decoder.kv_usage()[0] == 0


def test_chat_equals_transformers_with_the_folders_template(served):
    _, c, model, tok = served
    messages = [{"role": "user", "content": "Hi there"}]
    r = c.chat.completions.create(model="tiny", messages=messages, max_tokens=TOKENS, temperature=0)
    ids = tok.apply_chat_template(messages, tokenize=True, add_generation_prompt=True, return_dict=False)
    assert r.choices[0].message.content == reference_text(model, tok, ids)
    assert r.usage.prompt_tokens == len(ids)


def test_a_sharded_folder_is_served_and_reloads_when_a_shard_changes(tmp_path):
    """model.safetensors.index.json + its shards is a model version like model.safetensors; its
    shards count in what makes the version change (hot reload)."""
    import os

    from engine.serve.repository import scan

    repo = tmp_path / "repo"
    folder = repo / "tiny" / "1"
    model = llama_folder(folder, vocab_size=VOCAB, layers=2, seed=6, bos_token_id=1, eos_token_id=EOS)
    (folder / "model.safetensors").unlink()
    model.save_pretrained(str(folder), max_shard_size="4MB")
    shards = sorted(folder.glob("model-*-of-*.safetensors"))
    assert len(shards) >= 2 and (folder / "model.safetensors.index.json").is_file()
    tok = smollm2_reference()
    tok.save_pretrained(str(folder))
    files = scan(repo)["tiny"].versions[1]
    assert files.path.name == "model.safetensors.index.json"
    with Server(repo, http_port=0, socket_port=None, control="explicit") as s:
        with openai.OpenAI(base_url=f"http://{s.http_address}/v1", api_key="x", timeout=60, max_retries=0) as c:
            ids = tok("Once upon a time").input_ids
            r = c.completions.create(model="tiny", prompt=ids, max_tokens=TOKENS, temperature=0)
            assert r.choices[0].text == reference_text(model, tok, ids)
    before = files.fingerprint
    st = shards[-1].stat()  # a shard rewritten: a new mtime
    os.utime(shards[-1], ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert scan(repo)["tiny"].versions[1].fingerprint != before
    (folder / shards[0].name).unlink()
    err = scan(repo)["tiny"].versions[1]
    assert isinstance(err, str) and "shards it lists are missing" in err and shards[0].name in err
