import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))  # tests/helpers.py

import engine  # noqa: E402
from engine import _C  # noqa: E402

_ISA_ORDER = ["portable", "avx2", "avx512"]
# Every kernel path this CPU can run (the detected one and all below it).
ISAS = _ISA_ORDER[: _ISA_ORDER.index(_C.detected_isa()) + 1]


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture(params=ISAS)
def isa(request):
    """Runs the test once per kernel path; restores the previous one."""
    old = _C.cpu_isa()
    _C.set_isa(request.param)
    yield request.param
    _C.set_isa(old)


@pytest.fixture(params=[1, 2])
def threads(request):
    """Runs the test with a pool of 1 and of 2 threads; restores the size."""
    old = _C.num_threads()
    _C.set_num_threads(request.param)
    yield request.param
    _C.set_num_threads(old)


@pytest.fixture
def set_threads():
    """Lets a test resize the pool itself; restores the size afterwards."""
    before = engine._C.num_threads()
    yield engine._C.set_num_threads
    engine._C.set_num_threads(before)
