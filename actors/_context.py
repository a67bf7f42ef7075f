"""The one door an actor has to the outside world and to non-determinism."""

from __future__ import annotations

import abc
import datetime
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, overload

import msgspec

from ._retry import Retry

T = TypeVar("T")


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
