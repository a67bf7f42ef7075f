"""The restore drill: prove that what is replicated restores, checks out and replays.

A backup is proven only by restoring it. :func:`drill` restores the latest
replica into a temporary file and then:

1. checks it: SQLite's ``integrity_check`` and the schema (``storage.restore``),
   the checksum of every journal entry and snapshot;
2. measures how far it is behind the live journal: the entries the live
   journal has past the replica's last position, and how old the oldest of
   them was when the restore began (and what the replication monitor said at
   that moment, when one is asked);
3. compares every actor with the live journal: the replica's history must be a
   prefix of the live one, entry for entry, at the same positions;
4. replays every actor with the current code (``runtime.replay``) and rebuilds
   it (``runtime.load``), and compares the rebuilt state with the live
   journal's state at the same point.

It reads the live journal read-only, through ``storage.Journal``, like every
inspection command: it never blocks the runtime writing it. Only public reads
are used (``storage.restore``, ``storage.Journal``, ``replay``, ``load``), and
the comparison is :mod:`runtime._compare`'s, so a journal can be drilled from
any process.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Literal

import msgspec

import storage
from actors import OutsideRetentionError

from ._compare import first_difference
from ._rebuild import load
from ._registry import Registry
from ._replay import replay

DEFAULT_MAX_BEHIND_S = 10.0
"""A replica whose oldest missing entry was older than this when the drill restored it is stale."""
MAX_PROBLEMS = 100
"""Problems listed in one report; the rest are only counted."""

Cause = Literal[
    "restore", "integrity", "checksum", "stale", "monitor", "mismatch", "missing", "code", "undecodable",
    "divergence", "rebuild", "live", "error",
]  # fmt: skip
"""What a drill problem is about:

- ``restore``: the replica could not be restored (a corrupt or missing LTX file, an unreachable bucket);
- ``integrity``: the restored file fails ``integrity_check`` or is not a journal this Stele reads;
- ``checksum``: an entry or snapshot of the restored journal does not match its checksum;
- ``stale``: the replica lacks entries older than the allowed lag;
- ``monitor``: the replication monitor had confirmed positions the replica does not hold;
- ``mismatch``: an entry of the replica differs from the live journal's at the same position;
- ``missing``: the live journal has an entry, at or below the replica's position, that the replica lacks;
- ``code``: an actor type has no class in the current code;
- ``undecodable``: an entry the current code cannot decode;
- ``divergence``: the current code does something else than the journal recorded (replay);
- ``rebuild``: an actor cannot be rebuilt from the replica, or its state differs from the live journal's;
- ``live``: the live journal itself cannot be read there (a checksum that fails);
- ``error``: the drill itself could not run (reported by whoever ran it).
"""


class DrillProblem(msgspec.Struct, frozen=True):
    """One thing that makes a replica unusable or inconsistent."""

    cause: Cause
    detail: str
    actor: str | None = None
    position: int | None = None
    """The journal position concerned, if one is."""

    def __str__(self) -> str:
        return f"{self.cause}: {self.detail}"


class Behind(msgspec.Struct, frozen=True):
    """How far the replica was behind the live journal when the drill restored it."""

    entries: int = 0
    """Live journal entries past the replica's last position."""
    seconds: float = 0.0
    """How old the oldest of them was when the restore began (0 when none)."""
    commits: int | None = None
    """Commits the replication monitor had at risk at that moment (None: no monitor asked)."""
    monitor_seconds: float | None = None
    """The age of the oldest commit at risk, as the monitor said at that moment."""


class DrillTimings(msgspec.Struct, frozen=True):
    """Where a drill's time went, in seconds."""

    restore_s: float = 0.0
    """Litestream's restore, ``integrity_check`` and the schema check."""
    compare_s: float = 0.0
    """Every entry's and snapshot's checksum, and the comparison with the live journal."""
    replay_s: float = 0.0
    rebuild_s: float = 0.0
    """Rebuilding every actor from the replica and from the live journal."""
    total_s: float = 0.0


class DrillReport(msgspec.Struct, frozen=True):
    """What one drill found; ``ok`` only when the replica is usable and consistent."""

    ok: bool
    started_at: float
    """Epoch seconds."""
    db: str
    replica: str
    replica_position: int = 0
    """The highest journal position in the restored replica."""
    live_position: int = 0
    """The highest position of the live journal when the restore began."""
    behind: Behind = Behind()
    actors: int = 0
    """Actors in the replica."""
    entries: int = 0
    """Replica entries checked."""
    steps: int = 0
    """Steps replayed."""
    problems: tuple[DrillProblem, ...] = ()
    more_problems: int = 0
    """Problems found beyond the :data:`MAX_PROBLEMS` listed."""
    timings: DrillTimings = DrillTimings()

    @property
    def causes(self) -> frozenset[str]:
        """The causes of the problems listed."""
        return frozenset(p.cause for p in self.problems)


class DrillStatus(msgspec.Struct, frozen=True):
    """The drills a runtime was told of (``rt.record_drill``): the last one, and how many ran and failed."""

    last: DrillReport
    runs: int
    failures: int
    last_ok_at: float | None
    """When the last drill that passed began (epoch seconds), if one did."""

    def after(self, report: DrillReport) -> DrillStatus:
        """This record with ``report`` the newest drill."""
        return DrillStatus(
            report,
            self.runs + 1,
            self.failures + (0 if report.ok else 1),
            report.started_at if report.ok else self.last_ok_at,
        )

    @classmethod
    def first(cls, report: DrillReport) -> DrillStatus:
        """The record of a first drill."""
        return cls(report, 1, 0 if report.ok else 1, report.started_at if report.ok else None)


class _Problems:
    def __init__(self) -> None:
        self.listed: list[DrillProblem] = []
        self.more = 0

    def add(self, cause: Cause, detail: str, actor: str | None = None, position: int | None = None) -> None:
        if len(self.listed) < MAX_PROBLEMS:
            self.listed.append(DrillProblem(cause, detail, actor, position))
        else:
            self.more += 1


class _Unreadable(Exception):
    def __init__(self, side: str, error: storage.UndecodableEntry) -> None:
        super().__init__(str(error))
        self.side = side
        self.error = error


def _read(entries: Iterable[storage.Entry], side: str, counter: list[int] | None = None) -> Iterator[storage.Entry]:
    """``entries``, with a failing checksum tagged with the side it was read from."""
    try:
        for entry in entries:
            if counter is not None:
                counter[0] += 1
            yield entry
    except storage.UndecodableEntry as exc:
        raise _Unreadable(side, exc) from None


def drill(
    db: str,
    replica: str,
    registry: Registry,
    *,
    max_behind_s: float = DEFAULT_MAX_BEHIND_S,
    monitor: Callable[[], storage.ReplicationStatus | None] | None = None,
    binary: str | None = None,
    workdir: str | None = None,
) -> DrillReport:
    """Restore the latest replica at ``replica`` of the journal ``db`` and prove it (see the module docstring).

    ``registry`` holds the current code's actor classes. ``monitor`` returns the
    replication monitor's view, asked the moment the restore begins. The
    restored copy goes into a temporary directory in ``workdir`` (by default
    beside ``db``) and is removed afterwards. Problems are reported, not
    raised; a journal that cannot be opened raises.
    """
    started_at = time.time()
    t0 = time.perf_counter()
    db = os.path.abspath(db)
    problems = _Problems()
    report = DrillReport(ok=False, started_at=started_at, db=db, replica=replica)
    temp = tempfile.mkdtemp(prefix=".stele-drill-", dir=workdir or os.path.dirname(db))
    try:
        with storage.Journal.open(db) as live:
            status = monitor() if monitor is not None else None
            live_position = live.last_position()
            restore_began = time.time()
            try:
                restored = storage.restore(replica, os.path.join(temp, "replica.db"), binary=binary)
            except (storage.IntegrityError, storage.SchemaError, storage.OperationalError) as exc:
                # A replica that restores into a broken or foreign file is an integrity
                # problem; one that cannot be restored at all is a restore problem.
                broken = isinstance(exc, storage.IntegrityError | storage.SchemaError)
                problems.add("integrity" if broken else "restore", str(exc))
                timings = DrillTimings(restore_s=time.perf_counter() - t0, total_s=time.perf_counter() - t0)
                return msgspec.structs.replace(
                    report, live_position=live_position, problems=tuple(problems.listed), timings=timings
                )
            restore_s = time.perf_counter() - t0
            position = restored.last_position
            count, first_at = live.after(position, live_position)
            behind = Behind(
                count,
                max(0.0, restore_began - first_at) if first_at is not None else 0.0,
                status.commits_at_risk if status is not None else None,
                status.oldest_at_risk_s if status is not None else None,
            )
            if behind.seconds > max_behind_s:
                problems.add(
                    "stale",
                    f"the replica ends at position {position}; the live journal had {count} entr"
                    f"{'y' if count == 1 else 'ies'} past it"
                    + (f" ({behind.commits} commit(s) at risk)" if behind.commits is not None else "")
                    + f", the oldest {behind.seconds:.1f} s old (allowed: {max_behind_s:g} s)",
                    position=position + 1,
                )
            if status is not None and status.replicated_position > position:
                problems.add(
                    "monitor",
                    f"the replication monitor had confirmed position {status.replicated_position}, "
                    f"but the replica ends at {position}",
                    position=status.replicated_position,
                )
            with storage.Journal.open(restored.path) as copy:
                counts = _prove(copy, live, registry, position, problems)
        timings = DrillTimings(restore_s, *counts.seconds, total_s=time.perf_counter() - t0)
        return msgspec.structs.replace(
            report,
            ok=not problems.listed,
            replica_position=position,
            live_position=live_position,
            behind=behind,
            actors=counts.actors,
            entries=counts.entries,
            steps=counts.steps,
            problems=tuple(problems.listed),
            more_problems=problems.more,
            timings=timings,
        )
    finally:
        shutil.rmtree(temp, ignore_errors=True)


class _Counts:
    def __init__(self) -> None:
        self.actors = 0
        self.entries = 0
        self.steps = 0
        self.seconds = (0.0, 0.0, 0.0)
        """compare, replay, rebuild."""


CACHED_ENTRIES = 20_000
"""An actor with at most this many entries is read from the replica once, for the comparison
and the replay both; a longer history is read twice rather than held in memory."""


class _Held:
    """One actor's replica entries, read once, served to replay as a journal would."""

    def __init__(self, info: storage.ActorInfo, entries: list[storage.Entry], copy: storage.Journal) -> None:
        self._info = info
        self._entries = entries
        self._copy = copy

    def snapshot(self, actor: str, before: int | None = None) -> storage.Snapshot | None:
        return self._copy.snapshot(actor, before)

    def actor(self, address: str) -> storage.ActorInfo | None:
        return self._info if address == self._info.address else None

    def actors(self, type: str | None = None) -> list[storage.ActorInfo]:
        return [self._info] if type in (None, self._info.type) else []

    def entries(self, actor: str, from_seq: int = 0, kind: str | None = None) -> Iterator[storage.Entry]:
        if actor != self._info.address:
            return iter(())
        return (e for e in self._entries if e.seq >= from_seq and (kind is None or e.kind == kind))


def _prove(
    copy: storage.Journal, live: storage.Journal, registry: Registry, position: int, problems: _Problems
) -> _Counts:
    counts = _Counts()
    compare_s = replay_s = 0.0
    actors = copy.actors()
    counts.actors = len(actors)
    read = [0]
    for info in actors:
        t0 = time.perf_counter()
        held = _compare_actor(copy, live, info, position, problems, read)
        t1 = time.perf_counter()
        counts.steps += _replay_actor(held or copy, registry, info, problems)
        compare_s += t1 - t0
        replay_s += time.perf_counter() - t1
    t0 = time.perf_counter()
    _missing_actors(copy, live, {info.address for info in actors}, position, problems)
    compare_s += time.perf_counter() - t0
    counts.entries = read[0]
    t0 = time.perf_counter()
    for info in actors:
        _rebuild_actor(copy, live, registry, info, problems)
    counts.seconds = (compare_s, replay_s, time.perf_counter() - t0)
    return counts


def _compare_actor(
    copy: storage.Journal,
    live: storage.Journal,
    info: storage.ActorInfo,
    position: int,
    problems: _Problems,
    read: list[int],
) -> _Held | None:
    """Checksums of the replica's entries and snapshots, and the replica against the live journal.

    Returns the actor's entries, held for the replay, when it has few enough
    and all of them could be read.
    """
    address = info.address
    held: list[storage.Entry] | None = [] if info.last_seq - info.floor <= CACHED_ENTRIES else None
    # Compaction may have moved the live journal's floor past the replica's: the
    # two are compared where both keep their history.
    now = live.actor(address)
    start = max(info.floor, now.floor if now is not None else 0)
    if start != info.floor:
        held = None  # the replay starts at the replica's own floor
    replica = _read(copy.entries(address, start), "replica", read)
    if held is not None:
        replica = _keep(replica, held)
    try:
        difference = first_difference(
            replica, _read(live.entries(address, start), "live"), right_newer_than=position
        )
    except _Unreadable as exc:
        held = None
        cause: Cause = "checksum" if exc.side == "replica" else "live"
        problems.add(cause, f"{exc.side}: {exc.error}", address, exc.error.position)
    else:
        if difference is not None:
            if difference.left_position is None:
                problems.add(
                    "missing",
                    f"the replica lacks seq {difference.seq}, which the live journal has: {difference.right}",
                    address,
                    difference.right_position,
                )
            else:
                held = None  # the comparison stopped early: the replay reads the replica itself
                problems.add(
                    "mismatch",
                    f"at seq {difference.seq} the replica has {difference.left}, the live journal {difference.right}",
                    address,
                    difference.left_position,
                )
    for snap in copy.snapshots(address):
        stored = copy.snapshot(address, snap.seq + 1)
        if stored is not None and stored.seq == snap.seq and not stored.intact:
            problems.add("checksum", f"snapshot at seq {snap.seq} does not match its checksum", address)
    return _Held(info, held, copy) if held is not None else None


def _keep(entries: Iterator[storage.Entry], into: list[storage.Entry]) -> Iterator[storage.Entry]:
    for entry in entries:
        into.append(entry)
        yield entry


def _missing_actors(
    copy: storage.Journal, live: storage.Journal, present: set[str], position: int, problems: _Problems
) -> None:
    """Actors of the live journal with history at or below the replica's position that the replica lacks."""
    for info in live.actors():
        if info.address in present:
            continue
        first = next(iter(live.entries(info.address)), None)
        if first is not None and first.position <= position:
            problems.add(
                "missing",
                f"the replica has no actor {info.address}, whose history starts at position {first.position}",
                info.address,
                first.position,
            )


def _replay_actor(
    source: storage.Journal | _Held, registry: Registry, info: storage.ActorInfo, problems: _Problems
) -> int:
    if info.type not in registry.actors:
        problems.add("code", f"no actor class of type {info.type!r} in the current code", info.address)
        return 0
    try:
        result = replay(source, registry, actor=info.address)
    except storage.UndecodableEntry as exc:
        problems.add("undecodable", str(exc), info.address, exc.position)
        return 0
    for divergence in result.divergences:
        problems.add(
            "divergence",
            f"recorded {divergence.recorded}, the current code {divergence.current}",
            info.address,
            divergence.position,
        )
    return result.steps


_encode = msgspec.msgpack.Encoder().encode


def _rebuild_actor(
    copy: storage.Journal, live: storage.Journal, registry: Registry, info: storage.ActorInfo, problems: _Problems
) -> None:
    desc = registry.actors.get(info.type)
    if desc is None:
        return  # reported by the replay
    key = info.address.partition("/")[2]
    try:
        restored = load(copy, desc, registry.codec, info.address, key)
    except storage.UndecodableEntry as exc:
        problems.add("rebuild", f"cannot be rebuilt from the replica: {exc}", info.address, exc.position)
        return
    try:
        now = load(live, desc, registry.codec, info.address, key, until_seq=info.last_seq)
    except OutsideRetentionError:
        return  # the live journal has compacted past the replica's last state: nothing left to compare it with
    except storage.UndecodableEntry as exc:
        problems.add("live", f"cannot be rebuilt from the live journal: {exc}", info.address, exc.position)
        return
    if _encode(restored.instance.state) != _encode(now.instance.state):
        problems.add(
            "rebuild",
            f"its state rebuilt from the replica differs from the live journal's at seq {info.last_seq}",
            info.address,
        )
