"""Resize (opset 19 semantics; Upsample and older Resize forms are mapped onto it at import).

Everything a resize reads depends only on shapes and attributes, so the lowering computes,
per output index along each resized axis, the source indices and weights once (numpy,
float64, following ONNX's reference implementation) and hands them to the kernels as plan
constants: nearest is one gather over all axes (any element type), linear and cubic are one
gather-and-blend pass per axis with the intermediates kept unrounded, or a single pass over
the last two axes (images) that keeps resampled rows in cache.

roi, scales and sizes must be known when planning. exclude_outside affects linear and cubic
weights only (as in onnxruntime); antialias is refused for nearest.
"""

from __future__ import annotations

import itertools
import math
from typing import NamedTuple, Optional

import numpy as np

from .. import dtypes
from ..errors import DTypeError, GraphError, ShapeError
from .registry import known, Tensor, TensorType, register
from .views import strides_of

_MODES = ("nearest", "linear", "cubic")
# tf_half_pixel_for_nn exists up to opset 12 only; kept so that older models load unchanged.
_COORDS = ("half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners", "asymmetric",
           "tf_crop_and_resize", "tf_half_pixel_for_nn")
_NEAREST = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")
_POLICIES = ("stretch", "not_larger", "not_smaller")


class Settings(NamedTuple):
    mode: str
    coords: str
    nearest: str
    cubic_a: float
    exclude_outside: bool
    extrapolation: float
    antialias: bool
    policy: str


def _settings(node) -> Settings:
    a = node.attrs
    return Settings(a.get("mode", "nearest"), a.get("coordinate_transformation_mode", "half_pixel"),
                    a.get("nearest_mode", "round_prefer_floor"), float(a.get("cubic_coeff_a", -0.75)),
                    bool(a.get("exclude_outside", 0)), float(a.get("extrapolation_value", 0.0)),
                    bool(a.get("antialias", 0)), a.get("keep_aspect_ratio_policy", "stretch"))


def _check(node):
    def bad(attr, want):
        raise GraphError(f"node '{node.name}' (Resize): attribute '{attr}' must be {want}, "
                         f"got {node.attrs.get(attr)!r}")

    for attr, allowed in (("mode", _MODES), ("coordinate_transformation_mode", _COORDS),
                          ("nearest_mode", _NEAREST), ("keep_aspect_ratio_policy", _POLICIES)):
        if attr in node.attrs and node.attrs[attr] not in allowed:
            bad(attr, "one of " + ", ".join(allowed))
    for attr in ("exclude_outside", "antialias"):
        if node.attrs.get(attr, 0) not in (0, 1) or isinstance(node.attrs.get(attr), float):
            bad(attr, "0 or 1")
    for attr in ("cubic_coeff_a", "extrapolation_value"):
        v = node.attrs.get(attr, 0.0)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            bad(attr, "a finite number")
    axes = node.attrs.get("axes")
    if axes is not None and (not isinstance(axes, (list, tuple))
                             or not all(isinstance(d, int) and not isinstance(d, bool) for d in axes)):
        bad("axes", "a list of ints")
    s = _settings(node)
    if s.antialias and s.mode == "nearest":
        raise GraphError(f"node '{node.name}' (Resize): antialias applies to linear and cubic modes, "
                         "not nearest")


# -- geometry: output shape, scale and roi per axis -----------------------------------------------

class Geometry(NamedTuple):
    out_shape: tuple
    scales: dict   # axis -> scale (float64) for every axis in `axes`
    rois: dict     # axis -> (start, end) for tf_crop_and_resize


def _known(node, ins, i, what) -> Optional[np.ndarray]:
    """Input i's value (None when absent or empty); it must be known when planning."""
    t = ins[i] if i < len(ins) else None
    if t is None or math.prod(t.shape) == 0:
        return None
    return np.asarray(known(ins, i, node, f"'{what}'")).reshape(-1)


def _geometry(node, ins) -> Geometry:
    s = _settings(node)
    shape = tuple(ins[0].shape)
    rank = len(shape)
    axes = node.attrs.get("axes")
    axes = list(range(rank)) if axes is None else list(axes)
    if any(not -rank <= d < rank for d in axes):
        raise ShapeError(f"node '{node.name}' (Resize): axes {axes} out of range for rank {rank}")
    axes = [d % rank for d in axes]
    if len(set(axes)) != len(axes):
        raise ShapeError(f"node '{node.name}' (Resize): repeated axis in {node.attrs.get('axes')}")
    roi = _known(node, ins, 1, "roi") if s.coords == "tf_crop_and_resize" else None
    scales = _known(node, ins, 2, "scales")
    sizes = _known(node, ins, 3, "sizes")
    if (scales is None) == (sizes is None):
        raise ShapeError(f"node '{node.name}' (Resize): give exactly one of 'scales' and 'sizes' "
                         f"(got {'both' if scales is not None else 'neither'})")
    given = scales if scales is not None else sizes
    if len(given) != len(axes):
        raise ShapeError(f"node '{node.name}' (Resize): {'scales' if scales is not None else 'sizes'} has "
                         f"{len(given)} values for {len(axes)} axes (input shape {shape})")
    out = list(shape)
    factors = {}
    if scales is not None:
        if not np.all(np.isfinite(scales)) or np.any(scales <= 0):
            raise ShapeError(f"node '{node.name}' (Resize): scales must be positive, got {scales.tolist()}")
        for d, f in zip(axes, scales):
            factors[d] = float(f)
            out[d] = int(math.floor(float(f) * shape[d]))  # float64 like the reference
    else:
        if sizes.dtype.kind not in "iu" or np.any(sizes < 0):
            raise ShapeError(f"node '{node.name}' (Resize): sizes must be non-negative int64, "
                             f"got {sizes.tolist()}")
        for d, n in zip(axes, sizes):
            if shape[d] == 0 and n != 0:
                raise ShapeError(f"node '{node.name}' (Resize): cannot resize empty axis {d} to size {int(n)}")
            factors[d] = int(n) / shape[d] if shape[d] else 1.0
            out[d] = int(n)
        live = [d for d in axes if shape[d]]
        if s.policy != "stretch" and live:
            pick = min if s.policy == "not_larger" else max
            scale = pick(factors[d] for d in live)
            for d in live:
                factors[d] = scale
                out[d] = int(scale * shape[d] + 0.5)  # round half up
    rois = {}
    if s.coords == "tf_crop_and_resize":
        if roi is None:
            roi = np.array([0.0] * len(axes) + [1.0] * len(axes))
        if len(roi) != 2 * len(axes):
            raise ShapeError(f"node '{node.name}' (Resize): roi needs {2 * len(axes)} values "
                             f"(starts then ends), got {len(roi)}")
        for i, d in enumerate(axes):
            rois[d] = (float(roi[i]), float(roi[len(axes) + i]))
    return Geometry(tuple(out), factors, rois)


# -- per-axis taps -------------------------------------------------------------------------------

class Taps(NamedTuple):
    idx: np.ndarray                 # (out_len, n) int64 source indices, in range
    w: np.ndarray                   # (out_len, n) float64 weights
    outside: Optional[np.ndarray]   # (out_len,) bool: extrapolated (tf_crop_and_resize), or None


def _source_coords(s: Settings, in_len, out_len, scale, roi):
    """x_original per output index (float64, as ONNX's reference computes it)."""
    y = np.arange(out_len, dtype=np.float64)
    width = scale * in_len  # the fractional output width the transforms refer to
    outside = None
    if s.coords == "align_corners":
        x = np.zeros(out_len) if width == 1 else y * (in_len - 1) / (width - 1)
    elif s.coords == "asymmetric":
        x = y / scale
    elif s.coords == "tf_crop_and_resize":
        start, end = roi
        if width == 1:
            x = np.full(out_len, (end - start) * (in_len - 1) / 2)
        else:
            x = y * (end - start) * (in_len - 1) / (width - 1)
        x = x + start * (in_len - 1)
        outside = (x < 0) | (x > in_len - 1)
    elif s.coords == "pytorch_half_pixel":
        x = np.full(out_len, -0.5) if width == 1 else (y + 0.5) / scale - 0.5
    elif s.coords == "half_pixel":
        x = (y + 0.5) / scale - 0.5
    elif s.coords == "half_pixel_symmetric":
        offset = in_len / 2 * (1 - out_len / width)
        x = offset + (y + 0.5) / scale - 0.5
    else:  # tf_half_pixel_for_nn
        x = (y + 0.5) / scale
    return x, outside


def _cubic(x, a):
    x = np.abs(x)
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return np.where(x <= 1, near, np.where(x < 2, far, 0.0))


def _coeffs(s: Settings, ratio, scale):
    """(out_len, n) weights of the n neighbours starting at offset `first` from floor-ish x."""
    r = ratio[:, None]
    if s.mode == "nearest":
        if s.nearest == "round_prefer_floor":
            hi = r > 0.5
        elif s.nearest == "round_prefer_ceil":
            hi = r >= 0.5
        elif s.nearest == "floor":
            hi = np.zeros_like(r, bool)
        else:
            hi = np.ones_like(r, bool)
        hi = hi | (r == 1)  # x on an integer: that index
        return np.concatenate([~hi, hi], axis=1).astype(np.float64)
    if not s.antialias:
        if s.mode == "linear":
            return np.concatenate([1 - r, r], axis=1)
        return _cubic(np.concatenate([r + 1, r, 1 - r, 2 - r], axis=1), s.cubic_a)
    # Antialias: the filter stretched by 1/scale when downsampling, normalised.
    scale = min(scale, 1.0)
    reach = 1 if s.mode == "linear" else 2
    first = int(np.floor(-reach / scale) + 1)
    args = (np.arange(first, 2 - first)[None, :] - r) * scale
    c = np.clip(1 - np.abs(args), 0, 1) if s.mode == "linear" else _cubic(args, s.cubic_a)
    return c / c.sum(axis=1, keepdims=True)


def axis_taps(s: Settings, in_len: int, out_len: int, scale: float, roi=None) -> Taps:
    x, outside = _source_coords(s, in_len, out_len, scale, roi)
    base = np.floor(x)
    ratio = np.where(x == base, 1.0, x - base)  # in (0, 1]: prefer the pixel left of x
    w = _coeffs(s, ratio, scale)
    n = w.shape[1]
    # The n neighbours nearest x, ties to the smaller index (the reference's padded search).
    pad = (n + 1) // 2
    xp = x + pad
    p = np.floor(xp).astype(np.int64)
    start = p + np.where(xp - p == 0, -(n // 2), -(n // 2) + 1)
    idx = start[:, None] + np.arange(n)[None, :] - pad
    if s.exclude_outside and s.mode != "nearest":
        w = np.where((idx < 0) | (idx >= in_len), 0.0, w)
        total = w.sum(axis=1, keepdims=True)
        w = w / np.where(total == 0, 1.0, total)
    idx = np.clip(idx, 0, max(in_len - 1, 0))
    if s.mode == "nearest":  # one tap: the neighbour with weight 1
        idx = np.where(w[:, 1] > 0, idx[:, 1], idx[:, 0])[:, None]
        w = np.ones_like(idx, np.float64)
    if outside is not None and not outside.any():
        outside = None
    return Taps(idx, w, outside)


def _is_identity(t: Taps, in_len: int) -> bool:
    out_len = t.idx.shape[0]
    if out_len != in_len or t.outside is not None:
        return False
    own = t.idx == np.arange(out_len)[:, None]
    return bool(np.all(np.where(own, t.w, 0.0).sum(axis=1) == 1) and np.all(np.where(own, 0.0, t.w) == 0))


def _plan_axes(node, ins):
    """(geometry, {axis: Taps}) for the axes that actually change."""
    g = _geometry(node, ins)
    s = _settings(node)
    shape = ins[0].shape
    taps = {}
    if math.prod(g.out_shape) == 0:
        return g, taps
    for d, scale in g.scales.items():
        t = axis_taps(s, shape[d], g.out_shape[d], scale, g.rois.get(d))
        if not _is_identity(t, shape[d]):
            taps[d] = t
    return g, taps


# -- the op ----------------------------------------------------------------------------------------

def _cast_like_reference(v, dtype: str):
    """float64 -> dtype: integers round half to even and saturate, like ONNX's reference."""
    v = np.asarray(v, np.float64)
    if dtype == "bfloat16":  # no numpy type: the bits, rounded to nearest even
        u = v.astype(np.float32).view(np.uint32).astype(np.uint64)
        return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    np_dt = dtypes.to_numpy(dtype)
    if np_dt.kind in "iu":
        info = np.iinfo(np_dt)
        v = np.nan_to_num(np.round(v), nan=0.0)
        return np.clip(v, float(info.min), float(info.max)).astype(np_dt)
    if np_dt.kind == "b":
        return v != 0
    return v.astype(np_dt)


def resize_type(node, ins):
    s = _settings(node)
    x = ins[0]
    if s.mode != "nearest" and (x.dtype == "bool" or x.dtype == "bfloat16"):
        raise DTypeError(f"node '{node.name}' (Resize): {s.mode} mode needs a numeric element type "
                         f"(not {x.dtype}); nearest takes every type")
    return [TensorType(_geometry(node, ins).out_shape, x.dtype)]


def _ins(ctx, node):
    return [Tensor(ctx.shape(i), ctx.dtype(i), ctx.value(i)) if i else None for i in node.inputs]


def resize_lower(ctx, node):
    x, y = node.inputs[0], node.outputs[0]
    shape, dt = ctx.shape(x), ctx.dtype(x)
    g, taps = _plan_axes(node, _ins(ctx, node))
    if math.prod(g.out_shape) == 0:
        return
    if not taps:
        ctx.kernel("copy", [x], [y], dtype="any", ints=[math.prod(shape) * dtypes.itemsize(dt)])
    elif _settings(node).mode == "nearest":
        _lower_nearest(ctx, node, shape, g.out_shape, taps)
    else:
        _lower_blend(ctx, node, shape, taps)


def _constant(ctx, value) -> str:
    """A plan constant, bound at once: ctx.constant names constants by the slot count, so two
    made before either is bound would share one name."""
    name = ctx.constant(value)
    ctx.slot(name)
    return name


def _lower_nearest(ctx, node, shape, out_shape, taps):
    """One gather: per output dim a table of source offsets (-1 where extrapolated); the
    untouched trailing dims move as blocks, untouched leading dims merge."""
    dt = ctx.dtype(node.inputs[0])
    strides = strides_of(shape)
    last = max(taps)
    block = math.prod(shape[last + 1:])
    dims, tables = [], []
    for d in range(last + 1):
        if d in taps:
            t = taps[d]
            off = t.idx[:, 0] * strides[d]
            if t.outside is not None:
                off = np.where(t.outside, -1, off)
            dims.append(out_shape[d])
            tables.append(off)
        elif d > 0 and d - 1 not in taps:
            dims[-1] *= shape[d]  # merge with the previous untouched dim (contiguous)
            tables[-1] = np.arange(dims[-1], dtype=np.int64) * strides[d]
        else:
            dims.append(shape[d])
            tables.append(np.arange(shape[d], dtype=np.int64) * strides[d])
    fill = _cast_like_reference(_settings(node).extrapolation, dt).reshape(1)
    ctx.kernel("resize_nearest", [node.inputs[0], _constant(ctx, np.concatenate(tables).astype(np.int64)),
                                  _constant(ctx, fill)], node.outputs, dtype="any",
               ints=[dtypes.itemsize(dt), len(dims), block, *dims])


def acc_dtype(dt: str) -> str:
    """The kernels' accumulator type (native resize_acc_type)."""
    return "float64" if dt in ("float64", "int32", "uint32", "int64", "uint64") else "float32"


MAX_TAPS_2D = 512  # native resize_2d_max_taps()


def _axis_constants(ctx, t: Taps, acc: str) -> list:
    """[idx, w, flags or ""] of one axis, laid out tap-major for the kernels."""
    return [_constant(ctx, np.ascontiguousarray(t.idx.T, np.int32)),
            _constant(ctx, np.ascontiguousarray(t.w.T, dtypes.to_numpy(acc))),
            _constant(ctx, t.outside.astype(np.uint8)) if t.outside is not None else ""]


def _fused_pays(shape, th: Taps, tw: Taps) -> bool:
    """The fused pass resamples every source row it uses along W (gathers), then blends rows;
    when rows shrink, blending first (the separable H-then-W order) gathers less."""
    W, (OH, nh), (OW, nw) = shape[-1], th.idx.shape, tw.idx.shape
    if nh > MAX_TAPS_2D:
        return False
    rows_used = len(np.unique(th.idx))
    return rows_used * OW * nw * 3 + OH * OW * nh <= OH * W * nh + OH * OW * nw * 3


def _lower_2d(ctx, node, shape, th: Taps, tw: Taps):
    """The last two axes (the NCHW image case) in one pass that keeps resampled rows in cache."""
    dt = ctx.dtype(node.inputs[0])
    acc = acc_dtype(dt)
    H, W = shape[-2:]
    ctx.kernel("resize_2d", [node.inputs[0], *_axis_constants(ctx, th, acc), *_axis_constants(ctx, tw, acc)],
               node.outputs, dtype=dt, floats=[_settings(node).extrapolation],
               ints=[math.prod(shape[:-2]), H, th.idx.shape[0], W, tw.idx.shape[0], th.idx.shape[1], tw.idx.shape[1]])


def _cost(order, shape, taps) -> float:
    """Rough cost of passes in this order: taps per output element, a gather along the
    contiguous axis counting thrice an axpy over rows."""
    cur, total = list(shape), 0.0
    for d in order:
        cur[d] = taps[d].idx.shape[0]
        total += math.prod(cur) * taps[d].idx.shape[1] * (3 if math.prod(cur[d + 1:]) == 1 else 1)
    return total


def _lower_blend(ctx, node, shape, taps):
    """One gather-and-blend pass per changed axis, in the cheapest order; intermediates in
    the accumulator type, rounded once by the last pass."""
    dt = ctx.dtype(node.inputs[0])
    acc = acc_dtype(dt)
    rank = len(shape)
    if any(shape[d] >= 2 ** 31 for d in taps):
        raise ShapeError(f"node '{node.name}' (Resize): an axis of 2**31 or more elements cannot be interpolated")
    if rank >= 2 and set(taps) == {rank - 2, rank - 1} and _fused_pays(shape, taps[rank - 2], taps[rank - 1]):
        return _lower_2d(ctx, node, shape, taps[rank - 2], taps[rank - 1])
    orders = itertools.permutations(sorted(taps)) if len(taps) <= 5 else \
        [sorted(taps, key=lambda d: taps[d].idx.shape[0] / shape[d])]  # shrinking first
    order = min(orders, key=lambda o: _cost(o, shape, taps))
    shapes, cur = [], list(shape)
    for d in order:
        cur[d] = taps[d].idx.shape[0]
        shapes.append(tuple(cur))
    # Two scratch buffers, used alternately by the intermediate passes.
    sizes = [max((math.prod(shapes[k]) for k in range(p, len(order) - 1, 2)), default=0) for p in (0, 1)]
    scratch = [ctx.scratch((n,), acc) if n else None for n in sizes]
    fill = _settings(node).extrapolation
    src, cur = node.inputs[0], list(shape)
    for k, d in enumerate(order):
        t = taps[d]
        dst = node.outputs[0] if k == len(order) - 1 else scratch[k % 2]
        ctx.kernel("resize_axis", [src, *_axis_constants(ctx, t, acc)],
                   [dst], dtype=dt, floats=[fill],
                   ints=[math.prod(cur[:d]), cur[d], t.idx.shape[0], math.prod(cur[d + 1:]), t.idx.shape[1]])
        cur[d] = t.idx.shape[0]
        src = dst


def resize_eval(node, ins):
    """numpy, from the same taps: float64, rounded once (plan-time values only)."""
    x = np.asarray(ins[0].value)
    g, taps = _plan_axes(node, ins)
    if math.prod(g.out_shape) == 0:
        return [np.zeros(g.out_shape, x.dtype)]
    nearest = _settings(node).mode == "nearest"
    r = x if nearest else x.astype(np.float64)
    fill = _settings(node).extrapolation
    for d, t in taps.items():
        gathered = np.take(r, t.idx, axis=d)  # (..., out, n, ...)
        wshape = (1,) * d + t.w.shape + (1,) * (r.ndim - d - 1)
        r = gathered[(slice(None),) * (d + 1) + (0,)] if nearest else (gathered * t.w.reshape(wshape)).sum(axis=d + 1)
        if t.outside is not None:
            mask = t.outside.reshape((1,) * d + (-1,) + (1,) * (r.ndim - d - 1))
            r = np.where(mask, _cast_like_reference(fill, ins[0].dtype) if nearest else fill, r)
    return [r.astype(x.dtype) if nearest else _cast_like_reference(r, ins[0].dtype)]


# Resize(X, roi, scales, sizes): see the module docstring; scales/sizes/roi must be known
# when planning.
register("Resize", resize_type, resize_lower, check=_check, evaluate=resize_eval)
