"""Connecting to PostgreSQL the way Stele needs it, and translating psycopg's errors.

psycopg 3 (sync) was chosen by measurement over asyncpg: with rows bound as
binary arrays (``unnest``) inside pipeline mode, both commit about the same
number of units per second, and psycopg is the one that runs in a plain thread
like the SQLite writer (asyncpg needs an event loop of its own there);
psycopg's pipeline sends a whole transaction in one round trip. See
docs/postgresql.md.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import errors as pgerrors

from errors import SteleError

from ._errors import IntegrityError, OperationalError, Unstorable

SCHEMES = ("postgresql://", "postgres://")
"""A journal location with one of these prefixes is a PostgreSQL database."""

CONNECT_TIMEOUT_S = 10
"""How long a connection attempt may take before it fails (an unreachable host)."""

APPLICATION_NAME = "stele"


def is_postgres(location: str) -> bool:
    """Whether ``location`` names a PostgreSQL database rather than a file."""
    return isinstance(location, str) and location.startswith(SCHEMES)


def redact(url: str) -> str:
    """``url`` without its password, for messages and logs."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    except ValueError:
        return "postgresql://(unparsable URL)"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def connect(url: str, *, readonly: bool = False, synchronous_commit: str | None = None) -> psycopg.Connection[tuple]:  # type: ignore[type-arg]
    """A connection in autocommit mode (transactions are begun and committed by hand).

    Fails with an :class:`OperationalError` that names what is wrong: the
    server cannot be reached, the credentials are refused, the database does
    not exist.
    """
    options = []
    if readonly:
        options.append("-c default_transaction_read_only=on")
    if synchronous_commit is not None:
        options.append(f"-c synchronous_commit={synchronous_commit}")
    kwargs: dict[str, object] = {
        "autocommit": True,
        "connect_timeout": CONNECT_TIMEOUT_S,
        "application_name": APPLICATION_NAME,
        # The writer must notice a server that vanished without closing the
        # connection (a host that died, a partition), not wait for it forever.
        "keepalives": 1,
        "keepalives_idle": 10,
        "keepalives_interval": 5,
        "keepalives_count": 3,
    }
    if options:
        kwargs["options"] = " ".join(options)
    try:
        return psycopg.connect(url, **kwargs)  # type: ignore[arg-type]
    except psycopg.Error as exc:
        raise connect_error(url, exc) from None


def connect_error(url: str, exc: psycopg.Error) -> OperationalError:
    """Why a connection to ``url`` failed, said plainly."""
    text = str(exc).strip()
    where = redact(url)
    low = text.lower()
    if isinstance(exc, psycopg.ProgrammingError) or "invalid dsn" in low or "invalid connection option" in low:
        return OperationalError(f"{where} is not a valid PostgreSQL URL: {text}")
    if "password authentication failed" in low or "no password supplied" in low or "authentication failed" in low:
        return OperationalError(f"PostgreSQL at {where} refused the credentials: {_last_line(text)}")
    if "does not exist" in low and "database" in low:
        return OperationalError(
            f"PostgreSQL at {where}: the database does not exist ({_last_line(text)}); create it first "
            "(createdb NAME, or CREATE DATABASE): Stele creates its tables, not databases"
        )
    if "role" in low and "does not exist" in low:
        return OperationalError(f"PostgreSQL at {where} has no such user: {_last_line(text)}")
    return OperationalError(f"cannot reach PostgreSQL at {where}: {_last_line(text)}")


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else text


def broken(exc: BaseException) -> bool:
    """Whether ``exc`` means the connection itself is gone (not one statement's failure)."""
    if isinstance(exc, psycopg.OperationalError) and not isinstance(exc, pgerrors.QueryCanceled):
        sqlstate = getattr(exc, "sqlstate", None)
        return sqlstate is None or sqlstate.startswith(("08", "57P"))
    return isinstance(exc, psycopg.InterfaceError)


def translate(exc: BaseException, context: str) -> SteleError:
    """Map a psycopg error (or a value psycopg cannot send) to storage's split.

    Anything but a psycopg error comes from adapting a unit's values on the
    client (a str with a lone surrogate): the unit's own data. Of the
    server's errors, class 22 (data exception: a number out of range, a NUL in
    text) is the unit's data too; class 23 (integrity constraint violation) is
    an integrity error; the rest are operational (the server, the connection).
    """
    if isinstance(exc, SteleError):
        return exc
    if not isinstance(exc, psycopg.Error):
        return Unstorable(f"{context}: a value cannot be stored: {type(exc).__name__}: {exc}")
    sqlstate = getattr(exc, "sqlstate", None) or ""
    detail = f"{context}: {type(exc).__name__}: {_last_line(str(exc)) if str(exc) else exc!r}"
    if isinstance(exc, psycopg.DataError) or sqlstate.startswith("22"):
        return Unstorable(f"{context}: a value cannot be stored: {str(exc).strip()}")
    if isinstance(exc, psycopg.IntegrityError) or sqlstate.startswith("23"):
        return IntegrityError(detail)
    return OperationalError(detail)
