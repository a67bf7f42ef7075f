"""``python -m runtime fork``, ``diff`` and ``compact``: branch, compare and trim histories.

``fork`` and ``compact`` open the journal as its owner (they write), so they
run while no server holds the same file (``serve --compact-every`` compacts a
served one). Its source may be read from a replica, at its
latest or at a point in time: the replica is restored into a temporary file,
read, and removed.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import tempfile
from collections.abc import Iterator

import anyio
import msgspec
from rich.table import Table

import storage

from .._compact import DEFAULT_BATCH, CompactReport
from .._diff import DiffReport, diff
from .._fork import ForkReport
from .._runtime import Runtime
from ._modules import actor_classes, load_module
from ._text import console, plain, styled, write_json

log = logging.getLogger("stele.serve")


def add_fork_arguments(p: argparse.ArgumentParser) -> None:
    """``fork``'s arguments."""
    p.add_argument("address", help="the actor to fork")
    p.add_argument("--as", dest="to", required=True, metavar="NEW", help="the fork's address (of the same type)")
    p.add_argument("--at", type=int, help="journal position of the source to fork at (default: its latest)")
    p.add_argument(
        "--replay-after",
        action="store_true",
        help="deliver the source's later messages to the fork again with the current code, "
        "reusing the source's effect results until the first difference",
    )
    p.add_argument("--module", required=True, help="module with the actor classes")
    p.add_argument("--from", dest="from_url", metavar="URL", help="read the source from this replica")
    p.add_argument("--timestamp", help="with --from: the replica at this ISO 8601 point in time")


@contextlib.contextmanager
def _source(url: str | None, timestamp: str | None) -> Iterator[storage.Journal | None]:
    if url is None:
        if timestamp is not None:
            raise storage.StorageError("--timestamp picks a point in a replica's history: give --from URL too")
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="stele-fork-") as directory:
        path = os.path.join(directory, "source.db")
        storage.restore(url, path, timestamp=timestamp)
        with storage.Journal.open(path) as journal:
            yield journal


def cmd_fork(args: argparse.Namespace) -> int:
    """Fork an actor (see :meth:`Runtime.fork`)."""
    classes = actor_classes(load_module(args.module))

    async def run() -> ForkReport:
        with _source(args.from_url, args.timestamp) as history:
            async with Runtime(args.db, actors=classes) as rt:
                return await rt.fork(
                    args.address,
                    at=args.at,
                    to=args.to,
                    replay_after=args.replay_after,
                    history=history,
                    replica=args.from_url or "",
                    timestamp=args.timestamp or "",
                )

    report = anyio.run(run)
    if args.json:
        write_json(msgspec.to_builtins(report))
        return 0
    origin = (
        f" of the replica {args.from_url}" + (f" at {args.timestamp}" if args.timestamp else "")
        if args.from_url
        else ""
    )
    console.print(
        styled(
            f"{report.address}: forked from {report.source} at position {report.position} (seq {report.seq}){origin}"
        )
    )
    if args.replay_after:
        console.print(
            styled(
                f"{report.redelivered} message(s) delivered again ({report.failed} failed); "
                f"{report.reused} effect result(s) reused, {report.ran} effect(s) run"
            )
        )
        if report.divergence is not None:
            console.print(
                styled(("diverged", "yellow"), f" at source position {report.diverged_at}: {report.divergence}")
            )
    return 0


def add_diff_arguments(p: argparse.ArgumentParser) -> None:
    """``diff``'s arguments."""
    p.add_argument("left", metavar="ADDRESS_A")
    p.add_argument("right", metavar="ADDRESS_B")
    p.add_argument("--all", action="store_true", help="list every step, not only those that differ")


def cmd_diff(args: argparse.Namespace) -> int:
    """Compare two actors' histories step by step; exit code 1 when they differ."""
    with storage.Journal.open(args.db) as journal:
        report = diff(journal, args.left, journal, args.right)
    if args.json:
        write_json({**msgspec.to_builtins(report), "same": report.same})
    else:
        _print(report, every=args.all)
    return 0 if report.same else 1


def _print(report: DiffReport, *, every: bool) -> None:
    table = Table("step", plain(report.left), plain(report.right), "handler", "difference")
    for step in report.steps:
        if step.difference is None and not every:
            continue
        where = "-" if step.difference is None else f"entry #{step.difference.seq}: "
        if step.difference is not None:
            where += f"{step.difference.left} / {step.difference.right}"
        table.add_row(
            str(step.index),
            str(step.left_position) if step.left_position is not None else "-",
            str(step.right_position) if step.right_position is not None else "-",
            plain(step.handler),
            plain(where),
        )
    if table.row_count:
        console.print(table)
    starts = (
        f"{report.left} from position {report.left_from}" if report.left_from >= 0 else f"{report.left} from its start"
    ) + (
        f", {report.right} from position {report.right_from}"
        if report.right_from >= 0
        else f", {report.right} from its start"
    )
    first = report.first
    verdict = (
        ("the same", "green")
        if first is None
        else (
            f"{sum(s.difference is not None for s in report.steps)} step(s) differ, first at step {first.index}",
            "red",
        )
    )
    console.print(styled(f"{len(report.steps)} step(s) compared ({starts}): ", verdict))


def add_compact_arguments(p: argparse.ArgumentParser) -> None:
    """``compact``'s arguments."""
    p.add_argument("--module", required=True, help="module with the actor classes (their retention)")
    p.add_argument(
        "--batch", type=_positive, default=DEFAULT_BATCH, help=f"sequence numbers per delete (default {DEFAULT_BATCH})"
    )


def _positive(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"a whole number of at least 1, not {value!r}")
    return number


def cmd_compact(args: argparse.Namespace) -> int:
    """Compact the journal by each actor type's retention (see :meth:`Runtime.compact`)."""
    classes = actor_classes(load_module(args.module))

    async def run() -> CompactReport:
        async with Runtime(args.db, actors=classes) as rt:
            return await rt.compact(batch=args.batch)

    report = anyio.run(run)
    if args.json:
        write_json(msgspec.to_builtins(report))
    else:
        console.print(styled(_compacted(report)))
    return 0


def _compacted(report: CompactReport) -> str:
    return (
        f"{report.actors} actor(s) compacted: {report.entries} entries, {report.snapshots} snapshot(s) and "
        f"{report.chunks} payload chunk(s) removed in {report.batches} commit(s); "
        f"journal {_mib(report.bytes_before)} -> {_mib(report.bytes_after)} "
        f"({_mib(report.free_after)} free for reuse), {report.seconds:.2f} s"
    )


def _mib(size: int) -> str:
    return f"{size / 2**20:.1f} MiB"


async def compact_every(rt: Runtime, interval: float, *, batch: int = DEFAULT_BATCH) -> None:
    """``serve --compact-every``: compact every ``interval`` seconds; a failure is logged, and the next one tried."""
    while True:
        await anyio.sleep(interval)
        try:
            report = await rt.compact(batch=batch)
        except Exception as exc:  # the server goes on; the next compaction retries what is left
            log.error("compaction failed: %s", exc)
            continue
        if report.actors:
            log.info("%s", _compacted(report))
