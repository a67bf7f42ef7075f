"""Waiting on the outside world and on other actors: promises resolved from
outside, and the bookkeeping of actors' asks (who waits on whom, so a cycle is
refused at once instead of hanging). A mixin of :class:`~runtime.Runtime`.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread

from actors import AskCycleError, JournalIntegrityError, PromiseError, UnstorableValueError
from storage import PutPromise, Store, Unit

from ._registry import Registry
from ._values import ENCODE_ERRORS, storable, text


class Waits:
    """``rt.resolve`` and the waits of ``ctx.promise`` and ``ctx.ask``."""

    registry: Registry
    clock: Callable[[], float]
    _promise_waiters: dict[tuple[str, str], asyncio.Future[bytes]]
    _waiting_on: dict[str, str]

    if TYPE_CHECKING:  # provided by Runtime

        @property
        def loop(self) -> asyncio.AbstractEventLoop: ...

        @property
        def store(self) -> Store: ...

        async def _write(self, unit: Unit) -> None: ...

        def _check_open(self) -> None: ...

    async def resolve(self, address: str, name: str, value: Any) -> None:
        """Complete the promise ``name`` of ``address`` with ``value``, exactly once.

        Durable when this returns; a value that arrives before the handler
        waits is kept for it. A promise already resolved (and not yet taken)
        is refused with :class:`PromiseError`.
        """
        self._check_open()
        self.registry.resolve(address)
        text(name, "promise name")
        try:
            data = self.registry.codec.encode(value)
        except ENCODE_ERRORS as exc:
            raise UnstorableValueError(
                f"the value for promise {storable(name)!r} cannot be stored: {storable(str(exc))}"
            ) from None
        try:
            await self._write(Unit(ops=[PutPromise(address, name, data, self.clock())]))
        except JournalIntegrityError:
            raise PromiseError(f"promise {name!r} of {address} is already resolved") from None
        self._wake_promise((address, name), data)

    def _wake_promise(self, promise: tuple[str, str], value: bytes) -> None:
        """A value for ``(address, name)`` committed: hand it to the step waiting for it, if any."""
        waiter = self._promise_waiters.get(promise)
        if waiter is not None and not waiter.done():
            waiter.set_result(value)

    async def _take_promise(self, address: str, name: str, timeout: float | None) -> bytes | None:
        """The value resolved for the promise (None after ``timeout``); the step journals it.

        The waiter is registered before the journal is read: a value committed
        while the read is in flight then either shows up in the read or finds
        the waiter. Registered after the read, it would find neither, and the
        handler would wait out its whole timeout (a lost wake-up that the
        actor-to-actor ask machine hit as an ``AskTimeoutError``).
        """
        waiter: asyncio.Future[bytes] = self.loop.create_future()
        self._promise_waiters[(address, name)] = waiter
        try:
            value = await anyio.to_thread.run_sync(self.store.promise, address, name)
            if value is not None:
                return value
            with anyio.move_on_after(timeout if timeout is not None else math.inf):
                return await waiter
            return None
        finally:
            self._promise_waiters.pop((address, name), None)

    def _check_cycle(self, caller: str, target: str) -> None:
        """Refuse an ask that would wait forever: the asked actor waits, through others, on the asker."""
        path = [caller, target]
        walk = target
        while walk != caller:
            following = self._waiting_on.get(walk)
            if following is None or len(path) > 10_000:
                return
            path.append(following)
            walk = following
        raise AskCycleError(f"ask cycle {' -> '.join(path)}: {caller} would wait for itself")
