"""SoftmaxCrossEntropyLoss, NegativeLogLikelihoodLoss (ONNX semantics)."""

from __future__ import annotations
