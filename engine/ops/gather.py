"""Gather / Scatter families (ONNX semantics)."""

from __future__ import annotations
