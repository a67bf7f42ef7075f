"""What a step needs from the runtime that hosts it: a narrow door, named.

:class:`~runtime._step.Step` runs one message through its handler and the
context the handler sees; everything it asks of the rest of the runtime goes
through this protocol, which the scheduler implements.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Protocol

import anyio
import msgspec

from storage import Outcome, Unit

from ._cell import Cell, Msg
from ._registry import Registry

if TYPE_CHECKING:
    from ._step import Step


class StepHost(Protocol):
    """The runtime as a step sees it."""

    registry: Registry
    rng: random.Random
    effect_limiter: anyio.CapacityLimiter | None
    """The threads synchronous effects run in."""

    def clock(self) -> float:
        """The runtime's time (injectable): journaled as the step's time."""
        ...

    def spawn(self, fn: Callable[..., Coroutine[Any, Any, None]], *args: Any) -> None:
        """Go on in a task the runtime cancels when it closes (a step that suspended)."""
        ...

    def commit(self, unit: Unit) -> asyncio.Future[Outcome]:
        """Journal ``unit`` of a step under way (see :mod:`runtime._writes`)."""
        ...

    def prepare(self, address: str, msg: msgspec.Struct, sender: str | None = None) -> Msg:
        """Validate a message the step sends and give it its id."""
        ...

    def admit(self, address: str) -> None:
        """Backpressure for the step's own sends: raise if ``address`` takes nothing now."""
        ...

    def deliver(self, address: str, msg: Msg) -> None:
        """Put a message the step made durable (an actor's ask) into its actor's mailbox."""
        ...

    def pending_timer(self, timer_id: str) -> Msg | None:
        """The pending (not cancelled) timer ``timer_id``, for ``ctx.cancel``."""
        ...

    async def take_promise(self, address: str, name: str, timeout: float | None) -> bytes | None:
        """The value resolved for a promise, or an actor's reply (None after ``timeout``)."""
        ...

    def check_cycle(self, caller: str, callee: str) -> None:
        """Refuse an ask that would wait forever (``callee`` waits, through others, on ``caller``)."""
        ...

    def ask_begins(self, caller: str, callee: str) -> None:
        """``caller``'s step waits on ``callee`` now."""
        ...

    def ask_ends(self, caller: str) -> None:
        """``caller``'s step waits on nobody any more."""
        ...

    def step_committed(self, step: Step, outcome: Outcome) -> None:
        """The step's last unit committed (``outcome`` None) or failed."""
        ...

    def step_failed(self, step: Step, error: BaseException) -> None:
        """A unit of a step under way could not be journaled: the step keeps nothing."""
        ...

    def step_broke(self, cell: Cell, msg: Msg, exc: Exception, step: Step | None = None) -> None:
        """The step raised where nothing should (building its unit, say): it fails alone."""
        ...
