"""float16 <-> float32 (csrc/include/engine/half.h, the one conversion every kernel uses) against
numpy on every float16 bit pattern and on float32 values around every rounding boundary, on
each ISA path (F16C and the scalar code), sequential and split over the pool."""

from __future__ import annotations

import numpy as np
import pytest

import engine
from engine.graph import Graph, Node, Value


def cast(x: np.ndarray, to: int) -> np.ndarray:
    graph = Graph([Value("x", x.shape, engine.dtypes.from_numpy(x.dtype))], [Value("y", None)],
                  [Node("Cast", ["x"], ["y"], {"to": to})], {})
    return engine.Model(graph).run({"x": x})["y"]


@pytest.fixture(params=["portable", "avx2", "avx512"])
def isa(request):
    saved = engine.get_isa()
    if engine.config.ISAS.index(request.param) > engine.config.ISAS.index(engine._C.detected_isa()):
        pytest.skip(f"the CPU has no {request.param}")
    engine.set_isa(request.param)
    yield request.param
    engine.set_isa(saved)


def same_bits_or_both_nan(got, want):
    nan = np.isnan(want)
    np.testing.assert_array_equal(np.isnan(got), nan)
    np.testing.assert_array_equal(got[~nan].view(np.uint32 if got.itemsize == 4 else np.uint16),
                                  want[~nan].view(np.uint32 if want.itemsize == 4 else np.uint16))


@pytest.mark.parametrize("repeat", [1, 3])  # 3: over 2**16 elements, split over the pool
def test_every_half_widens_exactly(isa, repeat):
    h = np.tile(np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.float16), repeat)
    same_bits_or_both_nan(cast(h, 1), h.astype(np.float32))


@pytest.mark.filterwarnings("ignore:overflow encountered")  # numpy's own float16 reference
def test_floats_round_to_nearest_even(isa):
    # Every float16 value's neighbourhood in float32: the value, the halfway points to its
    # neighbours and one float32 ulp either side of them (where the rounding decisions are),
    # plus overflow to inf, underflow to 0, subnormals and random values.
    h = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.float16)
    f = h[np.isfinite(h)].astype(np.float64)
    up = np.nextafter(h[np.isfinite(h)], np.float16(np.inf)).astype(np.float64)
    mid = ((f + up) / 2)[np.isfinite(up)].astype(np.float32)
    probes = [f.astype(np.float32), mid, np.nextafter(mid, np.float32(np.inf)),
              np.nextafter(mid, np.float32(-np.inf)),
              np.array([65504, 65519.99, 65520, 1e6, -1e6, 2.0 ** -25, 2.0 ** -24, 3 * 2.0 ** -26,
                        1e-10, -0.0, np.inf, -np.inf, np.nan], np.float32),
              np.random.default_rng(0).standard_normal(100_003).astype(np.float32) * 1000]
    x = np.concatenate(probes)
    same_bits_or_both_nan(cast(x, 10), x.astype(np.float16))
