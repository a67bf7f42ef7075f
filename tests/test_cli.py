"""python -m runtime: every command as a subprocess against a real journal,
including while `serve` runs on the same file; HTTP against a real server on
an ephemeral loopback port."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).parent.parent


def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "runtime", *args], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    if check and done.returncode != 0:
        raise AssertionError(f"{args} exited {done.returncode}: {done.stderr}")
    return done


def request(
    url: str, body: Any = None, *, raw: bytes | None = None, token: str | None = None, key: str | None = None
) -> tuple[int, Any]:
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
    req.add_header("Content-Type", "application/json")
    if key:
        req.add_header("Idempotency-Key", key)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=30) as answer:
            return answer.status, json.loads(answer.read() or b"null") if "json" in answer.headers[
                "content-type"
            ] else answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


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
    def __init__(self, db: str, *extra: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "runtime", "serve", "tests.models", "--db", db, "--http", "127.0.0.1:0", *extra],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line.startswith("listening on "), line + (self.proc.stderr.read() if self.proc.stderr else "")
        self.url = line.split()[-1]

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        _, err = self.proc.communicate(timeout=60)
        assert "stopping" in err, err
        return self.proc.returncode


@pytest.fixture
def served(db: str) -> Iterator[Server]:
    server = Server(db, "--no-replicate")
    yield server
    if server.proc.poll() is None:
        assert server.stop() == 0


def test_http_ask_tell_and_every_error_code(served: Server, db: str) -> None:
    base = served.url
    assert request(f"{base}/actors/Account/alice/deposit", {"amount": 5}) == (200, 5)
    assert request(f"{base}/actors/Account/alice/deposit?wait=false", {"amount": 7})[0] == 202
    assert request(f"{base}/actors/Account/alice/balance", {}) == (200, 12)
    status, body = request(f"{base}/actors/Account/alice/deposit", {"amount": -1})
    assert status == 500 and body["type"] == "ValueError" and "positive" in body["message"]
    assert request(f"{base}/actors/Account/alice/deposit", raw=b"{not json")[0] == 400
    status, body = request(f"{base}/actors/Nope/x/deposit", {"amount": 1})
    assert status == 404 and "no actor type 'Nope'" in body["message"]
    status, body = request(f"{base}/actors/Account/alice/nope", {"amount": 1})
    assert status == 404 and "no handler 'nope'" in body["message"]
    status, body = request(f"{base}/actors/Account/alice/deposit", {"amount": "ten"})
    assert status == 422 and "$.amount" in body["message"]
    assert too_large(base, "/actors/Account/alice/deposit") == 413
    status, body = request(f"{base}/actors/Account/alice")
    assert status == 200 and body["state"]["balance"] == 12 and body["status"] == "active"
    status, page = request(f"{base}/actors/Account/alice/journal?from=1&limit=3")
    assert status == 200 and [e["kind"] for e in page] == ["message", "event", "reply"]
    assert request(f"{base}/health") == (200, {"ok": True, "journal_failing": None})
    status, metrics = request(f"{base}/metrics")
    assert status == 200 and "stele_commits_total" in metrics and "stele_active_actors" in metrics
    status, body = request(f"{base}/status")
    assert status == 200 and body["active_actors"] >= 1


def test_idempotent_retries_over_http(served: Server) -> None:
    url = f"{served.url}/actors/Account/idem/deposit"
    assert request(url, {"amount": 5}, key="retry-1") == (200, 5)
    assert request(url, {"amount": 5}, key="retry-1") == (200, 5)  # a retry: the same reply
    assert request(f"{url}?wait=false", {"amount": 2}, key="tell-1")[0] == 202
    assert request(f"{url}?wait=false", {"amount": 2}, key="tell-1")[0] == 202
    assert request(f"{served.url}/actors/Account/idem/balance", {}) == (200, 7)
    out = cli("ask", "Account/idem", "deposit", '{"amount": 5}', "--url", served.url, "--idempotency-key", "retry-1")
    assert out.stdout.strip() == "5"


def test_concurrent_clients(served: Server) -> None:
    results: list[tuple[int, Any]] = []

    def client(n: int) -> None:
        for _ in range(10):
            results.append(request(f"{served.url}/actors/Account/c{n % 4}/deposit", {"amount": 1}))

    threads = [threading.Thread(target=client, args=(n,)) for n in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 120 and all(status == 200 for status, _ in results)
    balances = [request(f"{served.url}/actors/Account/c{k}/balance", {})[1] for k in range(4)]
    assert sum(balances) == 120


def test_cli_commands_against_a_served_journal(served: Server, db: str) -> None:
    assert cli("ask", "Account/bob", "deposit", '{"amount": 3}', "--url", served.url).stdout.strip() == "3"
    assert (
        json.loads(cli("tell", "Account/bob", "deposit", '{"amount": 4}', "--url", served.url, "--json").stdout)[
            "status"
        ]
        == 202
    )
    cli("ask", "Account/bob", "balance", "{}", "--url", served.url)
    # Read-only commands work while serve owns the file.
    actors = json.loads(cli("actors", "--db", db, "--json").stdout)
    assert [a["address"] for a in actors] == ["Account/bob"]
    lines = cli("history", "Account/bob", "--db", db, "--json").stdout.splitlines()
    entries = [json.loads(line) for line in lines]
    assert [e["kind"] for e in entries][:3] == ["message", "event", "reply"]
    assert entries[1]["data"] == {"amount": 3}
    first_step_end = entries[2]["position"]
    state = json.loads(cli("state", "Account/bob", "--db", db, "--json").stdout)  # module recorded by serve
    assert state["state"]["balance"] == 7
    then = json.loads(cli("state", "Account/bob", "--db", db, "--at", str(first_step_end), "--json").stdout)
    assert then["state"]["balance"] == 3
    status = json.loads(cli("status", "--db", db, "--json").stdout)
    assert status["actors"] == 1 and status["runtime"]["active_actors"] >= 1
    assert "Account/bob" in cli("history", "Account/bob", "--db", db).stdout
    assert served.stop() == 0
    replayed = cli("replay", "tests.models", "--db", db)
    assert "no divergence" in replayed.stdout


def test_replay_command_catches_a_changed_handler(db: str, tmp_path: Path) -> None:
    server = Server(db, "--no-replicate")
    request(f"{server.url}/actors/Account/a/deposit", {"amount": 5})
    assert server.stop() == 0
    changed = tmp_path / "changed_models.py"
    changed.write_text(
        (ROOT / "tests" / "models.py")
        .read_text()
        .replace("self.emit(Deposited(msg.amount))", "self.emit(Deposited(msg.amount + 1))")
    )
    done = cli("replay", str(changed), "--db", db, check=False)
    assert done.returncode == 1
    assert "divergence" in done.stdout and "Account/a" in done.stdout


def test_two_classes_with_one_type_name_are_refused(db: str, tmp_path: Path) -> None:
    module = tmp_path / "twins.py"
    module.write_text(
        "from actors import Actor\nclass One(Actor):\n    name = 'Twin'\nclass Two(Actor):\n    name = 'Twin'\n"
    )
    done = cli("serve", str(module), "--db", db, "--no-replicate", check=False)
    assert done.returncode == 2 and "two actor classes are named 'Twin'" in done.stderr


def test_bad_input_to_the_cli_is_a_clear_error(db: str) -> None:
    done = cli("actors", "--db", "/nonexistent/j.db", check=False)
    assert done.returncode == 2 and "no journal at" in done.stderr
    done = cli("serve", "tests.models", "--db", db, "--http", "0.0.0.0:0", "--no-replicate", check=False)
    assert done.returncode == 2 and "without --token" in done.stderr
    done = cli("serve", "no_such_module_xyz", "--db", db, check=False)
    assert done.returncode == 2 and "cannot import module" in done.stderr


def test_a_token_is_required_when_configured(db: str) -> None:
    server = Server(db, "--no-replicate", "--token", "s3cret")
    try:
        assert request(f"{server.url}/actors/Account/a/deposit", {"amount": 1})[0] == 401
        assert request(f"{server.url}/actors/Account/a/deposit", {"amount": 1}, token="s3cret") == (200, 1)
        assert request(f"{server.url}/health")[0] == 200
    finally:
        assert server.stop() == 0


def test_serve_replicates_by_default_and_restore_rebuilds(db: str, tmp_path: Path) -> None:
    server = Server(db)
    request(f"{server.url}/actors/Account/r/deposit", {"amount": 9})
    assert server.stop() == 0
    replica = os.path.abspath(db) + "-replica"
    assert os.path.isdir(replica)
    target = str(tmp_path / "restored.db")
    out = json.loads(cli("restore", replica, "--to", target, "--module", "tests.models", "--json").stdout)
    assert out["actors"] == 1 and out["rebuilt"] == 1 and out["integrity"] == "ok"


def test_history_follow_prints_new_entries(served: Server, db: str) -> None:
    request(f"{served.url}/actors/Account/f/deposit", {"amount": 1})
    follower = subprocess.Popen(
        [sys.executable, "-m", "runtime", "history", "Account/f", "--db", db, "--follow", "--json"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert follower.stdout is not None
        first = [json.loads(follower.stdout.readline()) for _ in range(3)]
        assert [e["kind"] for e in first] == ["message", "event", "reply"]
        request(f"{served.url}/actors/Account/f/deposit", {"amount": 2})
        later = [json.loads(follower.stdout.readline()) for _ in range(3)]
        assert later[1]["data"] == {"amount": 2} and later[0]["seq"] == 4
    finally:
        follower.kill()
        follower.wait()
        if follower.stdout is not None:
            follower.stdout.close()
