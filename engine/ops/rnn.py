"""Recurrent ops: LSTM, GRU, RNN (ONNX semantics)."""

from __future__ import annotations
