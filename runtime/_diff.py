"""Two actors' histories compared step by step (``python -m runtime diff A B``).

A step is a message and what it did: its effects' outcomes, events, sends,
timers and reply. Two steps are the same when those are, whatever their
positions, sequence numbers, seeds, times and effect timings (a fork's steps
run at other times than its source's). When one actor is a fork of the other,
the source's steps are compared from where the fork began; otherwise both
histories from their beginnings.
"""

from __future__ import annotations

from collections.abc import Iterator

import msgspec

import storage
from storage import EntryKind, decode_untyped

from ._compare import Difference, first_difference
from ._records import EffectRecord, effect_decoder, fork_decoder, message_decoder

_encode = msgspec.msgpack.Encoder().encode


class StepDiff(msgspec.Struct, frozen=True):
    """One pair of steps (one side missing when a history has fewer steps)."""

    index: int
    left_position: int | None
    """The left step's message position (None: the left history has no step here)."""
    right_position: int | None
    handler: str
    difference: Difference | None
    """The first entry where the two steps differ (None: the same)."""


class DiffReport(msgspec.Struct, frozen=True):
    """Two histories, step by step."""

    left: str
    right: str
    left_from: int
    """The left history's first position compared (after a fork point, or its beginning)."""
    right_from: int
    steps: list[StepDiff]

    @property
    def first(self) -> StepDiff | None:
        """The first pair of steps that differ (None: the histories are the same)."""
        return next((s for s in self.steps if s.difference is not None), None)

    @property
    def same(self) -> bool:
        """Whether every step is the same."""
        return self.first is None


def diff(left_journal: storage.Reads, left: str, right_journal: storage.Reads, right: str) -> DiffReport:
    """Compare ``left`` (in ``left_journal``) with ``right`` step by step."""
    for journal, address in ((left_journal, left), (right_journal, right)):
        if journal.actor(address) is None:
            raise storage.StorageError(f"the journal has no actor {address!r}")
    left_from = _fork_point(right_journal, right, left)
    right_from = _fork_point(left_journal, left, right)
    a = list(_steps(left_journal, left, left_from))
    b = list(_steps(right_journal, right, right_from))
    pairs = []
    for i in range(max(len(a), len(b))):
        x = a[i] if i < len(a) else None
        y = b[i] if i < len(b) else None
        head = x if x is not None else y
        assert head is not None
        handler = message_decoder.decode(head[0].data).handler
        difference = first_difference(_normal(x or []), _normal(y or []), same_positions=False)
        pairs.append(StepDiff(i + 1, x[0].position if x else None, y[0].position if y else None, handler, difference))
    return DiffReport(left, right, left_from, right_from, pairs)


def _fork_point(journal: storage.Reads, fork: str, source: str) -> int:
    """The position ``fork`` was forked from ``source`` at (-1: it is not a fork of it)."""
    first = next(iter(journal.entries(fork, 0, EntryKind.FORK)), None)
    if first is None:
        return -1
    record = fork_decoder.decode(first.data)
    return record.position if record.source == source else -1


def _steps(journal: storage.Reads, address: str, after: int) -> Iterator[list[storage.Entry]]:
    """The completed steps none of whose events lies at or before ``after`` (as a fork delivers them again)."""
    step: list[storage.Entry] = []
    for entry in journal.entries(address):
        if entry.kind == EntryKind.MESSAGE:
            step = []
        step.append(entry)
        if entry.kind != EntryKind.REPLY or step[0].kind != EntryKind.MESSAGE:
            continue
        if entry.position > after and all(e.position > after for e in step if e.kind == EntryKind.EVENT):
            yield step
        step = []


def _normal(step: list[storage.Entry]) -> Iterator[storage.Entry]:
    """A step's entries as compared: numbered within the step, without seeds, times or timings."""
    index = 0
    for entry in step:
        data = entry.data
        if entry.kind == EntryKind.MESSAGE:
            record = message_decoder.decode(data)
            data = _encode([record.handler, record.body, record.sender])
        elif entry.kind == EntryKind.EFFECT:
            effect = effect_decoder.decode(data)
            data = _encode(EffectRecord(effect.index, effect.ok, effect.result, effect.error_type, effect.error))
        elif entry.kind in (EntryKind.SEND, EntryKind.TIMER, EntryKind.REQUEST):
            # Without the message ids they were given: those are new in every history.
            sent = decode_untyped(data)
            if isinstance(sent, dict):
                data = _encode({k: v for k, v in sent.items() if k not in ("step", "id")})
        elif entry.kind == EntryKind.ATTEMPT:
            continue  # how many tries an effect took is timing, not what it did
        yield msgspec.structs.replace(entry, seq=index, data=data)
        index += 1
