"""``storage.query``: one read-only statement over a journal's views, a file or a database."""

from __future__ import annotations

from ._pg_connect import is_postgres
from ._pg_views import PgQuery
from ._views import QueryResult
from ._views import query as sqlite_query


def query(location: str, sql: str, *, max_rows: int = 1000, timeout: float = 10.0) -> QueryResult:
    """Run one read-only statement over the journal at ``location`` (a path or a ``postgresql://`` URL)
    with the views of :data:`storage.VIEWS`; at most ``max_rows`` rows, at most ``timeout`` seconds."""
    if is_postgres(location):
        with PgQuery.open(location) as opened:
            return opened.run(sql, max_rows=max_rows, timeout=timeout)
    return sqlite_query(location, sql, max_rows=max_rows, timeout=timeout)
