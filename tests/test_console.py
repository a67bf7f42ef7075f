"""The console over HTTP: who may see it, what it refuses, and what its pages hold.

A real ``serve`` (and ``ui``) child on loopback, driven as a browser would be
but without one (the browser tests are ``test_console_browser.py``).
"""

from __future__ import annotations

import http.client
import json
import re
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest

import storage
from actors import Actor, apply, handler
from runtime import Runtime

from . import pgserver
from .console_agents import ACTORS, HOSTILE, bury, populate, suspend
from .models import Account, Deposit
from .served import Server, cli, request


def build(db: str) -> None:
    """Dead letters, then a bit of everything, then a suspended actor: the journal the console shows."""

    async def made() -> None:
        await bury(db, "Agent/poison1", "Agent/poison2")
        async with Runtime(db, actors=ACTORS, grace=0) as rt:
            await populate(rt)
        await suspend(db, "Agent/drifter")

    anyio.run(made)


class Browser:
    """Requests as the console's pages send them: a cookie jar of one, and the page's CSRF token."""

    def __init__(self, url: str) -> None:
        parts = urllib.parse.urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.cookie: str | None = None
        self.csrf = ""

    def send(
        self, method: str, path: str, body: Any = None, *, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], str]:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        try:
            sent = {"Accept": "text/html", **(headers or {})}
            if self.cookie:
                sent["Cookie"] = self.cookie
            data = None
            if body is not None:
                data = json.dumps(body).encode()
                sent.setdefault("Content-Type", "application/json")
                sent.setdefault("X-Stele-CSRF", self.csrf)
            conn.request(method, path, body=data, headers=sent)
            answer = conn.getresponse()
            text = answer.read().decode()
            got = {k.lower(): v for k, v in answer.getheaders()}
            cookie = got.get("set-cookie")
            if cookie:
                self.cookie = cookie.split(";", 1)[0]
            return answer.status, got, text
        finally:
            conn.close()

    def page(self, path: str) -> str:
        status, _, text = self.send("GET", path)
        assert status == 200, (status, text[:500])
        found = re.search(r'<meta name="stele-csrf" content="([0-9a-f]*)">', text)
        assert found is not None
        self.csrf = found.group(1)
        return text

    def post(self, path: str, body: Any, **kw: Any) -> tuple[int, Any]:
        status, _, text = self.send("POST", path, body, **kw)
        return status, json.loads(text)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def journal(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[str]:
    """The console's journal, built once per backend: a file, or a PostgreSQL database."""
    if request.param == "sqlite":
        db = str(tmp_path_factory.mktemp("console") / "journal.db")
        build(db)
        yield db
        return
    server: pgserver.Server = request.getfixturevalue("pg_server")
    url = server.database()
    build(url)
    yield url
    server.drop(url)


@pytest.fixture
def fresh(journal: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    """A copy of the console's journal for one test to change: a file, or a new database."""
    if not storage.is_postgres(journal):
        copy = tmp_path / "journal.db"
        copy.write_bytes(Path(journal).read_bytes())
        yield str(copy)
        return
    server: pgserver.Server = request.getfixturevalue("pg_server")
    url = server.database()
    storage.copy_journal(journal, url)
    yield url
    server.drop(url)


@pytest.fixture
def served(fresh: str) -> Iterator[Server]:
    server = Server(fresh, "--no-replicate", module="tests.console_agents")
    yield server
    if server.proc.poll() is None:
        assert server.stop() == 0


def test_pages_show_the_journal_and_escape_what_it_holds(served: Server) -> None:
    browser = Browser(served.url)
    overview = browser.page("/ui/")
    for address in ("Agent/ada", "Agent/bob", "Librarian/main", "Agent/drifter", "Agent/poison1"):
        assert f">{address}</a>" in overview
    assert "<script>document.title" not in overview  # only ever as text
    assert "&lt;script&gt;document.title=&#39;pwned&#39;&lt;/script&gt;" in overview
    assert 'c-suspended">suspended' in overview and 'c-waiting">waiting' in overview
    ada = browser.page("/ui/actors/Agent/ada")
    assert "lookup" in ada and "found 20 things about Why is the sky blue?" in ada
    assert "follow to Librarian/main" in ada
    hostile = browser.page("/ui/actors/" + urllib.parse.quote(f"Agent/{HOSTILE}", safe="/"))
    assert "<img src=x" not in hostile and "&lt;img src=x onerror=" in hostile
    assert "default-src 'self'; script-src 'self'" in browser.send("GET", "/ui/")[1]["content-security-policy"]
    assert browser.send("GET", "/ui/actors/Agent/nobody")[0] == 404
    assert browser.send("GET", "/ui/?condition=sleeping")[0] == 400
    status, _, text = browser.send("GET", "/ui/?condition=suspended")
    assert status == 200 and "Agent/drifter" in text and "Agent/ada" not in text
    assert "Agent/poison2" in browser.page("/ui/dead-letters")
    assert "Not served by this process" not in browser.page("/ui/health")


def test_state_at_a_position_and_what_it_changed(served: Server) -> None:
    browser = Browser(served.url)
    page = browser.page("/ui/actors/Agent/ada")
    positions = [int(p) for p in re.findall(r'id="entry-(\d+)"', page)]
    noted = int(re.findall(r'id="entry-(\d+)"[^>]*>\s*<a [^>]*>\s*<span class="seq">#3</span>', page)[0])
    status, _, text = browser.send("GET", f"/ui/api/state?address=Agent/ada&position={noted}")
    state = json.loads(text)
    assert status == 200 and state["seq"] == 3 and json.loads(state["state"])["questions"] == ["Why is the sky blue?"]
    assert [(c["path"], c["change"]) for c in state["changes"]] == [("state.questions[0]", "added")]
    later = json.loads(browser.send("GET", f"/ui/api/state?address=Agent/ada&position={max(positions)}")[2])
    assert len(json.loads(later["state"])["questions"]) == 2 and later["changes"] == []
    other = browser.send("GET", f"/ui/api/state?address=Agent/bob&position={noted}")
    assert other[0] == 404  # that position is another actor's
    rendered = browser.page(f"/ui/actors/Agent/ada?at={noted}")  # without a script: the same, server-rendered
    assert 'aria-current="true"' in rendered and "State as of #3" in rendered


def test_a_sent_message_is_followed_to_the_step_that_processed_it(served: Server) -> None:
    browser = Browser(served.url)
    page = browser.page("/ui/actors/Agent/ada")
    follow = re.findall(r'<a class="follow" href="([^"]+)">follow to Librarian/main', page)[0]
    status, headers, _ = browser.send("GET", follow.replace("&amp;", "&"))
    assert status == 303
    target = headers["location"]
    assert target.startswith("/ui/actors/Librarian/main?at=")
    position = int(target.split("#entry-")[1])
    librarian = browser.page(target.split("#")[0])
    assert f'id="entry-{position}"' in librarian and "message file" in librarian


def test_every_action_needs_the_pages_csrf_token_and_a_confirmation(served: Server) -> None:
    browser = Browser(served.url)
    browser.page("/ui/actors/Agent/bob")
    resolve = {"address": "Agent/bob", "name": "approval", "value": "true", "confirmed": True}
    assert browser.post("/ui/api/resolve", resolve, headers={"X-Stele-CSRF": "0" * 64})[0] == 403
    assert browser.post("/ui/api/resolve", resolve, headers={"X-Stele-CSRF": ""})[0] == 403
    other_site = browser.post("/ui/api/resolve", resolve, headers={"Origin": "http://evil.example"})
    assert other_site[0] == 403
    # A form from another site cannot even send JSON without asking first; the guard refuses other types.
    assert browser.post("/ui/api/resolve", resolve, headers={"Content-Type": "text/plain"})[0] == 415
    assert browser.post("/ui/api/resolve", {**resolve, "confirmed": False})[0] == 400
    assert browser.post("/ui/api/resolve", {**resolve, "value": "{not json"})[0] == 400
    status, answer = browser.post("/ui/api/resolve", resolve)
    assert status == 200 and answer["ok"], answer
    early = {**resolve, "name": "not-yet-awaited"}  # kept for a step that will wait on it
    assert browser.post("/ui/api/resolve", early)[0] == 200
    again = browser.post("/ui/api/resolve", early)
    assert again[0] == 409 and again[1]["error"] == "promise"  # resolved once: the runtime's own error


def test_dead_letters_are_retried_and_dropped_and_a_suspended_actor_resumed(served: Server) -> None:
    browser = Browser(served.url)
    letters = browser.page("/ui/dead-letters")
    ids = [int(i) for i in re.findall(r'name="id" value="(\d+)"', letters)]
    assert len(set(ids)) == 2
    first, second = sorted(set(ids))
    assert browser.post("/ui/api/retry", {"id": first, "confirmed": True})[0] == 200
    assert browser.post("/ui/api/drop", {"id": second, "confirmed": True})[0] == 200
    assert browser.post("/ui/api/drop", {"id": second, "confirmed": True})[1]["message"].startswith("no dead letter")
    assert "None." in browser.page("/ui/dead-letters")
    inbox = json.loads(cli("sql", "SELECT id FROM inbox", "--db", served_db(served), "--json").stdout)["rows"]
    assert [first] in inbox
    assert browser.post("/ui/api/resume", {"address": "Agent/drifter", "confirmed": True})[0] == 200
    assert browser.post("/ui/api/resume", {"address": "Agent/ada", "confirmed": True})[1]["message"].endswith(
        "is not suspended"
    )


def served_db(server: Server) -> str:
    args = server.proc.args
    assert isinstance(args, list)
    return str(args[args.index("--db") + 1])


def test_a_message_is_sent_as_the_http_api_would(served: Server) -> None:
    browser = Browser(served.url)
    browser.page("/ui/actors/Agent/ada")
    send = {"address": "Agent/ada", "handler": "research", "body": {"question": "why?"}, "ask": True, "confirmed": True}
    status, answer = browser.post("/ui/api/send", send)
    assert status == 200 and answer == {"status": 200, "body": "found 4 things about why?"}
    invalid = browser.post("/ui/api/send", {**send, "body": {"question": 7}})[1]
    assert invalid["status"] == 422 and invalid["body"]["error"] == "invalid"
    failing = browser.post("/ui/api/send", {**send, "handler": "fail", "body": {"why": "x"}})[1]
    assert failing["status"] == 409 and failing["body"]["type"] == "ValueError"
    told = browser.post("/ui/api/send", {**send, "ask": False})[1]
    assert told["status"] == 202
    assert browser.post("/ui/api/send", {**send, "handler": "nope"})[1]["status"] == 404


def test_sql_from_the_console_is_read_only(served: Server) -> None:
    browser = Browser(served.url)
    browser.page("/ui/sql")
    status, answer = browser.post("/ui/api/sql", {"query": "SELECT address FROM actors WHERE key = 'ada'"})
    assert status == 200 and answer["rows"] == [["Agent/ada"]]
    refused = browser.post("/ui/api/sql", {"query": "DELETE FROM main.journal"})
    assert refused[0] == 400 and refused[1]["error"] == "query"
    assert browser.post("/ui/api/sql", {"query": "SELECT 1"}, headers={"X-Stele-CSRF": "x"})[0] == 403


def test_with_a_token_the_console_asks_to_sign_in_and_the_api_still_wants_the_token(
    fresh: str, tmp_path: Path
) -> None:
    token = tmp_path / "token"
    token.write_text("s3cret-token-for-the-console")
    server = Server(fresh, "--no-replicate", "--token-file", str(token), module="tests.console_agents")
    try:
        browser = Browser(server.url)
        assert browser.send("GET", "/")[1]["location"] == "/ui/"  # a browser at the server's root: the console
        status, headers, _ = browser.send("GET", "/ui/actors/Agent/ada?at=3")
        assert status == 303 and headers["location"] == "/ui/login?next=" + urllib.parse.quote(
            "/ui/actors/Agent/ada?at=3", safe=""
        )
        assert browser.send("GET", "/ui/api/state?address=Agent/ada&position=1", headers={"Accept": "*/*"})[0] == 401
        assert browser.send("GET", "/ui/static/console.css")[0] == 200  # the sign-in page needs its styles
        browser.page("/ui/login")
        assert browser.post("/ui/login", {"token": "wrong"})[0] == 401 and browser.cookie is None
        status, _ = browser.post("/ui/login", {"token": "s3cret-token-for-the-console"})
        assert status == 200 and browser.cookie is not None and browser.cookie.startswith("stele_session=v1.")
        assert "Agent/ada" in browser.page("/ui/")
        # The cookie is for the console only: the API wants the bearer token.
        assert browser.send("GET", "/status", headers={"Accept": "application/json"})[0] == 401
        forged = browser.cookie.rsplit(".", 1)[0] + "." + "0" * 64
        browser.cookie, real = forged, browser.cookie
        assert browser.send("GET", "/ui/")[0] == 303
        browser.cookie = real
        browser.page("/ui/")
        assert browser.post("/ui/logout", {})[0] == 200
        assert browser.cookie == "stele_session="
        assert browser.send("GET", "/ui/")[0] == 303
    finally:
        assert server.stop() == 0


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_ui_reads_a_file_another_process_writes_and_refuses_to_operate(db: str) -> None:
    async def first() -> None:
        async with Runtime(db, actors=[Account]) as rt:
            await rt.ask("Account/alice", Deposit(5))

    anyio.run(first)
    server = Server(db, module=None)
    try:
        browser = Browser(server.url)
        page = browser.page("/ui/actors/Account/alice")
        assert "read-only" in page and "Send a message" not in page and "Resolve" not in page
        status, answer = browser.post("/ui/api/resume", {"address": "Account/alice", "confirmed": True})
        assert status == 403 and answer["error"] == "read_only"
        state = json.loads(browser.send("GET", "/ui/api/state?address=Account/alice&position=2")[2])
        assert state["state"] is None and "--module" in state["note"]  # its code was not given

        async def more() -> None:
            async with Runtime(db, actors=[Account]) as rt:
                await rt.ask("Account/alice", Deposit(7))

        anyio.run(more)
        assert "deposit" in browser.page("/ui/actors/Account/alice?after=3")
    finally:
        assert server.stop() == 0
    with_code = Server(db, "--module", "tests.models", module=None)
    try:
        browser = Browser(with_code.url)
        browser.page("/ui/")
        state = json.loads(browser.send("GET", "/ui/api/state?address=Account/alice&position=2")[2])
        assert json.loads(state["state"])["balance"] == 5
    finally:
        assert with_code.stop() == 0


class Big(msgspec.Struct):
    """Emit ``n`` events in one step."""

    n: int


class Counted(msgspec.Struct):
    i: int


class Counter(Actor):
    class State(msgspec.Struct):
        seen: int = 0

    state: State

    @handler
    async def deposit(self, msg: Deposit) -> int:
        self.emit(Counted(msg.amount))
        return self.state.seen

    @handler
    async def big(self, msg: Big) -> int:
        for i in range(msg.n):
            self.emit(Counted(i))
        return self.state.seen

    @apply
    def _counted(self, ev: Counted) -> None:
        self.state.seen += 1


def positions(page: str) -> list[int]:
    return [int(p) for p in re.findall(r'id="entry-(\d+)"', page)]


def pager(page: str, rel: str) -> str | None:
    found = re.search(rf'<a href="([^"]+)" rel="{rel}">', page)
    return found.group(1).replace("&amp;", "&") if found else None


def test_timeline_pages_cover_every_entry_once_in_whole_steps(db: str) -> None:
    async def write() -> None:
        async with Runtime(db, actors=[Counter]) as rt:
            for i in range(60):
                await rt.ask("Counter/c", Deposit(i))  # steps of three entries
            await rt.ask("Counter/c", Big(75))  # a step longer than a page
            for i in range(20):
                await rt.ask("Counter/c", Deposit(i))

    anyio.run(write)
    with storage.Journal.open(db) as journal:
        every = [e.position for e in journal.entries("Counter/c")]
        step_of = {e.position: (e.step, e.kind) for e in journal.entries("Counter/c")}
    server = Server(db, module=None)
    try:
        browser = Browser(server.url)
        seen: list[int] = []
        path: str | None = "/ui/actors/Counter/c?limit=10"
        pages = 0
        while path is not None:  # from the latest page, older and older
            page = browser.page(path)
            shown = positions(page)
            seen += shown
            pages += 1
            starts = [p for p in shown if step_of[p][1] == "message"]
            # A page holds whole steps (newest first), but for a step longer than a page.
            assert len(starts) == len({step_of[p][0] for p in shown}) or len({step_of[p][0] for p in shown}) == 1
            path = pager(page, "prev")
        assert sorted(seen) == every and len(seen) == len(set(seen)) and pages > 10
        # And forwards again from the oldest page: the same entries.
        forwards: list[int] = []
        path = "/ui/actors/Counter/c?limit=10&before=4"
        while path is not None:
            page = browser.page(path)
            forwards += positions(page)
            path = pager(page, "next")
        assert sorted(forwards) == every and len(forwards) == len(set(forwards))
    finally:
        assert server.stop() == 0


def test_what_changed_is_said_path_by_path() -> None:
    from runtime.interfaces.console._model import changes

    before = {"a": 1, "b": [1, 2, 3], "c": {"x": "y"}, "gone": True, "odd key": 1, "same": [1]}
    after = {"a": 2, "b": [1, 5], "c": {"x": "y", "z": None}, "new": [1], "odd key": 2, "same": [1]}
    found = [(c.path, c.change, c.before, c.after) for c in changes(before, after)]
    assert found == [
        ("state.a", "changed", "1", "2"),
        ("state.b[1]", "changed", "2", "5"),
        ("state.b[2]", "removed", "3", ""),
        ("state.c.z", "added", "", "null"),
        ("state.gone", "removed", "true", ""),
        ('state["odd key"]', "changed", "1", "2"),
        ("state.new", "added", "", "[1]"),
    ]
    assert [(c.path, c.change) for c in changes({"n": 1}, {"n": 1.0})] == [("state.n", "changed")]  # 1 is not 1.0
    assert changes({"s": {"t": [1, {"u": 2}]}}, {"s": {"t": [1, {"u": 2}]}}) == []


def test_health_under_replication_and_a_console_over_the_replica(db: str) -> None:
    server = Server(db, module="tests.console_agents")  # replicates to DB-replica, a local directory
    try:
        browser = Browser(server.url)
        assert request(f"{server.url}/actors/Agent/ada/research", {"question": "replicated?"})[0] == 200
        health = browser.page("/ui/health")
        assert "commits not yet in the replica" in health and "Litestream" in health
        assert 'data-figure="replication.litestream_running" data-yes="running" data-no="DOWN">running' in health
        assert re.search(r"<code>[^<]*journal\.db-replica</code>", health)
    finally:
        assert server.stop() == 0  # Litestream's final sync: the replica has everything
    replica = Server(db + "-replica", module=None)  # python -m runtime ui --db REPLICA_DIRECTORY
    try:
        browser = Browser(replica.url)
        page = browser.page("/ui/actors/Agent/ada")
        assert "restored from" in page and "replicated?" in page and "read-only" in page
    finally:
        assert replica.stop() == 0
