"""One small adapter per framework `engine bench` compares: load a model file with a thread
count, run a feed dict, return the outputs in the model's output order.

    peer = PEERS["onnxruntime"]
    why = peer.unavailable("model.onnx")      # None, or why it cannot run here
    peer.load("model.onnx", threads=2)
    outputs = peer.run({"x": x})              # [array, ...]

Adapters run inside a bench worker process (engine/bench/worker.py), one framework per process,
so imports, thread pools and memory of one never touch another.

Where a peer applies:
  engine       every file engine.load reads (.engine, .onnx, .h5/.keras)
  onnxruntime  .onnx
  openvino     .onnx
  keras        .h5 / .hdf5 / .keras (the framework that wrote them; torch backend by default)
  torch        no file: engine reads no torch model file (.pt/.pth hold weights without the
               network), so there is no torch model to run for a file argument.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np

ONNX = (".onnx",)
KERAS = (".h5", ".hdf5", ".keras")
INSTALL = "pip install 'engine[bench]'"


class Peer:
    """A framework adapter. Subclasses set name, module (what must import), suffixes."""

    name = ""
    module = ""
    suffixes: tuple = ()

    def unavailable(self, path: str) -> str | None:
        """Why this framework cannot run `path` here (not applicable, not installed), or None."""
        if Path(path).suffix.lower() not in self.suffixes:
            return f"not applicable: {self.name} runs {', '.join(self.suffixes)} files"
        if importlib.util.find_spec(self.module) is None:
            return f"missing: {self.module} is not installed ({INSTALL} installs it)"
        return None

    def version(self) -> str:
        try:
            return __import__(self.module).__version__
        except (ImportError, AttributeError):
            return "?"

    def load(self, path: str, threads: int) -> None:
        raise NotImplementedError

    def run(self, feeds: dict) -> list:
        raise NotImplementedError


class Engine(Peer):
    name, module = "engine", "engine"
    suffixes = (".engine",) + ONNX + KERAS

    def unavailable(self, path: str) -> str | None:
        return None  # engine.load says itself what it cannot read

    def load(self, path, threads):
        import engine
        engine.set_num_threads(threads)
        self.model = engine.load(path)
        self.output_names = [o.name for o in self.model.outputs]

    def signature(self) -> list:
        return [(i.name, tuple(i.shape), str(i.dtype)) for i in self.model.inputs]

    def run(self, feeds):
        out = self.model.run(feeds)
        return [out[n] for n in self.output_names]


class OnnxRuntime(Peer):
    name, module, suffixes = "onnxruntime", "onnxruntime", ONNX

    def load(self, path, threads):
        import onnxruntime as ort
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1  # one operator at a time, as engine runs them
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self.sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])

    def run(self, feeds):
        return self.sess.run(None, feeds)


class OpenVINO(Peer):
    name, module, suffixes = "openvino", "openvino", ONNX

    def load(self, path, threads):
        import openvino as ov
        core = ov.Core()
        # f32, as the other frameworks (on a bf16-capable CPU its default is bf16), one stream
        # of `threads` threads, tuned for latency: the same settings as benchmarks/models.py.
        self.compiled = core.compile_model(path, "CPU", {
            "INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1",
            "INFERENCE_NUM_THREADS": str(int(threads))})
        self.request = self.compiled.create_infer_request()

    def run(self, feeds):
        res = self.request.infer(feeds)
        return [np.asarray(res[o]) for o in self.compiled.outputs]


class Keras(Peer):
    name, module, suffixes = "keras", "keras", KERAS

    def load(self, path, threads):
        os.environ.setdefault("KERAS_BACKEND", "torch")  # keras 3 reads it at import
        import keras
        if keras.backend.backend() == "torch":
            import torch
            torch.set_num_threads(threads)
            torch.set_num_interop_threads(1)
        self.model = keras.models.load_model(path, compile=False)

    def run(self, feeds):
        xs = list(feeds.values())
        y = self.model.predict_on_batch(xs[0] if len(xs) == 1 else xs)
        return [np.asarray(a) for a in (y if isinstance(y, (list, tuple)) else [y])]


class Torch(Peer):
    name, module, suffixes = "torch", "torch", ()

    def unavailable(self, path):
        return ("not applicable: no torch model exists for a file argument (engine reads no TorchScript; "
                ".pt/.pth files hold weights without the network); bench the exported .onnx instead")


PEERS = {p.name: p for p in (OnnxRuntime(), OpenVINO(), Keras(), Torch())}
