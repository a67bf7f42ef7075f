"""python -m runtime: every command as a subprocess against a real journal,
including while `serve` runs on the same file (the HTTP API itself: test_http.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from runtime import Runtime

from .conftest import outside
from .http_models import Fail, Note, Notes
from .served import ROOT, Server, cli, request


@pytest.fixture
def served(db: str) -> Iterator[Server]:
    server = Server(db, "--no-replicate")
    yield server
    if server.proc.poll() is None:
        assert server.stop() == 0


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
    state = json.loads(cli("state", "Account/bob", "--db", db, "--module", "tests.models", "--json").stdout)
    assert state["state"]["balance"] == 7
    at = ("--at", str(first_step_end))
    then = json.loads(cli("state", "Account/bob", "--db", db, *at, "--module", "tests.models", "--json").stdout)
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
    assert done.returncode == 2 and "without a token" in done.stderr
    done = cli("serve", "no_such_module_xyz", "--db", db, check=False)
    assert done.returncode == 2 and "cannot import module" in done.stderr


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


# -- journal text is data: printed plain, control characters escaped --------------------------

NASTY = "[/x] [bold]b[/bold] :smile: \x1b]0;pwned\x07 \x1b[2J \u202eevil \x9b31m"
"""Journal text that is rich markup, an emoji code, terminal escapes and a bidi override."""
RAW = ("\x1b", "\x07", "\u202e", "\x9b")
"""Characters that must never reach the terminal as they are."""
SHOWN = ("[/x] [bold]b[/bold] :smile: ", "\\x1b]0;pwned\\x07 \\x1b[2J \\u202eevil \\x9b31m")
"""How the command line shows NASTY: the markup as written, the controls escaped."""


def plain_output(done: subprocess.CompletedProcess[str]) -> str:
    for ch in RAW:
        assert ch not in done.stdout and ch not in done.stderr, (ch, done.stdout, done.stderr)
    return done.stdout + done.stderr


async def nasty_journal(db: str) -> str:
    address = f"Notes/{NASTY}"
    async with Runtime(db, actors=[Notes]) as rt:
        await rt.ask(address, Note(NASTY))
        await rt.tell(address, Fail(NASTY))  # its handler error is journaled in its reply
        await rt.annotate("module", NASTY)
    return address


async def test_journal_text_is_printed_plain_with_controls_escaped(db: str, tmp_path: Path) -> None:
    address = await nasty_journal(db)
    module = ("--module", "tests.http_models")
    wide = {**os.environ, "COLUMNS": "1000"}  # one line per row: the escaped text is not wrapped
    for args in (
        ("actors", "--db", db),
        ("history", address, "--db", db),
        ("history", address, "--db", db, "--kind", "reply"),
        ("state", address, "--db", db, *module),
        ("status", "--db", db),
    ):
        done = cli(*args, check=False, env=wide)
        assert done.returncode == 0, (args, done.stderr)
        out = plain_output(done)
        assert SHOWN[1] in out, (args, out)
    # --json carries the text exactly (escaped as JSON), with nothing raw on the terminal.
    done = cli("history", address, "--db", db, "--json")
    entries = [json.loads(line) for line in plain_output(done).splitlines()]
    assert entries[1]["data"] == {"text": NASTY}
    done = cli("actors", "--db", db, "--json")
    assert json.loads(plain_output(done))[0]["address"] == address
    # Errors carry user text too.
    done = cli("history", f"Notes/{NASTY}-missing", "--db", db, check=False)
    assert done.returncode == 2 and "error:" in done.stderr and SHOWN[1] in plain_output(done)
    # Replay divergences and check problems name the actor.
    changed = tmp_path / "changed_notes.py"
    changed.write_text(
        (ROOT / "tests" / "http_models.py").read_text().replace("self.emit(Noted(msg.text))", "self.emit(Noted('x'))")
    )
    done = cli("replay", str(changed), "--db", db, check=False, env=wide)
    assert done.returncode == 1 and "divergence" in done.stdout and SHOWN[1] in plain_output(done)
    conn = outside(db)
    with conn:
        conn.execute("UPDATE journal SET data = x'c1' WHERE kind = 'event'")
    conn.close()
    done = cli("check", "--db", db, *module, check=False, env=wide)
    assert done.returncode == 1 and "problem" in done.stdout and SHOWN[1] in plain_output(done)


async def test_state_never_imports_the_module_a_journal_names(db: str, tmp_path: Path) -> None:
    marker = tmp_path / "imported"
    evil = tmp_path / "evil_module.py"
    evil.write_text(f"open({str(marker)!r}, 'w').close()\nfrom tests.http_models import Notes\n")
    async with Runtime(db, actors=[Notes]) as rt:
        await rt.ask("Notes/a", Note("hello"))
        await rt.annotate("module", str(evil))
    done = cli("state", "Notes/a", "--db", db, check=False)
    assert not marker.exists()  # the journal's code never ran
    assert done.returncode == 2
    assert str(evil) in done.stderr and "--module" in done.stderr and "trust" in done.stderr
    # Asked for, it is used.
    state = json.loads(cli("state", "Notes/a", "--db", db, "--module", "tests.http_models", "--json").stdout)
    assert state["state"]["texts"] == ["hello"]


# -- tokens on the command line ---------------------------------------------------------------


def test_status_tell_and_ask_talk_to_a_protected_server(db: str, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("s3cret\n")
    server = Server(db, "--no-replicate", "--token-file", str(token_file))
    with_env = {**os.environ, "STELE_TOKEN": "s3cret"}
    without = {k: v for k, v in os.environ.items() if k != "STELE_TOKEN"}
    try:
        status = json.loads(cli("status", "--db", db, "--json", env=without).stdout)
        assert status["runtime"] is None and "token" in status["runtime_error"]
        sources = ((with_env, ()), (without, ("--token-file", str(token_file))), (without, ("--token", "s3cret")))
        for env, extra in sources:
            status = json.loads(cli("status", "--db", db, "--json", *extra, env=env).stdout)
            assert status["runtime"]["active_actors"] >= 0, status
            done = cli("ask", "Account/t", "deposit", '{"amount": 2}', "--url", server.url, *extra, env=env)
            assert done.stdout.strip().isdigit()
            cli("tell", "Account/t", "deposit", '{"amount": 1}', "--url", server.url, *extra, env=env)
        done = cli("ask", "Account/t", "balance", "{}", "--url", server.url, env=without, check=False)
        assert done.returncode == 1 and "401" in done.stderr
        assert request(f"{server.url}/actors/Account/t/balance", {}, token="s3cret") == (200, 9)
    finally:
        assert server.stop() == 0


def test_token_and_serve_options_are_checked(db: str, tmp_path: Path) -> None:
    done = cli("serve", "tests.models", "--db", db, "--no-replicate", "--token", "a", "--token-file", "b", check=False)
    assert done.returncode == 2 and "not both" in done.stderr
    done = cli("serve", "tests.models", "--db", db, "--no-replicate", "--token-file", str(tmp_path / "no"), check=False)
    assert done.returncode == 2 and "cannot read the token file" in done.stderr
    (tmp_path / "empty").write_text("\n")
    done = cli("serve", "tests.models", "--db", db, "--token-file", str(tmp_path / "empty"), check=False)
    assert done.returncode == 2 and "visible ASCII" in done.stderr
    done = cli("serve", "tests.models", "--db", db, "--no-replicate", "--durability", "replicated", check=False)
    assert done.returncode == 2 and "--durability replicated needs replication" in done.stderr
    done = cli("serve", "tests.models", "--db", db, "--no-replicate", "--allow-host", "a:1", check=False)
    assert done.returncode == 2 and "--allow-host" in done.stderr


async def test_status_asks_only_a_server_on_this_machine(db: str) -> None:
    async with Runtime(db, actors=[Notes]) as rt:
        await rt.annotate("http", "collector.example:80")
    status = json.loads(cli("status", "--db", db, "--json").stdout)
    assert status["runtime"] is None and "not on this machine" in status["runtime_error"]
