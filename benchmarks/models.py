"""The benchmark models, built from one set of weights for the engine and for every peer.

Two networks, the seed examples:

* ``cnn`` (seed 000), Keras-style NHWC input (batch, 28, 28, 1):
  Conv2D(32, (3, 3), relu) -> MaxPooling2D((2, 2)) -> Flatten -> Dense(128, relu) -> Dense(10, softmax)
* ``mlp`` (seed 001), input (batch, 1000): Dense(128, relu) -> Dense(10, softmax)

Weights are float32 in Keras order and layouts (conv kernel HWIO, dense kernel (in, out)),
drawn with a fixed seed (glorot-uniform kernels, small non-zero biases so the bias path is
exercised). Every builder takes that same list:

* :func:`numpy_forward` -- the plain reference forward pass;
* :func:`build_engine` -- ``engine.nn.Sequential``, saved to a temporary ``.engine`` file and
  loaded back with ``engine.load`` (the benchmark runs the *loaded* model);
* :func:`build_torch` -- an ``nn.Module`` in eval mode;
* :func:`onnx_model` -- an ONNX ``ModelProto`` (opset 17) used by :func:`build_ort` and
  :func:`build_openvino`.

Peers get their most favourable equivalent graph: NCHW convolution after one input transpose
(a free reshape when C == 1), the Keras HWC-order Flatten folded into a row permutation of the
first Dense kernel (no second transpose), Gemm with bias, Softmax last, and static shapes
(each peer model is built for one batch size, as the engine plans per input signature).

Heavy frameworks are imported inside the builders so that ``benchmarks.cpu_usage`` can load
exactly one of them per process.
"""

from __future__ import annotations

import os
import tempfile
from typing import Callable, Sequence

import numpy as np

MODELS = ("cnn", "mlp")
FRAMEWORKS = ("engine", "ort", "openvino", "torch")
PEERS = ("ort", "openvino", "torch")
FRAMEWORK_NAMES = {"engine": "engine", "ort": "onnxruntime", "openvino": "OpenVINO", "torch": "PyTorch"}

SEEDS = {"cnn": 0, "mlp": 1}

# CNN geometry
IMG = (28, 28, 1)
CONV_OC, KH, KW = 32, 3, 3
CONV_OH, CONV_OW = IMG[0] - KH + 1, IMG[1] - KW + 1     # 26 x 26
POOL_OH, POOL_OW = CONV_OH // 2, CONV_OW // 2           # 13 x 13
FLAT = POOL_OH * POOL_OW * CONV_OC                      # 5408
HIDDEN, CLASSES = 128, 10
# MLP geometry
MLP_IN = 1000


def input_shape(model: str) -> tuple[int, ...]:
    """Per-sample input shape (without the batch dim)."""
    return {"cnn": IMG, "mlp": (MLP_IN,)}[_check_model(model)]


def flops(model: str) -> int:
    """Multiply-adds x 2 of one sample's forward pass (bias, activations and pooling not counted)."""
    if _check_model(model) == "cnn":
        return 2 * (CONV_OH * CONV_OW * CONV_OC * KH * KW * IMG[2] + FLAT * HIDDEN + HIDDEN * CLASSES)
    return 2 * (MLP_IN * HIDDEN + HIDDEN * CLASSES)


def _check_model(model: str) -> str:
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}; expected one of {MODELS}")
    return model


# ----------------------------------------------------------------------------- weights, inputs

def _glorot(rng: np.random.Generator, shape: Sequence[int], fan_in: int, fan_out: int) -> np.ndarray:
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, size=shape).astype(np.float32)


def _bias(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.uniform(-0.1, 0.1, size=(n,)).astype(np.float32)


def make_weights(model: str, seed: int | None = None) -> list[np.ndarray]:
    """Random float32 weights in Keras order and layouts, from a fixed seed."""
    rng = np.random.default_rng(SEEDS[_check_model(model)] if seed is None else seed)
    if model == "cnn":
        return [
            _glorot(rng, (KH, KW, IMG[2], CONV_OC), KH * KW * IMG[2], KH * KW * CONV_OC),  # HWIO
            _bias(rng, CONV_OC),
            _glorot(rng, (FLAT, HIDDEN), FLAT, HIDDEN),
            _bias(rng, HIDDEN),
            _glorot(rng, (HIDDEN, CLASSES), HIDDEN, CLASSES),
            _bias(rng, CLASSES),
        ]
    return [
        _glorot(rng, (MLP_IN, HIDDEN), MLP_IN, HIDDEN),
        _bias(rng, HIDDEN),
        _glorot(rng, (HIDDEN, CLASSES), HIDDEN, CLASSES),
        _bias(rng, CLASSES),
    ]


def make_input(model: str, batch: int, seed: int = 1234) -> np.ndarray:
    """A float32 C-contiguous input batch (pixel-like values in [0, 1) for the CNN)."""
    rng = np.random.default_rng(seed + batch)
    shape = (batch, *input_shape(model))
    if model == "cnn":
        return rng.random(shape, dtype=np.float32)
    return rng.standard_normal(shape, dtype=np.float32)


def dense1_rows_chw(w: np.ndarray) -> np.ndarray:
    """Reorder the first Dense kernel's rows from Keras' HWC flatten order to NCHW's CHW order."""
    return np.ascontiguousarray(
        w.reshape(POOL_OH, POOL_OW, CONV_OC, -1).transpose(2, 0, 1, 3).reshape(FLAT, -1))


# ----------------------------------------------------------------------------- numpy reference

def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def numpy_forward(model: str, weights: Sequence[np.ndarray], x: np.ndarray) -> np.ndarray:
    """Plain float64 numpy forward pass in Keras semantics (NHWC, HWC flatten); returns float32."""
    x = np.asarray(x, dtype=np.float64)
    w = [np.asarray(a, dtype=np.float64) for a in weights]
    if _check_model(model) == "cnn":
        k, b = w[0], w[1]
        n = x.shape[0]
        # im2col over the valid 3x3 windows: (n, 26, 26, 3*3*C) @ (3*3*C, OC)
        cols = np.stack([x[:, i:i + CONV_OH, j:j + CONV_OW, :] for i in range(KH) for j in range(KW)],
                        axis=3).reshape(n, CONV_OH, CONV_OW, KH * KW * IMG[2])
        y = np.maximum(cols @ k.reshape(KH * KW * IMG[2], CONV_OC) + b, 0.0)
        y = y[:, :POOL_OH * 2, :POOL_OW * 2, :].reshape(n, POOL_OH, 2, POOL_OW, 2, CONV_OC).max(axis=(2, 4))
        h = y.reshape(n, FLAT)
        h = np.maximum(h @ w[2] + w[3], 0.0)
        return _softmax(h @ w[4] + w[5]).astype(np.float32)
    h = np.maximum(x @ w[0] + w[1], 0.0)
    return _softmax(h @ w[2] + w[3]).astype(np.float32)


# ----------------------------------------------------------------------------- engine

def engine_available() -> tuple[bool, str]:
    """(True, '') when ``engine.nn`` and ``engine.load`` can be imported, else (False, why)."""
    try:
        import engine
        from engine import nn  # noqa: F401
        engine.load  # noqa: B018
    except Exception as e:  # ImportError, AttributeError, a missing _C build ...
        return False, f"{type(e).__name__}: {e}"
    return True, ""


def engine_sequential(model: str):
    from engine import nn
    if _check_model(model) == "cnn":
        return nn.Sequential([
            nn.Input(IMG),
            nn.Conv2D(CONV_OC, (KH, KW), activation="relu"),
            nn.MaxPooling2D((2, 2)),
            nn.Flatten(),
            nn.Dense(HIDDEN, activation="relu"),
            nn.Dense(CLASSES, activation="softmax"),
        ])
    return nn.Sequential([
        nn.Input((MLP_IN,)),
        nn.Dense(HIDDEN, activation="relu"),
        nn.Dense(CLASSES, activation="softmax"),
    ])


def build_engine(model: str, weights: Sequence[np.ndarray], threads: int | None = None):
    """The engine model, round-tripped through a ``.engine`` file; returns the loaded model."""
    import engine
    if threads is not None:
        engine._C.set_num_threads(int(threads))
    m = engine_sequential(model)
    m.set_weights([np.ascontiguousarray(a, dtype=np.float32) for a in weights])
    with tempfile.TemporaryDirectory(prefix="bench_") as d:
        path = os.path.join(d, f"{model}.engine")
        m.save(path)
        return engine.load(path)


# ----------------------------------------------------------------------------- torch

def build_torch(model: str, weights: Sequence[np.ndarray], threads: int | None = None):
    """An eval-mode ``torch.nn.Module`` taking the Keras-layout input (NHWC for the CNN)."""
    import torch
    from torch import nn as tnn

    if threads is not None:
        torch.set_num_threads(int(threads))

    def lin(w: np.ndarray, b: np.ndarray) -> "tnn.Linear":
        layer = tnn.Linear(w.shape[0], w.shape[1])
        with torch.no_grad():
            layer.weight.copy_(torch.from_numpy(np.ascontiguousarray(w.T)))
            layer.bias.copy_(torch.from_numpy(b))
        return layer

    if _check_model(model) == "cnn":
        class CNN(tnn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.conv = tnn.Conv2d(IMG[2], CONV_OC, (KH, KW))
                with torch.no_grad():
                    self.conv.weight.copy_(torch.from_numpy(np.ascontiguousarray(weights[0].transpose(3, 2, 0, 1))))
                    self.conv.bias.copy_(torch.from_numpy(weights[1]))
                self.pool = tnn.MaxPool2d(2, 2)
                self.fc1 = lin(dense1_rows_chw(weights[2]), weights[3])
                self.fc2 = lin(weights[4], weights[5])

            def forward(self, x):
                # NHWC -> NCHW; with C == 1 this is a view, not a copy.
                x = x.permute(0, 3, 1, 2)
                if IMG[2] == 1:
                    x = x.reshape(x.shape[0], 1, IMG[0], IMG[1])
                x = self.pool(torch.relu(self.conv(x)))
                x = torch.relu(self.fc1(x.flatten(1)))
                return torch.softmax(self.fc2(x), dim=-1)
        net = CNN()
    else:
        class MLP(tnn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.fc1 = lin(weights[0], weights[1])
                self.fc2 = lin(weights[2], weights[3])

            def forward(self, x):
                return torch.softmax(self.fc2(torch.relu(self.fc1(x))), dim=-1)
        net = MLP()
    return net.eval()


def torch_predict(net) -> Callable[[np.ndarray], np.ndarray]:
    import torch

    def predict(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return net(torch.from_numpy(x)).numpy()
    return predict


# ----------------------------------------------------------------------------- ONNX

def onnx_model(model: str, weights: Sequence[np.ndarray], batch: int | None = None):
    """ONNX ``ModelProto`` (opset 17) of the network; ``batch=None`` leaves the batch dim symbolic."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    bdim = "batch" if batch is None else int(batch)
    inits: list = []

    def const(name: str, a: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(np.ascontiguousarray(a), name))
        return name

    nodes = []
    if _check_model(model) == "cnn":
        x_shape = [bdim, *IMG]
        if IMG[2] == 1:
            # NHWC -> NCHW with C == 1 moves only a unit dim: a Reshape, no data movement.
            nodes.append(helper.make_node("Reshape", ["x", const("nchw_shape", np.array([-1, 1, IMG[0], IMG[1]], np.int64))],
                                          ["x_nchw"]))
        else:
            nodes.append(helper.make_node("Transpose", ["x"], ["x_nchw"], perm=[0, 3, 1, 2]))
        nodes += [
            helper.make_node("Conv", ["x_nchw", const("conv_w", weights[0].transpose(3, 2, 0, 1)), const("conv_b", weights[1])],
                             ["conv"], kernel_shape=[KH, KW], strides=[1, 1], pads=[0, 0, 0, 0]),
            helper.make_node("Relu", ["conv"], ["conv_relu"]),
            helper.make_node("MaxPool", ["conv_relu"], ["pool"], kernel_shape=[2, 2], strides=[2, 2]),
            helper.make_node("Flatten", ["pool"], ["flat"], axis=1),
            helper.make_node("Gemm", ["flat", const("fc1_w", dense1_rows_chw(weights[2])), const("fc1_b", weights[3])], ["fc1"]),
            helper.make_node("Relu", ["fc1"], ["fc1_relu"]),
            helper.make_node("Gemm", ["fc1_relu", const("fc2_w", weights[4]), const("fc2_b", weights[5])], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probs"], axis=-1),
        ]
    else:
        x_shape = [bdim, MLP_IN]
        nodes += [
            helper.make_node("Gemm", ["x", const("fc1_w", weights[0]), const("fc1_b", weights[1])], ["fc1"]),
            helper.make_node("Relu", ["fc1"], ["fc1_relu"]),
            helper.make_node("Gemm", ["fc1_relu", const("fc2_w", weights[2]), const("fc2_b", weights[3])], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probs"], axis=-1),
        ]
    graph = helper.make_graph(
        nodes, f"{model}_seed{SEEDS[model]:03d}",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [bdim, CLASSES])],
        initializer=inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="engine-benchmarks")
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def build_ort(model: str, weights: Sequence[np.ndarray], threads: int, batch: int | None = None,
              spinning: bool = True):
    """An onnxruntime ``InferenceSession`` (CPU, ``threads`` intra-op threads, ORT_ENABLE_ALL).

    ``spinning=False`` sets ``session.intra_op.allow_spinning`` to 0 (not the default; shown in
    the CPU-cost table only, as the setting an embedder would reach for).
    """
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = int(threads)
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if not spinning:
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(onnx_model(model, weights, batch).SerializeToString(), so,
                                providers=["CPUExecutionProvider"])


def ort_predict(sess) -> Callable[[np.ndarray], np.ndarray]:
    """Fastest per-call path: with static shapes, input and output are bound once (IO binding)
    and each call copies ``x`` in and the probabilities out (the caller owns its output, as with
    the engine); about 1 us less per call than ``sess.run``. Symbolic shapes fall back to ``run``."""
    inp, outp = sess.get_inputs()[0], sess.get_outputs()[0]
    if all(isinstance(d, int) for d in inp.shape) and all(isinstance(d, int) for d in outp.shape):
        xin = np.zeros(inp.shape, np.float32)
        out = np.zeros(outp.shape, np.float32)
        io = sess.io_binding()
        io.bind_cpu_input(inp.name, xin)
        io.bind_output(outp.name, "cpu", 0, np.float32, list(out.shape), out.ctypes.data)
        run_io = sess.run_with_iobinding

        def predict(x: np.ndarray) -> np.ndarray:
            if x.shape != xin.shape:
                raise ValueError(f"onnxruntime session built for input {xin.shape}, got {x.shape}")
            xin[...] = x
            run_io(io)
            return out.copy()
        predict.keepalive = (xin, out, io)  # type: ignore[attr-defined]
        return predict

    run, names, name = sess.run, [outp.name], inp.name

    def predict_dynamic(x: np.ndarray) -> np.ndarray:
        return run(names, {name: x})[0]
    return predict_dynamic


def openvino_config(threads: int) -> dict:
    return {
        "INFERENCE_PRECISION_HINT": "f32",   # its default on a bf16-capable CPU is bf16
        "PERFORMANCE_HINT": "LATENCY",
        "NUM_STREAMS": "1",
        "INFERENCE_NUM_THREADS": str(int(threads)),
    }


def build_openvino(model: str, weights: Sequence[np.ndarray], threads: int, batch: int | None = None):
    """An OpenVINO ``CompiledModel`` on CPU, f32, one stream, ``threads`` threads, latency hint."""
    import openvino as ov
    core = ov.Core()
    ov_model = core.read_model(onnx_model(model, weights, batch).SerializeToString())
    compiled = core.compile_model(ov_model, "CPU", openvino_config(threads))
    prec = str(compiled.get_property("INFERENCE_PRECISION_HINT"))
    if "32" not in prec:  # e.g. <Type: 'float32'>; bf16 would not be the same computation
        raise RuntimeError(f"OpenVINO compiled with inference precision {prec}, expected f32")
    return compiled


def openvino_predict(compiled) -> Callable[[np.ndarray], np.ndarray]:
    """Fastest per-call path measured: copy ``x`` into the request's own input tensor, ``infer()``
    with no arguments, copy the output so the caller owns it (as the engine's ``predict()``
    guarantees). About 10 us less per call than ``req.infer({0: x})``."""
    req = compiled.create_infer_request()
    inp = req.get_input_tensor(0).data
    infer, out = req.infer, req.get_output_tensor

    def predict(x: np.ndarray) -> np.ndarray:
        if x.shape != inp.shape:
            raise ValueError(f"OpenVINO model compiled for input {inp.shape}, got {x.shape}")
        inp[...] = x
        infer()
        return out(0).data.copy()
    return predict


# ----------------------------------------------------------------------------- one entry point

def build_predict(framework: str, model: str, weights: Sequence[np.ndarray], threads: int,
                  batch: int | None = None) -> Callable[[np.ndarray], np.ndarray]:
    """``predict(x) -> probs`` for ``framework`` in FRAMEWORKS (plus ``ort_nospin``)."""
    if framework == "engine":
        m = build_engine(model, weights, threads)
        return m.predict
    if framework == "ort":
        return ort_predict(build_ort(model, weights, threads, batch))
    if framework == "ort_nospin":
        return ort_predict(build_ort(model, weights, threads, batch, spinning=False))
    if framework == "openvino":
        return openvino_predict(build_openvino(model, weights, threads, batch))
    if framework == "torch":
        return torch_predict(build_torch(model, weights, threads))
    raise ValueError(f"unknown framework {framework!r}")


def framework_version(framework: str) -> str:
    try:
        if framework == "engine":
            import engine
            return engine.__version__
        if framework.startswith("ort"):
            import onnxruntime
            return onnxruntime.__version__
        if framework == "openvino":
            import openvino
            return openvino.__version__.split("-")[0]
        if framework == "torch":
            import torch
            return torch.__version__
        if framework == "numpy":
            return np.__version__
    except Exception as e:
        return f"unavailable ({type(e).__name__})"
    return "?"
