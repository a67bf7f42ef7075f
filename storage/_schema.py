"""The journal's schema and its migrations.

``PRAGMA user_version`` holds the schema version. Each migration runs in its own
transaction; a file written by a newer version is refused rather than guessed at.
"""

from __future__ import annotations

from collections.abc import Callable

import apsw

from ._errors import SchemaError

# Litestream adds `_litestream_seq` and `_litestream_lock` to the database;
# nothing here lists tables, so they are tolerated by construction.
_V1 = """
CREATE TABLE meta(
    key   TEXT PRIMARY KEY,
    value ANY
) STRICT, WITHOUT ROWID;

-- The actor registry. Journal rows name actors by `id`: an integer keeps the
-- (actor, seq) index small, and with many actors interleaved every commit
-- rewrites about one index page per actor (measured: ~35% faster commits than
-- with the address text). An actor's last sequence number is not stored here
-- but read from that index: a copy would cost one more row write per step.
CREATE TABLE actors(
    id       INTEGER PRIMARY KEY,
    address  TEXT NOT NULL UNIQUE,
    type     TEXT NOT NULL,
    status   TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended')),
    reason   TEXT,
    updated  REAL NOT NULL
) STRICT;

-- The journal proper. `position` is the rowid: a global, append-only order.
-- `step` ties every entry to the step (one message processed) that wrote it.
CREATE TABLE journal(
    position INTEGER PRIMARY KEY,
    actor    INTEGER NOT NULL,
    seq      INTEGER NOT NULL,
    step     INTEGER NOT NULL,
    kind     TEXT NOT NULL,
    type     TEXT NOT NULL,
    data     BLOB NOT NULL,
    at       REAL NOT NULL,
    UNIQUE (actor, seq)
) STRICT;

-- Pending messages (and, later, timers). `id` is the step id of the message.
CREATE TABLE inbox(
    id              INTEGER PRIMARY KEY,
    target          TEXT NOT NULL,
    handler         TEXT NOT NULL,
    type            TEXT NOT NULL,
    payload         BLOB NOT NULL,
    due             REAL,
    idempotency_key TEXT UNIQUE,
    attempts        INTEGER NOT NULL DEFAULT 0,
    sender          TEXT,
    at              REAL NOT NULL
) STRICT;

-- A snapshot at `seq` is the state after every event with a seq <= `seq`.
CREATE TABLE snapshots(
    actor INTEGER NOT NULL,
    seq   INTEGER NOT NULL,
    type  TEXT NOT NULL,
    data  BLOB NOT NULL,
    at    REAL NOT NULL,
    PRIMARY KEY (actor, seq)
) STRICT, WITHOUT ROWID;

INSERT INTO meta(key, value) VALUES ('step_hwm', 0);
"""

# Version 2: idempotent ingress. A key accepted once returns its first outcome
# (for an ask, the same reply) for as long as the runtime's retention keeps it.
_V2 = """
CREATE TABLE idempotency(
    key     TEXT PRIMARY KEY,
    address TEXT NOT NULL,
    step    INTEGER NOT NULL,
    reply   BLOB,
    at      REAL NOT NULL
) STRICT, WITHOUT ROWID;

CREATE INDEX idempotency_at ON idempotency(at);
"""

# Version 3: promises. A value resolved from outside waits here until the
# actor's handler takes it (journaled as a `promise` entry with that step).
_V3 = """
CREATE TABLE promises(
    address TEXT NOT NULL,
    name    TEXT NOT NULL,
    value   BLOB NOT NULL,
    at      REAL NOT NULL,
    PRIMARY KEY (address, name)
) STRICT, WITHOUT ROWID;
"""

# Version 4: dead letters. A message whose step kept crashing the process (or
# kept failing) is moved here after its attempts, so its actor carries on.
_V4 = """
CREATE TABLE dead_letters(
    id       INTEGER PRIMARY KEY,
    target   TEXT NOT NULL,
    handler  TEXT NOT NULL,
    type     TEXT NOT NULL,
    payload  BLOB NOT NULL,
    sender   TEXT,
    attempts INTEGER NOT NULL,
    reason   TEXT NOT NULL,
    at       REAL NOT NULL
) STRICT;
"""

# Version 5: checksums. SQLite checks a file's structure, not what a row holds:
# a flipped bit in an event's payload can still decode (an amount of 5 read as
# 7) and serve a wrong state. Each journal entry and snapshot now carries the
# CRC-32 of its data, checked whenever it is read; rows written before version
# 5 have none (NULL) and are read as before.
_V5 = """
ALTER TABLE journal ADD COLUMN crc INTEGER;
ALTER TABLE snapshots ADD COLUMN crc INTEGER;
"""

# Version 6: internal routing gets columns of its own. Timers and the requests
# of actors' asks used to mark themselves in `idempotency_key` ("timer:ID",
# "reply:NAME|CALLER"), the column that client keys use too: a client key
# "timer:x" made every later start fail, a crafted "reply:" key could forge
# another actor's reply after a restart, and a caller address holding "|"
# lost its reply. Now a client key is only ever a client key, and the key's
# record says whether it was a tell or an ask, and to which handler (an ask
# reusing a tell's key used to wait forever for a reply no tell has; one
# reusing another handler's key got that handler's reply, decoded as its own).
_V6 = """
ALTER TABLE inbox ADD COLUMN timer_id TEXT;
ALTER TABLE inbox ADD COLUMN reply_to TEXT;
ALTER TABLE inbox ADD COLUMN reply_name TEXT;
CREATE UNIQUE INDEX inbox_timer ON inbox(timer_id) WHERE timer_id IS NOT NULL;
ALTER TABLE idempotency ADD COLUMN kind TEXT CHECK (kind IN ('tell', 'ask'));
ALTER TABLE idempotency ADD COLUMN handler TEXT;
"""


def _v6_rows(conn: apsw.Connection) -> None:
    """Move the markers that rows of earlier versions carry into the new columns.

    Only rows Stele itself wrote are moved: a timer has a due time and the
    key ``timer:`` + its id (``SENDER/STEP/tN``); an actor's ask has the key
    ``reply:SENDER/STEP/INDEX|SENDER`` with its sender. Anything else is a
    client's key and stays one.
    """
    rows = conn.execute(
        "SELECT id, idempotency_key, due, sender FROM inbox "
        "WHERE idempotency_key LIKE 'timer:%' OR idempotency_key LIKE 'reply:%'"
    ).fetchall()
    for ident, key, due, sender in rows:
        if not isinstance(key, str) or not isinstance(sender, str):
            continue
        if key.startswith("timer:") and due is not None and _internal(key[6:], sender, "t"):
            conn.execute("UPDATE inbox SET timer_id = ?, idempotency_key = NULL WHERE id = ?", (key[6:], ident))
        elif key.startswith("reply:") and key.endswith("|" + sender):
            name = key[: -len(sender) - 1]
            if _internal(name[6:], sender, ""):
                conn.execute(
                    "UPDATE inbox SET reply_to = ?, reply_name = ?, idempotency_key = NULL WHERE id = ?",
                    (sender, name, ident),
                )


def _internal(ident: str, sender: str, prefix: str) -> bool:
    """Whether ``ident`` is ``SENDER/STEP/{prefix}N``, as the runtime names timers and replies."""
    if not ident.startswith(sender + "/"):
        return False
    step, _, index = ident[len(sender) + 1 :].partition("/")
    return step.isdigit() and index.startswith(prefix) and index[len(prefix) :].isdigit()


# Version 7: payloads stored once. A value above the threshold (an answer of a
# model, a tool's output, a state holding a conversation) is cut into chunks,
# each stored here once under the SHA-256 of its content, zstd-compressed when
# that is smaller; the row it belongs to holds a reference instead (see
# storage/_payloads.py). `kept`: a journal entry or a snapshot refers to the
# chunk, so it stays as long as the journal; the others may be reclaimed once
# no inbox message, key, promise or dead letter refers to them (the partial
# index finds them). AUTOINCREMENT: an id is never reused, so no reference
# can ever name another chunk than its own. `data` comes last: counting and
# checking read the small columns without touching the chunk's pages.
_V7 = """
CREATE TABLE payloads(
    id    INTEGER PRIMARY KEY AUTOINCREMENT,
    hash  BLOB NOT NULL UNIQUE,
    size  INTEGER NOT NULL,
    zstd  INTEGER NOT NULL CHECK (zstd IN (0, 1)),
    kept  INTEGER NOT NULL CHECK (kept IN (0, 1)),
    crc   INTEGER NOT NULL,
    data  BLOB NOT NULL
) STRICT;

CREATE INDEX payloads_loose ON payloads(id) WHERE kept = 0;
"""

# Version 8: retention. An actor whose old history was compacted keeps it from
# `floor` on: a snapshot at seq `floor` holds the state there, and every entry
# from seq `floor` on is kept. Reads never serve what lies below it (entries
# below it may linger until compaction has removed them all, in batches), and a
# position before the entry at `floor` is answered with OutsideRetentionError,
# not a state rebuilt from a history with a hole. 0: nothing compacted.
_V8 = """
ALTER TABLE actors ADD COLUMN floor INTEGER NOT NULL DEFAULT 0;
"""

# Version 9: compaction reclaims stored payloads. Compaction deletes journal
# entries and snapshots; the chunks they named are then set `kept = 0` and
# listed here, in the same transaction: a chunk listed may still be named by
# a remaining entry or snapshot (content is shared), so only a reclaim that reads
# the journal's references may delete it, while a chunk `kept = 0` and not
# listed was never named by history and is reclaimed by reading the transient
# tables alone, as before (storage/_payload_store.py).
_V9 = """
CREATE TABLE payloads_dropped(
    id INTEGER PRIMARY KEY
) STRICT;
"""

Migration = str | tuple[str, Callable[[apsw.Connection], None]]

MIGRATIONS: tuple[Migration, ...] = (_V1, _V2, _V3, _V4, _V5, (_V6, _v6_rows), _V7, _V8, _V9)
"""MIGRATIONS[i] takes the schema from version i to version i + 1: a script, and
optionally a function that moves rows in the same transaction."""

SCHEMA_VERSION = len(MIGRATIONS)


def schema_version(conn: apsw.Connection) -> int:
    """The file's schema version (0 for a new, empty file)."""
    row = conn.execute("PRAGMA user_version").fetchone()
    return int(row[0]) if row else 0


def migrate(conn: apsw.Connection, path: str) -> int:
    """Bring the file to :data:`SCHEMA_VERSION`; return the version it had before."""
    before = schema_version(conn)
    if before > SCHEMA_VERSION:
        raise SchemaError(
            f"{path}: schema version {before} is newer than this Stele understands "
            f"({SCHEMA_VERSION}); upgrade Stele to open it"
        )
    if before == 0 and _has_foreign_tables(conn):
        raise SchemaError(f"{path}: not a Stele journal (it has tables but no schema version)")
    for version in range(before, SCHEMA_VERSION):
        with conn:  # one transaction per migration step
            # execute() runs every statement of a script only when no statement
            # returns rows: APSW stops at the first statement that returns rows
            # until its cursor is consumed, silently skipping the rest.
            step = MIGRATIONS[version]
            script, rows = step if isinstance(step, tuple) else (step, None)
            conn.execute(script)
            if rows is not None:
                rows(conn)
            conn.execute(f"PRAGMA user_version = {version + 1}")
    return before


def _has_foreign_tables(conn: apsw.Connection) -> bool:
    rows = conn.execute(
        "SELECT name FROM sqlite_schema WHERE type = 'table' "
        "AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' AND name NOT LIKE '\\_%' ESCAPE '\\'"
    ).fetchall()
    return bool(rows)
