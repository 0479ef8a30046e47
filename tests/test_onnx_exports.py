"""Real exports: architectures nobody here wrote (transformers configs with random weights) and
the seed networks, exported by torch.onnx.export (TorchScript exporter, and the dynamo exporter
where it works), loaded with engine.load and compared with onnxruntime on the same inputs:
max abs error <= 1e-4, or <= 1e-3 of the output's largest magnitude for the deep networks."""

import numpy as np
import pytest

import engine
from exports import HF_MODELS, SEED_MODELS, export, onnxruntime_outputs

CASES = [(m, False) for m in SEED_MODELS + HF_MODELS] + [("seed_cnn", True), ("seed_lstm", True), ("bert", True),
                                                          ("resnet", True)]
DEEP = {"resnet", "mobilenet", "vit", "bert", "minilm", "gpt2"}


def _feeds_at_batch(feeds: dict, batch: int) -> dict:
    return {k: np.repeat(v[:1], batch, axis=0) if v.shape[0] >= 1 else v for k, v in feeds.items()}


@pytest.mark.parametrize("optimize", [True, False], ids=["optimized", "as-is"])
@pytest.mark.parametrize("name,dynamo", CASES, ids=[f"{m}{'-dynamo' if d else ''}" for m, d in CASES])
def test_export_matches_onnxruntime(name, dynamo, optimize):
    path, feeds = export(name, dynamo=dynamo)
    model = engine.load(path, optimize=optimize)
    rng = np.random.default_rng(0)
    for batch in (1, 3):
        f = _feeds_at_batch(feeds, batch)
        f = {k: (rng.random(v.shape, dtype=np.float32) if v.dtype == np.float32 else v) for k, v in f.items()}
        want = onnxruntime_outputs(path, f)
        got = model.run(None, f)
        assert len(got) == len(want)
        for g, w in zip(got, want):
            assert g.shape == w.shape and g.dtype == w.dtype
            err = float(np.abs(g.astype(np.float64) - w).max()) if w.size else 0.0
            bound = 1e-3 * float(np.abs(w).max()) if name in DEEP else 1e-4
            assert err <= max(bound, 1e-4), f"{name} batch {batch}: max abs error {err:.3g} > {bound:.3g}"
