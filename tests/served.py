"""A real ``python -m runtime serve`` child on an ephemeral loopback port, and clients for it."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).parent.parent


def cli(*args: str, check: bool = True, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "runtime", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )
    if check and done.returncode != 0:
        raise AssertionError(f"{args} exited {done.returncode}: {done.stderr}")
    return done


def request(
    url: str,
    body: Any = None,
    *,
    raw: bytes | None = None,
    token: str | None = None,
    key: str | None = None,
    content_type: str | None = "application/json",
    timeout: float = 30,
) -> tuple[int, Any]:
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
    if content_type is not None:
        req.add_header("Content-Type", content_type)
    if key:
        req.add_header("Idempotency-Key", key)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as answer:
            return answer.status, json.loads(answer.read() or b"null") if "json" in answer.headers[
                "content-type"
            ] else answer.read().decode()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.loads(exc.read() or b"null")


def raw_request(
    base: str, method: str, path: str, headers: Sequence[tuple[str, str | bytes]], body: bytes = b""
) -> tuple[int, dict[str, str], Any]:
    """A request with exactly these headers (Host included: none is added), for what urllib will not send."""
    host, port = base.removeprefix("http://").rsplit(":", 1)
    conn = http.client.HTTPConnection(host.strip("[]"), int(port), timeout=30)
    try:
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        for name, value in headers:
            conn.putheader(name, value)
        if body:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body or None)
        answer = conn.getresponse()
        data = answer.read()
        try:
            decoded: Any = json.loads(data) if data else None
        except ValueError:
            decoded = data.decode("latin-1")
        return answer.status, {k.lower(): v for k, v in answer.getheaders()}, decoded
    finally:
        conn.close()


def too_large(base: str, path: str) -> int:
    """Announce a 2 MB body and send none of it: the server must refuse from the header alone
    (sending the body races with the server closing the connection after its 413)."""
    host, port = base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.putrequest("POST", path)
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Content-Length", str(2 << 20))
        conn.endheaders()
        return conn.getresponse().status
    finally:
        conn.close()


class Server:
    """``python -m runtime serve MODULE --db DB --http 127.0.0.1:0 EXTRA...`` (``module`` None:
    ``python -m runtime ui --db DB ...``, the console over the file)."""

    def __init__(
        self, db: str, *extra: str, module: str | None = "tests.models", env: dict[str, str] | None = None
    ) -> None:
        command = ["serve", module] if module is not None else ["ui"]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "runtime", *command, "--db", db, "--http", "127.0.0.1:0", *extra],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **(env or {})},
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line.startswith("listening on "), line + (self.proc.stderr.read() if self.proc.stderr else "")
        self.url = line.split()[-1]
        self.port = int(self.url.rsplit(":", 1)[1])

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM; the server must be gone within ``timeout`` seconds (a hang fails the test)."""
        self.proc.send_signal(signal.SIGTERM)
        _, err = self.proc.communicate(timeout=timeout)
        assert "stopping" in err, err
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate()
