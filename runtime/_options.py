"""The runtime's options, grouped: limits, and replication.

``Runtime(path, actors, durability=..., replicate=URL, ...)`` keeps the common
ones flat; the rest come in two typed groups, ``limits=Limits(...)`` and
``replication=ReplicationOptions(...)``. Each field of the two groups is also
accepted as a keyword of ``Runtime`` itself (the names it always had), so code
written before the groups existed runs unchanged.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal, TypedDict

import storage

Durability = Literal["fsync", "normal", "replicated"]
"""``fsync`` (``synchronous=FULL``), ``normal`` (``synchronous=NORMAL``), or
``replicated`` (fsync, and acknowledged only once in the replica)."""

DURABILITIES: tuple[Durability, ...] = ("fsync", "normal", "replicated")


@dataclass(frozen=True)
class Limits:
    """Bounds on what a runtime holds and does at once."""

    max_active: int = 10_000
    """Actors kept in memory; the least recently used idle ones are passivated beyond it."""
    max_mailbox: int = 10_000
    """Messages waiting for one actor: beyond it, ``tell`` and ``ask`` fail at once (``BackpressureError``)."""
    max_pending: int = 1_000_000
    """Messages waiting in all, likewise."""
    max_attempts: int = 5
    """How often a message may fail by its own doing (a value that cannot be stored, a step that
    breaks; never the journal's trouble), or be under way when the process stops, before it
    becomes a dead letter and its actor carries on. Counted from the first restart at which it is
    the first message its actor runs, when its attempt is marked in the inbox before it runs."""
    effect_threads: int = 64
    """Worker threads that synchronous effects (a blocking SDK call) run in at once: threads of
    their own, so slow calls cannot stall loading actors or HTTP reads."""
    grace: float = 5.0
    """How long closing waits for steps under way before leaving them to recovery (not for steps
    waiting for a promise or an ask's reply: those waits are journaled and resume at the next start)."""
    young_gc_threshold: int | None = 50_000
    """While the runtime is open, Python's first-generation collection threshold is raised to
    at least this (the interpreter's default is 700), so that the objects of messages in flight
    die young instead of being walked again and again by older collections; restored when the
    last runtime closes. ``None`` leaves the collector alone (docs/performance.md)."""

    def __post_init__(self) -> None:
        for name in ("max_active", "max_mailbox", "max_pending", "max_attempts", "effect_threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, not {getattr(self, name)!r}")
        if self.young_gc_threshold is not None and self.young_gc_threshold < 1:
            raise ValueError(f"young_gc_threshold must be at least 1 or None, not {self.young_gc_threshold!r}")
        if not self.grace >= 0:
            raise ValueError(f"grace must be at least 0 s, not {self.grace!r}")


@dataclass(frozen=True)
class ReplicationOptions:
    """How replication (``replicate=URL``) runs and is watched; see ``docs/replication.md``."""

    restore_if_missing: bool = False
    """Restore a missing journal from the replica before serving."""
    lag_warning_s: float = 5.0
    """The age of the oldest unreplicated commit that logs a warning (logger ``stele.replication``)."""
    replication_timeout: float = 10.0
    """How long a replicated acknowledgement waits for the replica."""
    sync_interval: float = 1.0
    """Litestream's intervals (WAL to LTX, LTX to the replica), in seconds."""
    replication_nudge_s: float | None = 0.35
    """The age of the oldest unreplicated commit at which the monitor asks Litestream for a sync
    (None: leave it to Litestream's timers)."""
    stall_after_s: float | None = None
    """How long the journal may advance while the replica does not before replication is called
    stalled (``rt.replication.stalled``, a warning, ``/health`` degraded). None: Litestream's two
    timers (``2 * sync_interval``) plus 3 s."""
    max_wal_bytes: int = storage.DEFAULT_MAX_WAL_BYTES
    """The WAL's bound: Litestream truncates it past this size while it runs; while it is down,
    the runtime checkpoints and truncates it at this size, and says so."""
    litestream: str | None = None
    """The ``litestream`` binary to run (default: beside this Python, or on PATH)."""
    litestream_socket: str | None = None
    """The control socket of a Litestream run outside, which is then only monitored."""

    def __post_init__(self) -> None:
        if not self.sync_interval >= 0.001:  # Litestream takes whole milliseconds; 0 ms fails at its start
            raise ValueError(f"sync_interval must be at least 0.001 s, not {self.sync_interval!r}")
        storage.Replication.check_max_wal_bytes(self.max_wal_bytes)
        if self.stall_after_s is not None and not self.stall_after_s > 0:
            raise ValueError(f"stall_after_s must be more than 0 s, not {self.stall_after_s!r}")


class FlatOptions(TypedDict, total=False):
    """The fields of :class:`Limits` and :class:`ReplicationOptions`, as keywords of ``Runtime``."""

    max_active: int
    max_mailbox: int
    max_pending: int
    max_attempts: int
    effect_threads: int
    grace: float
    young_gc_threshold: int | None
    restore_if_missing: bool
    lag_warning_s: float
    replication_timeout: float
    sync_interval: float
    replication_nudge_s: float | None
    stall_after_s: float | None
    max_wal_bytes: int
    litestream: str | None
    litestream_socket: str | None


def grouped(
    limits: Limits | None, replication: ReplicationOptions | None, flat: FlatOptions
) -> tuple[Limits, ReplicationOptions]:
    """The two groups, with the flat keywords applied over them (unknown keywords refused)."""
    fields_of = {
        Limits: {f.name for f in dataclasses.fields(Limits)},
        ReplicationOptions: {f.name for f in dataclasses.fields(ReplicationOptions)},
    }
    unknown = set(flat) - fields_of[Limits] - fields_of[ReplicationOptions]
    if unknown:
        raise TypeError(f"Runtime got unexpected keyword arguments: {', '.join(sorted(unknown))}")
    limits = dataclasses.replace(
        limits or Limits(), **{k: v for k, v in flat.items() if k in fields_of[Limits]}  # type: ignore[arg-type]
    )
    replication = dataclasses.replace(
        replication or ReplicationOptions(),
        **{k: v for k, v in flat.items() if k in fields_of[ReplicationOptions]},  # type: ignore[arg-type]
    )
    return limits, replication
