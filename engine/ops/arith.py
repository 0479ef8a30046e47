"""Unary math, comparisons, logic, Where, Cast (ONNX semantics, every type)."""

from __future__ import annotations
