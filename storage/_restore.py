"""Restore a journal from its replica into a new file, and verify it."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import os
import subprocess
import time
import uuid
from dataclasses import dataclass

import apsw

from ._errors import IntegrityError, OperationalError, SchemaError
from ._litestream import clean_env, find_binary
from ._owner import PRIVATE_FILE
from ._replica import ReplicaTarget
from ._schema import SCHEMA_VERSION, schema_version


@dataclass(frozen=True)
class RestoreReport:
    """What a restore produced."""

    path: str
    actors: int
    last_position: int
    last_commit_at: float | None
    integrity: str
    schema_version: int
    seconds: float


def restore(
    url: str,
    to_path: str,
    *,
    timestamp: datetime.datetime | str | None = None,
    txid: int | None = None,
    binary: str | None = None,
    timeout: float = 600.0,
) -> RestoreReport:
    """Restore the replica at ``url`` into ``to_path`` (which must not exist) and verify it.

    The new file is readable by its owner only, and appears at ``to_path`` only
    once verified.

    ``timestamp`` (a datetime or an ISO 8601 string) or ``txid`` (Litestream's
    transaction id) pick a point in time; by default the latest state.
    Verification: ``integrity_check``, the schema version, and a summary read.
    Rebuilding every actor needs the actor classes: the runtime does that.
    """
    if timestamp is not None and txid is not None:
        raise ValueError("give a timestamp or a txid, not both")
    to_path = os.path.abspath(to_path)
    if os.path.exists(to_path):
        raise OperationalError(f"{to_path} exists: restore never overwrites a journal; choose a new path")
    target = ReplicaTarget.parse(url)
    source = target.url if target.kind == "s3" else f"file://{target.directory}"
    # Into a temporary file beside the target, moved into place once verified: a
    # failed or interrupted restore never leaves a file at ``to_path``.
    temp = f"{to_path}.restoring-{uuid.uuid4().hex[:8]}"
    command = [find_binary(binary), "restore", "-o", temp]
    if timestamp is not None:
        when = datetime.datetime.fromisoformat(timestamp) if isinstance(timestamp, str) else timestamp
        if when.tzinfo is None:
            when = when.replace(tzinfo=datetime.UTC)
        command += ["-timestamp", when.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")]
    if txid is not None:
        command += ["-txid", f"{txid:016x}"]  # Litestream wants exactly 16 hex digits
    command.append(source)
    started = time.monotonic()
    try:
        try:
            done = subprocess.run(
                command, env=clean_env(), capture_output=True, text=True, timeout=timeout, check=False
            )
        except subprocess.TimeoutExpired:
            raise OperationalError(f"restore from {url} did not finish within {timeout} s") from None
        if done.returncode != 0 or not os.path.exists(temp):
            detail = (done.stderr or done.stdout).strip().splitlines()
            raise OperationalError(f"restore from {url} failed: {' | '.join(detail[-3:]) or 'no output'}")
        os.chmod(temp, PRIVATE_FILE)  # before any side file is made: SQLite gives them this mode
        report = verify(temp, time.monotonic() - started)
        move_into_place(temp, to_path)
    finally:
        remove_with_side_files(temp)
    return dataclasses.replace(report, path=to_path)


SIDE_FILES = ("-wal", "-shm", "-journal")
"""Files SQLite keeps beside a database."""


def move_into_place(temp: str, path: str) -> None:
    """Give the restored (and verified) ``temp`` the name ``path``, which must not exist.

    Whatever WAL the checks left is folded into the file first and the side
    files go, so the journal moves alone (read-only checks leave -wal and -shm).
    """
    try:
        conn = apsw.Connection(temp)
        try:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        finally:
            conn.close()
    except apsw.Error as exc:
        raise OperationalError(f"cannot fold the WAL of the restored journal {temp}: {exc}") from None
    if os.path.exists(temp + "-wal") and os.path.getsize(temp + "-wal") > 0:
        raise OperationalError(f"the restored journal {temp} kept a WAL after a checkpoint; nothing was moved")
    try:
        os.link(temp, path)  # never replaces a file, unlike rename: fails if one appeared meanwhile
    except FileExistsError:
        raise OperationalError(f"{path} exists: restore never overwrites a journal; choose a new path") from None
    except OSError as exc:
        raise OperationalError(f"cannot move the restored journal into place at {path}: {exc}") from None
    _fsync_dir(os.path.dirname(path))


def remove_with_side_files(path: str) -> None:
    """Remove ``path`` and its SQLite side files, those that exist."""
    for name in [path] + [path + suffix for suffix in SIDE_FILES]:
        with contextlib.suppress(FileNotFoundError):
            os.remove(name)


def _fsync_dir(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def verify(path: str, seconds: float = 0.0) -> RestoreReport:
    """Check a restored journal and summarise it."""
    conn = apsw.Connection(path, flags=apsw.SQLITE_OPEN_READONLY)
    try:
        try:
            integrity = "; ".join(str(row[0]) for row in conn.execute("PRAGMA integrity_check"))
            version = schema_version(conn)
        except apsw.Error as exc:  # too damaged to be checked: not a database, or a malformed one
            raise IntegrityError(f"restored journal {path} cannot be checked: {exc}") from None
        if integrity != "ok":
            raise IntegrityError(f"restored journal {path} fails integrity_check: {integrity}")
        if version == 0 or version > SCHEMA_VERSION:
            raise SchemaError(f"restored file {path} has schema version {version}, not a journal this Stele reads")
        (actors,) = conn.execute("SELECT count(*) FROM actors").fetchone() or (0,)
        last_position, last_at = conn.execute("SELECT max(position), max(at) FROM journal").fetchone() or (0, None)
    finally:
        conn.close()
    return RestoreReport(path, int(actors), int(last_position or 0), last_at, integrity, version, seconds)
