"""Which rewrites the passes made, counted where they make them.

A pass calls `record("attention")` for each rewrite; `optimize` collects the counts of one run
(a context variable, so concurrent loads in other threads keep their own) and the model keeps
them for `Model.plan_summary()`. Outside a recording, `record` does nothing: passes stay plain
`Graph -> Graph` functions that tests can call on their own.

    >>> with recording() as counts:
    ...     graph = fuse_gelu(graph)
    >>> counts["gelu"]
    2
"""

from __future__ import annotations

from collections import Counter
from contextlib import contextmanager
from contextvars import ContextVar

_ACTIVE: ContextVar[Counter | None] = ContextVar("engine_pass_stats", default=None)


def record(fusion: str, n: int = 1) -> None:
    """Count n rewrites of kind `fusion` in the recording in progress (if any)."""
    counts = _ACTIVE.get()
    if counts is not None and n:
        counts[fusion] += n


@contextmanager
def recording(counts: Counter | None = None):
    """Collect the `record` calls made inside the block into `counts` (a new Counter by default)."""
    counts = Counter() if counts is None else counts
    token = _ACTIVE.set(counts)
    try:
        yield counts
    finally:
        _ACTIVE.reset(token)


class PlanSummary(dict):
    """What optimisation did to a model: {"fusions": {kind: count}, "ops_before": {op: count},
    "ops_after": {op: count}, "nodes_before": n, "nodes_after": n}; str() is a readable table."""

    def __init__(self, fusions: Counter, before, after):
        super().__init__(fusions=dict(sorted(fusions.items())),
                         ops_before=dict(Counter(n.op for n in before).most_common()),
                         ops_after=dict(Counter(n.op for n in after).most_common()),
                         nodes_before=len(before), nodes_after=len(after))

    def __str__(self) -> str:
        fusions = ", ".join(f"{k} {v}" for k, v in self["fusions"].items()) or "none"
        before, after = self["ops_before"], self["ops_after"]
        ops = sorted(set(before) | set(after), key=lambda op: (-after.get(op, 0), -before.get(op, 0), op))
        width = max([len("op")] + [len(op) for op in ops]) + 2
        lines = [f"fusions: {fusions}", f"nodes: {self['nodes_before']} -> {self['nodes_after']}",
                 f"  {'op'.ljust(width)}{'before':>7}{'after':>7}"]
        lines += [f"  {op.ljust(width)}{before.get(op, 0):>7}{after.get(op, 0):>7}" for op in ops]
        return "\n".join(lines)
