"""Idempotent ingress: a repeated key returns the first outcome and enqueues nothing.

The key is recorded with the tell's inbox row, or with an ask's step (its
reply once the step commits, or nothing yet if the step became durable at an
effect and may be resumed after a crash), with what it was used for: the
address, the handler, and whether it was a tell or an ask.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.to_thread
import msgspec

from actors import AskTimeoutError, HandlerError, IdempotencyKeyError, ReplyUnavailableError, SteleError
from storage import ForgetKey, Unit

from ._mailboxes import Mailboxes
from ._records import reply_decoder
from ._registry import Registry
from ._values import text
from ._writes import Writes

log = logging.getLogger("stele.runtime")

PURGE_BATCH = 1000
"""Expired idempotency keys forgotten per commit."""


class Idempotency:
    """The idempotency-key half of the runtime's ``tell`` and ``ask``, and the purge of old keys."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        writes: Writes,
        mailboxes: Mailboxes,
        registry: Registry,
        *,
        clock: Callable[[], float],
        retention_s: float,
        validate: Callable[[str, msgspec.Struct], str],
    ) -> None:
        self._loop = loop
        self._writes = writes
        self._mailboxes = mailboxes
        self._registry = registry
        self._clock = clock
        self.retention_s = retention_s
        self._validate = validate
        self._in_flight: dict[str, tuple[asyncio.Future[Any], Use]] = {}

    async def call(
        self,
        key: str,
        address: str,
        msg: msgspec.Struct,
        first: Callable[[], Awaitable[Any]],
        *,
        ask: bool,
        timeout: float | None,
    ) -> Any:
        """A call under an idempotency key: the first call's outcome, however often it comes.

        ``first`` makes the call itself (recording the key), when this key is
        new; ``timeout`` bounds the wait for an earlier call's reply.
        """
        text(key, "idempotency key")
        handler = self._validate(address, msg)  # bad input fails the same way with or without a key
        use = (address, handler, ask)
        earlier = self._in_flight.get(key)
        if earlier is not None:  # the same key, concurrently: share the first call
            pending, first_use = earlier
            _same_use(key, first_use, use)
            try:
                return await asyncio.shield(pending)
            except asyncio.CancelledError:
                if not pending.cancelled():
                    raise  # this caller was cancelled
                # The first caller went away before an outcome: carry on as the first.
                return await self.call(key, address, msg, first, ask=ask, timeout=timeout)
        future: asyncio.Future[Any] = self._loop.create_future()
        self._in_flight[key] = (future, use)
        try:
            result = await self._first_outcome(key, address, msg, first, use, timeout)
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
            del self._in_flight[key]

    async def _first_outcome(
        self,
        key: str,
        address: str,
        msg: msgspec.Struct,
        first: Callable[[], Awaitable[Any]],
        use: Use,
        timeout: float | None,
    ) -> Any:
        backend = self._writes.backend
        assert backend is not None
        record = await anyio.to_thread.run_sync(backend.idempotent, key)
        if record is None or record.at < self._clock() - self.retention_s:
            return await first()
        _, handler, ask = use
        first_ask = record.kind == "ask" if record.kind is not None else ask  # unknown before schema v6
        _same_use(key, (record.address, record.handler or handler, first_ask), use)
        if not ask:
            return None
        if record.reply is not None:
            return self._recorded_reply(address, msg, record.reply)
        return await self._wait_for_step(key, address, msg, record.step, timeout)

    def _recorded_reply(self, address: str, msg: msgspec.Struct, data: bytes) -> Any:
        record = reply_decoder.decode(data)
        if not record.ok:
            raise HandlerError(address, record.error_type, record.error)
        desc, _ = self._registry.resolve(address)
        reply_type = self._registry.handler_for(desc, msg).reply_type
        try:
            return msgspec.msgpack.decode(bytes(record.value), type=reply_type)
        except msgspec.ValidationError as exc:  # a key recorded before schema v6 named no handler
            raise IdempotencyKeyError(
                f"the reply recorded for this idempotency key is not a {type(msg).__qualname__} reply: {exc}"
            ) from None

    async def _wait_for_step(
        self, key: str, address: str, msg: msgspec.Struct, message: int, timeout: float | None
    ) -> Any:
        """The first call's step is durable but has no reply yet: wait for it, or say why not.

        In memory (running, or waiting in its mailbox) it is waited for; the
        runtime answers every such wait when it closes. Not in memory, the
        journal tells, in one read: the reply if it came meanwhile; otherwise
        the step can give no reply now, and waiting would be forever.
        """
        target = self._mailboxes.find(address, message)
        if target is None:
            backend = self._writes.backend
            assert backend is not None
            record, pending = await anyio.to_thread.run_sync(backend.key_status, key, message)
            if record is not None and record.reply is not None:
                return self._recorded_reply(address, msg, record.reply)
            target = self._mailboxes.find(address, message)  # it may have been loaded meanwhile
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
        waiter: asyncio.Future[Any] = self._loop.create_future()
        if target.waiter is None or target.waiter.done():
            target.waiter = waiter
        else:
            target.waiter.add_done_callback(functools.partial(_copy_outcome, waiter))
        try:
            with anyio.fail_after(timeout) if timeout is not None else contextlib.nullcontext():
                return await waiter
        except TimeoutError:
            raise AskTimeoutError(f"no reply from {address} within {timeout} s") from None

    async def purge_hourly(self) -> None:
        """Forget idempotency keys older than the retention, now and every hour."""
        while True:
            try:
                await self.purge()
            except SteleError as exc:
                log.warning("could not purge expired idempotency keys: %s", exc)
            await anyio.sleep(3600)

    async def purge(self, *, batch: int = PURGE_BATCH) -> int:
        """Forget the keys older than the retention now; return how many.

        In batches of at most ``batch`` keys, each its own commit shared with
        whatever else is queued: a million expired keys never make one
        transaction that stalls every caller.
        """
        backend = self._writes.backend
        assert backend is not None
        cutoff = self._clock() - self.retention_s
        purged = 0
        while True:
            keys = await anyio.to_thread.run_sync(backend.expired_keys, cutoff, batch)
            if not keys:
                return purged
            await self._writes.write(Unit(ops=[ForgetKey(key, cutoff) for key in keys]))
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
