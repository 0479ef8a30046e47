"""Byte offsets for intermediate buffers in one arena, reused by liveness (best fit)."""

from __future__ import annotations

ALIGN = 64  # bytes: one cache line / one zmm register


def aligned(n: int) -> int:
    return max(ALIGN, -(-n // ALIGN) * ALIGN)


class ArenaAllocator:
    def __init__(self):
        self.size = 0
        self._free: list[tuple[int, int]] = []  # (offset, size), sorted by offset

    def alloc(self, n: int) -> int:
        n = aligned(n)
        best = None
        for i, (off, size) in enumerate(self._free):
            if size >= n and (best is None or size < self._free[best][1]):
                best = i
        if best is not None:
            off, size = self._free.pop(best)
            if size > n:
                self._free.insert(best, (off + n, size - n))
            return off
        # Grow, merging a free block that ends at the top.
        if self._free and sum(self._free[-1]) == self.size:
            off, _ = self._free.pop()
        else:
            off = self.size
        self.size = off + n
        return off

    def free(self, off: int, n: int) -> None:
        n = aligned(n)
        self._free.append((off, n))
        self._free.sort()
        merged: list[tuple[int, int]] = []
        for o, s in self._free:
            if merged and sum(merged[-1]) == o:
                merged[-1] = (merged[-1][0], merged[-1][1] + s)
            else:
                merged.append((o, s))
        self._free = merged
