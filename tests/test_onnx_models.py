"""The ONNX model suites shipped with the onnx wheel: pytorch-converted, pytorch-operator and
simple (with their stored inputs and outputs), and light (ResNet-50, Inception, SqueezeNet,
VGG, ... with placeholder weights: given random weights and compared with onnxruntime on the
same input). Every model onnxruntime passes must pass."""

import numpy as np
import pytest

import engine
from conformance import onnx_cases as oc
from exports import CACHE, onnxruntime_outputs, random_weights_like

_CASES = oc.model_cases()
STORED = [c for c in _CASES if c.kind != "light"]
LIGHT = [c for c in _CASES if c.kind == "light"]


@pytest.mark.parametrize("case", STORED, ids=[f"{c.kind}/{c.name}" for c in STORED])
def test_model_suite_case(case):
    ort_status, _ = oc.run_ort(case)
    if ort_status != "pass":
        pytest.skip(f"onnxruntime does not pass it either ({ort_status})")
    status, detail = oc.run_engine(case)
    if status == "unsupported":
        pytest.skip(f"not implemented yet: {detail[-160:]}")
    assert status == "pass", f"{case.kind}/{case.name}: {status}: {detail}"


@pytest.mark.slow
@pytest.mark.parametrize("case", LIGHT, ids=[c.name for c in LIGHT])
def test_light_model_with_random_weights(case):
    path = random_weights_like(case.path, CACHE / f"{case.name}_random.onnx")
    model = engine.load(path)
    info = model.inputs[0]
    shape = tuple(1 if not isinstance(d, int) else d for d in info.shape)
    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    want = onnxruntime_outputs(path, {info.name: x})
    got = model.run(None, {info.name: x})
    for g, w in zip(got, want):
        scale = max(1.0, float(np.abs(w).max()))
        assert g.shape == w.shape
        np.testing.assert_allclose(g, w, atol=1e-3 * scale, rtol=1e-3)
