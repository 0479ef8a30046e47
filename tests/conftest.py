import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))  # tests/helpers.py

import engine  # noqa: E402


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture
def threads():
    """Lets a test change the pool size; restores it afterwards."""
    before = engine._C.num_threads()
    yield engine._C.set_num_threads
    engine._C.set_num_threads(before)
