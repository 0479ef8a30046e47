"""The engine-wide pool: correct under any size, and asleep when idle (embedders care)."""

import os

import numpy as np

import engine
from helpers import rand


def _busy_work():
    a, b = rand(512, 512), rand(512, 512, seed=1)
    c = np.empty((512, 512), np.float32)
    for _ in range(5):
        engine._C.sgemm(c, a, b)
    return c


def test_pool_size_follows_setting(set_threads):
    for n in (1, 2, 4):
        set_threads(n)
        assert engine._C.num_threads() == n
        np.testing.assert_allclose(_busy_work(), rand(512, 512) @ rand(512, 512, seed=1),
                                   rtol=1e-4, atol=1e-3)


IDLE_PROBE = """
import time, numpy as np, engine
a = np.random.rand(512, 512).astype(np.float32)
c = np.empty_like(a)
for _ in range(5):
    engine._C.sgemm(c, a, a)
time.sleep(0.05)
t0, c0 = time.perf_counter(), time.process_time()
time.sleep(0.5)
print((time.process_time() - c0) / (time.perf_counter() - t0))
"""


def test_idle_pool_uses_no_cpu():
    # After work, workers spin for microseconds and then sleep: over a quiet half second the
    # process must use next to no CPU (a spinning worker would show ~100% of a core). Run in
    # a fresh process so no other library's threads (torch's, in this one) are counted.
    import subprocess
    import sys

    env = {**os.environ, "ENGINE_NUM_THREADS": "2"}
    out = subprocess.run([sys.executable, "-c", IDLE_PROBE], env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    used = float(out.stdout.strip())
    assert used < 0.05, f"idle engine used {used:.0%} of a core"


def test_env_var_sets_pool_size():
    import subprocess
    import sys

    code = "import engine; print(engine._C.num_threads())"
    env = {**os.environ, "ENGINE_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "1"
