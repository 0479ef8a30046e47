"""Conformance suites: ONNX node and model test cases, run through the engine and onnxruntime."""
