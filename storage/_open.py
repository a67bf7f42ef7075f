"""Opening a journal backend for a runtime: a path is a SQLite file, a ``postgresql://`` URL a database."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from ._contract import Backend, Notify
from ._payloads import DEFAULT_THRESHOLD
from ._pg_connect import is_postgres
from ._pg_store import PgStore
from ._replication import Replication
from ._store import Store


def open_backend(
    location: str,
    *,
    durability: str = "fsync",
    notify: Notify,
    vfs: str | None = None,
    replication: Replication | None = None,
    restore: Callable[[str], bool] | None = None,
    payload_threshold: int | Literal["auto"] | None = "auto",
    node: str | None = None,
) -> Backend:
    """Own the journal at ``location`` and start its writer.

    ``durability`` is ``fsync``, ``normal`` or ``replicated``: on a file,
    ``replicated`` commits as ``fsync`` (the runtime waits for Litestream); on
    PostgreSQL each maps to ``synchronous_commit`` (docs/postgresql.md).
    ``vfs``, ``replication`` and ``restore`` are a file's only: a database's
    durability and replication are the database's own. ``payload_threshold``:
    values longer than this are stored once, as chunks ("auto": 1 KiB on a
    file, never on PostgreSQL, which refuses a threshold: docs/payloads.md). ``node``: join a database
    that many runtime processes share, as this node (PostgreSQL only).
    """
    if is_postgres(location):
        given = [name for name, value in (("vfs", vfs), ("replication", replication), ("restore", restore)) if value]
        if given:
            raise ValueError(
                f"{', '.join(given)} apply to SQLite journals only: on PostgreSQL, durability and replication "
                "are the database server's (synchronous_commit, standbys)"
            )
        return PgStore.open(
            location,
            durability=durability,
            notify=notify,
            payload_threshold=None if payload_threshold == "auto" else payload_threshold,
            node=node,
        )
    if node is not None:
        raise ValueError("many nodes share a PostgreSQL database only: a SQLite journal has one owner")
    return Store.open(
        location,
        durability="fsync" if durability == "replicated" else durability,
        notify=notify,
        vfs=vfs,
        replication=replication,
        restore=restore,
        payload_threshold=DEFAULT_THRESHOLD if payload_threshold == "auto" else payload_threshold,
    )
