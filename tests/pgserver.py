"""A real, private PostgreSQL server for the tests and the benchmarks (never a mock).

``initdb`` and ``pg_ctl`` from the PostgreSQL server binaries make a throwaway
cluster in a temporary directory, listening on 127.0.0.1 on a free port, with
its Unix socket in that directory too (the compiled-in default,
``/var/run/postgresql``, may not exist). PostgreSQL refuses to run as root: when
we are root the server runs as the ``postgres`` system user the Debian package
creates (``subprocess`` drops the privileges itself; no sudo). ``.ci/run``
installs the binaries when they are missing.

``STELE_TEST_POSTGRES_URL`` names an existing server to use instead; each test
then gets a fresh database on it all the same.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

SUPERUSER = "stele"
URL_VARIABLE = "STELE_TEST_POSTGRES_URL"


def bindir() -> Path:
    """Where ``initdb`` and ``pg_ctl`` are: Debian keeps them off PATH, newest version first."""
    root = Path("/usr/lib/postgresql")
    versions = (
        sorted((p for p in root.glob("*/bin") if (p / "initdb").exists()), key=lambda p: int(p.parent.name))
        if root.exists()
        else []
    )
    if versions:
        return versions[-1]
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    raise RuntimeError(
        "the PostgreSQL server binaries (initdb, pg_ctl) are not installed: "
        "`apt-get install -y postgresql-15` (.ci/run does it), or set STELE_TEST_POSTGRES_URL"
    )


def free_port() -> int:
    """A port free on 127.0.0.1 right now (a start that loses the race tries another)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _as_server_user() -> dict[str, Any]:
    """``subprocess`` arguments that run a child as the unprivileged server user when we are root."""
    if os.geteuid() != 0:
        return {}
    pw = pwd.getpwnam("postgres")
    env = {**os.environ, "HOME": pw.pw_dir, "USER": pw.pw_name, "LOGNAME": pw.pw_name}
    # The working directory must be one the server user can read (pg_ctl checks it).
    return {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": [], "env": env, "cwd": "/"}


def _run(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, check=True, capture_output=True, text=True, timeout=120, **_as_server_user())


class Cluster:
    """One data directory with its postmaster; ``start``, ``stop``, ``restart``."""

    def __init__(self, base: Path, *, settings: dict[str, str] | None = None) -> None:
        self.bin = bindir()
        self.base = base
        self.data = base / "data"
        self.log = base / "server.log"
        self.settings = settings or {}
        self.port = 0
        self.password_url = ""
        """The superuser's URL with its password (set by :func:`cluster`)."""

    @property
    def url(self) -> str:
        """The superuser's URL to the default database."""
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/postgres"

    def init(self) -> None:
        """``initdb`` into ``base/data`` (fsync on: the durability tests need a real server)."""
        if os.geteuid() == 0:
            kw = _as_server_user()
            os.chown(self.base, kw["user"], kw["group"])
        os.chmod(self.base, 0o700)
        _run(
            [
                str(self.bin / "initdb"),
                "-D",
                str(self.data),
                "-U",
                SUPERUSER,
                "--auth-local=trust",
                "--auth-host=scram-sha-256",  # a password over TCP: wrong credentials can be tested
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",  # the new files only; the server itself fsyncs as usual
                "--no-instructions",
            ]
        )
        conf = {
            "listen_addresses": "'127.0.0.1'",
            "unix_socket_directories": f"'{self.base}'",
            "max_connections": "100",
            "shared_buffers": "128MB",
            "logging_collector": "off",
        }
        conf.update(self.settings)
        with open(self.data / "postgresql.conf", "a") as f:
            f.write("\n# the test fixture\n")
            f.writelines(f"{key} = {value}\n" for key, value in conf.items())

    def start(self, attempts: int = 5) -> None:
        """Start on a free port (another one if it was taken meanwhile); wait until it accepts."""
        keep = self.port
        for attempt in range(attempts):
            self.port = keep or free_port()
            try:
                _run(
                    [
                        str(self.bin / "pg_ctl"),
                        "-D",
                        str(self.data),
                        "-l",
                        str(self.log),
                        "-w",
                        "-t",
                        "60",
                        "-o",
                        f"-p {self.port}",
                        "start",
                    ]
                )
            except subprocess.CalledProcessError:
                log = self.log.read_text(errors="replace") if self.log.exists() else ""
                if "could not bind" in log and attempt + 1 < attempts and not keep:
                    continue
                raise RuntimeError(f"PostgreSQL did not start:\n{log[-4000:]}") from None
            return

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``immediate`` is a crash: no checkpoint, WAL replayed at the next start)."""
        pid_file = self.data / "postmaster.pid"
        if not pid_file.exists():
            return
        try:
            _run([str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop"])
        except subprocess.CalledProcessError:
            with contextlib.suppress(OSError, ValueError):
                os.kill(int(pid_file.read_text().split()[0]), signal.SIGQUIT)

    def standby(self, name: str) -> Cluster:
        """A streaming standby of this cluster, started, which connects as ``application_name=name``.

        ``pg_basebackup`` copies the data directory over this cluster's Unix socket
        (trusted), and ``-R`` makes the copy a standby; remove its ``base`` when done.
        """
        copy = Cluster(Path(tempfile.mkdtemp(prefix="stele-pg-standby-")))
        if os.geteuid() == 0:
            kw = _as_server_user()
            os.chown(copy.base, kw["user"], kw["group"])
        os.chmod(copy.base, 0o700)
        _run(
            [str(self.bin / "pg_basebackup"), "-h", str(self.base), "-p", str(self.port), "-U", SUPERUSER,
             "-D", str(copy.data), "-X", "stream", "-R", "--no-sync"]
        )  # fmt: skip
        conninfo = f"host={self.base} port={self.port} user={SUPERUSER} application_name={name}"
        with open(copy.data / "postgresql.auto.conf", "a") as f:
            f.write(f"primary_conninfo = '{conninfo}'\nunix_socket_directories = '{copy.base}'\n")
        copy.start()
        return copy

    def restart(self, mode: str = "fast") -> None:
        """Stop and start on the same port."""
        self.stop(mode)
        self.start()


@contextlib.contextmanager
def cluster(**settings: str) -> Iterator[Cluster]:
    """A fresh cluster in a temporary directory, removed afterwards."""
    base = Path(tempfile.mkdtemp(prefix="stele-pg-"))
    made = Cluster(base, settings=settings)
    try:
        made.init()
        made.start()
        _set_password(made)
        made.password_url = with_password(made.url)
        yield made
    finally:
        made.stop("immediate")
        shutil.rmtree(base, ignore_errors=True)


PASSWORD = "stele-test"


def _set_password(made: Cluster) -> None:
    import psycopg

    # Over the Unix socket (trusted): TCP asks for the password being set.
    with psycopg.connect(
        host=str(made.base), port=made.port, user=SUPERUSER, dbname="postgres", autocommit=True
    ) as conn:
        conn.execute(f"ALTER ROLE {SUPERUSER} PASSWORD '{PASSWORD}'")


def with_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is not None or parts.hostname is None:
        return url
    netloc = f"{parts.username}:{PASSWORD}@{parts.hostname}:{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


class Server:
    """A server for a test session: ours, or the one ``STELE_TEST_POSTGRES_URL`` names."""

    def __init__(self, url: str, cluster: Cluster | None) -> None:
        self.admin_url = url
        """A superuser's URL (with its password) to the maintenance database."""
        self.cluster = cluster

    def database(self) -> str:
        """A new, empty database; its URL (the caller drops it with :meth:`drop`)."""
        import psycopg

        name = "t_" + uuid.uuid4().hex[:16]
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return with_database(self.admin_url, name)

    @contextlib.contextmanager
    def closed(self, url: str) -> Iterator[None]:
        """The database of ``url`` refuses connections, and every session on it is ended, until the block ends."""
        import psycopg

        name = urlsplit(url).path.lstrip("/")
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
            try:
                yield
            finally:
                conn.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')

    def drop(self, url: str) -> None:
        """Drop the database of ``url`` (its connections are ended first)."""
        import psycopg

        name = urlsplit(url).path.lstrip("/")
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def with_database(url: str, name: str) -> str:
    """``url`` with its database replaced by ``name``."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


@contextlib.contextmanager
def server() -> Iterator[Server]:
    """The session's server: ``STELE_TEST_POSTGRES_URL`` if set, else a private cluster."""
    given = os.environ.get(URL_VARIABLE)
    if given:
        yield Server(given, None)
        return
    with cluster() as made:
        yield Server(with_password(made.url), made)


def wait_until_accepting(url: str, timeout: float = 60.0) -> None:
    """Poll (bounded) until a connection to ``url`` succeeds."""
    import psycopg

    deadline = time.monotonic() + timeout
    while True:
        try:
            with psycopg.connect(url, connect_timeout=2):
                return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


_SHARED: dict[str, Any] = {}


def shared() -> Server:
    """The process's one server, started on first use (by the ``pg_server`` fixture and the Hypothesis
    machines alike); :func:`stop_shared` stops it at the end of the session."""
    if "server" not in _SHARED:
        stack = contextlib.ExitStack()
        _SHARED["server"] = stack.enter_context(server())
        _SHARED["stack"] = stack
    made: Server = _SHARED["server"]
    return made


def stop_shared() -> None:
    """Stop the shared server, if one was started."""
    stack = _SHARED.pop("stack", None)
    _SHARED.clear()
    if stack is not None:
        stack.close()
