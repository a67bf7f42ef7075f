"""``python -m runtime drill`` and ``serve --drill-every``: the restore drill from the outside.

The drill itself is :func:`runtime.drill`. Here it gets its inputs (the actor
classes of ``--module``, the replica the journal records, the running server's
replication monitor, asked over HTTP at the moment the restore begins) and its
output (a report, an exit code). ``serve --drill-every`` runs this command as a
child process on a schedule, at a lower CPU priority: a drill of a large
journal is seconds of CPU that must not hold the serving process's GIL, and a
child reads the journal read-only like any inspection command. The result is
handed to the runtime (``rt.record_drill``), where ``/status``, ``/metrics``,
``/health`` and the console read it.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import re
import signal
import sys
import time

import anyio
import anyio.abc
import msgspec

import storage
from actors import SteleError

from .._drill import DEFAULT_MAX_BEHIND_S, DrillProblem, DrillReport, drill
from .._registry import Registry
from .._runtime import Runtime
from ._client import call, endpoint, recorded_server
from ._modules import actor_classes, load_module
from ._text import console, plain, styled, write_json
from ._token import ENV, token_from

log = logging.getLogger("stele.drill")

STOP_DRILL_S = 5.0
"""How long a drill under way when ``serve`` stops gets to clean up after SIGTERM."""
FIRST_DRILL_S = 60.0
"""How soon after ``serve`` starts the first scheduled drill runs (at the latest)."""
DRILL_NICE = 10
"""How much lower the CPU priority of a drill that ``serve`` runs is."""
_DURATION = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*(ms|s|m|h|d)?")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def duration(value: str) -> float:
    """``90``, ``90s``, ``15m``, ``6h``, ``1d`` in seconds (for argparse: bad input is a clear error)."""
    match = _DURATION.fullmatch(value.strip())
    if match is None or float(match.group(1)) * _UNITS[match.group(2)] <= 0:
        raise argparse.ArgumentTypeError(f"a duration such as 90s, 15m or 6h, greater than 0, not {value!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def default_replica(journal: storage.Journal, db: str) -> str:
    """The replica ``serve`` records in the journal, else its default (``DB-replica``)."""
    recorded = journal.meta("replica")
    return str(recorded) if recorded else os.path.abspath(db) + "-replica"


def _monitor(server: str | None, token: str | None) -> storage.ReplicationStatus | None:
    """The running server's replication monitor, asked now (None if none answers)."""
    if server is None:
        return None
    try:
        code, answer = call(endpoint(server, "status"), token=token, timeout=5)
    except SteleError as exc:
        log.info("no replication monitor to ask: %s", exc)
        return None
    replication = answer.get("replication") if code == 200 and isinstance(answer, dict) else None
    if not isinstance(replication, dict):
        return None
    try:
        return msgspec.convert(replication, storage.ReplicationStatus)
    except msgspec.ValidationError:
        return None


def cmd_drill(args: argparse.Namespace) -> int:
    """Restore the latest replica, check and replay it, compare it with the live journal; 0 only if it is sound."""
    if args.nice:
        os.nice(args.nice)
    # SIGTERM (serve stopping) unwinds like Ctrl-C: the restored copy is removed on the way out.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    if not args.module:
        raise SteleError("the drill replays with the current code: give --module MODULE")
    registry = Registry(actor_classes(load_module(args.module)))
    with storage.Journal.open(args.db) as journal:
        replica = args.replica or default_replica(journal, args.db)
        server, _ = (args.url, None) if args.url else recorded_server(journal.meta("http"))
    token = token_from(args)
    report = drill(
        args.db,
        replica,
        registry,
        max_behind_s=args.max_behind,
        monitor=lambda: _monitor(server, token),
        workdir=args.workdir,
    )
    if args.json:
        write_json(msgspec.to_builtins(report))
    else:
        show(report)
    return 0 if report.ok else 1


def show(report: DrillReport) -> None:
    """The report as text."""
    b, t = report.behind, report.timings
    behind = f"{b.entries} entr{'y' if b.entries == 1 else 'ies'}, {b.seconds:.2f} s"
    if b.commits is not None:
        behind += f" (monitor: {b.commits} commit(s) at risk, oldest {b.monitor_seconds or 0:.2f} s)"
    for problem in report.problems:
        where = " ".join(
            part for part in (problem.actor or "", f"position {problem.position}" if problem.position else "") if part
        )
        console.print(styled((problem.cause, "red"), " ", plain(f"{where}: " if where else ""), plain(problem.detail)))
    if report.more_problems:
        console.print(styled((f"... and {report.more_problems} more problem(s)", "red")))
    console.print(
        plain(
            f"replica {report.replica}: position {report.replica_position} (live {report.live_position}), "
            f"behind by {behind}; {report.actors} actor(s), {report.entries} entries checked, "
            f"{report.steps} step(s) replayed"
        )
    )
    console.print(
        plain(
            f"restore {t.restore_s:.2f} s, checksums and comparison {t.compare_s:.2f} s, replay {t.replay_s:.2f} s, "
            f"rebuild {t.rebuild_s:.2f} s, total {t.total_s:.2f} s"
        )
    )
    verdict = ("usable and consistent", "green") if report.ok else (f"{len(report.problems)} problem(s)", "red")
    console.print(styled("drill: ", verdict))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``drill`` command's arguments (``--db`` and ``--json`` come with every command)."""
    parser.add_argument("--replica", help="replica URL (default: the one serve records in the journal, or DB-replica)")
    parser.add_argument("--module", help="module with the actor classes to replay with (required)")
    parser.add_argument(
        "--max-behind",
        type=duration,
        default=DEFAULT_MAX_BEHIND_S,
        metavar="DURATION",
        help=f"a replica lacking entries older than this is stale (default {DEFAULT_MAX_BEHIND_S:g}s)",
    )
    parser.add_argument("--url", help="the running server whose replication monitor to ask (default: the recorded one)")
    parser.add_argument("--workdir", help="where the temporary restored copy goes (default: beside the journal)")
    parser.add_argument("--nice", type=int, default=0, help=argparse.SUPPRESS)  # serve's children run lower


# -- serve --drill-every ---------------------------------------------------------------------------


async def drill_every(
    rt: Runtime,
    interval: float,
    *,
    module: str,
    replica: str,
    server: str,
    token: str | None,
    max_behind_s: float = DEFAULT_MAX_BEHIND_S,
) -> None:
    """Run a drill every ``interval`` seconds, in a child process, and record each result in ``rt``.

    The first runs ``FIRST_DRILL_S`` after the start (or sooner, with a shorter
    interval): a server restarted every few hours must not go unproven.
    """
    wait = min(interval, FIRST_DRILL_S)
    while True:
        await anyio.sleep(wait)
        wait = interval
        report = await run_drill(rt.path, module=module, replica=replica, server=server, token=token,
                                 max_behind_s=max_behind_s)  # fmt: skip
        rt.record_drill(report)
        if report.ok:
            log.info(
                "restore drill passed: replica at position %d, %d entries behind (%.1f s), %d actor(s), %.1f s",
                report.replica_position,
                report.behind.entries,
                report.behind.seconds,
                report.actors,
                report.timings.total_s,
            )
        else:
            shown = [f"{p.actor + ': ' if p.actor else ''}{p}" for p in report.problems[:5]]
            more = len(report.problems) + report.more_problems - len(shown)
            log.error(
                "restore drill FAILED for %s: %s%s",
                report.replica,
                "; ".join(shown),
                f" (and {more} more)" if more else "",
            )


async def run_drill(
    db: str, *, module: str, replica: str, server: str, token: str | None, max_behind_s: float
) -> DrillReport:
    """``python -m runtime drill --json`` in a child process at a lower priority; its report."""
    command = [sys.executable, "-m", "runtime", "drill", "--db", db, "--module", module, "--replica", replica,
               "--url", server, "--max-behind", f"{max_behind_s}s", "--nice", str(DRILL_NICE), "--json"]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != ENV}
    if token:
        env[ENV] = token  # to ask this server's monitor; never on a command line
    started = time.time()
    try:
        process = await anyio.open_process(command, env=env)
    except OSError as exc:
        return _failed(db, replica, started, f"cannot start the drill: {exc}")
    try:
        async with process:
            stdout, stderr = await _gather(process)
    except BaseException:
        # Stopping (serve's SIGTERM): the child removes its restored copy on SIGTERM.
        with anyio.CancelScope(shield=True):
            if process.returncode is None:
                process.terminate()
                with anyio.move_on_after(STOP_DRILL_S):
                    await process.wait()
                if process.returncode is None:
                    process.kill()
        raise
    out = stdout.decode(errors="replace").strip().splitlines()
    if process.returncode in (0, 1) and out:
        with contextlib.suppress(msgspec.DecodeError):
            return msgspec.json.decode(out[-1], type=DrillReport)
    detail = stderr.decode(errors="replace").strip().splitlines()
    return _failed(db, replica, started, f"the drill could not run (exit {process.returncode}): "
                   + (" | ".join(detail[-3:]) or "no output"))  # fmt: skip


async def _gather(process: anyio.abc.Process) -> tuple[bytes, bytes]:
    """Everything the child writes on stdout and stderr, once it has exited."""
    chunks: dict[str, list[bytes]] = {"out": [], "err": []}

    async def read(stream: anyio.abc.ByteReceiveStream | None, into: list[bytes]) -> None:
        if stream is not None:
            async for chunk in stream:
                into.append(chunk)

    async with anyio.create_task_group() as tg:
        tg.start_soon(read, process.stdout, chunks["out"])
        tg.start_soon(read, process.stderr, chunks["err"])
    await process.wait()
    return b"".join(chunks["out"]), b"".join(chunks["err"])


def _failed(db: str, replica: str, started: float, detail: str) -> DrillReport:
    return DrillReport(
        ok=False, started_at=started, db=os.path.abspath(db), replica=replica,
        problems=(DrillProblem("error", detail),),
    )  # fmt: skip
