"""Attention and RotaryEmbedding (ONNX opset 23)."""

from __future__ import annotations
