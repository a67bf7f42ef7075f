"""``rt.statistics()``: how the runtime is doing, as one frozen, typed record.

Everything outside the engine that wants to know (``/status``, ``/metrics``,
the console, the benchmarks, the tests) reads this record instead of the
runtime's private members, the way trio's ``RunStatistics`` does.
"""

from __future__ import annotations

import msgspec

from storage import ReplicationStatus

from ._cluster import NodeStatus
from ._compact import CompactionStatus
from ._drill import DrillStatus


class WriterStatistics(msgspec.Struct, frozen=True):
    """The journal writer's counters since the runtime opened."""

    batches: int
    """Transactions committed (group commits)."""
    units: int
    """Units of work committed (steps, tells of a tick, effects, bookkeeping)."""
    commit_seconds: float
    """Time the writer spent committing."""


class RuntimeStatistics(msgspec.Struct, frozen=True):
    """One moment of a runtime (cheap to take: counts, not copies of its state)."""

    open: bool
    """Whether the runtime accepts messages (it is open and not closing)."""
    active_actors: int
    """Actors in memory (at most ``max_active``)."""
    addresses: int
    """Addresses the runtime holds a cell for: active, loading, waiting for room, suspended or failed."""
    loading: int
    """Actors being loaded from the journal now."""
    pending: int
    """Messages accepted and not yet consumed, in every mailbox and under way."""
    mailbox_depth: int
    """Messages waiting in mailboxes."""
    deepest_mailbox: int
    """The most messages waiting for one actor."""
    steps_in_flight: int
    """Steps running or committing."""
    suspended: tuple[str, ...]
    """Actors suspended after non-determinism (in memory; the journal knows them all)."""
    failed: tuple[str, ...]
    """Actors whose journal could not be loaded (their messages wait)."""
    timers: int
    """Durable timers pending."""
    next_timer_due: float | None
    """When the next pending timer is due (epoch seconds), if any."""
    waiting_promises: tuple[tuple[str, str], ...]
    """``(address, promise name)`` of every step waiting on a promise or on another actor's reply."""
    waiting_asks: tuple[tuple[str, str], ...]
    """``(caller, callee)``: actors whose step waits on another actor's reply."""
    journal_failing: str | None
    """Why commits fail right now (new messages are refused meanwhile), or None."""
    writer: WriterStatistics
    replication: ReplicationStatus | None
    """What is not yet in the replica (None without replication)."""
    drill: DrillStatus | None = None
    node: NodeStatus | None = None
    """This node, when many nodes share a PostgreSQL database (None otherwise)."""
    """The last restore drill and how many ran and failed (None before the first; see ``rt.record_drill``)."""
    compaction: CompactionStatus | None = None
    """The last compaction and how many ran (None before the first; see ``rt.compact``)."""
