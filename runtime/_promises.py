"""Waiting on the outside world and on other actors: promises resolved from
outside (``rt.resolve``), the replies of actors' asks (which arrive as
promises), and who waits on whom (so that an ask cycle is refused at once
instead of hanging).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from typing import Any

import anyio
import anyio.to_thread

from actors import AskCycleError, JournalIntegrityError, PromiseError, UnstorableValueError
from storage import PutPromise, Unit

from ._registry import Registry
from ._values import ENCODE_ERRORS, storable, text
from ._writes import Writes


class Promises:
    """The steps waiting on promises, and the actors waiting on other actors."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, registry: Registry, writes: Writes, clock: Callable[[], float]
    ) -> None:
        self._loop = loop
        self._registry = registry
        self._writes = writes
        self._clock = clock
        self._waiters: dict[tuple[str, str], asyncio.Future[bytes]] = {}
        self._waiting_on: dict[str, str] = {}  # an actor whose step awaits an ask -> the asked actor

    def waiting_on_promises(self) -> tuple[tuple[str, str], ...]:
        """``(address, name)`` of every promise (or actor's reply) a step waits on now."""
        return tuple(sorted(self._waiters))

    def waiting_on_actors(self) -> tuple[tuple[str, str], ...]:
        """``(caller, callee)`` of every step waiting on another actor's reply now."""
        return tuple(sorted(self._waiting_on.items()))

    async def resolve(self, address: str, name: str, value: Any) -> None:
        """Complete the promise ``name`` of ``address`` with ``value``, exactly once (see ``Runtime.resolve``)."""
        self._registry.resolve(address)
        text(name, "promise name")
        try:
            data = self._registry.codec.encode(value)
        except ENCODE_ERRORS as exc:
            raise UnstorableValueError(
                f"the value for promise {storable(name)!r} cannot be stored: {storable(str(exc))}"
            ) from None
        try:
            await self._writes.write(Unit(ops=[PutPromise(address, name, data, self._clock())]))
        except JournalIntegrityError:
            raise PromiseError(f"promise {name!r} of {address} is already resolved") from None
        self.wake((address, name), data)

    def wake(self, promise: tuple[str, str], value: bytes) -> None:
        """A value for ``(address, name)`` committed: hand it to the step waiting for it, if any."""
        waiter = self._waiters.get(promise)
        if waiter is not None and not waiter.done():
            waiter.set_result(value)

    async def take(self, address: str, name: str, timeout: float | None) -> bytes | None:
        """The value resolved for the promise (None after ``timeout``); the step journals it.

        The waiter is registered before the journal is read: a value committed
        while the read is in flight then either shows up in the read or finds
        the waiter. Registered after the read, it would find neither, and the
        handler would wait out its whole timeout (a lost wake-up that the
        actor-to-actor ask machine hit as an ``AskTimeoutError``).
        """
        backend = self._writes.backend
        assert backend is not None
        waiter: asyncio.Future[bytes] = self._loop.create_future()
        self._waiters[(address, name)] = waiter
        try:
            value = await anyio.to_thread.run_sync(backend.promise, address, name)
            if value is not None:
                return value
            with anyio.move_on_after(timeout if timeout is not None else math.inf):
                return await waiter
            return None
        finally:
            self._waiters.pop((address, name), None)

    def check_cycle(self, caller: str, callee: str) -> None:
        """Refuse an ask that would wait forever: ``callee`` waits, through others, on ``caller``."""
        path = [caller, callee]
        walk = callee
        while walk != caller:
            following = self._waiting_on.get(walk)
            if following is None or len(path) > 10_000:
                return
            path.append(following)
            walk = following
        raise AskCycleError(f"ask cycle {' -> '.join(path)}: {caller} would wait for itself")

    def ask_begins(self, caller: str, callee: str) -> None:
        """``caller``'s step waits on ``callee`` now."""
        self._waiting_on[caller] = callee

    def ask_ends(self, caller: str) -> None:
        """``caller``'s step waits on nobody any more."""
        self._waiting_on.pop(caller, None)
