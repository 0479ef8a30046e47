"""pytest-benchmark suite: the seed CNN and MLP per framework and batch size.

    pytest benchmarks/test_bench_models.py --benchmark-only [--benchmark-group-by=param:model,param:batch]

Every case checks its framework's output against the numpy reference before it is timed.
Frameworks that are not installed (or an engine without ``engine.nn``) are skipped.
Thread count: ``BENCH_THREADS`` (default: all cores), the same for every framework.
For a side-by-side table with ratios, CPU cost and GEMM, run ``python -m benchmarks``.
"""

import os
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import models as M  # noqa: E402

THREADS = int(os.environ.get("BENCH_THREADS", len(os.sched_getaffinity(0))))
os.environ.setdefault("ENGINE_NUM_THREADS", str(THREADS))
MODULES = {"engine": "engine", "ort": "onnxruntime", "openvino": "openvino", "torch": "torch"}

pytest.importorskip("pytest_benchmark")


@pytest.mark.parametrize("batch", [1, 64])
@pytest.mark.parametrize("model", M.MODELS)
@pytest.mark.parametrize("framework", M.FRAMEWORKS)
def test_predict(benchmark, framework, model, batch):
    if framework == "engine":
        ok, why = M.engine_available()
        if not ok:
            pytest.skip(f"engine.nn not available: {why}")
    else:
        pytest.importorskip(MODULES[framework])
        pytest.importorskip("onnx")
    w = M.make_weights(model)
    x = M.make_input(model, batch)
    predict = M.build_predict(framework, model, w, THREADS, batch)
    y = np.asarray(predict(x))
    np.testing.assert_allclose(y, M.numpy_forward(model, w, x), atol=1e-4, rtol=0)
    benchmark.group = f"{model} batch {batch}"
    benchmark.extra_info.update(framework=M.FRAMEWORK_NAMES[framework], threads=THREADS,
                                mflop=M.flops(model) * batch / 1e6)
    benchmark(predict, x)
