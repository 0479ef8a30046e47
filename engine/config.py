"""Process-wide settings: the kernel thread pool size, the instruction set the kernels use, and
the kernels' per-thread scratch memory.

    >>> engine.set_num_threads(2); engine.get_num_threads()
    2
    >>> engine.get_isa()          # 'avx512', 'avx2' or 'portable'
    >>> engine.memory_info()      # {'scratch_bytes': ..., 'scratch_keep_bytes': ...}
    >>> engine.release_memory()   # free the kernels' scratch now (e.g. after a burst of big batches)

At import, ENGINE_NUM_THREADS, ENGINE_ISA and ENGINE_SCRATCH_KEEP_MB are read from the
environment and applied with the same checks; a value that makes no sense is reported with a RuntimeWarning and ignored
rather than silently misread.
"""

from __future__ import annotations

import os
import warnings

from . import _C
from .errors import EngineError

ISAS = ("portable", "avx2", "avx512")  # lowest first


def get_num_threads() -> int:
    """Threads the kernels use, the calling thread included."""
    return _C.num_threads()


def set_num_threads(n: int) -> None:
    """Resize the engine-wide kernel thread pool. More threads than the CPUs this process may
    run on only slow the kernels down, so n is capped there (with a warning)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise EngineError(f"set_num_threads: expected a positive int, got {n!r}")
    _C.set_num_threads(_capped(n, "set_num_threads"))


def get_isa() -> str:
    """The instruction set the kernels use: 'avx512', 'avx2' or 'portable'."""
    return _C.cpu_isa()


def set_isa(name: str) -> None:
    """Use a lower instruction set than the CPU supports (for testing or comparing paths);
    case-insensitive. Asking for more than the CPU has gives what it has, with a warning."""
    if not isinstance(name, str) or name.strip().lower() not in ISAS:
        raise EngineError(f"set_isa: expected one of {', '.join(ISAS)}, got {name!r}")
    name = name.strip().lower()
    have = _C.detected_isa()
    if ISAS.index(name) > ISAS.index(have):
        warnings.warn(f"ISA {name!r} is not supported by this CPU; using {have!r}", RuntimeWarning,
                      stacklevel=2)
    _C.set_isa(name)


def memory_info() -> dict:
    """Kernel scratch memory: `scratch_bytes` held by all threads now, and
    `scratch_keep_bytes`, the most one thread keeps between calls."""
    return {"scratch_bytes": _C.scratch_bytes(), "scratch_keep_bytes": _C.scratch_keep()}


def set_scratch_keep(nbytes: int) -> None:
    """Per-thread scratch kept between calls (default 256 MiB). A thread that ends a call
    holding more frees all of it, so one huge request does not pin its memory; a smaller
    limit saves memory at the cost of page faults on every call that needs more."""
    if isinstance(nbytes, bool) or not isinstance(nbytes, int) or nbytes < 0:
        raise EngineError(f"set_scratch_keep: expected a byte count >= 0, got {nbytes!r}")
    _C.set_scratch_keep(nbytes)


def release_memory() -> None:
    """Free the kernels' scratch now: the calling thread's and every pool worker's. Other
    threads that ran models free theirs at the end of their next call or when they exit.
    Plans, packed weights and models are untouched; the next call regrows what it needs."""
    _C.release_scratch()


def _capped(n: int, what: str) -> int:
    cpus = _C.cpu_count()
    if n > cpus:
        warnings.warn(f"{what}: {n} threads requested but this process may use {cpus} CPUs; "
                      f"using {cpus}", RuntimeWarning, stacklevel=3)
        return cpus
    return n


def apply_environment(environ=os.environ) -> None:
    """Apply ENGINE_NUM_THREADS and ENGINE_ISA (called once at import)."""
    threads = environ.get("ENGINE_NUM_THREADS", "").strip()
    if threads:
        try:
            n = int(threads)
        except ValueError:
            n = 0
        if n < 1:
            warnings.warn(f"ENGINE_NUM_THREADS={threads!r} is not a positive integer; ignored "
                          f"(using {_C.num_threads()} threads)", RuntimeWarning, stacklevel=2)
        else:
            _C.set_num_threads(_capped(n, "ENGINE_NUM_THREADS"))
    keep = environ.get("ENGINE_SCRATCH_KEEP_MB", "").strip()
    if keep:
        try:
            mb = float(keep)
        except ValueError:
            mb = -1.0
        if not 0 <= mb < 1 << 40:
            warnings.warn(f"ENGINE_SCRATCH_KEEP_MB={keep!r} is not a number of MiB >= 0; ignored "
                          f"(keeping {_C.scratch_keep() >> 20} MiB)", RuntimeWarning, stacklevel=2)
        else:
            _C.set_scratch_keep(int(mb * (1 << 20)))
    isa = environ.get("ENGINE_ISA", "").strip()
    if isa:
        if isa.lower() not in ISAS:
            warnings.warn(f"ENGINE_ISA={isa!r} is not one of {', '.join(ISAS)}; ignored (using "
                          f"{_C.cpu_isa()!r})", RuntimeWarning, stacklevel=2)
        else:
            set_isa(isa)
