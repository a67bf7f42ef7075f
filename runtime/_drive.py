"""Driving handler coroutines without a task until they first suspend.

Most handlers never suspend (no effect): running them to completion with one
``send`` and no asyncio task is the cheapest way there is (docs/performance.md).
When one does suspend, :class:`Resume` hands the half-run coroutine to a task,
passing through what it yielded so the task waits on the same future.
"""

from __future__ import annotations

from collections.abc import Coroutine, Generator
from typing import Any


class Resume:
    """Awaitable that continues ``coro``, which has already yielded ``first``."""

    __slots__ = ("_coro", "_first")

    def __init__(self, coro: Coroutine[Any, Any, Any], first: Any) -> None:
        self._coro = coro
        self._first = first

    def __await__(self) -> Generator[Any, Any, Any]:
        coro = self._coro
        pending = self._first
        while True:
            try:
                sent = yield pending
            except BaseException as exc:  # a throw() into us (cancellation) goes on into coro
                try:
                    pending = coro.throw(exc)
                except StopIteration as stop:
                    return stop.value
            else:
                try:
                    pending = coro.send(sent)
                except StopIteration as stop:
                    return stop.value
