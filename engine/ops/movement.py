"""Data movement ops (ONNX semantics, every type): Transpose, Concat, Split, Slice, Pad, ..."""

from __future__ import annotations
