"""Reductions, ArgMax/ArgMin, CumSum, TopK (ONNX semantics)."""

from __future__ import annotations
