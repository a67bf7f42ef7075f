"""The one door an actor has to the outside world and to non-determinism."""

from __future__ import annotations

import abc
import datetime
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Generic, TypeVar, overload

import msgspec

from ._retry import Retry

T = TypeVar("T")


class Stream(abc.ABC, Generic[T]):
    """What :meth:`Context.stream` returns: iterate it with ``async for``.

    Each chunk is journaled as it arrives; once the stream has ended,
    :attr:`result` is the assembled result, journaled once.
    """

    __slots__ = ()

    def __aiter__(self) -> Stream[T]:
        return self

    @abc.abstractmethod
    async def __anext__(self) -> T:
        """The next chunk (raises ``StopAsyncIteration`` at the end, :class:`EffectError` if it failed)."""

    @property
    @abc.abstractmethod
    def result(self) -> Any:
        """The assembled result, once the stream has ended or the handler has left it.

        Chunks that are all ``str`` are joined into one ``str``, all ``bytes``
        into one ``bytes``; others make a list (or what ``assemble`` made of
        them). Raises :class:`SteleError` before that, and the stream's
        :class:`EffectError` if it failed.
        """


class Context(abc.ABC):
    """What ``self.ctx`` is inside a handler.

    Everything that could differ between a first run and a replay goes through
    here, so that the journal can hand the same answers back on replay.
    """

    __slots__ = ()

    # Typed without ParamSpec: ``retry`` and ``timeout`` are keyword arguments of
    # ``effect`` itself, which PEP 612 cannot express beside ``fn``'s own.
    @overload
    async def effect(
        self,
        fn: Callable[..., Awaitable[T]],
        /,
        *args: Any,
        retry: Retry | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> T: ...

    @overload
    async def effect(
        self,
        fn: Callable[..., T],
        /,
        *args: Any,
        retry: Retry | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> T: ...

    @abc.abstractmethod
    async def effect(
        self,
        fn: Callable[..., Any],
        /,
        *args: Any,
        retry: Retry | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> Any:
        """Run ``fn(*args, **kwargs)`` once and journal its result or error.

        ``fn`` may be sync (it runs in a worker thread) or async. On replay the
        journaled result comes back (or the journaled error is raised as
        :class:`EffectError`) without calling ``fn``. The result is decoded as
        ``fn``'s return annotation, live and on replay alike.

        ``retry=Retry(...)`` retries failed attempts with a journaled, durable
        backoff; ``timeout`` bounds each attempt (seconds). Both names are
        reserved: they are not passed to ``fn``.
        """

    @abc.abstractmethod
    def stream(
        self,
        fn: Callable[..., AsyncIterator[T]] | Callable[..., Awaitable[AsyncIterator[T]]],
        /,
        *args: Any,
        retry: Retry | None = None,
        timeout: float | None = None,
        assemble: Callable[[list[T]], Any] | None = None,
        **kwargs: Any,
    ) -> Stream[T]:
        """A streamed effect: ``async for chunk in self.ctx.stream(fn, *args)``.

        ``fn`` is an async generator function, or returns an async iterator (a
        model's token stream). Each chunk is journaled as it arrives, many to
        a commit (no commit per chunk), and readers of the actor's stream
        (``rt.stream``, ``GET /actors/{type}/{key}/stream``) see it once it is
        durable; the assembled result is journaled once at the end. On replay
        the recorded chunks come back without calling ``fn``. Chunks decode as
        the item type of ``fn``'s return annotation (``AsyncIterator[str]``:
        ``str``), live and on replay alike.

        An attempt cut short (a crash, or a failure under ``retry``) is never
        spliced into the next: readers see the next attempt start over, with
        its number. A failed attempt whose chunks the handler has seen is
        retried by running the step again from its journal, as after a crash,
        so the handler too sees one attempt's chunks only. ``timeout`` bounds
        the wait for each chunk (seconds). ``assemble`` makes the result from
        the list of chunks (see :attr:`Stream.result`).

        The effect begins at the first ``async for`` step. One stream is open
        at a time: another effect, ask, promise or stream, or the handler's
        end, closes it where the handler left it (journaled as such, and
        replayed the same way).
        """

    @abc.abstractmethod
    def now(self) -> float:
        """The step's time in epoch seconds, journaled so that replay sees the same."""

    @abc.abstractmethod
    def random(self) -> float:
        """A float in [0, 1) from the step's journaled seed."""

    @abc.abstractmethod
    def uuid(self) -> uuid.UUID:
        """A version-4 UUID from the step's journaled seed."""

    @property
    @abc.abstractmethod
    def idempotency_key(self) -> str:
        """A key for the next effect, stable across re-runs of this step.

        It names (actor, step id, effect index), so an external API that
        de-duplicates on it sees a re-run effect as the same request.
        """

    @abc.abstractmethod
    async def tell(self, address: str, msg: msgspec.Struct) -> None:
        """Send ``msg`` to the actor at ``address``; sent exactly once, with this step."""

    @abc.abstractmethod
    async def ask(self, address: str, msg: msgspec.Struct, *, timeout: float | None = None) -> Any:
        """A durable call to another actor: the request commits with this step's
        progress, the reply is journaled here when it arrives, and after a crash
        the step waits for (or reads) the same reply instead of asking again.

        Raises :class:`HandlerError` if the other handler raised,
        :class:`AskTimeoutError` after ``timeout`` seconds, and
        :class:`AskCycleError` at once if the other actor is waiting on this one.
        """

    @abc.abstractmethod
    async def promise(self, name: str, *, timeout: float | None = None) -> Any:
        """Wait, durably, for a value resolved from outside (``rt.resolve``).

        The actor processes nothing else meanwhile, by design. A value resolved
        before the handler waits is kept for it. On replay the journaled value
        comes back. Raises :class:`PromiseError` after ``timeout`` seconds.
        """

    @abc.abstractmethod
    def schedule(self, when: float | datetime.datetime, address: str, msg: msgspec.Struct) -> str:
        """A durable timer: deliver ``msg`` to ``address`` after ``when`` seconds
        (from :meth:`now`) or at the datetime ``when``; returns the timer id.

        Committed with this step; fires exactly once, never early, and promptly
        after downtime. A time in the past is refused.
        """

    @abc.abstractmethod
    def cancel(self, timer_id: str) -> None:
        """Cancel a pending timer (committed with this step); unknown ids are refused."""

    @abc.abstractmethod
    def emit(self, event: msgspec.Struct) -> None:
        """Record ``event`` in this step and apply it to the actor's state at once.

        What :meth:`Actor.emit` calls (``self.emit(event)`` in a handler).
        """
