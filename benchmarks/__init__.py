"""Benchmarks: this engine vs numpy, onnxruntime, OpenVINO and PyTorch (run `python -m benchmarks`)."""
