"""The runtime's door to the journal's writer: units handed over, outcomes awaited on the loop.

There are two commit paths, named here:

- **Rounds** (:meth:`Writes.submit_all`): the scheduler hands the tells of a
  loop tick and the steps of a round that finished without suspending to the
  writer together, with one callback per submission (``runtime._scheduler``).
- **One unit** (:meth:`Writes.commit`, :meth:`Writes.write`): a step that has
  suspended (an effect, a wait) journals its progress and its end one unit at
  a time, and the runtime's own bookkeeping (dead letters, promises, status)
  commits the same way.

The writer reports from its own thread; :meth:`Writes.notify` brings every
outcome of one batch to the loop with a single wake-up.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Sequence

from storage import Backend, Done, Outcome, Unit

from ._cell import first_outcome

log = logging.getLogger("stele.runtime")


class Writes:
    """Commits units through the backend the runtime owns."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.backend: Backend | None = None
        """Set once the journal is owned."""
        self.after_batch: Callable[[], None] = _nothing
        """Called in the writer's thread after each batch (the journal's health watches it)."""

    def notify(self, results: list[tuple[Done, list[Outcome]]]) -> None:
        """The backend's ``notify`` (writer thread): one wake-up of the loop per batch."""
        self._loop.call_soon_threadsafe(_deliver, results)
        self.after_batch()

    def submit_all(self, groups: Sequence[tuple[Sequence[Unit], Done]]) -> None:
        """Hand several submissions to the writer as one: they share a transaction."""
        assert self.backend is not None
        self.backend.submit_all(groups)

    def commit(self, unit: Unit) -> asyncio.Future[Outcome]:
        """Hand ``unit`` to the writer; the future gets its outcome (None when committed)."""
        assert self.backend is not None
        done: asyncio.Future[Outcome] = self._loop.create_future()
        self.backend.submit([unit], functools.partial(first_outcome, done))
        return done

    async def write(self, unit: Unit) -> None:
        """Commit one unit of the runtime's own bookkeeping; raise why it did not commit."""
        error = await self.commit(unit)
        if error is not None:
            raise error


def _deliver(results: list[tuple[Done, list[Outcome]]]) -> None:
    for done, outcomes in results:
        try:
            done(outcomes)
        except Exception:
            log.exception("delivering a commit outcome failed")


def _nothing() -> None:
    """Nothing to do after a batch."""
