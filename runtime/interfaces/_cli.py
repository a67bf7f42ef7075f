"""``python -m runtime``: serve agents, and inspect, replay and restore journals.

argparse (standard library) parses; rich draws tables and progress bars, which
is terminal work a library does better than we would. Every command has
``--json``; read-only commands open the journal read-only and work while
``serve`` runs on the same file. What a journal, a server or a user wrote is
printed as plain text, never as markup, with control characters escaped
(:mod:`runtime._text`); and no command imports code a journal names unless
told to with ``--module``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import anyio
import msgspec
from rich.progress import Progress
from rich.table import Table

import storage
from actors import SteleError
from storage import EntryKind

from .._followers import stream_item
from .._rebuild import load
from .._registry import Registry
from .._replay import replay
from ._client import call, endpoint, recorded_server
from ._drill import add_arguments as drill_arguments
from ._drill import duration
from ._history import add_compact_arguments, add_diff_arguments, add_fork_arguments
from ._modules import actor_classes, load_module
from ._text import console, err, plain, styled, write_json
from ._token import add_token_arguments, token_from

DEFAULT_DB = "stele.db"


def _when(at: float | None, *, date: bool = True) -> str:
    if at is None:
        return "-"
    shown = datetime.datetime.fromtimestamp(at, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    return shown if date else shown[11:]


def _out(args: argparse.Namespace, value: Any) -> None:
    """Print ``value`` as one line of JSON."""
    write_json(msgspec.to_builtins(value, str_keys=True))


def _registry_for(journal: storage.Journal, module: str | None) -> Registry:
    """The actor classes of ``--module``; never those a journal names, which would run its code."""
    if module:
        return Registry(actor_classes(load_module(module)))
    recorded = journal.meta("module")
    if recorded:
        raise SteleError(
            f"this command needs the actor classes; the journal was served with module {recorded!r}, "
            "which is not imported unless you ask: pass --module with that name if you trust it"
        )
    raise SteleError("this command needs the actor classes: give --module MODULE")


# -- read-only commands ----------------------------------------------------------------


def cmd_actors(args: argparse.Namespace) -> int:
    with storage.Journal.open(args.db) as journal:
        actors = journal.actors(args.type)
        pending: dict[str, int] = {}
        for p in journal.pending():
            pending[p.target] = pending.get(p.target, 0) + 1
        sizes = {s.address: s for s in journal.history_sizes()}
    none = storage.HistorySize("", 0, 0, 0, 0, 0)
    if args.json:
        _out(
            args,
            [
                {
                    **msgspec.to_builtins(a),
                    "pending": pending.get(a.address, 0),
                    **{k: v for k, v in msgspec.to_builtins(sizes.get(a.address, none)).items() if k != "address"},
                }
                for a in actors
            ],
        )
        return 0
    table = Table(
        "address", "type", "last seq", "kept from", "entries", "bytes", "status", "pending", "reason",
        title=f"{len(actors)} actor(s)",
    )  # fmt: skip
    for a in actors:
        size = sizes.get(a.address, none)
        table.add_row(
            plain(a.address),
            plain(a.type),
            str(a.last_seq),
            str(a.floor) if a.floor else "-",
            str(size.entries),
            str(size.bytes + size.snapshot_bytes),
            plain(a.status),
            str(pending.get(a.address, 0)),
            plain(a.reason or ""),
        )
    console.print(table)
    return 0


def cmd_nodes(args: argparse.Namespace) -> int:
    if not storage.is_postgres(args.db):
        raise SteleError("nodes: --db must be a postgresql:// URL (a journal file has one owner, no nodes)")
    nodes, leases = storage.cluster_view(args.db)
    unowned = sum(1 for lease in leases if lease.owner is None or lease.expires_in_s <= 0)
    if args.json:
        _out(args, {"nodes": msgspec.to_builtins(nodes), "shards": msgspec.to_builtins(leases), "unowned": unowned})
        return 0
    table = Table(
        "node", "alive", "shards", "actors", "http", "host", "pid", "last renewal",
        title=f"{len(nodes)} node(s), {len(leases)} shards, {unowned} without a live lease",
    )  # fmt: skip
    for n in nodes:
        table.add_row(
            plain(n.id), "yes" if n.alive else "no", str(n.shards), str(n.actors), plain(n.http or ""),
            plain(n.host), str(n.pid), _when(n.heartbeat),
        )  # fmt: skip
    console.print(table)
    return 0


def _summary(entry: storage.EntryPreview) -> str:
    data = entry.data
    if entry.kind == EntryKind.MESSAGE and isinstance(data, dict):
        return f"{data.get('handler')}({json.dumps(data.get('body'), default=str, ensure_ascii=False)[:80]})"
    if entry.kind == EntryKind.EFFECT and isinstance(data, dict):
        took = (data.get("finished", 0.0) - data.get("started", 0.0)) * 1000
        outcome = (
            json.dumps(data.get("result"), default=str, ensure_ascii=False)
            if data.get("ok")
            else f"{data.get('error_type')}: {data.get('error')}"
        )
        return f"{took:.1f} ms -> {outcome[:80]}"
    if entry.kind == EntryKind.REPLY and isinstance(data, dict):
        if data.get("ok"):
            return json.dumps(data.get("value"), default=str, ensure_ascii=False)[:100]
        return f"{data.get('error_type')}: {data.get('error')}"
    return json.dumps(data, default=str, ensure_ascii=False)[:100]


HISTORY_PAGE = 200
"""Entries read from the journal at a time: a long history prints page by page."""


def _previews(
    args: argparse.Namespace, journal: storage.Journal, seen: int, printed: int
) -> list[storage.EntryPreview]:
    want = HISTORY_PAGE if not args.limit else min(HISTORY_PAGE, args.limit - printed)
    return journal.entry_previews(args.address, seen, args.kind, want) if want > 0 else []


def cmd_history(args: argparse.Namespace) -> int:
    seen = args.from_seq
    printed = 0
    with storage.Journal.open(args.db) as journal:
        if journal.actor(args.address) is None:
            raise SteleError(f"the journal has no actor {args.address!r}")
        while True:
            # Previews: however large a payload, an entry lists from a bounded read of it
            # (`entry` prints or saves one whole).
            rows = _previews(args, journal, seen, printed)
            if rows:
                seen = rows[-1].seq + 1
                printed += len(rows)
            if args.json:
                for e in rows:
                    fields = {f: getattr(e, f) for f in e.__struct_fields__ if f != "data"}
                    write_json({**fields, "data": e.data})
            elif rows:
                table = Table(
                    "pos",
                    "seq",
                    "step",
                    "kind",
                    "type",
                    "time (UTC)",
                    "summary",
                    title=plain(args.address) if not args.follow and printed == len(rows) else None,
                )
                for e in rows:
                    table.add_row(
                        str(e.position),
                        str(e.seq),
                        str(e.step),
                        plain(e.kind),
                        plain(e.type),
                        _when(e.at, date=False),
                        plain(_summary(e)),
                    )
                console.print(table)
            if len(rows) == HISTORY_PAGE:
                continue  # more than a page there: print the next at once
            if not args.follow or (args.limit and printed >= args.limit):
                return 0
            time.sleep(0.5)


def cmd_entry(args: argparse.Namespace) -> int:
    with storage.Journal.open(args.db) as journal:
        value = journal.entry_value(args.address, args.seq)
        if value is None:
            raise SteleError(f"the journal has no entry {args.address!r} #{args.seq}")
        if args.out is not None:
            # Piece by piece: one chunk in memory at a time, whatever the size.
            with open(args.out, "xb") as out:
                for piece in value.pieces():
                    out.write(piece)
            _out(args, {"address": args.address, "seq": args.seq, "bytes": value.size, "out": args.out})
            return 0
        entry = next(iter(journal.entries(args.address, args.seq)), None)
        assert entry is not None and entry.seq == args.seq
        fields = {f: getattr(entry, f) for f in entry.__struct_fields__ if f != "data"}
        write_json({**fields, "size": value.size, "data": entry.decoded()}, indent=None if args.json else 2)
    return 0


def cmd_state(args: argparse.Namespace) -> int:
    with storage.Journal.open(args.db) as journal:
        registry = _registry_for(journal, args.module)
        desc, key = registry.resolve(args.address)
        until = journal.seq_at(args.address, args.at) if args.at is not None else None
        loaded = load(journal, desc, registry.codec, args.address, key, until_seq=until)
    state = msgspec.to_builtins(loaded.instance.state, str_keys=True)
    if args.json:
        _out(args, {"address": args.address, "at": args.at, "seq": until, "state": state})
    else:
        where = f"at position {args.at} (seq {until})" if args.at is not None else "now"
        console.print(styled((plain(args.address), "bold"), " ", where))
        write_json(state, indent=2)
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    registry = Registry(actor_classes(load_module(args.module)))
    with storage.Journal.open(args.db) as journal:
        total = 1 if args.actor else len(journal.actors())
        with Progress(console=err, transient=True, disable=args.json) as progress:
            task = progress.add_task("replaying", total=total)
            report = replay(journal, registry, actor=args.actor, progress=lambda n: progress.advance(task, n))
    if args.json:
        _out(
            args,
            {
                "ok": report.ok,
                "actors": report.actors,
                "steps": report.steps,
                "skipped": report.skipped,
                "divergences": [d.__dict__ for d in report.divergences],
            },
        )
    else:
        for d in report.divergences:
            console.print(styled(("divergence", "red"), " ", str(d)))
        verdict = ("no divergence", "green") if report.ok else (f"{len(report.divergences)} divergence(s)", "red")
        console.print(
            styled(f"{report.actors} actor(s), {report.steps} step(s) replayed, {report.skipped} skipped: ", verdict)
        )
    return 0 if report.ok else 1


def cmd_check(args: argparse.Namespace) -> int:
    from ._check import check  # noqa: PLC0415

    registry = Registry(actor_classes(load_module(args.module))) if args.module else None
    report = check(args.db, registry)
    if args.json:
        _out(
            args,
            {
                "ok": report.ok,
                "integrity": report.integrity,
                "entries": report.entries,
                "payload_chunks": report.payload_chunks,
                "problems": report.problems,
            },
        )
    else:
        for problem in report.problems:
            console.print(styled(("problem", "red"), " ", problem))
        verdict = ("ok", "green") if report.ok else (f"{len(report.problems)} problem(s)", "red")
        console.print(
            styled(
                f"integrity_check: {report.integrity}; {report.entries} entries and "
                f"{report.payload_chunks} payload chunks checked: ",
                verdict,
            )
        )
    return 0 if report.ok else 1


def cmd_status(args: argparse.Namespace) -> int:
    with storage.Journal.open(args.db) as journal:
        actors = journal.actors()
        journal_bytes, wal_bytes = journal.stored_bytes()
        status: dict[str, Any] = {
            "journal": journal.path if journal.postgres else os.path.abspath(args.db),
            "journal_bytes": journal_bytes,
            "wal_bytes": wal_bytes,
            "actors": len(actors),
            "suspended": [a.address for a in actors if a.status == "suspended"],
            "inbox_depth": len(journal.pending()),
            "module": journal.meta("module"),
            "server": journal.meta("http"),
        }
    server, note = (args.url, None) if args.url else recorded_server(status["server"])
    status["runtime"] = None
    status["runtime_error"] = note
    if server:
        try:
            code, answer = call(endpoint(server, "status"), token=token_from(args), timeout=5)
        except SteleError as exc:
            status["runtime_error"] = f"not running or not reachable ({exc})"
        else:
            if code == 200 and isinstance(answer, dict):
                status["runtime"] = answer
            elif code == 401:
                status["runtime_error"] = f"{server} wants a token: give --token-file or set STELE_TOKEN"
            else:
                status["runtime_error"] = f"{server} answered {code}: {str(answer)[:200]}"
    if args.json:
        _out(args, status)
        return 0
    table = Table(show_header=False, title="stele status")
    for key in ("journal", "journal_bytes", "wal_bytes", "actors", "inbox_depth", "suspended", "module"):
        table.add_row(key, plain(status[key]))
    runtime = status["runtime"]
    if runtime is None:
        table.add_row("runtime", plain(status["runtime_error"] or "not running"))
    else:
        for key, line in _runtime_lines(server, runtime):
            table.add_row(key, plain(line))
    console.print(table)
    return 0


def _runtime_lines(server: str | None, runtime: dict[str, Any]) -> list[tuple[str, str]]:
    """What a server's /status says, as table rows (whatever shape the answer has)."""
    try:
        lines = [("runtime", f"serving at {server}; {runtime['active_actors']} active; up {runtime['uptime_s']:.0f} s")]
        rep = runtime.get("replication")
        if rep:
            lines.append(
                (
                    "replication",
                    f"{rep['commits_at_risk']} commit(s) at risk, oldest {rep['oldest_at_risk_s']:.2f} s; "
                    f"litestream {'running' if rep['litestream_running'] else 'DOWN'}; "
                    f"last upload {_when(rep['replicated_at'])}; "
                    f"error: {rep['last_error'] or '-'}",
                )
            )
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError, OSError):
        return [("runtime", f"serving at {server}; unexpected status answer: {json.dumps(runtime, default=str)[:200]}")]
    return lines


def cmd_sql(args: argparse.Namespace) -> int:
    from ._sql import cmd_sql as run  # noqa: PLC0415

    return run(args)


def cmd_restore(args: argparse.Namespace) -> int:
    report = storage.restore(args.url, args.to, timestamp=args.timestamp, txid=args.txid)
    rebuilt = 0
    if args.module:
        registry = Registry(actor_classes(load_module(args.module)))
        with storage.Journal.open(args.to) as journal:
            for info in journal.actors():
                desc = registry.actors.get(info.type)
                if desc is None:
                    raise SteleError(f"{info.address}: no actor class of type {info.type!r} in {args.module}")
                load(journal, desc, registry.codec, info.address, info.address.partition("/")[2])
                rebuilt += 1
    if args.json:
        _out(args, {**report.__dict__, "rebuilt": rebuilt})
    else:
        console.print(
            plain(
                f"restored {report.path}: {report.actors} actor(s), last position {report.last_position}, "
                f"last commit {_when(report.last_commit_at)}, integrity {report.integrity}, "
                f"{report.seconds:.2f} s" + (f"; {rebuilt} actor(s) rebuilt" if args.module else "")
            )
        )
    return 0


def _copied(args: argparse.Namespace, report: storage.CopyReport) -> int:
    if args.json:
        _out(args, report.__dict__)
    else:
        rows = ", ".join(f"{n} {name}" for name, n in report.rows.items() if n)
        console.print(
            plain(
                f"copied {report.source} into {report.target} and verified it ({rows or 'no rows'}; "
                f"sha256 {report.digest[:16]}...), {report.seconds:.2f} s"
            )
        )
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    return _copied(args, storage.copy_journal(args.source, args.to))


def cmd_export(args: argparse.Namespace) -> int:
    return _copied(args, storage.copy_journal(args.db, args.to, actor=args.actor))


# -- talking to a server ------------------------------------------------------------------


def _send(args: argparse.Namespace, wait: bool) -> int:
    kind, sep, key = args.address.partition("/")
    if not sep or not kind or not key:
        raise SteleError(f"{args.address!r} is not an actor address; expected 'Type/key'")
    url = endpoint(args.url, "actors", kind, key, args.handler) + ("" if wait else "?wait=false")
    try:
        json.loads(args.json_body)
    except ValueError as exc:
        raise SteleError(f"the message is not JSON: {exc}") from None
    status, answer = call(url, token=token_from(args), body=args.json_body.encode(), key=args.idempotency_key)
    if args.json:
        _out(args, {"status": status, "body": answer})
    else:
        if not 200 <= status < 300 or (status == 202 and wait):
            err.print(styled((f"HTTP {status}", "red" if status >= 300 else "yellow")))
        write_json(answer, indent=2 if isinstance(answer, dict | list) else None)
    return 0 if 200 <= status < 300 else 1


def cmd_tell(args: argparse.Namespace) -> int:
    return _send(args, wait=False)


def cmd_ask(args: argparse.Namespace) -> int:
    return _send(args, wait=True)


def cmd_stream(args: argparse.Namespace) -> int:
    kind, sep, key = args.address.partition("/")
    if not sep or not kind or not key:
        raise SteleError(f"{args.address!r} is not an actor address; expected 'Type/key'")
    if args.offset < 0:
        raise SteleError(f"--offset must be 0 or more, not {args.offset}")
    items = _stream_items(args, kind, key)
    ended = False
    for item in items:
        if args.json:
            write_json(item)
        else:
            _print_item(item)
        if args.until_end and item["kind"] == "end":
            ended = True
            break
    if not args.json:
        sys.stdout.write("\n")
    sys.stdout.flush()
    return 0 if ended or not args.until_end else 1


def _stream_items(args: argparse.Namespace, kind: str, key: str) -> Iterator[dict[str, Any]]:
    """From ``--url``, else the server the journal records (asked again at each reconnection), else the file."""
    from ._sse import follow  # noqa: PLC0415

    def url() -> str:
        base = args.url
        if base is None:
            with storage.Journal.open(args.db) as journal:
                base, note = recorded_server(journal.meta("http"))
            if base is None:
                raise SteleError(note or "the journal records no server: pass --url")
        return endpoint(base, "actors", kind, key, "stream")

    if args.url is None:
        with storage.Journal.open(args.db) as journal:
            recorded = journal.meta("http")
        if recorded is None:
            yield from _journal_items(args, f"{kind}/{key}")
            return
    keep = args.follow or args.until_end
    yield from follow(url, args.offset, token=token_from(args), keep_following=keep, reconnect_for=args.reconnect_for)


def _journal_items(args: argparse.Namespace, address: str) -> Iterator[dict[str, Any]]:
    """No server: the journal file itself, polled while following."""
    offset = args.offset
    with storage.Journal.open(args.db) as journal:
        while True:
            page = journal.stream_entries(address, offset, 500)
            for entry in page:
                yield msgspec.to_builtins(stream_item(entry))
                offset = entry.seq + 1
            if len(page) < 500:
                if not (args.follow or args.until_end):
                    return
                time.sleep(0.2)


def _print_item(item: dict[str, Any]) -> None:
    """Chunks as they come (text as is); markers on lines of their own."""
    kind = item["kind"]
    if kind == "chunk":
        value = item.get("value")
        # Text as it is, line breaks included; other control characters escaped (no terminal escapes).
        shown = "\n".join(plain(line) for line in value.split("\n")) if isinstance(value, str) else None
        sys.stdout.write(shown if shown is not None else json.dumps(value) + " ")
    elif kind == "restart":
        sys.stdout.write(f"\n[{item['effect']}: attempt {item['attempt']} starts over]\n")
    elif kind == "failed":
        sys.stdout.write(f"\n[{item['effect']}: attempt {item['attempt']} failed: {plain(item.get('error') or '')}]\n")
    elif kind == "end" and not item.get("ok", True):
        sys.stdout.write(f"\n[{item['effect']} failed: {plain(item.get('error') or '')}]\n")
    elif kind == "end":
        sys.stdout.write("\n")
    sys.stdout.flush()


# -- serving ---------------------------------------------------------------------------


def cmd_drill(args: argparse.Namespace) -> int:
    from ._drill import cmd_drill as run  # noqa: PLC0415

    return run(args)


def cmd_fork(args: argparse.Namespace) -> int:
    from ._history import cmd_fork as run  # noqa: PLC0415 - opens a runtime

    return run(args)


def cmd_diff(args: argparse.Namespace) -> int:
    from ._history import cmd_diff as run  # noqa: PLC0415

    return run(args)


def cmd_compact(args: argparse.Namespace) -> int:
    from ._history import cmd_compact as run  # noqa: PLC0415 - opens a runtime

    return run(args)


def cmd_serve(args: argparse.Namespace) -> int:
    from ._serve import serve  # noqa: PLC0415 - uvicorn only for serving

    code: int = anyio.run(serve, args)
    return code


def cmd_ui(args: argparse.Namespace) -> int:
    from ._ui import ui  # noqa: PLC0415 - uvicorn only for serving

    code: int = anyio.run(ui, args)
    return code


def cmd_demo(args: argparse.Namespace) -> int:
    from ._demo import demo  # noqa: PLC0415

    return demo(args)


# -- the parser ----------------------------------------------------------------------------


def _command(
    sub: Any,
    name: str,
    fn: Callable[[argparse.Namespace], int],
    help: str,
    example: str,
    *,
    db: str | None = None,
    db_help: str = "journal file or postgresql:// URL",
) -> argparse.ArgumentParser:
    """A subcommand with ``--json``, and ``--db`` (defaulting to ``db``) when it reads a journal."""
    parser: argparse.ArgumentParser = sub.add_parser(
        name,
        help=help,
        description=help,
        epilog=f"example:\n  {example}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.set_defaults(fn=fn)
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    if db is not None:
        parser.add_argument("--db", default=db, help=f"{db_help} (default {db})")
    return parser


def parser() -> argparse.ArgumentParser:
    """The ``python -m runtime`` argument parser."""
    top = argparse.ArgumentParser(prog="python -m runtime", description="Stele: durable actors for AI agents.")
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = _command(
        sub,
        "serve",
        cmd_serve,
        "serve a module's actors over HTTP",
        "python -m runtime serve runtime.interfaces.demo_agents",
        db=DEFAULT_DB,
    )
    p.add_argument("module", help="a module name or .py file defining Actor classes")
    p.add_argument("--http", default="127.0.0.1:8700", help="HOST:PORT to listen on (default 127.0.0.1:8700)")
    p.add_argument("--replicate", help="s3:// URL or directory (default: DB-replica, a local directory)")
    p.add_argument("--no-replicate", action="store_true", help="do not replicate")
    p.add_argument("--durability", default="fsync", choices=("fsync", "normal", "replicated"))
    add_token_arguments(p, "required on every request (needed off loopback)")
    p.add_argument(
        "--drill-every",
        type=duration,
        metavar="DURATION",
        help="run a restore drill of the replica this often (90s, 15m, 6h), in a child process; "
        "the result shows on /status, /metrics and /health, and a failure is logged as an error",
    )
    p.add_argument(
        "--compact-every",
        type=duration,
        metavar="DURATION",
        help="compact the journal by each actor type's retention this often (15m, 6h)",
    )
    p.add_argument(
        "--allow-host",
        action="append",
        metavar="NAME",
        help="also answer requests whose Host header names NAME (repeatable; on loopback only "
        "127.0.0.1, localhost and [::1] are answered otherwise, against DNS rebinding)",
    )
    p.add_argument(
        "--node",
        nargs="?",
        const="",
        metavar="NAME",
        help="share the postgresql:// database with other serve processes, as one node of many "
        "(NAME: this node's id; default host, pid and a random suffix)",
    )
    p.add_argument(
        "--lease",
        type=duration,
        default=6.0,
        metavar="DURATION",
        help="with --node: how long this node's leases last unrenewed (default 6s): a node that dies "
        "loses its actors to the others within about that long",
    )

    p = _command(
        sub,
        "nodes",
        cmd_nodes,
        "the nodes sharing a postgresql:// database: alive or not, their leases, how many actors each owns",
        "python -m runtime nodes --db postgresql://stele@db.internal/agents",
        db=DEFAULT_DB,
    )

    p = _command(
        sub,
        "ui",
        cmd_ui,
        "the console in a browser, read-only, over a journal file or a replica",
        "python -m runtime ui --db stele.db   # then open http://127.0.0.1:8701/ui/",
        db=DEFAULT_DB,
        db_help="journal file, postgresql:// URL, or a replica to restore first (s3:// URL or replica directory)",
    )
    p.add_argument("--http", default="127.0.0.1:8701", help="HOST:PORT to listen on (default 127.0.0.1:8701)")
    p.add_argument(
        "--module",
        help="module with the actor classes, to show states (a journal's own module is never imported unasked)",
    )
    add_token_arguments(p, "required to sign in (needed off loopback)")
    p.add_argument(
        "--allow-host", action="append", metavar="NAME", help="also answer requests whose Host header names NAME"
    )

    p = _command(
        sub,
        "demo",
        cmd_demo,
        "run the example agents through a short scenario",
        "python -m runtime demo",
        db="stele-demo.db",
    )

    for name, fn, what in (
        ("tell", cmd_tell, "send a message (202 once durable)"),
        ("ask", cmd_ask, "send and wait for the reply"),
    ):
        p = _command(
            sub,
            name,
            fn,
            f"{what} to a running server",
            f"python -m runtime {name} Account/alice deposit '{{\"amount\": 5}}'",
        )
        p.add_argument("address")
        p.add_argument("handler")
        p.add_argument("json_body", metavar="JSON")
        p.add_argument("--url", default="http://127.0.0.1:8700")
        add_token_arguments(p, "to send")
        p.add_argument("--idempotency-key")

    p = _command(
        sub,
        "stream",
        cmd_stream,
        "an actor's stream: its streamed effects' chunks, with a marker where an attempt starts over",
        "python -m runtime stream Researcher/r1 --follow",
        db=DEFAULT_DB,
    )
    p.add_argument("address")
    p.add_argument("--offset", type=int, default=0, help="first offset (an item's offset + 1 resumes after it)")
    p.add_argument("--follow", action="store_true", help="keep printing new items (until interrupted)")
    p.add_argument("--until-end", action="store_true", help="follow until a streamed effect ends, then exit")
    p.add_argument("--url", help="a server (default: the one the journal records; the journal file itself if none)")
    p.add_argument(
        "--reconnect-for",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="how long to keep reconnecting to a server that went away (default 60)",
    )
    add_token_arguments(p, "to send")

    p = _command(sub, "actors", cmd_actors, "list actors", "python -m runtime actors --type Account", db=DEFAULT_DB)
    p.add_argument("--type")

    p = _command(
        sub,
        "history",
        cmd_history,
        "an actor's journal as a timeline",
        "python -m runtime history Account/alice --kind effect",
        db=DEFAULT_DB,
    )
    p.add_argument("address")
    p.add_argument("--from", dest="from_seq", type=int, default=0, help="first sequence number")
    p.add_argument("--kind", choices=[kind.value for kind in EntryKind], help="only entries of this kind")
    p.add_argument("--limit", type=int, default=0, help="at most this many entries (0: all)")
    p.add_argument("--follow", action="store_true", help="keep printing new entries")

    p = _command(
        sub,
        "entry",
        cmd_entry,
        "one journal entry whole (history shows long payloads cut short)",
        "python -m runtime entry Agent/a 7 --out answer.msgpack",
        db=DEFAULT_DB,
    )
    p.add_argument("address")
    p.add_argument("seq", type=int)
    p.add_argument("--out", help="write the payload's msgpack bytes to this new file, streamed, instead of JSON")

    p = _command(
        sub,
        "state",
        cmd_state,
        "an actor's state now or at a journal position",
        "python -m runtime state Account/alice --at 120",
        db=DEFAULT_DB,
    )
    p.add_argument("address")
    p.add_argument("--at", type=int, help="journal position")
    p.add_argument(
        "--module",
        help="module with the actor classes (required: the module the journal names is never imported unasked)",
    )

    p = _command(
        sub,
        "replay",
        cmd_replay,
        "re-run handlers over the journal and report divergences",
        "python -m runtime replay runtime.interfaces.demo_agents",
        db=DEFAULT_DB,
    )
    p.add_argument("module")
    p.add_argument("--actor", help="only this address")

    p = _command(
        sub,
        "check",
        cmd_check,
        "find corruption: integrity_check and every entry decoded",
        "python -m runtime check --module runtime.interfaces.demo_agents",
        db=DEFAULT_DB,
    )
    p.add_argument("--module", help="also decode payloads with these actor classes")

    p = _command(
        sub, "status", cmd_status, "journal, runtime and replication status", "python -m runtime status", db=DEFAULT_DB
    )
    p.add_argument("--url", help="a running server (default: the one recorded in the journal, if on this machine)")
    add_token_arguments(p, "to send")

    from ._sql import positive, seconds, views_help  # noqa: PLC0415

    p = _command(
        sub,
        "sql",
        cmd_sql,
        "read-only SQL over a journal, with views that speak its language",
        'python -m runtime sql "SELECT address, last_seq FROM actors ORDER BY last_seq DESC LIMIT 5"\n'
        "  python -m runtime sql \"SELECT time, payload ->> '$.result' FROM entries WHERE kind = 'effect'\"\n\n"
        + views_help(),
        db=DEFAULT_DB,
        db_help="journal file, postgresql:// URL, or a replica to restore first (s3:// URL or replica directory)",
    )
    p.add_argument("query", metavar="SQL", help="one SELECT (or WITH) statement")
    p.add_argument("--max-rows", type=positive, default=1000, help="at most this many rows (default 1000)")
    p.add_argument("--timeout", type=seconds, default=30.0, help="stop the query after this many seconds (default 30)")

    p = _command(
        sub,
        "migrate",
        cmd_migrate,
        "copy a whole journal into a new one (a file into PostgreSQL, or back) and verify it",
        "python -m runtime migrate --from stele.db --to postgresql://stele@db.internal/agents",
    )
    p.add_argument("--from", dest="source", required=True, help="the journal to copy (file or postgresql:// URL)")
    p.add_argument("--to", required=True, help="a new file, or an empty PostgreSQL database")

    p = _command(
        sub,
        "export",
        cmd_export,
        "write a journal (or one actor's history) into a new SQLite file to inspect and replay anywhere",
        "python -m runtime export --db postgresql://stele@db.internal/agents --actor Account/alice --to alice.db",
        db=DEFAULT_DB,
    )
    p.add_argument("--actor", help="only this actor's history (and the meta table)")
    p.add_argument("--to", required=True, help="a new journal file")

    p = _command(
        sub,
        "restore",
        cmd_restore,
        "restore a journal from its replica into a new file",
        "python -m runtime restore s3://bucket/j --to restored.db",
    )
    p.add_argument("url")
    p.add_argument("--to", required=True)
    p.add_argument("--timestamp", help="ISO 8601 point in time")
    p.add_argument("--txid", type=int, help="Litestream transaction id")
    p.add_argument("--module", help="also rebuild every actor with these classes")

    p = _command(
        sub,
        "fork",
        cmd_fork,
        "make a new actor from another's state at a journal position (of the journal, or of a replica)",
        "python -m runtime fork Agent/a --at 120 --as Agent/a-fix --replay-after --module agents",
        db=DEFAULT_DB,
    )
    add_fork_arguments(p)

    p = _command(
        sub,
        "diff",
        cmd_diff,
        "compare two actors' histories step by step (a fork with its source, say)",
        "python -m runtime diff Agent/a Agent/a-fix",
        db=DEFAULT_DB,
    )
    add_diff_arguments(p)

    p = _command(
        sub,
        "compact",
        cmd_compact,
        "remove the history each actor type's retention no longer keeps, and give the space back",
        "python -m runtime compact --module agents",
        db=DEFAULT_DB,
    )
    add_compact_arguments(p)

    p = _command(
        sub,
        "drill",
        cmd_drill,
        "prove the backup: restore the latest replica, check and replay it, compare it with the journal",
        "python -m runtime drill --module runtime.interfaces.demo_agents",
        db=DEFAULT_DB,
    )
    drill_arguments(p)
    add_token_arguments(p, "to ask the running server's replication monitor")
    return top


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m runtime`` and the ``stele`` script."""
    args = parser().parse_args(argv)
    try:
        code: int = args.fn(args)
        return code
    except (SteleError, storage.StorageError) as exc:
        err.print(styled(("error:", "red"), " ", str(exc)), soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        return 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_DFL)


if __name__ == "__main__":
    sys.exit(main())
