"""ONNX convolution and pooling (N-d, NCHW): Conv, ConvTranspose, MaxPool, AveragePool, ..."""

from __future__ import annotations
