"""A unit of work for the writer: rows that must commit together or not at all."""

from __future__ import annotations

from typing import Any

Row = tuple[Any, ...]


class Unit:
    """Rows for one atomic change, in the shape of the writer's statements.

    ``inbox``: ``(id, target, handler, type, payload, due, idempotency_key,
    attempts, sender, at, timer_id, reply_to, reply_name)``; ``journal``: ``(actor id, seq, step, kind, type,
    data, at)``; ``snapshots``: ``(actor id, seq, type, data, at)``; ``done``:
    inbox ids consumed; ``actor``: ``(id, address, type, at)`` for a new actor; ``ops``:
    other statements, run in order. ``step`` is the highest step id the unit
    uses, so the writer can keep the durable high-water mark of step ids.
    """

    __slots__ = ("actor", "done", "inbox", "journal", "ops", "snapshots", "step")

    def __init__(
        self,
        *,
        inbox: list[Row] | tuple[()] = (),
        journal: list[Row] | tuple[()] = (),
        snapshots: list[Row] | tuple[()] = (),
        done: list[int] | tuple[()] = (),
        actor: Row | None = None,
        ops: list[tuple[str, Row]] | tuple[()] = (),
        step: int = 0,
    ) -> None:
        self.inbox = inbox
        self.journal = journal
        self.snapshots = snapshots
        self.done = done
        self.actor = actor
        self.ops = ops
        self.step = step
