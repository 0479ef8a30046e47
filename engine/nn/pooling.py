"""Pooling, channels_last: Max/AveragePooling1D/2D/3D and the global poolings.

2-D pools are the engine's NHWC `MaxPool2D` / `AvgPool2D` ops, 1-D ones the same over a
height of 1, 3-D ones the ONNX pools between transposes. An average with 'same' padding
divides by the number of input pixels in each window (TensorFlow's and Keras's rule).
GlobalAveragePooling1D averages only the unmasked steps when its input carries a mask. In a
training graph the global poolings are the native channels-last GlobalAveragePool2D /
GlobalMaxPool2D ops at every rank (a max's gradient is shared by tied maxima, as in Keras).
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from ..dtypes import code
from ..errors import EngineError, ShapeError
from .base import Layer, check_data_format, int_tuple
from .conv import _axes, conv_out, to_channels_first, to_channels_last


class _Pooling(Layer):
    rank = 2
    is_max = True

    def __init__(self, pool_size=2, strides=None, padding: str = "valid", data_format: Optional[str] = None,
                 name: Optional[str] = None, **kw):
        super().__init__(name=name, **kw)
        check_data_format(data_format, self.name)
        if padding not in ("valid", "same"):
            raise EngineError(f"{self.name}: padding must be 'valid' or 'same', got {padding!r}")
        self.pool_size = int_tuple(pool_size, self.rank, f"{self.name}: pool_size")
        self.strides = self.pool_size if strides is None else int_tuple(strides, self.rank, f"{self.name}: strides")
        self.padding = padding

    def compute_output_shape(self, input_shape):
        if len(input_shape) != self.rank + 2:
            raise ShapeError(f"{self.name}: expected a {self.rank + 2}-D channels_last input, got {input_shape}")
        spatial = [conv_out(n, k, s, 1, self.padding) for n, k, s in zip(input_shape[1:-1], self.pool_size,
                                                                         self.strides)]
        if any(n == 0 for n in spatial):
            raise ShapeError(f"{self.name}: input {input_shape} is smaller than the pool {self.pool_size}")
        return (input_shape[0], *spatial, input_shape[-1])

    def emit(self, g, x, out):
        op = "MaxPool2D" if self.is_max else "AvgPool2D"
        if self.rank == 2:
            return g.node(op, [x], out, {"pool_size": list(self.pool_size), "strides": list(self.strides),
                                          "padding": self.padding})
        if self.rank == 1:
            x4 = g.node("Unsqueeze", [x, _axes(g, f"{out}/h", [1])], f"{out}/nhwc")
            y4 = g.node(op, [x4], f"{out}/pool2d", {"pool_size": [1, self.pool_size[0]],
                                                    "strides": [1, self.strides[0]], "padding": self.padding})
            return g.node("Squeeze", [y4, _axes(g, f"{out}/sq", [1])], out)
        xc = to_channels_first(g, x, 3, f"{out}/ncdhw")
        attrs = {"kernel_shape": list(self.pool_size), "strides": list(self.strides),
                 "auto_pad": "SAME_UPPER" if self.padding == "same" else "VALID"}
        if not self.is_max:
            attrs["count_include_pad"] = 0
        yc = g.node("MaxPool" if self.is_max else "AveragePool", [xc], f"{out}/pool", attrs)
        return to_channels_last(g, yc, 3, out)


def _pool(name: str, rank: int, is_max: bool, default):
    def init(self, pool_size=default, strides=None, padding="valid", data_format=None, name=None, **kw):
        _Pooling.__init__(self, pool_size, strides, padding, data_format, name, **kw)
    return type(name, (_Pooling,), {"rank": rank, "is_max": is_max, "__init__": init,
                                    "__doc__": f"Keras {name} (channels_last)."})


MaxPooling1D = _pool("MaxPooling1D", 1, True, 2)
MaxPooling2D = _pool("MaxPooling2D", 2, True, (2, 2))
MaxPooling3D = _pool("MaxPooling3D", 3, True, (2, 2, 2))
# Keras 3 requires pool_size for the averages; Keras 2 defaulted it like the max pools.
AveragePooling1D = _pool("AveragePooling1D", 1, False, 2)
AveragePooling2D = _pool("AveragePooling2D", 2, False, (2, 2))
AveragePooling3D = _pool("AveragePooling3D", 3, False, (2, 2, 2))


class _GlobalPooling(Layer):
    rank = 2
    is_max = False

    def __init__(self, data_format: Optional[str] = None, keepdims: bool = False, **kw):
        super().__init__(**kw)
        check_data_format(data_format, self.name)
        self.keepdims = bool(keepdims)

    def compute_output_shape(self, input_shape):
        if len(input_shape) != self.rank + 2:
            raise ShapeError(f"{self.name}: expected a {self.rank + 2}-D channels_last input, got {input_shape}")
        n, c = input_shape[0], input_shape[-1]
        return (n,) + (1,) * self.rank + (c,) if self.keepdims else (n, c)

    def emit(self, g, x, out, mask=None):
        if (self.rank == 2 and not self.is_max) or g.training:
            # Training graphs: the native global pools for every rank (one gradient step each).
            op = "GlobalMaxPool2D" if self.is_max else "GlobalAveragePool2D"
            return g.node(op, [x], out, {"keepdims": self.keepdims})
        axes = _axes(g, out, range(1, self.rank + 1))
        op = "ReduceMax" if self.is_max else "ReduceMean"
        return g.node(op, [x, axes], out, {"keepdims": int(self.keepdims)})


class GlobalAveragePooling1D(_GlobalPooling):
    """Mean over the steps; with a mask, the mean of the unmasked steps (Keras's rule; a row
    with every step masked divides by zero, as in Keras)."""

    rank = 1
    supports_masking = True
    consumes_mask = True

    def compute_mask(self, inputs, mask):
        return None

    def emit(self, g, x, out, mask=None):
        if mask is None:
            return super().emit(g, x, out)
        steps = _axes(g, out, [1])
        m3 = g.node("Unsqueeze", [mask, g.const(f"{out}/last", np.array([2], np.int64))], f"{out}/mask3")
        g.node("Where", [m3, x, g.const(f"{out}/zero", np.array(0, np.float32))], f"{out}/kept")
        g.node("ReduceSum", [f"{out}/kept", steps], f"{out}/sum", {"keepdims": int(self.keepdims)})
        g.node("Cast", [m3], f"{out}/maskf", {"to": code("float32")})
        g.node("ReduceSum", [f"{out}/maskf", steps], f"{out}/count", {"keepdims": int(self.keepdims)})
        return g.node("Div", [f"{out}/sum", f"{out}/count"], out)


def _global(name: str, rank: int, is_max: bool):
    return type(name, (_GlobalPooling,), {"rank": rank, "is_max": is_max, "__doc__": f"Keras {name}."})


GlobalMaxPooling1D = _global("GlobalMaxPooling1D", 1, True)
GlobalAveragePooling2D = _global("GlobalAveragePooling2D", 2, False)
GlobalMaxPooling2D = _global("GlobalMaxPooling2D", 2, True)
GlobalAveragePooling3D = _global("GlobalAveragePooling3D", 3, False)
GlobalMaxPooling3D = _global("GlobalMaxPooling3D", 3, True)
