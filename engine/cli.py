"""`engine demo | info | predict | serve`."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _demo(args) -> int:
    """Build the seed-000 CNN with engine.nn, save it, load it back, predict, time it."""
    import engine
    from engine import nn

    nn.set_random_seed(0)
    model = nn.Sequential()
    model.add(nn.Conv2D(32, (3, 3), activation="relu", input_shape=(28, 28, 1)))
    model.add(nn.MaxPooling2D((2, 2)))
    model.add(nn.Flatten())
    model.add(nn.Dense(128, activation="relu"))
    model.add(nn.Dense(10, activation="softmax"))
    model.summary()

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "cnn.engine"
        model.save(path)
        print(f"\nsaved {path.name}: {path.stat().st_size / 1024:.0f} KiB")
        loaded = engine.load(path)
    print(f"loaded: {loaded}")
    print(f"kernels: {engine._C.cpu_isa()}, threads: {engine._C.num_threads()}\n")

    x, source = _digits(8)
    print(f"input: {source}")
    probs = loaded.predict(x)
    assert np.allclose(probs, model.predict(x), atol=1e-6)
    np.set_printoptions(precision=3, suppress=True)
    print("predict(x[:8]) -> class probabilities (untrained weights):")
    for row in probs:
        print("  ", row, "argmax", int(row.argmax()))

    print("\nmedian latency:")
    for batch in (1, 64):
        xb = np.resize(x, (batch, 28, 28, 1)).astype(np.float32)
        for _ in range(5):  # plan for this batch size, warm caches
            loaded.predict(xb)
        times = []
        for _ in range(200 if batch == 1 else 30):
            t0 = time.perf_counter()
            loaded.predict(xb)
            times.append(time.perf_counter() - t0)
        print(f"  batch {batch:3d}: {np.median(times) * 1e6:9.1f} µs")
    return 0


def _digits(n: int):
    """Digit images scaled to 28x28 (scikit-learn's load_digits when installed, else noise),
    and where they came from."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        noise = np.random.default_rng(0).random((n, 28, 28, 1), dtype=np.float32)
        return noise, "uniform noise (install scikit-learn for its 8x8 digits scaled to 28x28)"
    imgs = load_digits().images[:n] / 16.0
    big = np.kron(imgs, np.ones((3, 3)))[:, :24, :24]
    out = np.zeros((n, 28, 28, 1), np.float32)
    out[:, 2:26, 2:26, 0] = big
    return out, "scikit-learn load_digits, scaled to 28x28"


def _info(args) -> int:
    import engine

    m = engine.load(args.model)
    print(m)
    for i in m.inputs:
        print(f"  input  {i.name}: {i.shape} {i.dtype}")
    for o in m.outputs:
        print(f"  output {o.name}: {o.shape} {o.dtype}")
    print(f"  {len(m.graph.nodes)} nodes, "
          f"{sum(w.size for w in m.graph.initializers.values()):,} parameters")
    meta = m.metadata
    if meta.get("format") == "onnx":
        opsets = ", ".join(f"{d} {v}" for d, v in meta.get("opset_imports", {}).items())
        producer = f"{meta.get('producer_name', '')} {meta.get('producer_version', '')}".strip()
        print(f"  ONNX: producer {producer or '?'}, opsets {opsets}, IR version {meta.get('ir_version')}")
        for k, v in meta.get("metadata_props", {}).items():
            print(f"    {k}: {v}")
    ops: dict = {}
    for n in m.optimized_graph.nodes:
        ops[n.op] = ops.get(n.op, 0) + 1
    print("  optimised: " + ", ".join(f"{op} x{k}" for op, k in sorted(ops.items(), key=lambda t: -t[1])))
    return 0


def _read_inputs(path: str, model) -> dict:
    from .array_files import read_input_arrays
    return read_input_arrays(path, [i.name for i in model.inputs])


def _predict(args) -> int:
    import engine

    m = engine.load(args.model)
    outputs = m.run(_read_inputs(args.input, m))
    if args.output:
        out = str(args.output)
        if len(outputs) == 1 and not out.endswith(".npz"):
            np.save(out, next(iter(outputs.values())))
        else:
            np.savez(out, **outputs)
    else:
        np.set_printoptions(precision=4, suppress=True)
        for name, y in outputs.items():
            if len(outputs) > 1:
                print(f"{name}:")
            print(y)
    return 0


def main(argv=None) -> int:
    import engine

    p = argparse.ArgumentParser(prog="engine", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("demo", help="build, save, load and run the seed CNN").set_defaults(fn=_demo)
    pi = sub.add_parser("info", help="show a model's inputs and outputs")
    pi.add_argument("model")
    pi.set_defaults(fn=_info)
    pp = sub.add_parser("predict", help="run a model on a .npy / .npz input")
    pp.add_argument("model")
    pp.add_argument("input", help=".npy file (one-input models) or .npz with an array per input name")
    pp.add_argument("-o", "--output", help="write the result to this .npy (or .npz: every output)")
    pp.set_defaults(fn=_predict)
    from .serve.cli import add_parser as add_serve_parser
    add_serve_parser(sub)
    from .bench.cli import add_parser as add_bench_parser
    add_bench_parser(sub)
    args = p.parse_args(argv)
    try:
        return args.fn(args)
    except (engine.EngineError, OSError) as e:  # OSError: unreadable model, unwritable output
        print(f"engine: error: {e}", file=sys.stderr)
        return 2
