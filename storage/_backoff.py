"""One back-off for everything that waits before trying again.

The writer retrying a commit that did not land, the supervisor restarting a
Litestream that died, an actor whose step could not be journaled, a commit of
unknown outcome waiting to be settled: each waits a little longer each time,
up to a limit, and starts over once things work again.
"""

from __future__ import annotations


class Backoff:
    """Waits that grow by ``factor`` from ``first``, never beyond ``limit``."""

    __slots__ = ("_next", "factor", "first", "last", "limit")

    def __init__(self, first: float = 0.05, *, factor: float = 2.0, limit: float = 5.0) -> None:
        if not 0 < first <= limit or factor < 1:
            raise ValueError(f"a back-off wants 0 < first <= limit and factor >= 1, not {first}, {limit}, {factor}")
        self.first = first
        self.factor = factor
        self.limit = limit
        self._next = first
        self.last = 0.0
        """The wait :meth:`next` gave last (0 after a reset: no reason to wait)."""

    def next(self) -> float:
        """The wait before the next try (each call waits longer, up to the limit)."""
        wait = self.last = self._next
        self._next = min(self.limit, wait * self.factor)
        return wait

    def reset(self) -> None:
        """Things work again: the next wait is the first one."""
        self._next = self.first
        self.last = 0.0
