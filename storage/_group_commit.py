"""The group-commit thread both backends' writers are built on.

Submitters put units on a queue; one thread takes whatever queued while the
last commit ran (up to :data:`MAX_BATCH_UNITS` units), commits it as one
batch, and hands every submitter its units' outcomes through one ``notify``
call per batch: the event loop wakes once per batch, not once per unit. How a
batch is committed, retried and settled is the backend's (:meth:`_attempts`).
"""

from __future__ import annotations

import abc
import logging
import queue
import threading
import time
from collections.abc import Sequence
from typing import Any

from ._contract import Done, Notify, Outcome, Unit, WriterStats
from ._errors import OperationalError, StorageError

log = logging.getLogger("stele.storage")

MAX_BATCH_UNITS = 20_000
"""Bound on one transaction's size, so one huge backlog cannot stall every caller."""

_STOP = object()


class GroupCommit(abc.ABC):
    """A thread that owns a journal's one write connection and group-commits what is submitted."""

    def __init__(self, notify: Notify, *, name: str) -> None:
        self._notify = notify
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._abandoned = False
        self._stopped = False
        self.stats = WriterStats()
        self.failing: StorageError | None = None
        """Why commits fail while they do; None once one goes through."""
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        """Start the writer thread."""
        self._thread.start()

    def submit(self, units: Sequence[Unit], done: Done) -> None:
        """Queue ``units`` for the next commit; ``done`` gets their outcomes. Thread-safe."""
        self.submit_all([(units, done)])

    def submit_all(self, groups: Sequence[tuple[Sequence[Unit], Done]]) -> None:
        """Queue several submissions as one item, so they share a batch. Thread-safe."""
        if self._stopped:
            closed = OperationalError("the journal is closed")
            self._notify([(done, [closed] * len(units)) for units, done in groups])
            return
        self._queue.put(groups)

    def stop(self) -> None:
        """Commit everything queued so far, then stop the thread."""
        self._stopped = True
        self._queue.put(_STOP)
        self._thread.join()

    def abandon(self) -> None:
        """Stop without committing what is queued, as a crash would (for tests)."""
        self._abandoned = self._stopped = True
        self._queue.put(_STOP)
        self._thread.join()

    # -- what a backend provides -------------------------------------------------

    @abc.abstractmethod
    def _attempts(self, units: list[Unit], outcomes: list[Outcome]) -> None:
        """Commit ``units``, retrying as the backend does, and fill in ``outcomes`` (None: committed)."""

    @abc.abstractmethod
    def _after_unexpected(self) -> None:
        """Put the connection back in a state where the next batch can begin, after a bug in a commit."""

    # -- the thread -------------------------------------------------------------

    def _run(self) -> None:
        stopping = False
        while not stopping:
            items: list[tuple[Sequence[Unit], Done]] = []
            count = 0
            item = self._queue.get()
            while True:
                if item is _STOP:
                    stopping = True
                    break
                items.extend(item)
                count += sum(len(units) for units, _ in item)
                if count >= MAX_BATCH_UNITS:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            if self._abandoned:
                return
            if not items:
                continue
            try:
                results = self._commit(items)
            except BaseException as exc:  # never let the thread die with callers waiting
                log.exception("journal writer failed unexpectedly")
                self._after_unexpected()
                failure = OperationalError(f"journal writer failed unexpectedly: {exc!r}")
                results = [(done, [failure] * len(units)) for units, done in items]
            try:
                self._notify(results)
            except Exception:  # the loop is gone; nobody is left to tell
                log.debug("could not deliver commit outcomes", exc_info=True)

    def _commit(self, items: list[tuple[Sequence[Unit], Done]]) -> list[tuple[Done, list[Outcome]]]:
        units = [u for us, _ in items for u in us]
        outcomes: list[Outcome] = [None] * len(units)
        started = time.perf_counter()
        self._attempts(units, outcomes)
        self.stats.batches += 1
        self.stats.units += len(units)
        self.stats.commit_seconds += time.perf_counter() - started
        results = []
        at = 0
        for us, done in items:
            results.append((done, outcomes[at : at + len(us)]))
            at += len(us)
        return results
