"""The HTTP API against a real server: a ``python -m runtime serve`` child, or uvicorn serving
``App`` over a real runtime in the test's own loop, always on an ephemeral loopback port.

Statuses follow one table (runtime/_http_outcomes.py): an accepted message is never
answered as if it had not been, bad input is refused before anything is written, and
nothing a client sends gets a 500.
"""

from __future__ import annotations

import contextlib
import functools
import http.client
import os
import signal
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import anyio.to_thread
import pytest
import uvicorn

from actors import (
    ActorSuspendedError,
    AskTimeoutError,
    BackpressureError,
    CommitUnknownError,
    HandlerError,
    IdempotencyKeyError,
    JournalIntegrityError,
    JournalOperationalError,
    MessageValidationError,
    NonDeterminismError,
    ReplicationError,
    ReplicationTimeout,
    ReplyUnavailableError,
    RuntimeClosedError,
    SteleError,
    UndecodableEntryError,
    UnknownActorTypeError,
    UnknownHandlerError,
    UnstorableValueError,
)
from runtime import Runtime
from runtime.interfaces._http import App
from storage import Journal

from .conftest import dump
from .http_models import Notes, Waiter
from .models import Account
from .s3server import S3Server
from .served import Server, cli, raw_request, request, too_large


@pytest.fixture
def served(db: str) -> Iterator[Server]:
    server = Server(db, "--no-replicate")
    yield server
    if server.proc.poll() is None:
        assert server.stop() == 0


class QuietServer(uvicorn.Server):
    """uvicorn leaving the test process's signal handlers alone."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@contextlib.asynccontextmanager
async def http_app(rt: Runtime, **options: Any) -> AsyncIterator[str]:
    """uvicorn serving ``App(rt)`` in this loop on 127.0.0.1 (no signal handling of its own)."""
    app = App(rt, **options)
    server = QuietServer(uvicorn.Config(app.asgi, host="127.0.0.1", port=0, log_level="warning", lifespan="off"))
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.serve)
        with anyio.fail_after(30):
            while not server.started:
                await anyio.sleep(0.01)
        yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
        server.should_exit = True


async def call(url: str, body: Any = None, **options: Any) -> tuple[int, Any]:
    return await anyio.to_thread.run_sync(functools.partial(request, url, body, **options))


def until(predicate: Any, what: str, timeout: float = 30) -> None:
    """Poll ``predicate`` until true; a predicate still false after ``timeout`` s is a hang: fail."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"still waiting for {what}"
        time.sleep(0.05)


def waiting(base: str) -> int:
    status, body = request(f"{base}/status")
    assert status == 200, body
    return int(body["http_waiting"])


# -- the API, its statuses ------------------------------------------------------------------


def test_http_ask_tell_and_every_error_code(served: Server, db: str) -> None:
    base = served.url
    assert request(f"{base}/actors/Account/alice/deposit", {"amount": 5}) == (200, 5)
    assert request(f"{base}/actors/Account/alice/deposit?wait=false", {"amount": 7}) == (
        202,
        {"accepted": True, "address": "Account/alice"},
    )
    assert request(f"{base}/actors/Account/alice/balance", {}) == (200, 12)
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
    assert request(f"{base}/health") == (
        200,
        {"ok": True, "status": "ok", "journal_failing": None, "degraded": []},
    )
    status, metrics = request(f"{base}/metrics")
    assert status == 200 and "stele_commits_total" in metrics and "stele_active_actors" in metrics
    status, body = request(f"{base}/status")
    assert status == 200 and body["active_actors"] >= 1
    status, body = request(f"{base}/nowhere")
    assert status == 404 and body["error"] == "not_found"


def test_a_handler_error_is_409_a_definite_outcome_not_500(served: Server) -> None:
    status, body = request(f"{served.url}/actors/Account/h/deposit", {"amount": -1})
    assert status == 409, body
    assert body == {
        "error": "handler",
        "type": "ValueError",
        "message": "amount must be positive",
        "address": "Account/h",
    }
    # The same outcome for a retry under the same key: it is recorded, not run again.
    url = f"{served.url}/actors/Account/h/deposit"
    assert request(url, {"amount": -1}, key="k")[0] == request(url, {"amount": -1}, key="k")[0] == 409


@pytest.mark.parametrize(
    ("error", "ask", "status", "kind"),
    [
        (HandlerError("A/a", "ValueError", "no"), True, 409, "handler"),
        (MessageValidationError("bad"), True, 422, "invalid"),
        (UnknownActorTypeError("no type"), True, 404, "not_found"),
        (UnknownHandlerError("no handler"), False, 404, "not_found"),
        (ReplyUnavailableError("kept"), True, 202, "reply_unavailable"),
        (NonDeterminismError("A/a", 3, "x", "y"), True, 202, "nondeterminism"),
        (ReplicationTimeout("late"), True, 202, "replication_timeout"),
        (ReplicationTimeout("late"), False, 202, None),
        (CommitUnknownError("maybe"), True, 504, "unknown"),
        (CommitUnknownError("maybe"), False, 504, "unknown"),
        (AskTimeoutError("slow"), True, 504, "timeout"),
        (IdempotencyKeyError("first used for a tell"), True, 409, "key_reused"),
        (UnstorableValueError("2**70"), True, 422, "unstorable"),
        (BackpressureError("full"), False, 503, "backpressure"),
        (ActorSuspendedError("A/a", "diverged"), True, 503, "suspended"),
        (RuntimeClosedError("closed"), False, 503, "closed"),
        (JournalOperationalError("disk full"), False, 503, "unavailable"),
        (JournalIntegrityError("a duplicate"), True, 503, "journal_integrity"),
        (UndecodableEntryError("corrupt", position=3, type_name="T"), True, 504, "undecodable"),
        (ReplicationError("no bucket"), False, 503, "replication"),
        (SteleError("unforeseen"), True, 504, "error"),
        (RuntimeError("a bug"), True, 504, "unknown"),
    ],
)
def test_every_runtime_outcome_has_one_status(error: BaseException, ask: bool, status: int, kind: str | None) -> None:
    from runtime.interfaces._http_outcomes import outcome

    answer = outcome(error, address="A/a", ask=ask)
    assert answer.status == status
    body = answer.body
    if status == 202:
        assert body["accepted"] is True and body.get("reason") == kind
    else:
        assert body["error"] == kind
    if status == 503:
        assert answer.headers["Retry-After"].isdigit()  # refused: nothing accepted, retry later
    if status == 504:
        assert body["accepted"] is None  # neither yes nor no


async def test_backpressure_is_503_with_retry_after_and_nothing_accepted(db: str) -> None:
    async with Runtime(db, actors=[Waiter, Account], max_pending=1) as rt, http_app(rt) as base:
        async with anyio.create_task_group() as tg:
            held: list[tuple[int, Any]] = []

            async def hold() -> None:
                held.append(await call(f"{base}/actors/Waiter/w/wait", {}))

            tg.start_soon(hold)
            with anyio.fail_after(30):
                while rt.statistics().pending < 1:
                    await anyio.sleep(0.02)
            status, headers, body = await anyio.to_thread.run_sync(
                functools.partial(
                    raw_request,
                    base,
                    "POST",
                    "/actors/Account/b/deposit",
                    [("Host", base.removeprefix("http://")), ("Content-Type", "application/json")],
                    b'{"amount": 1}',
                )
            )
            assert status == 503 and body["error"] == "backpressure" and headers["retry-after"] == "1", (status, body)
            await rt.resolve("Waiter/w", "go", "done")
        assert held == [(200, "done")]
        assert await call(f"{base}/actors/Account/b/balance", {}) == (200, 0)  # the refused deposit never ran


async def test_a_replication_timeout_is_202_accepted_not_an_error(db: str, own_s3: S3Server) -> None:
    url = own_s3.url(own_s3.bucket())
    async with Runtime(db, actors=[Account], replicate=url, replication_timeout=1.0) as rt, http_app(rt) as base:
        deposit = f"{base}/actors/Account/r/deposit?durability=replicated"
        assert await call(deposit, {"amount": 1}) == (200, 1)
        with own_s3.paused():
            status, body = await call(deposit + "&wait=false", {"amount": 2})
            assert status == 202 and body["accepted"] is True and body["replicated"] is False, body
            status, body = await call(deposit, {"amount": 4})
            assert status == 202 and body["reason"] == "replication_timeout", body
        assert await call(f"{base}/actors/Account/r/balance", {}) == (200, 7)  # both were accepted


# -- input refused before anything is written ----------------------------------------------


def test_bad_durability_is_400_and_writes_nothing(served: Server, db: str) -> None:
    url = f"{served.url}/actors/Account/d/deposit"
    assert request(url, {"amount": 1}) == (200, 1)
    before = dump(db)
    for query in ("?durability=fast", "?durability=FSYNC", "?durability=", "?wait=false&durability=x"):
        status, body = request(url + query, {"amount": 5})
        assert status == 400 and "durability" in body["message"], (query, status, body)
    # No replication on this server: a replicated ack cannot be given, so nothing is committed
    # (it used to commit and then answer 500, inviting a resend that ran it twice).
    for query in ("?durability=replicated", "?durability=replicated&wait=false"):
        status, body = request(url + query, {"amount": 5})
        assert status == 400 and "replicat" in body["message"], (query, status, body)
    assert dump(db) == before
    assert request(f"{served.url}/actors/Account/d/balance", {}) == (200, 1)


def test_post_without_json_content_type_is_415_csrf(served: Server, db: str) -> None:
    url = f"{served.url}/actors/Account/c/deposit"
    before = dump(db)
    # What a web page can send cross-site without a preflight.
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", None):
        status, body = request(url, {"amount": 5}, content_type=content_type)
        assert status == 415 and body["error"] == "unsupported", (content_type, status, body)
    assert dump(db) == before
    assert request(url, {"amount": 5}, content_type="application/json; charset=utf-8") == (200, 5)
    assert request(url, {"amount": 1}, content_type="Application/JSON") == (200, 6)


def test_the_host_header_is_checked_on_loopback_dns_rebinding(db: str) -> None:
    server = Server(db, "--no-replicate", "--allow-host", "My.Box")
    try:
        base, port = server.url, server.port
        request(f"{base}/actors/Account/h/deposit", {"amount": 3})

        def get(host: str | None, path: str = "/actors/Account/h/journal") -> tuple[int, Any]:
            status, _, body = raw_request(base, "GET", path, [("Host", host)] if host is not None else [])
            return status, body

        for host in ("127.0.0.1", f"127.0.0.1:{port}", "localhost", f"LOCALHOST:{port}", "[::1]", f"[::1]:{port}"):
            assert get(host)[0] == 200, host
        assert get(f"my.box:{port}")[0] == 200  # allowed by the operator
        for host in ("evil.example", f"evil.example:{port}", "localhost:1", f"127.0.0.2:{port}", "[::1", "", "a:b:c"):
            status, body = get(host)
            assert status == 421 and body["error"] == "misdirected", (host, status, body)
        status, body = get("rebind.attacker.example")
        assert "rebind.attacker.example" in body["message"] and "--allow-host" in body["message"]
        assert get(None)[0] in (400, 421)  # no Host at all (h11 refuses HTTP/1.1 without one first)
        status, _, body = raw_request(
            base,
            "POST",
            "/actors/Account/h/deposit",
            [("Host", "evil.example"), ("Content-Type", "application/json")],
            b'{"amount": 1}',
        )
        assert status == 421
        assert request(f"{base}/actors/Account/h/balance", {}) == (200, 3)
    finally:
        assert server.stop() == 0


def test_malformed_authorization_is_401_never_500(db: str) -> None:
    server = Server(db, "--no-replicate", "--token", "s3cret")
    try:
        host = ("Host", f"127.0.0.1:{server.port}")
        for value in (b"Bearer \xff\xfe", b"\xc3\x28", b"Basic czNjcmV0", b"", b"Bearer", b"Bearer  ", b"s3cret"):
            status, headers, body = raw_request(server.url, "GET", "/status", [host, ("Authorization", value)])
            assert status == 401 and body["error"] == "unauthorized", (value, status, body)
            assert headers["www-authenticate"] == "Bearer"
        assert raw_request(server.url, "GET", "/status", [host, ("Authorization", b"bearer s3cret")])[0] == 200
        two = [host, ("Authorization", "Bearer s3cret"), ("Authorization", "Bearer s3cret")]
        assert raw_request(server.url, "GET", "/status", two)[0] == 401
    finally:
        assert server.stop() == 0


def test_out_of_range_numbers_are_4xx_never_500(served: Server, db: str) -> None:
    base = served.url
    request(f"{base}/actors/Account/n/deposit", {"amount": 1})
    journal = f"{base}/actors/Account/n/journal"
    for query in (f"from={'9' * 5000}", f"from={2**70}", f"from={2**63}", "from=-1", "limit=-5", "limit=0",
                  f"limit={2**70}", "limit=10001", "from=1e3", "from=%C2%B2", "from=+1", "limit=%203"):  # fmt: skip
        status, body = request(f"{journal}?{query}")
        assert status == 400 and body["error"] == "malformed", (query, status, body)
    assert request(f"{journal}?from={2**63 - 1}") == (200, [])
    deposit = f"{base}/actors/Account/n/deposit"
    for raw in (b'{"amount": ' + b"9" * 5000 + b"}", b'{"amount": %d}' % 2**70, b'{"amount": -%d}' % 2**64,
                b'{"amount": 1e400}'):  # fmt: skip
        status, body = request(deposit, raw=raw)
        assert status == 422, (raw[:40], status, body)
    assert request(deposit, raw=b"[" * 200_000)[0] in (400, 422)
    assert request(f"{base}/actors/Account/n/balance", {}) == (200, 1)
    status, _, body = raw_request(
        base,
        "POST",
        "/actors/Account/n/deposit",
        [("Host", f"127.0.0.1:{served.port}"), ("Content-Type", "application/json"), ("Idempotency-Key", "k" * 300)],
        b'{"amount": 1}',
    )
    assert status == 400 and "Idempotency-Key" in body["message"]


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


# -- tokens ------------------------------------------------------------------------------------


def test_a_token_is_required_when_configured(db: str) -> None:
    server = Server(db, "--no-replicate", "--token", "s3cret")
    try:
        assert request(f"{server.url}/actors/Account/a/deposit", {"amount": 1})[0] == 401
        assert request(f"{server.url}/actors/Account/a/deposit", {"amount": 1}, token="s3cret") == (200, 1)
        assert request(f"{server.url}/health")[0] == 200
        assert request(f"{server.url}/openapi.json")[0] == 401
    finally:
        assert server.stop() == 0


@pytest.mark.parametrize("source", ["env", "file"])
def test_the_token_comes_from_the_environment_or_a_file_not_only_argv(db: str, tmp_path: Any, source: str) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("t0ken-from-elsewhere\n")
    os.chmod(token_file, 0o600)
    if source == "env":
        server = Server(db, "--no-replicate", env={"STELE_TOKEN": "t0ken-from-elsewhere"})
    else:
        server = Server(db, "--no-replicate", "--token-file", str(token_file))
    try:
        with open(f"/proc/{server.proc.pid}/cmdline", "rb") as f:
            assert b"t0ken-from-elsewhere" not in f.read()  # not visible in ps
        url = f"{server.url}/actors/Account/t/deposit"
        assert request(url, {"amount": 1})[0] == 401
        assert request(url, {"amount": 1}, token="t0ken-from-elsewhere") == (200, 1)
    finally:
        assert server.stop() == 0


# -- waits end: the client going away, the server stopping -----------------------------------


def test_an_ask_stops_waiting_when_its_client_goes_away(db: str) -> None:
    server = Server(db, "--no-replicate", module="tests.http_models")
    try:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        # A key with a terminal escape in it, which the server logs (escaped).
        path = "/actors/Waiter/d%1B%5B2J/wait"
        conn.request("POST", path, body=b"{}", headers={"Content-Type": "application/json"})
        until(lambda: waiting(server.url) == 1, "the ask to wait")
        journal = f"{server.url}/actors/Waiter/d%1B%5B2J/journal"
        until(lambda: request(journal)[1] != [], "the step to be journaled")
        conn.close()  # the client goes away without its answer
        until(lambda: waiting(server.url) == 0, "the server to notice the client went away")
        # The message itself goes on: it is journaled and still waits for its promise.
        status, page = request(journal)
        assert status == 200 and [e["kind"] for e in page] == ["message"]
        assert waiting(server.url) == 0
    finally:
        server.proc.send_signal(signal.SIGTERM)
        _, err = server.proc.communicate(timeout=60)
    assert server.proc.returncode == 0
    assert "Waiter/d\\x1b[2J: the client went away" in err and "\x1b" not in err, err


def test_sigterm_stops_a_server_holding_long_asks_within_bounds(db: str) -> None:
    server = Server(db, "--no-replicate", module="tests.http_models")
    answers: dict[str, tuple[int, Any]] = {}

    def ask(name: str, key: str | None) -> None:
        answers[name] = request(f"{server.url}/actors/Waiter/{name}/wait", {}, key=key, timeout=60)

    threads = [threading.Thread(target=ask, args=("keyed", "k-1")), threading.Thread(target=ask, args=("plain", None))]
    try:
        for t in threads:
            t.start()
        # Both asks are durable (journaled before waiting on their promises) and waiting.
        for name in ("keyed", "plain"):
            until(lambda name=name: request(f"{server.url}/actors/Waiter/{name}/journal")[1] != [], f"{name} to start")
        until(lambda: waiting(server.url) == 2, "both asks to wait")
        assert server.stop(timeout=30) == 0  # a hang here is the bug: stopping must be bounded
    finally:
        server.kill()
        for t in threads:
            t.join(60)
    # Both are durable: the runtime, closing, says so for each (with a key or without),
    # so each gets 202 (accepted, no reply now), never a refusal.
    for name in ("keyed", "plain"):
        status, body = answers[name]
        assert status == 202 and body["accepted"] is True and body["reason"] == "reply_unavailable", answers
        assert "processes it after the next start" in body["message"], answers
    # Both stay in the inbox and run after a restart.
    with Journal.open(db) as journal:
        assert sorted(p.target for p in journal.pending()) == ["Waiter/keyed", "Waiter/plain"]


def test_openapi_describes_every_handler(served: Server) -> None:
    status, spec = request(f"{served.url}/openapi.json")
    assert status == 200 and spec["openapi"].startswith("3.")
    post = spec["paths"]["/actors/Account/{key}/deposit"]["post"]
    body = post["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/Deposit"}
    assert spec["components"]["schemas"]["Deposit"]["properties"]["amount"] == {"type": "integer"}
    assert post["responses"]["200"]["content"]["application/json"]["schema"] == {"type": "integer"}
    assert {"409", "415", "421", "503", "504"} <= set(post["responses"])
    assert "/actors/Recorder/{key}/record" in spec["paths"] and "/status" in spec["paths"]


async def test_varied_message_types_in_process(db: str) -> None:
    async with Runtime(db, actors=[Notes]) as rt, http_app(rt) as base:
        assert await call(f"{base}/actors/Notes/a/add", {"text": "hi", "where": {"x": 1}}) == (200, 1)
        status, body = await call(f"{base}/actors/Notes/a/fail", {"text": "no"})
        assert status == 409 and body["message"] == "no"
        for extra in (b"9" * 5000, b"%d" % 2**64):
            raw = b'{"text": "x", "extra": {"a": ' + extra + b"}}"
            status, body = await call(f"{base}/actors/Notes/a/add", raw=raw)
            assert status == 422, body
