"""The payload chunks of a SQLite journal file and what refers to them, read straight from the file.

For tests of reclaiming: which chunks are stored, and which chunk each row
that may hold a reference (journal entry, snapshot, inbox message, key's reply,
promise, dead letter) names, the chunks holding long lists of pieces followed.
"""

from __future__ import annotations

from dataclasses import dataclass

import apsw

from storage._payload_store import REFERRING, references

_KEYS = {
    "journal": "actor, seq",
    "snapshots": "actor, seq",
    "inbox": "id",
    "idempotency": "key",
    "promises": "address, name",
    "dead_letters": "id",
}


@dataclass(frozen=True)
class ChunkGraph:
    """One read snapshot of a file's chunks and their references."""

    stored: set[int]
    rows: dict[tuple[str, str], set[int]]
    """``(table, key)`` -> the chunks that row names (rows holding no reference are left out)."""

    @property
    def referenced(self) -> set[int]:
        """Every chunk some row names."""
        return set().union(*self.rows.values())

    @property
    def missing(self) -> set[int]:
        """Named by a row, not stored: a dangling reference."""
        return self.referenced - self.stored

    @property
    def unreferenced(self) -> set[int]:
        """Stored, named by no row: space a reclaim should have given back."""
        return self.stored - self.referenced


def chunk_graph(path: str) -> ChunkGraph:
    """Read ``path``'s chunks and every reference to them in one read transaction."""
    conn = apsw.Connection(path, flags=apsw.SQLITE_OPEN_READONLY)
    try:
        with conn:
            stored = {int(ident) for (ident,) in conn.execute("SELECT id FROM payloads")}
            rows: dict[tuple[str, str], set[int]] = {}
            for table, column in REFERRING:
                key = _KEYS[table]
                sql = f"SELECT {key}, {column} FROM {table} WHERE substr({column}, 1, 1) = x'c1'"
                for *ident, value in conn.execute(sql):
                    rows[(table, "/".join(map(str, ident)))] = references(conn, value)
        return ChunkGraph(stored, rows)
    finally:
        conn.close()
