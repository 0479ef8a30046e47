"""Planning (buffers and kernel bindings, once per input signature) and execution."""

from .plan import Plan

__all__ = ["Plan"]
