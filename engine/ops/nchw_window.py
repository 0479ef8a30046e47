"""Windows of the ONNX NCHW ops (Conv, ConvTranspose, pools): attribute checks, output sizes
and padding (auto_pad), and the 18 window ints the native kernels take."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import GraphError, ShapeError

AUTO_PADS = ("NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID")
MAX_SPATIAL = 3  # the kernels take 1..3 spatial dims


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def ints_attr(node, name, length=None, default=None, minimum=None):
    """Attribute `name` as a tuple of ints (`length` of them when given), or `default`."""
    v = node.attrs.get(name)
    if v is None:
        return default
    if not isinstance(v, (list, tuple)) or not all(_is_int(i) for i in v):
        raise GraphError(f"node '{node.name}' ({node.op}): attribute '{name}' must be a list of ints, got {v!r}")
    if length is not None and len(v) != length:
        raise GraphError(f"node '{node.name}' ({node.op}): attribute '{name}' must have {length} values, got {list(v)}")
    if minimum is not None and any(i < minimum for i in v):
        raise GraphError(f"node '{node.name}' ({node.op}): attribute '{name}' must be >= {minimum}, got {list(v)}")
    return tuple(int(i) for i in v)


def int_attr(node, name, default, choices=None, minimum=None) -> int:
    v = node.attrs.get(name, default)
    if isinstance(v, float) and v.is_integer():  # some exporters write ints as floats
        v = int(v)
    if not _is_int(v) or (choices is not None and v not in choices) or (minimum is not None and v < minimum):
        want = f"one of {list(choices)}" if choices is not None else f"an int >= {minimum}"
        raise GraphError(f"node '{node.name}' ({node.op}): attribute '{name}' must be {want}, got {v!r}")
    return int(v)


def auto_pad_attr(node) -> str:
    v = node.attrs.get("auto_pad", "NOTSET")
    if v not in AUTO_PADS:
        raise GraphError(f"node '{node.name}' ({node.op}): auto_pad must be one of {', '.join(AUTO_PADS)}, got {v!r}")
    return v


def check_window_attrs(node, nd=None) -> None:
    """Load-time checks of the attributes every windowed op shares (nd: spatial rank if known)."""
    auto_pad_attr(node)
    ints_attr(node, "kernel_shape", nd, minimum=1)
    ints_attr(node, "strides", nd, minimum=1)
    ints_attr(node, "dilations", nd, minimum=1)
    ints_attr(node, "pads", None if nd is None else 2 * nd, minimum=0)
    pads = node.attrs.get("pads")
    if pads is not None and len(pads) % 2:
        raise GraphError(f"node '{node.name}' ({node.op}): pads must have 2 values per spatial dim, got {list(pads)}")


@dataclass
class Window:
    """One window over the spatial dims (1..3) of an NCHW tensor."""
    inp: tuple
    out: tuple
    kernel: tuple
    strides: tuple
    dilations: tuple
    pads_begin: tuple
    pads_end: tuple

    @property
    def nd(self) -> int:
        return len(self.inp)

    def ints(self) -> list:
        """in, out, kernel, strides, dilations, pads_begin: each right-aligned in 3 slots."""
        def fit(t, fill):
            return [fill] * (MAX_SPATIAL - len(t)) + list(t)
        return (fit(self.inp, 1) + fit(self.out, 1) + fit(self.kernel, 1) + fit(self.strides, 1)
                + fit(self.dilations, 1) + fit(self.pads_begin, 0))

    def pads_end_ints(self) -> list:
        return [0] * (MAX_SPATIAL - self.nd) + list(self.pads_end)


def spatial_rank(node, shape, what="input") -> int:
    nd = len(shape) - 2
    if nd < 1 or nd > MAX_SPATIAL:
        raise ShapeError(f"node '{node.name}' ({node.op}): {what} must be N×C×D1..Dn with 1 to "
                         f"{MAX_SPATIAL} spatial dims, got shape {tuple(shape)}")
    return nd


def _extent(k, d):
    return (k - 1) * d + 1


def forward_window(node, in_sizes, kernel, ceil_mode=False) -> Window:
    """The window of Conv / pools over spatial sizes `in_sizes` (auto_pad, pads, strides,
    dilations read from the node), with the output size rule of the newest opsets."""
    nd = len(in_sizes)
    strides = ints_attr(node, "strides", nd, (1,) * nd, 1)
    dil = ints_attr(node, "dilations", nd, (1,) * nd, 1)
    auto_pad = auto_pad_attr(node)
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        out = tuple(-(-i // s) for i, s in zip(in_sizes, strides))
        total = [max(0, (o - 1) * s + _extent(k, d) - i) for o, s, k, d, i in zip(out, strides, kernel, dil, in_sizes)]
        begin = tuple(t // 2 if auto_pad == "SAME_UPPER" else t - t // 2 for t in total)
        end = tuple(t - b for t, b in zip(total, begin))
        return Window(tuple(in_sizes), out, tuple(kernel), strides, dil, begin, end)
    if auto_pad == "VALID":
        begin = end = (0,) * nd
    else:
        pads = ints_attr(node, "pads", 2 * nd, (0,) * (2 * nd), 0)
        begin, end = pads[:nd], pads[nd:]
    out = []
    for i, k, s, d, pb, pe in zip(in_sizes, kernel, strides, dil, begin, end):
        span = i + pb + pe - _extent(k, d)
        if span < 0:
            raise ShapeError(f"node '{node.name}' ({node.op}): input spatial size {i} (padded {i + pb + pe}) is "
                             f"smaller than the kernel extent {_extent(k, d)} (kernel {k}, dilation {d})")
        o = (-(-span // s) if ceil_mode else span // s) + 1
        if ceil_mode and (o - 1) * s >= i + pb:  # the last window must start inside the input or left pad
            o -= 1
        out.append(o)
    return Window(tuple(in_sizes), tuple(out), tuple(kernel), strides, dil, tuple(begin), tuple(end))
