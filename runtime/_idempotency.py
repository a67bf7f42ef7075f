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

from actors import AskTimeoutError, HandlerError, IdempotencyKeyError, ReplyUnavailableError, SteleError
from storage import ForgetKey, Store, Unit

from ._cell import Cell, Msg
from ._records import reply_decoder
from ._registry import Registry
from ._values import text

log = logging.getLogger("stele.runtime")

PURGE_BATCH = 1000
"""Expired idempotency keys forgotten per commit."""


class IdempotentIngress:
    """The idempotency-key half of the runtime's ``tell`` and ``ask``."""

    registry: Registry
    clock: Callable[[], float]
    idempotency_retention_s: float
    _keys_in_flight: dict[str, tuple[asyncio.Future[Any], Use]]
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
        handler = self.registry.handler_for(self.registry.resolve(address)[0], msg).name
        first = self._keys_in_flight.get(key)
        if first is not None:  # the same key, concurrently: share the first call
            pending, first_use = first
            _same_use(key, first_use, (address, handler, ask))
            try:
                return await asyncio.shield(pending)
            except asyncio.CancelledError:
                if not pending.cancelled():
                    raise  # this caller was cancelled
                # The first caller went away before an outcome: carry on as the first.
                return await self._keyed(key, address, msg, timeout, durability, tell_timeout, ask=ask)
        future: asyncio.Future[Any] = self.loop.create_future()
        self._keys_in_flight[key] = (future, (address, handler, ask))
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
        handler = self.prepare(address, msg).handler.name  # bad input fails the same way with or without a key
        record = await anyio.to_thread.run_sync(self.store.idempotent, key)
        if record is not None and record.at >= self.clock() - self.idempotency_retention_s:
            first_ask = record.kind == "ask" if record.kind is not None else ask  # unknown before schema v6
            first_use = (record.address, record.handler or handler, first_ask)
            _same_use(key, first_use, (address, handler, ask))
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
        try:
            return msgspec.msgpack.decode(bytes(record.value), type=reply_type)
        except msgspec.ValidationError as exc:  # a key recorded before schema v6 named no handler
            raise IdempotencyKeyError(
                f"the reply recorded for this idempotency key is not a {type(msg).__qualname__} reply: {exc}"
            ) from None

    async def _wait_for_step(
        self, key: str, address: str, msg: msgspec.Struct, step: int, timeout: float | None
    ) -> Any:
        """The first call's step is durable but has no reply yet: wait for it, or say why not.

        In memory (running, or waiting in its mailbox) it is waited for; the
        runtime answers every such wait when it closes. Not in memory, the
        journal tells, in one read: the reply if it came meanwhile; otherwise
        the step can give no reply now, and waiting would be forever.
        """
        target = self._in_memory(address, step)
        if target is None:
            record, pending = await anyio.to_thread.run_sync(self.store.key_status, key, step)
            if record is not None and record.reply is not None:
                return self._recorded_reply(address, msg, record.reply)
            target = self._in_memory(address, step)  # it may have been loaded meanwhile
            if target is None:
                why = (
                    "is in the inbox but cannot be delivered now (see the log)"
                    if pending
                    else "is no longer pending and left no reply"
                )
                raise ReplyUnavailableError(
                    f"the message first sent to {address} under idempotency key {key!r} {why}; "
                    "do not resend it under a new key"
                )
        waiter: asyncio.Future[Any] = self.loop.create_future()
        if target.waiter is None or target.waiter.done():
            target.waiter = waiter
        else:
            target.waiter.add_done_callback(functools.partial(_copy_outcome, waiter))
        try:
            with anyio.fail_after(timeout) if timeout is not None else contextlib.nullcontext():
                return await waiter
        except TimeoutError:
            raise AskTimeoutError(f"no reply from {address} within {timeout} s") from None

    def _in_memory(self, address: str, step: int) -> Msg | None:
        """The message of ``step`` if ``address`` is running it or has it in its mailbox."""
        cell = self._cells.get(address)
        if cell is None:
            return None
        if cell.current is not None and cell.current.step == step:
            return cell.current
        return next((m for m in cell.mailbox if m.step == step), None)

    async def _purge_keys(self) -> None:
        """Forget idempotency keys older than the retention, now and every hour."""
        while True:
            try:
                await self.purge_idempotency_keys()
            except SteleError as exc:
                log.warning("could not purge expired idempotency keys: %s", exc)
            await anyio.sleep(3600)

    async def purge_idempotency_keys(self, *, batch: int = PURGE_BATCH) -> int:
        """Forget the keys older than the retention now; return how many.

        In batches of at most ``batch`` keys, each its own commit shared with
        whatever else is queued: a million expired keys never make one
        transaction that stalls every caller. (The runtime also does this at
        start and every hour.)
        """
        cutoff = self.clock() - self.idempotency_retention_s
        purged = 0
        while True:
            keys = await anyio.to_thread.run_sync(self.store.expired_keys, cutoff, batch)
            if not keys:
                return purged
            await self._write(Unit(ops=[ForgetKey(key, cutoff) for key in keys]))
            purged += len(keys)


Use = tuple[str, str, bool]
"""What a key was used for: (address, handler, ask)."""


def _same_use(key: str, first: Use, now: Use) -> None:
    """Refuse a key reused for another address or handler, or for an ask after a tell (or the reverse)."""
    (first_address, first_handler, first_ask), (address, handler, ask) = first, now
    if first_address != address:
        raise IdempotencyKeyError(f"idempotency key {key!r} was first used for {first_address}, not {address}")
    if first_handler != handler:
        raise IdempotencyKeyError(
            f"idempotency key {key!r} was first used for handler {first_handler!r} of {address}, not {handler!r}"
        )
    if first_ask != ask:
        before, after = ("an ask", "a tell") if first_ask else ("a tell", "an ask")
        raise IdempotencyKeyError(
            f"idempotency key {key!r} was first used for {before} to {address}; {after} cannot reuse it"
        )


def _copy_outcome(target: asyncio.Future[Any], source: asyncio.Future[Any]) -> None:
    if target.done():
        return
    if source.cancelled():
        target.cancel()
    elif source.exception() is not None:
        target.set_exception(source.exception())  # type: ignore[arg-type]
    else:
        target.set_result(source.result())
