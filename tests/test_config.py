"""Process-wide settings: thread count and kernel ISA, from the API and the environment."""

import os
import subprocess
import sys
import warnings

import pytest

import engine


def _fresh(code: str, **env) -> subprocess.CompletedProcess:
    """Run code in a new interpreter (settings are read once, at import)."""
    return subprocess.run([sys.executable, "-c", code], env={**os.environ, **env}, capture_output=True,
                          text=True, timeout=120)


def test_set_and_get_num_threads(set_threads):
    engine.set_num_threads(1)
    assert engine.get_num_threads() == 1 == engine._C.num_threads()
    cpus = engine._C.cpu_count()
    with pytest.warns(RuntimeWarning, match=f"{cpus} CPUs"):
        engine.set_num_threads(cpus + 1000)
    assert engine.get_num_threads() == cpus
    for bad in (0, -1, 1.5, "2", True, None):
        with pytest.raises(engine.EngineError, match="positive int"):
            engine.set_num_threads(bad)


def test_set_and_get_isa():
    old = engine.get_isa()
    try:
        engine.set_isa("PORTABLE")
        assert engine.get_isa() == "portable"
        with pytest.raises(engine.EngineError, match="avx512"):
            engine.set_isa("sse2")
    finally:
        engine._C.set_isa(old)


@pytest.mark.parametrize("value,want", [("1", "1"), (" 2 ", "2")])
def test_env_threads_applied(value, want):
    out = _fresh("import engine; print(engine.get_num_threads())", ENGINE_NUM_THREADS=value)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(min(int(want), engine._C.cpu_count()))
    assert "Warning" not in out.stderr


@pytest.mark.parametrize("value", ["abc", "0", "-1", "1.5"])
def test_env_threads_nonsense_warns_and_is_ignored(value):
    out = _fresh("import engine; print(engine.get_num_threads())", ENGINE_NUM_THREADS=value)
    assert out.returncode == 0, out.stderr
    assert f"ENGINE_NUM_THREADS='{value}' is not a positive integer" in out.stderr
    assert out.stdout.strip() == str(engine._C.cpu_count())


def test_env_threads_capped_at_the_cpu_count():
    out = _fresh("import engine; print(engine.get_num_threads())", ENGINE_NUM_THREADS="1000")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(engine._C.cpu_count())
    assert "1000 threads requested" in out.stderr


@pytest.mark.parametrize("value,want", [("portable", "portable"), ("AVX2", "avx2"), ("Portable ", "portable")])
def test_env_isa_case_insensitive(value, want):
    if want == "avx2" and engine._C.detected_isa() == "portable":
        pytest.skip("CPU without AVX2")
    out = _fresh("import engine; print(engine.get_isa())", ENGINE_ISA=value)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == want


@pytest.mark.parametrize("value", ["foo", "sse2"])
def test_env_isa_nonsense_warns_and_is_ignored(value):
    out = _fresh("import engine; print(engine.get_isa())", ENGINE_ISA=value)
    assert out.returncode == 0, out.stderr
    assert f"ENGINE_ISA='{value}' is not one of portable, avx2, avx512" in out.stderr
    assert out.stdout.strip() == engine._C.detected_isa()


def test_pool_threads_start_on_first_use_with_the_configured_size():
    code = ("import os, numpy as np, engine\n"
            "before = len(os.listdir('/proc/self/task'))\n"
            "x = np.ones(1 << 20, np.float32)\n"
            "engine._C.activation(x, x, engine._C.Act.sigmoid, 0.0, 0.0)\n"  # big enough to split
            "print(before, len(os.listdir('/proc/self/task')))")
    out = _fresh(code, ENGINE_NUM_THREADS="2", OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    assert out.returncode == 0, out.stderr
    before, after = map(int, out.stdout.split())
    assert after - before == min(2, engine._C.cpu_count()) - 1  # workers appear only when needed


def test_no_warning_for_good_settings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        engine.config.apply_environment({"ENGINE_NUM_THREADS": str(engine.get_num_threads()),
                                         "ENGINE_ISA": engine.get_isa()})
