"""Read-only access to a journal file (SQLite), behind :class:`storage.Journal`.

It works while a runtime owns and writes the file: WAL readers never block
the writer, and each query sees one consistent snapshot of the file.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Concatenate, ParamSpec, TypeVar

import apsw

from ._errors import OperationalError, SchemaError
from ._owner import Ownership
from ._reads import SqliteReads
from ._schema import SCHEMA_VERSION, migrate, schema_version
from ._sqlite import close, connect, translate

P = ParamSpec("P")
T = TypeVar("T")


class SqliteJournal(SqliteReads):
    """An open journal file. Use :meth:`open`; close it, or use it as a context manager."""

    def __init__(self, path: str, conn: apsw.Connection, ownership: Ownership | None) -> None:
        self.path = path
        self._conn = conn
        self._ownership = ownership

    @classmethod
    def open(cls, path: str, readonly: bool = True) -> SqliteJournal:
        """Open ``path``. Read-only (the default) never writes and works beside a runtime.

        ``readonly=False`` takes ownership of the file (for maintenance tools),
        and so fails while a runtime owns it.
        """
        path = os.path.abspath(path)
        if not os.path.exists(path):
            raise OperationalError(f"no journal at {path}")
        ownership = None
        if not readonly:
            ownership = Ownership(path)
            ownership.acquire()
        try:
            conn = connect(path, readonly=readonly)
            try:
                if readonly:
                    version = schema_version(conn)
                    if version == 0:
                        raise SchemaError(f"{path} is not a Stele journal (no schema version)")
                    if version > SCHEMA_VERSION:
                        raise SchemaError(
                            f"{path}: schema version {version} is newer than this Stele ({SCHEMA_VERSION})"
                        )
                else:
                    migrate(conn, path)
            except BaseException:
                close(conn)
                raise
        except (apsw.Error, UnicodeDecodeError) as exc:
            if ownership is not None:
                ownership.release()
            raise translate(exc, f"cannot open journal {path}") from None
        except BaseException:
            if ownership is not None:
                ownership.release()
            raise
        return cls(path, conn, ownership)

    def _read(self, query: Callable[Concatenate[apsw.Connection, P], T], *args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return query(self._conn, *args, **kwargs)
        except (apsw.Error, UnicodeDecodeError) as exc:
            raise translate(exc, f"cannot read {self.path}") from None

    def _iterate(
        self, query: Callable[Concatenate[apsw.Connection, P], Iterator[T]], *args: P.args, **kwargs: P.kwargs
    ) -> Iterator[T]:
        # Lazy: a long history streams; each query reads one consistent snapshot.
        try:
            yield from query(self._conn, *args, **kwargs)
        except (apsw.Error, UnicodeDecodeError) as exc:
            raise translate(exc, f"cannot read {self.path}") from None

    def version(self) -> int:
        """SQLite's ``data_version``: it changes whenever another connection has committed to the file."""

        def query(conn: apsw.Connection) -> int:
            row = conn.execute("PRAGMA data_version").fetchone()
            return int(row[0]) if row else 0

        return self._read(query)

    def last_position(self) -> int:
        """The highest journal position (0 for an empty journal)."""

        def query(conn: apsw.Connection) -> int:
            row = conn.execute("SELECT coalesce(max(position), 0) FROM journal").fetchone()
            return int(row[0]) if row else 0

        return self._read(query)

    def after(self, position: int, until: int | None = None) -> tuple[int, float | None]:
        """How many entries lie past ``position`` (up to ``until``), and when the first of them was written."""

        def query(conn: apsw.Connection) -> tuple[int, float | None]:
            bound = until if until is not None else 2**63 - 1
            count, first = conn.execute(
                "SELECT count(*), min(position) FROM journal WHERE position > ? AND position <= ?", (position, bound)
            ).fetchone() or (0, None)
            if not count:
                return 0, None
            row = conn.execute("SELECT at FROM journal WHERE position = ?", (first,)).fetchone()
            return int(count), float(row[0]) if row else None

        return self._read(query)

    def close(self) -> None:
        """Close the file (and give up ownership if it was taken)."""
        close(self._conn)
        if self._ownership is not None:
            self._ownership.release()

    def __enter__(self) -> SqliteJournal:
        return self

    def __exit__(self, tp: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


def integrity_check(path: str) -> str:
    """SQLite's ``integrity_check`` of the file at ``path``: ``"ok"``, or what is wrong.

    Read-only, and works beside a running owner. A file too broken to open or
    check says so in the answer rather than raising: it is the answer.
    """
    try:
        conn = connect(os.path.abspath(path), readonly=True)
    except OperationalError as exc:
        return f"cannot run integrity_check: {exc}"
    try:
        return "; ".join(str(row[0]) for row in conn.execute("PRAGMA integrity_check"))
    except apsw.Error as exc:
        return f"cannot run integrity_check: {exc}"
    finally:
        close(conn)
