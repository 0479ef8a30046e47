"""engine.lm.decoder against transformers: prompts, token-by-token decoding, batches of
sequences of different lengths, llama.cpp's interleaved RoPE, the block cache (truncate,
close, reuse, exhaustion) and argument checks."""

import numpy as np
import pytest

from engine.errors import EngineError, ModelFormatError, ShapeError
from engine.lm.decoder import Decoder, DecoderError, DecoderSpec, KvCacheFullError, Weight
from engine.lm.hf_checkpoint import read_hf_checkpoint
from lm_tiny_models import assert_close, gpt2_folder, llama_folder, reference_logits


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    folder = tmp_path_factory.mktemp("llama")
    model = llama_folder(folder)
    return model, read_hf_checkpoint(str(folder))


@pytest.fixture(scope="module")
def llama_odd(tmp_path_factory):
    folder = tmp_path_factory.mktemp("llama_odd")
    model = llama_folder(folder, head_dim=10, layers=3, tied=True, seed=1)
    return model, read_hf_checkpoint(str(folder))


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gpt2")
    model = gpt2_folder(folder)
    return model, read_hf_checkpoint(str(folder))


def make(ckpt, **kw):
    spec, weights, _ = ckpt
    kw.setdefault("kv_block_tokens", 4)
    return Decoder(spec, weights, **kw)


def ids(rng, n, vocab=300):
    return [int(i) for i in rng.integers(0, vocab, n)]


@pytest.mark.parametrize("which", ["llama", "llama_odd", "gpt2"])
def test_prompt_logits_equal_transformers(which, request, rng, isa):
    model, ckpt = request.getfixturevalue(which)
    vocab = ckpt[0].vocab_size
    dec = make(ckpt)
    for n in (1, 3, 23):  # one token, a few, many blocks of 4
        prompt = ids(rng, n, vocab)
        s = dec.open()
        want = reference_logits(model, prompt)
        assert_close(dec.forward([s], [prompt], all_logits=True), want)
        dec.close(s)
        s = dec.open()
        last = dec.forward([s], [prompt])
        assert last.shape == (1, vocab) and last.dtype == np.float32
        assert_close(last[0], want[-1])
        dec.close(s)


@pytest.mark.parametrize("which", ["llama", "llama_odd", "gpt2"])
def test_token_by_token_equals_full_forward(which, request, rng, threads):
    model, ckpt = request.getfixturevalue(which)
    prompt = ids(rng, 19, ckpt[0].vocab_size)
    want = reference_logits(model, prompt)
    dec = make(ckpt)
    s = dec.open()
    dec.forward([s], [prompt[:5]])  # a prompt, then one token a step
    got = [dec.forward([s], [[t]])[0] for t in prompt[5:]]
    assert_close(np.stack(got), want[5:])
    assert dec.length(s) == 19


def test_batch_of_sequences_equals_each_alone(llama, rng):
    model, ckpt = llama
    dec = make(ckpt, max_sequences=4)
    prompts = [ids(rng, n) for n in (7, 1, 13, 2)]
    seqs = [dec.open() for _ in prompts]
    got = dec.forward(seqs, prompts, all_logits=True)
    rows = np.cumsum([0] + [len(p) for p in prompts])
    for i, p in enumerate(prompts):
        assert_close(got[rows[i]:rows[i + 1]], reference_logits(model, p))
    # A mixed step: one sequence takes a chunk of prompt, the others one token each, in any order.
    more = [ids(rng, n) for n in (1, 5, 1, 1)]
    order = [2, 0, 3, 1]
    last = dec.forward([seqs[i] for i in order], [more[i] for i in order])
    for row, i in enumerate(order):
        assert_close(last[row], reference_logits(model, prompts[i] + more[i])[-1])


# Layer 0 all Q8_0 (Q|K|V and gate|up each packed as one matrix where the packed kernels run),
# layer 1 mixed (Q, K, V apart; gate|up still fused).
QUANT_TYPES = {0: dict(wq="Q8_0", wk="Q8_0", wv="Q8_0", wo="Q8_0", w_gate="Q8_0", w_up="Q8_0", w_down="Q8_0"),
               1: dict(wq="Q4_0", wk="Q4_1", wv="Q8_0", wo="Q4_1", w_gate="Q4_0", w_up="Q4_0", w_down="Q8_0")}


def quantize_layers(weights):
    """(weights with QUANT_TYPES' matrices quantised by the gguf package, the same dequantised to f32)."""
    gguf_quants = pytest.importorskip("gguf.quants")
    from gguf import GGMLQuantizationType
    from engine.lm.quant_ref import dequantize

    quantized, dequantized = dict(weights), dict(weights)
    for layer, types in QUANT_TYPES.items():
        for name, t in types.items():
            w = weights[f"layers.{layer}.{name}"]
            raw = gguf_quants.quantize(np.asarray(w.data, np.float32), GGMLQuantizationType[t])
            quantized[f"layers.{layer}.{name}"] = Weight(raw, t, w.shape)
            dequantized[f"layers.{layer}.{name}"] = Weight(dequantize(raw.reshape(-1), t, w.shape), "F32", w.shape)
    return quantized, dequantized


def test_quantized_weights_give_their_dequantised_f32_logits(llama, rng, isa):
    model, (spec, weights, cfg) = llama
    quantized, dequantized = quantize_layers(weights)
    q, f = Decoder(spec, quantized, kv_block_tokens=4), Decoder(spec, dequantized, kv_block_tokens=4)
    prompt, steps = ids(rng, 11), ids(rng, 4)
    sq, sf = q.open(), f.open()
    assert_close(q.forward([sq], [prompt], all_logits=True), f.forward([sf], [prompt], all_logits=True), rel=2e-3)
    for t in steps:  # one row a step: the few-row kernels
        assert_close(q.forward([sq], [[t]]), f.forward([sf], [[t]]), rel=2e-3)


def test_lowering_the_isa_cap_after_packing_falls_back_to_the_blocks(llama, rng):
    """A decoder built where the packed kernels run keeps the blocks (their pages only hinted away):
    under a lower cap it multiplies by them instead, with the same results within rounding."""
    from engine import _C

    model, (spec, weights, cfg) = llama
    dec = Decoder(spec, quantize_layers(weights)[0], kv_block_tokens=4)
    prompt = ids(rng, 9)
    s = dec.open()
    want = dec.forward([s], [prompt], all_logits=True)
    dec.truncate(s, 0)
    old = _C.cpu_isa()
    try:
        _C.set_isa("avx2" if old != "portable" else "portable")
        got = dec.forward([s], [prompt], all_logits=True)
    finally:
        _C.set_isa(old)
    assert_close(got, want, rel=2e-3)


def test_interleaved_rope_with_llama_cpp_permutation(llama, rng):
    model, (spec, weights, cfg) = llama

    def permute(w: Weight, n_head):  # convert_hf_to_gguf.py's LlamaModel.permute
        a = w.data
        a = a.reshape(n_head, 2, a.shape[0] // n_head // 2, *a.shape[1:]).swapaxes(1, 2).reshape(a.shape)
        return Weight(np.ascontiguousarray(a), w.type, w.shape)

    permuted = dict(weights)
    for i in range(spec.n_layers):
        permuted[f"layers.{i}.wq"] = permute(weights[f"layers.{i}.wq"], spec.n_heads)
        permuted[f"layers.{i}.wk"] = permute(weights[f"layers.{i}.wk"], spec.n_kv_heads)
    from dataclasses import replace
    dec = Decoder(replace(spec, rope_interleaved=True), permuted, kv_block_tokens=4)
    prompt = ids(rng, 11)
    s = dec.open()
    assert_close(dec.forward([s], [prompt], all_logits=True), reference_logits(model, prompt))
    # and without the permutation, interleaved pairs are a different model
    plain = Decoder(replace(spec, rope_interleaved=True), weights, kv_block_tokens=4)
    t = plain.open()
    assert not np.allclose(plain.forward([t], [prompt]), reference_logits(model, prompt)[-1:], rtol=1e-3, atol=1e-3)


def test_truncate_close_and_reuse(llama, rng):
    model, ckpt = llama
    dec = make(ckpt, max_sequences=2)
    a, b = ids(rng, 10), ids(rng, 6)
    s = dec.open()
    dec.forward([s], [a])
    assert dec.kv_usage()[0] == 3
    dec.truncate(s, 5)  # forget a[5:], continue with b
    assert dec.length(s) == 5 and dec.kv_usage()[0] == 2
    assert_close(dec.forward([s], [b], all_logits=True), reference_logits(model, a[:5] + b)[5:])
    dec.truncate(s, 0)
    assert_close(dec.forward([s], [b])[0], reference_logits(model, b)[-1])
    t = dec.open()
    with pytest.raises(DecoderError, match="all 2 sequences"):
        dec.open()
    dec.close(s)
    dec.close(s)  # closing twice: no-op
    assert dec.kv_usage()[0] == 0
    with pytest.raises(DecoderError, match="not open"):
        dec.length(s)
    s2 = dec.open()  # reused id, empty cache
    assert dec.length(s2) == 0
    assert_close(dec.forward([s2, t], [a, b]), np.stack([reference_logits(model, x)[-1] for x in (a, b)]))
    with pytest.raises(DecoderError, match="length must be in"):
        dec.truncate(s2, 11)


def test_long_sequence_over_many_blocks(llama_odd, rng):
    model, ckpt = llama_odd
    dec = make(ckpt, kv_block_tokens=3)
    prompt = ids(rng, 61)
    s = dec.open()
    got = np.concatenate([dec.forward([s], [prompt[i:i + 17]], all_logits=True) for i in range(0, 61, 17)])
    assert_close(got, reference_logits(model, prompt))
    assert dec.kv_usage()[0] == 21


def test_errors_leave_state_unchanged(llama, rng):
    model, ckpt = llama
    dec = make(ckpt, max_sequences=3, max_context=12, kv_blocks=5)
    a, b = ids(rng, 6), ids(rng, 3)
    s, t = dec.open(), dec.open()
    dec.forward([s, t], [a, b])
    before = (dec.length(s), dec.length(t), dec.kv_usage())
    bad_calls = [
        (KvCacheFullError, "exhausted", ([s, t], [ids(rng, 3), ids(rng, 6)])),  # needs 1 + 2 > 2 free
        (DecoderError, "max_context 12", ([s], [ids(rng, 7)])),
        (DecoderError, "not open", ([s, 2], [[1], [1]])),
        (DecoderError, "not open", ([99], [[1]])),
        (DecoderError, "twice", ([s, s], [[1], [2]])),
        (DecoderError, "non-empty", ([s], [[]])),
        (DecoderError, "out of range", ([s], [[1, 300]])),
        (DecoderError, "out of range", ([t], [[-1]])),
        (DecoderError, "no sequences", ([], [])),
        (DecoderError, "token lists", ([s, t], [[1]])),
    ]
    for err, msg, (seqs, toks) in bad_calls:
        with pytest.raises(err, match=msg):
            dec.forward(seqs, toks)
        assert (dec.length(s), dec.length(t), dec.kv_usage()) == before
    c = ids(rng, 2)
    assert_close(dec.forward([s], [c])[0], reference_logits(model, a + c)[-1])
    assert isinstance(KvCacheFullError("x"), EngineError)


def test_native_checks_hold_without_the_python_ones(llama):
    _, ckpt = llama
    dec = make(ckpt, max_sequences=2, kv_blocks=2)
    s = dec.open()
    native = dec._native
    I = lambda *v: np.array(v, np.int64)  # noqa: E731
    with pytest.raises(EngineError, match="exhausted"):
        native.forward(I(s), I(9), I(*range(9)), False)
    with pytest.raises(EngineError, match="not open"):
        native.forward(I(1), I(1), I(1), False)
    with pytest.raises(EngineError, match="out of range"):
        native.forward(I(s), I(2), I(1, 300), False)
    with pytest.raises(EngineError, match="add up"):
        native.forward(I(s), I(3), I(1, 2), False)
    assert native.length(s) == 0 and native.kv_usage() == (0, 2)


def test_spec_and_weight_validation(llama):
    _, (spec, weights, _) = llama
    with pytest.raises(ModelFormatError, match="missing weights.*layers.1.wo"):
        Decoder(spec, {k: v for k, v in weights.items() if k != "layers.1.wo"})
    bad = dict(weights, **{"layers.0.wk": Weight(np.zeros((16, 64), np.float32), "F32", (16, 64))})
    with pytest.raises(ShapeError, match=r"'layers.0.wk': expected shape \(32, 64\), got \(16, 64\)"):
        Decoder(spec, bad)
    bad = dict(weights, **{"layers.0.attn_norm": np.zeros(63, np.float32)})
    with pytest.raises(ShapeError, match="'layers.0.attn_norm'"):
        Decoder(spec, bad)
    bad = dict(weights, **{"layers.0.wq": Weight(np.zeros(10, np.uint8), "Q8_0", (64, 64))})
    with pytest.raises(ShapeError, match="Q8_0 .* needs 4352 bytes, got 10"):
        Decoder(spec, bad)
    with pytest.raises(ModelFormatError, match="unexpected weights"):
        Decoder(spec, dict(weights, extra=np.zeros(3, np.float32)))
    with pytest.raises(ModelFormatError, match="n_kv_heads"):
        DecoderSpec(**{**spec.__dict__, "n_kv_heads": 3})
    with pytest.raises(ModelFormatError, match="norm"):
        DecoderSpec(**{**spec.__dict__, "norm": "batch"})
    with pytest.raises(DecoderError, match="max_context"):
        Decoder(spec, weights, max_context=10**6)


def test_from_llama_config():
    from engine.lm.config import LlamaConfig
    cfg = LlamaConfig(vocab_size=49152, hidden=576, n_layers=30, n_heads=9, n_kv_heads=3, head_dim=64,
                      intermediate=1536, rope_theta=100000.0, rope_dim=64, rms_eps=1e-5, context_length=8192,
                      bos_id=1, eos_id=2, tied_embeddings=True)
    spec = DecoderSpec.from_llama(cfg, rope_interleaved=True)
    assert (spec.norm, spec.mlp, spec.position, spec.rope_interleaved, spec.tied_embeddings) == \
        ("rms", "swiglu", "rope", True, True)
    assert (spec.n_kv_heads, spec.max_context, spec.rope_theta, spec.norm_eps) == (3, 8192, 100000.0, 1e-5)


def test_long_cache_split_over_threads(llama, rng, threads):
    # Decode steps of one sequence have fewer tasks than threads: long caches are split into
    # ranges of blocks whose partial softmax results are merged.
    model, ckpt = llama
    prompt = ids(rng, 700)
    want = reference_logits(model, prompt)
    for block in (4, 64):
        dec = make(ckpt, kv_block_tokens=block, max_context=1024)
        s = dec.open()
        dec.forward([s], [prompt[:600]])
        got = np.concatenate([dec.forward([s], [prompt[i:i + n]], all_logits=True)
                              for i, n in ((600, 1), (601, 1), (602, 3), (605, 95))])
        assert_close(got, want[600:])


def test_threads_share_one_decoder(llama, rng):
    # Python threads stepping their own sequences: the native call releases the GIL, the
    # decoder serialises the steps, and every sequence gets its own logits.
    import threading
    model, ckpt = llama
    dec = make(ckpt, max_sequences=3)
    prompts = [ids(rng, n) for n in (9, 4, 12)]
    results, errors = {}, []

    def worker(i):
        try:
            s = dec.open()
            dec.forward([s], [prompts[i][:2]])
            results[i] = np.concatenate([dec.forward([s], [[t]]) for t in prompts[i][2:]])
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors and len(results) == 3
    for i, p in enumerate(prompts):
        assert_close(results[i], reference_logits(model, p)[2:])
