"""Idempotent ingress: a repeated key returns the first outcome and enqueues nothing.

A mixin of :class:`~runtime.Runtime`, kept apart because it is one concept: the
key is recorded with the tell's inbox row, or with an ask's step (its reply
once the step commits, or nothing yet if the step became durable at an effect
and may be resumed after a crash).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread
import msgspec

from actors import AskTimeoutError, HandlerError, MessageValidationError, SteleError
from storage import Store, Unit

from ._cell import Cell
from ._records import reply_decoder
from ._registry import Registry
from ._values import text

log = logging.getLogger("stele.runtime")


class IdempotentIngress:
    """The idempotency-key half of the runtime's ``tell`` and ``ask``."""

    registry: Registry
    clock: Callable[[], float]
    idempotency_retention_s: float
    _keys_in_flight: dict[str, asyncio.Future[Any]]
    _cells: dict[str, Cell]

    if TYPE_CHECKING:  # provided by Runtime

        @property
        def loop(self) -> asyncio.AbstractEventLoop: ...

        @property
        def store(self) -> Store: ...

        def prepare(self, address: str, msg: msgspec.Struct, sender: str | None = None) -> Any: ...

        async def _ask(
            self, address: str, msg: msgspec.Struct, timeout: float | None, durability: str | None, key: str | None
        ) -> Any: ...

        async def _tell(
            self, address: str, msg: msgspec.Struct, durability: str | None, timeout: float | None, key: str | None
        ) -> None: ...

        async def _write(self, unit: Unit) -> None: ...

    async def _keyed(
        self,
        key: str,
        address: str,
        msg: msgspec.Struct,
        timeout: float | None,
        durability: str | None,
        tell_timeout: float | None,
        *,
        ask: bool = False,
    ) -> Any:
        """A call under an idempotency key: the first call's outcome, however often it comes."""
        text(key, "idempotency key")
        pending = self._keys_in_flight.get(key)
        if pending is not None:  # the same key, concurrently: share the first call
            return await asyncio.shield(pending)
        future: asyncio.Future[Any] = self.loop.create_future()
        self._keys_in_flight[key] = future
        try:
            result = await self._first_outcome(key, address, msg, timeout, durability, tell_timeout, ask)
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError):
                future.cancel()  # the first caller went away; a concurrent one sees that
            else:
                future.set_exception(exc)
                future.exception()  # retrieved: nobody else may be waiting
            raise
        else:
            future.set_result(result)
            return result
        finally:
            del self._keys_in_flight[key]

    async def _first_outcome(
        self,
        key: str,
        address: str,
        msg: msgspec.Struct,
        timeout: float | None,
        durability: str | None,
        tell_timeout: float | None,
        ask: bool,
    ) -> Any:
        self.prepare(address, msg)  # bad input fails the same way with or without a key
        record = await anyio.to_thread.run_sync(self.store.idempotent, key)
        if record is not None and record.at >= self.clock() - self.idempotency_retention_s:
            if record.address != address:
                raise MessageValidationError(
                    f"idempotency key {key!r} was first used for {record.address}, not {address}"
                )
            if not ask:
                return None
            if record.reply is not None:
                return self._recorded_reply(address, msg, record.reply)
            return await self._wait_for_step(key, address, msg, record.step, timeout)
        if ask:
            return await self._ask(address, msg, timeout, durability, key)
        await self._tell(address, msg, durability, tell_timeout, key)
        return None

    def _recorded_reply(self, address: str, msg: msgspec.Struct, data: bytes) -> Any:
        record = reply_decoder.decode(data)
        if not record.ok:
            raise HandlerError(address, record.error_type, record.error)
        desc, _ = self.registry.resolve(address)
        reply_type = self.registry.handler_for(desc, msg).reply_type
        return msgspec.msgpack.decode(bytes(record.value), type=reply_type)

    async def _wait_for_step(
        self, key: str, address: str, msg: msgspec.Struct, step: int, timeout: float | None
    ) -> Any:
        """The first call's step is still running (or was interrupted): wait for its reply."""
        cell = self._cells.get(address)
        target = None
        if cell is not None:
            if cell.current is not None and cell.current.step == step:
                target = cell.current
            else:
                target = next((m for m in cell.mailbox if m.step == step), None)
        try:
            with anyio.fail_after(timeout) if timeout is not None else contextlib.nullcontext():
                if target is not None:
                    waiter: asyncio.Future[Any] = self.loop.create_future()
                    if target.waiter is None:
                        target.waiter = waiter
                    else:
                        target.waiter.add_done_callback(functools.partial(_copy_outcome, waiter))
                    return await waiter
                while True:  # not in memory: its reply will be recorded under the key
                    await anyio.sleep(0.05)
                    record = await anyio.to_thread.run_sync(self.store.idempotent, key)
                    if record is not None and record.reply is not None:
                        return self._recorded_reply(address, msg, record.reply)
        except TimeoutError:
            raise AskTimeoutError(f"no reply from {address} within {timeout} s") from None

    async def _purge_keys(self) -> None:
        """Forget idempotency keys older than the retention, now and every hour."""
        while True:
            cutoff = self.clock() - self.idempotency_retention_s
            try:
                await self._write(Unit(ops=[("DELETE FROM idempotency WHERE at < ?", (cutoff,))]))
            except SteleError as exc:
                log.warning("could not purge expired idempotency keys: %s", exc)
            await anyio.sleep(3600)


def _copy_outcome(target: asyncio.Future[Any], source: asyncio.Future[Any]) -> None:
    if target.done():
        return
    if source.cancelled():
        target.cancel()
    elif source.exception() is not None:
        target.set_exception(source.exception())  # type: ignore[arg-type]
    else:
        target.set_result(source.result())
