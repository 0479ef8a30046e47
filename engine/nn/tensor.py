"""Symbolic tensors for the functional API: `x = Input(shape=(784,)); y = Dense(10)(x)`.
Each records the layer call that produced it, so a Model can be traced from its outputs."""

from __future__ import annotations

from typing import Optional


class KerasTensor:
    def __init__(self, shape: tuple, layer=None, parents: tuple = (), name: Optional[str] = None):
        self.shape = tuple(shape)
        self.layer = layer          # None for an Input
        self.parents = parents      # input tensors of the producing layer call
        self.name = name or (layer.name if layer is not None else "input")

    def __repr__(self) -> str:
        return f"<KerasTensor shape={self.shape} name={self.name}>"


_input_count = [0]


def Input(shape: tuple = None, batch_size: Optional[int] = None, name: Optional[str] = None,
          *, batch_shape: tuple = None) -> KerasTensor:
    """A model input; `shape` excludes the batch dimension (Keras semantics)."""
    from ..errors import EngineError

    if batch_shape is None:
        if shape is None:
            raise EngineError("Input: give shape=(...) (without the batch dim) or batch_shape=")
        if isinstance(shape, int):
            shape = (shape,)
        batch_shape = (batch_size,) + tuple(shape)
    if any(d is not None and (not isinstance(d, int) or d < 1) for d in batch_shape):
        raise EngineError(f"Input: dims must be positive ints or None, got {batch_shape}")
    if name is None:
        name = "input_layer" if _input_count[0] == 0 else f"input_layer_{_input_count[0]}"
        _input_count[0] += 1
    return KerasTensor(batch_shape, None, (), name)
