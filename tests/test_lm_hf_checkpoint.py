"""engine.lm.hf_checkpoint: Hugging Face folders (single file, sharded, F16/BF16, Qwen2 biases,
Mistral) read into DecoderSpec + weights whose logits equal transformers', and named errors."""

import json

import numpy as np
import pytest

from engine.errors import ModelFormatError, UnsupportedOpError
from engine.lm.decoder import Decoder
from engine.lm.hf_checkpoint import read_hf_checkpoint
from engine.lm.safetensors_mmap import read_safetensors
from lm_tiny_models import assert_close, llama_folder, reference_logits

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


def decode(folder, prompt):
    spec, weights, _ = read_hf_checkpoint(str(folder))
    dec = Decoder(spec, weights, kv_block_tokens=8)
    s = dec.open()
    return dec.forward([s], [prompt], all_logits=True)


def test_single_file_is_memory_mapped(tmp_path):
    llama_folder(tmp_path)
    spec, weights, config = read_hf_checkpoint(str(tmp_path))
    assert config["model_type"] == "llama" and spec.arch == "llama" and not spec.rope_interleaved
    wq = weights["layers.0.wq"]
    assert wq.type == "F32" and wq.shape == (64, 64) and isinstance(wq.data.base, np.memmap | np.ndarray)
    assert not wq.data.flags.writeable  # a view of the read-only map, not a copy


def test_sharded_checkpoint(tmp_path):
    model = llama_folder(tmp_path, layers=3)
    sharded = tmp_path / "sharded"
    model.save_pretrained(str(sharded), max_shard_size="100KB")
    assert (sharded / "model.safetensors.index.json").exists()
    prompt = [3, 1, 4, 1, 5, 9, 2, 6]
    assert_close(decode(sharded, prompt), reference_logits(model, prompt))


@pytest.mark.parametrize("dtype_name, wtype", [("float16", "F16"), ("bfloat16", "BF16")])
def test_half_checkpoints(tmp_path, dtype_name, wtype):
    model = llama_folder(tmp_path, dtype=getattr(torch, dtype_name))
    spec, weights, _ = read_hf_checkpoint(str(tmp_path))
    wq = weights["layers.0.wq"]
    assert wq.type == wtype and wq.data.dtype == np.uint8 and wq.data.nbytes == 64 * 64 * 2
    bits = model.model.layers[0].self_attn.q_proj.weight.detach().view(torch.int16).numpy()
    assert np.array_equal(wq.data.view("<i2").reshape(64, 64), bits)  # the raw halves, rows = outputs
    assert weights["norm"].dtype == np.float32
    assert np.array_equal(weights["norm"], model.model.norm.weight.detach().float().numpy())
    prompt = [7, 8, 9, 10, 11]
    got = decode(tmp_path, prompt)
    # The reference: the same half weights, computed in float32.
    assert_close(got, reference_logits(model.float(), prompt), rel=1e-3)


def test_qwen2_biases(tmp_path):
    torch.manual_seed(3)
    cfg = transformers.Qwen2Config(vocab_size=256, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                                   tie_word_embeddings=True)
    model = transformers.Qwen2ForCausalLM(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.5)
    model.save_pretrained(str(tmp_path))
    spec, weights, _ = read_hf_checkpoint(str(tmp_path))
    assert "layers.0.bq" in weights and "layers.0.bo" not in weights
    prompt = [1, 2, 3, 200, 17, 5]
    assert_close(decode(tmp_path, prompt), reference_logits(model, prompt))


def test_mistral_caps_context_at_its_window(tmp_path):
    torch.manual_seed(4)
    cfg = transformers.MistralConfig(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                     num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                                     sliding_window=64)
    model = transformers.MistralForCausalLM(cfg).eval()
    model.save_pretrained(str(tmp_path))
    spec, _, _ = read_hf_checkpoint(str(tmp_path))
    assert spec.max_context == 64
    prompt = list(range(20, 40))
    assert_close(decode(tmp_path, prompt), reference_logits(model, prompt))


def _edit_config(folder, **changes):
    path = folder / "config.json"
    cfg = json.loads(path.read_text())
    cfg.update(changes)
    path.write_text(json.dumps(cfg))


def test_unsupported_and_broken_folders(tmp_path):
    llama_folder(tmp_path)
    _edit_config(tmp_path, architectures=["FalconForCausalLM"])
    with pytest.raises(UnsupportedOpError, match="FalconForCausalLM"):
        read_hf_checkpoint(str(tmp_path))
    _edit_config(tmp_path, architectures=["LlamaForCausalLM"], rope_scaling={"rope_type": "yarn", "factor": 4.0},
                 rope_parameters=None)
    with pytest.raises(UnsupportedOpError, match="rope scaling"):
        read_hf_checkpoint(str(tmp_path))
    with pytest.raises(ModelFormatError, match="config.json"):
        read_hf_checkpoint(str(tmp_path / "nowhere"))
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    with pytest.raises(ModelFormatError, match="model.safetensors"):
        read_hf_checkpoint(str(empty))


def test_truncated_safetensors(tmp_path):
    llama_folder(tmp_path)
    data = (tmp_path / "model.safetensors").read_bytes()
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFormatError, match="data offsets"):
        read_safetensors(str(bad))
    bad.write_bytes(b"\xff" * 8 + data[8:100])
    with pytest.raises(ModelFormatError, match="header length"):
        read_safetensors(str(bad))
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    (wrong / "config.json").write_text((tmp_path / "config.json").read_text())
    _edit_config(wrong, hidden_size=32)
    (wrong / "model.safetensors").write_bytes(data)
    with pytest.raises(ModelFormatError, match=r"has shape \(300, 64\), expected \(300, 32\)"):
        read_hf_checkpoint(str(wrong))
