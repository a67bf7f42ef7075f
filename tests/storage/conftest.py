"""The storage conformance suite's fixture: one ``Harness`` per backend.

A backend plugs into the suite by adding one parameter to ``harness`` below
(a way to open it, own it, and read it the way an inspection tool would);
every test of ``tests/storage`` then runs against it. A backend that can fail
its own commits for real also joins ``faulty``, with a :class:`Faults` of its
own: the SQLite file through a fault-injecting VFS, PostgreSQL by ending the
writer's server session in the middle of a transaction and by a proxy that
cuts the network.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Protocol

import psycopg
import pytest

import storage
from storage import Backend, Journal, Outcome, PgStore, Reads, Store, Unit

from ..faults import FaultVFS
from ..pgproxy import Proxy
from ..pgserver import Server


class Faults(Protocol):
    """Real failures of a backend's commits, on demand."""

    @property
    def injected(self) -> int:
        """Failures injected so far."""

    def fail_next_commit(self, backend: Backend) -> None:
        """The next commit fails without landing (and the journal stays reachable)."""

    def cut_off(self, backend: Backend) -> None:
        """Commits fail and nothing can be read back, until :meth:`heal`."""

    def heal(self) -> None:
        """Stop failing."""


class VfsFaults:
    """SQLite's: a failed fsync of the WAL, and failed reads after it."""

    def __init__(self, vfs: FaultVFS) -> None:
        self.vfs = vfs

    @property
    def injected(self) -> int:
        return self.vfs.injected

    def fail_next_commit(self, backend: Backend) -> None:
        self.vfs.sync_failures = 1  # the next commit's fsync fails once

    def cut_off(self, backend: Backend) -> None:
        self.vfs.sync_failures, self.vfs.reads_fail_after_sync = 100, 1000

    def heal(self) -> None:
        self.vfs.sync_failures = self.vfs.read_failures = self.vfs.reads_fail_after_sync = 0


class PgFaults:
    """PostgreSQL's: the writer's session ended mid-transaction; the network cut by a proxy."""

    def __init__(self, admin_url: str, proxy: Proxy) -> None:
        self.admin_url = admin_url
        self.proxy = proxy
        self.injected = 0
        self._threads: list[threading.Thread] = []

    def fail_next_commit(self, backend: Backend) -> None:
        """Hold the inbox locked; once the writer waits for it, end its session, then let go.

        The transaction is cut off mid-way: the writer must reconnect, find
        that nothing landed, and commit it again.
        """
        assert isinstance(backend, PgStore)
        pid = backend.backend_pid
        assert pid is not None
        admin = psycopg.connect(self.admin_url, autocommit=True)
        admin.execute("BEGIN")
        admin.execute("LOCK TABLE inbox IN ACCESS EXCLUSIVE MODE")

        def terminate() -> None:
            try:
                for _ in range(3000):  # bounded: 30 s
                    row = admin.execute(
                        "SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", (pid,)
                    ).fetchone()
                    if row is not None and row[0] == "Lock":
                        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
                        self.injected += 1
                        return
                    time.sleep(0.01)
            finally:
                admin.execute("ROLLBACK")
                admin.close()

        thread = threading.Thread(target=terminate, daemon=True)
        thread.start()
        self._threads.append(thread)

    def cut_off(self, backend: Backend) -> None:
        self.proxy.cut()
        self.injected += 1

    def heal(self) -> None:
        self.proxy.heal()

    def close(self) -> None:
        for thread in self._threads:
            thread.join(30)
        self.proxy.stop()


class Harness:
    """Opens a backend, commits units through it synchronously, and reads it from outside."""

    def __init__(
        self,
        name: str,
        opener: Callable[..., Backend],
        reader: Callable[[], AbstractContextManager[Reads]],
        *,
        payloads: bool,
    ) -> None:
        self.name = name
        self._opener = opener
        self._reader = reader
        self.backend: Backend | None = None
        self.fault: Faults | None = None
        self.payloads = payloads
        """Whether the backend stores large values once, as chunks (SQLite; PostgreSQL refuses a threshold)."""

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

    return Harness("sqlite-file" if vfs is None else "sqlite-fault-vfs", opener, reader, payloads=True)


def _postgres(url: str, owner_url: str) -> Harness:
    def opener(notify: storage.Notify, **options: Any) -> Backend:
        return PgStore.open(owner_url, notify=notify, **options)

    def reader() -> AbstractContextManager[Reads]:
        return Journal.open(url)

    return Harness("postgres", opener, reader, payloads=False)


def _made(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    if kind == "postgres":
        server: Server = request.getfixturevalue("pg_server")
        url = server.database()
        proxy = Proxy(url)
        made = _postgres(url, proxy.url)
        faults = made.fault = PgFaults(url, proxy)
        try:
            yield made
        finally:
            made.close()
            faults.close()
            server.drop(url)
        return
    vfs: FaultVFS | None = None
    if kind == "sqlite-fault-vfs":
        vfs = FaultVFS(f"conformance-{tmp_path.name}")
    made = _sqlite(tmp_path / "journal.db", vfs.name if vfs is not None else None)
    made.fault = VfsFaults(vfs) if vfs is not None else None
    try:
        yield made
    finally:
        made.close()
        if vfs is not None:
            vfs.close()


@pytest.fixture(params=["sqlite-file", "sqlite-fault-vfs", "postgres"])
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    """Every backend the conformance suite runs against (a new journal each)."""
    yield from _made(request.param, request, tmp_path)


@pytest.fixture(params=["sqlite-fault-vfs", "postgres"])
def faulty(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    """Every backend that can fail its own commits for real on demand (``Harness.fault``)."""
    yield from _made(request.param, request, tmp_path)


@pytest.fixture(params=["sqlite-file", "sqlite-fault-vfs"])
def paged(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    """Every backend whose storage is pages it can give back to the file system (``ReclaimSpace``)."""
    yield from _made(request.param, request, tmp_path)
