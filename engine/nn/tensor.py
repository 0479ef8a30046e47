"""Symbolic tensors for the functional API: `x = Input(shape=(784,)); y = Dense(10)(x)`.

Each tensor records the layer call that produced it (`call`, None for an Input), so a model
can be traced from its outputs, and carries its Keras mask (`mask`, a bool KerasTensor or
None), which later layer calls read as Keras does with `_keras_mask`.
"""

from __future__ import annotations

from typing import Optional

from .. import dtypes


class KerasTensor:
    def __init__(self, shape: tuple, dtype: str = "float32", call=None, index: int = 0,
                 name: Optional[str] = None):
        self.shape = tuple(shape)
        self.dtype = dtype
        self.call = call            # the Call that produced it (None: a model input)
        self.index = index          # which output of that call
        self.name = name or (call.layer.name if call is not None else "input")
        self.mask: Optional[KerasTensor] = None

    @property
    def layer(self):
        """The layer that produced this tensor (None for an Input)."""
        return None if self.call is None else self.call.layer

    @property
    def parents(self) -> tuple:
        """Every tensor the producing call read (inputs, masks, initial states)."""
        return () if self.call is None else tuple(self.call.parents)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __repr__(self) -> str:
        return f"<KerasTensor shape={self.shape} dtype={self.dtype} name={self.name}>"


_input_count = [0]

# Keras dtype names engine inputs may take (Keras calls an int index 'int32' or 'int64').
_INPUT_DTYPES = ("float32", "float16", "float64", "bfloat16", "int8", "int16", "int32", "int64",
                 "uint8", "uint16", "uint32", "uint64", "bool")


def input_dtype(dtype, where: str = "Input") -> str:
    """An engine dtype name for a Keras input dtype (None: float32). bfloat16 and float16
    inputs compute in float32 here, as every float layer does (see docs/keras.md)."""
    from ..errors import EngineError

    if dtype is None:
        return "float32"
    if isinstance(dtype, dict):  # a DTypePolicy config
        dtype = dtype.get("config", {}).get("name", dtype)
    name = getattr(dtype, "name", dtype)
    if name not in _INPUT_DTYPES:
        raise EngineError(f"{where}: unsupported dtype {dtype!r} (supported: {', '.join(_INPUT_DTYPES)})")
    if name in ("float16", "bfloat16", "float64"):
        return "float32"
    dtypes.to_numpy(name)  # known to the engine
    return name


def Input(shape: tuple = None, batch_size: Optional[int] = None, dtype=None, sparse=None,
          batch_shape: tuple = None, name: Optional[str] = None, tensor=None,
          optional: bool = False) -> KerasTensor:
    """A model input; `shape` excludes the batch dimension (Keras semantics).

    >>> x = Input(shape=(28, 28, 1))                 # float32 images
    >>> ids = Input(shape=(None,), dtype="int32")    # token ids of any length
    """
    from ..errors import EngineError

    if sparse or tensor is not None or optional:
        raise EngineError("Input: sparse, tensor= and optional inputs are not supported")
    if batch_shape is None:
        if shape is None:
            raise EngineError("Input: give shape=(...) (without the batch dim) or batch_shape=")
        if isinstance(shape, int):
            shape = (shape,)
        batch_shape = (batch_size,) + tuple(shape)
    batch_shape = tuple(batch_shape)
    if any(d is not None and (isinstance(d, bool) or not isinstance(d, int) or d < 1) for d in batch_shape):
        raise EngineError(f"Input: dims must be positive ints or None, got {batch_shape}")
    if name is None:
        name = "input_layer" if _input_count[0] == 0 else f"input_layer_{_input_count[0]}"
        _input_count[0] += 1
    return KerasTensor(batch_shape, input_dtype(dtype), None, 0, name)
