"""The storage conformance suite's fixture: one ``Harness`` per backend.

A backend plugs into the suite by adding one parameter to ``harness`` below
(a way to open it, own it, and read it the way an inspection tool would);
every test of ``tests/storage`` then runs against it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest

import storage
from storage import Backend, Journal, Outcome, Reads, Store, Unit

from ..faults import FaultVFS


class Harness:
    """Opens a backend, commits units through it synchronously, and reads it from outside."""

    def __init__(
        self,
        name: str,
        opener: Callable[..., Backend],
        reader: Callable[[], AbstractContextManager[Reads]],
    ) -> None:
        self.name = name
        self._opener = opener
        self._reader = reader
        self.backend: Backend | None = None
        self.fault: FaultVFS | None = None

    def open(self, **options: Any) -> Backend:
        """Own the journal (a fresh one the first time); ``options`` go to the backend's opener
        (``payload_threshold``)."""
        self.backend = self._opener(_deliver, **options)
        return self.backend

    def reopen(self) -> Backend:
        """Close (committing what is queued) and own it again: what a restart sees."""
        assert self.backend is not None
        self.backend.close()
        return self.open()

    def commit(self, *groups: Sequence[Unit]) -> list[list[Outcome]]:
        """Submit ``groups`` together (one submission each) and wait for every outcome."""
        assert self.backend is not None
        results: list[list[Outcome] | None] = [None] * len(groups)
        done = threading.Event()

        def record(i: int) -> Callable[[list[Outcome]], None]:
            def store(outcomes: list[Outcome]) -> None:
                results[i] = outcomes
                if all(r is not None for r in results):
                    done.set()

            return store

        self.backend.submit_all([(list(units), record(i)) for i, units in enumerate(groups)])
        assert done.wait(30), "the writer reported no outcome within 30 s"
        return [r for r in results if r is not None]

    def one(self, unit: Unit) -> Outcome:
        """Commit one unit; its outcome."""
        return self.commit([unit])[0][0]

    def reading(self) -> AbstractContextManager[Reads]:
        """A read-only view from outside, as `python -m runtime history` opens it."""
        return self._reader()

    def close(self) -> None:
        if self.backend is not None:
            self.backend.close()
            self.backend = None


def _deliver(results: list[tuple[storage.Done, list[Outcome]]]) -> None:
    # Called in the writer's thread: the harness waits on an Event, no event loop needed.
    for done, outcomes in results:
        done(outcomes)


def _sqlite(path: Path, vfs: str | None) -> Harness:
    def opener(notify: storage.Notify, **options: Any) -> Backend:
        return Store.open(str(path), notify=notify, vfs=vfs, **options)

    def reader() -> AbstractContextManager[Reads]:
        return Journal.open(str(path))

    return Harness("sqlite-file" if vfs is None else "sqlite-fault-vfs", opener, reader)


def _made(kind: str, tmp_path: Path) -> Iterator[Harness]:
    fault: FaultVFS | None = None
    if kind == "sqlite-fault-vfs":
        fault = FaultVFS(f"conformance-{tmp_path.name}")
    made = _sqlite(tmp_path / "journal.db", fault.name if fault is not None else None)
    made.fault = fault
    try:
        yield made
    finally:
        made.close()
        if fault is not None:
            fault.close()


@pytest.fixture(params=["sqlite-file", "sqlite-fault-vfs"])
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    """Every backend the conformance suite runs against (a new journal each)."""
    yield from _made(request.param, tmp_path)


@pytest.fixture(params=["sqlite-fault-vfs"])
def faulty(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    """Every backend that can fail its own commits on demand (``Harness.fault``)."""
    yield from _made(request.param, tmp_path)

