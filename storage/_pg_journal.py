"""Read-only access to a PostgreSQL journal, behind :class:`storage.Journal`.

It works while a runtime owns and writes the database: it takes no lock, and
its session is read-only (``default_transaction_read_only``), so it cannot
write even by mistake. Each read is one statement: one snapshot.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from types import TracebackType
from typing import Any, Concatenate, ParamSpec, TypeVar

import psycopg

from ._errors import SchemaError
from ._pg_connect import connect, redact, translate
from ._pg_reads import PgReads
from ._pg_schema import TABLES, check_version, schema_version
from ._pg_store import Pool

P = ParamSpec("P")
T = TypeVar("T")


class PgJournal(PgReads):
    """An open PostgreSQL journal, read-only. Use :meth:`open`; close it, or use it as a context manager."""

    def __init__(self, url: str, where: str, pool: Pool) -> None:
        self._url = url
        self.path = where
        """The database's URL, without its password."""
        self._pool = pool
        self._snapshot = ""
        self._version = 0
        # A journal dropped without close() (a one-line look in a script) still ends its session.
        weakref.finalize(self, pool.close)

    @classmethod
    def open(cls, url: str) -> PgJournal:
        """Open the journal at ``url`` read-only; refuse a database that is not a Stele journal."""
        where = redact(url)
        conn = connect(url, readonly=True)
        try:
            try:
                version = schema_version(conn, where)
            except psycopg.Error as exc:
                raise translate(exc, f"cannot open journal {where}") from None
            if version == 0:
                raise SchemaError(f"{where} is not a Stele journal (no Stele tables)")
            check_version(version, where)
        except BaseException:
            conn.close()
            raise
        return cls(url, where, Pool(url, 1, where, first=conn))

    def _read(self, query: Callable[Concatenate[Any, P], T], *args: P.args, **kwargs: P.kwargs) -> T:
        return self._pool.run(query, *args, **kwargs)

    def integrity(self) -> str:
        """``"ok"`` if every index of the journal's tables is valid and its schema complete, else what is not.

        PostgreSQL keeps the files' structure itself (with page checksums if
        the cluster has them on); what can be checked from a session is that
        no index was left invalid (a failed ``CREATE INDEX CONCURRENTLY``).
        Each row's data is checked against its CRC-32 by ``check`` anyway.
        """
        return self._pool.run(_integrity)

    def stored_bytes(self) -> int:
        """What the journal's tables and their indexes take on the server."""
        return self._pool.run(_stored_bytes)

    def version(self) -> int:
        """A number that changes whenever another session has committed on the server since the last
        call: the server's snapshot (the transactions running, and the next id) is compared with the
        last one seen. A watch may wake a little more often than needed, never less."""
        row = self._pool.run(lambda conn: conn.execute("SELECT pg_current_snapshot()::text").fetchone())
        seen = str(row[0]) if row else ""
        if seen != self._snapshot:
            self._snapshot = seen
            self._version += 1
        return self._version

    def last_position(self) -> int:
        """The highest journal position (0 for an empty journal)."""

        def query(conn: psycopg.Connection[Any]) -> int:
            row = conn.execute("SELECT coalesce(max(position), 0) FROM journal").fetchone()
            return int(row[0]) if row else 0

        return self._pool.run(query)

    def after(self, position: int, until: int | None = None) -> tuple[int, float | None]:
        """How many entries lie past ``position`` (up to ``until``), and when the first of them was written."""

        def query(conn: psycopg.Connection[Any]) -> tuple[int, float | None]:
            bound = until if until is not None else 2**63 - 1
            row = conn.execute(
                "SELECT count(*), min(position) FROM journal WHERE position > %s AND position <= %s", (position, bound)
            ).fetchone()
            count, first = row if row is not None else (0, None)
            if not count:
                return 0, None
            at = conn.execute("SELECT at FROM journal WHERE position = %s", (first,)).fetchone()
            return int(count), float(at[0]) if at else None

        return self._pool.run(query)

    def close(self) -> None:
        """Close the connection."""
        self._pool.close()

    def __enter__(self) -> PgJournal:
        return self

    def __exit__(self, tp: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


def _integrity(conn: psycopg.Connection[Any]) -> str:
    problems = [
        f"table {name} is missing"
        for name in TABLES
        if conn.execute("SELECT to_regclass(%s) IS NULL", (name,)).fetchone() == (True,)
    ]
    invalid = conn.execute(
        "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
        "JOIN pg_class t ON t.oid = i.indrelid "
        "WHERE t.relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = current_schema()) "
        "AND NOT (i.indisvalid AND i.indisready) ORDER BY 1"
    ).fetchall()
    problems += [f"index {row[0]} is not valid" for row in invalid]
    return "; ".join(problems) if problems else "ok"


def _stored_bytes(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute(
        "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
        "WHERE c.relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = current_schema()) "
        "AND c.relkind = 'r' AND c.relname = ANY(%s)",
        (list(TABLES),),
    ).fetchone()
    return int(row[0]) if row else 0
