"""Python's cyclic garbage collector while runtimes are open.

A runtime under load holds every message in flight (its mailbox entry, its
step, its commit unit, the sender's waiting task) across a commit: thousands of
container objects that live a few milliseconds. With the interpreter's default
first-generation threshold (700 allocations) they survive a young collection,
are promoted, and every later middle-generation collection walks them again.
Measured with the tells benchmark (1,000 actors, 20,000 messages), CPU time per
message fell from 47-49 µs to 31-34 µs with a threshold of 50,000 (20,000 gave
35-37, 100,000 no more than 50,000): most in-flight objects then die before
anything looks at them. See docs/performance.md.

The threshold is the process's, not the runtime's: it is raised while at least
one runtime is open and restored when the last one closes, unless someone else
changed it in between (then theirs stays). Open runtimes are held weakly: one
dropped without being closed (a crash simulated in a test, a program that
forgot) stops counting once it is garbage, and the next close restores.
"""

from __future__ import annotations

import gc
import threading
import weakref


class _Collector:
    """The process's one record of who raised the threshold, and what it was before."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.holders: weakref.WeakSet[object] = weakref.WeakSet()
        self.saved: tuple[int, int, int] | None = None
        self.applied: tuple[int, int, int] | None = None

    def hold(self, holder: object, young: int | None) -> None:
        if young is None:
            return
        with self.lock:
            self.holders.add(holder)
            current = gc.get_threshold()
            if current[0] >= young:
                return
            if self.saved is None:
                self.saved = current
            self.applied = (young, current[1], current[2])
            gc.set_threshold(*self.applied)

    def release(self, holder: object, young: int | None) -> None:
        if young is None:
            return
        with self.lock:
            self.holders.discard(holder)
            if len(self.holders) > 0 or self.saved is None:
                return
            if gc.get_threshold() == self.applied:
                gc.set_threshold(*self.saved)
            self.saved = self.applied = None


_COLLECTOR = _Collector()


def hold(holder: object, young: int | None) -> None:
    """``holder`` (a runtime) opens: raise the first-generation threshold to at least ``young`` (None: leave it)."""
    _COLLECTOR.hold(holder, young)


def release(holder: object, young: int | None) -> None:
    """``holder``, which called :func:`hold` with the same ``young``, closes (calling it twice is harmless)."""
    _COLLECTOR.release(holder, young)
