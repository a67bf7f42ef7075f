"""``python -m runtime check``: find corruption before it is served.

SQLite's own ``integrity_check`` first, then every stored payload chunk read
back (its CRC-32, its decompression, its length, its SHA-256), then every
journal entry decoded: its record kind by Stele's own types, its payload by
the actor classes (when a module is given), so a flipped byte is reported with
its position and type instead of surfacing later as an error at activation.
An entry or snapshot whose stored payload cannot be read back (a chunk
missing or corrupt, a reference that fails its checksum) is named too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgspec

import storage
from storage import EntryKind

from .._records import (
    cancel_decoder,
    chunk_decoder,
    effect_decoder,
    fork_decoder,
    message_decoder,
    reply_decoder,
    request_decoder,
    send_decoder,
    start_decoder,
    timer_decoder,
)
from .._registry import Registry

_RECORDS: dict[str, msgspec.msgpack.Decoder[Any]] = {
    EntryKind.MESSAGE: message_decoder,
    EntryKind.EFFECT: effect_decoder,
    EntryKind.ATTEMPT: effect_decoder,
    EntryKind.REPLY: reply_decoder,
    EntryKind.SEND: send_decoder,
    EntryKind.TIMER: timer_decoder,
    EntryKind.CANCEL: cancel_decoder,
    EntryKind.REQUEST: request_decoder,
    EntryKind.START: start_decoder,
    EntryKind.CHUNK: chunk_decoder,
    EntryKind.FORK: fork_decoder,
}
"""How each kind's payload decodes (events decode by the actor classes)."""


@dataclass
class CheckReport:
    """What ``check`` found."""

    integrity: str = "ok"
    entries: int = 0
    payload_chunks: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether nothing is wrong."""
        return self.integrity == "ok" and not self.problems


def check(path: str, registry: Registry | None = None) -> CheckReport:
    """Check the journal at ``path`` (read-only; works beside a running runtime)."""
    report = CheckReport(integrity=storage.integrity_check(path))
    with storage.Journal.open(path) as journal:
        try:
            actors = journal.actors()
        except storage.StorageError as exc:
            report.problems.append(f"the actor registry cannot be read: {exc}")
            return report
        try:
            report.payload_chunks = journal.payload_stats().chunks
            report.problems.extend(journal.payload_problems())
        except storage.StorageError as exc:
            report.problems.append(f"the stored payloads cannot be read: {exc}")
        for info in actors:
            _check_entries(journal, info.address, registry, report)
            _check_snapshots(journal, info.address, report)
    return report


def _check_entries(journal: storage.Journal, address: str, registry: Registry | None, report: CheckReport) -> None:
    from_seq = 0
    while True:
        try:
            for entry in journal.entries(address, from_seq):
                from_seq = entry.seq + 1
                report.entries += 1
                problem = _entry_problem(entry, registry)
                if problem:
                    report.problems.append(f"{address} seq {entry.seq} at position {entry.position}: {problem}")
            return
        except storage.UndecodableEntry as exc:  # a checksum mismatch: report it, read on past it
            if exc.seq is None:
                report.problems.append(f"{address}: its journal cannot be read: {exc}")
                return
            report.entries += 1
            report.problems.append(f"{address} seq {exc.seq} at position {exc.position}: {exc}")
            from_seq = exc.seq + 1
        except storage.StorageError as exc:
            report.problems.append(f"{address}: its journal cannot be read: {exc}")
            return


def _check_snapshots(journal: storage.Journal, address: str, report: CheckReport) -> None:
    try:
        for info in journal.snapshots(address):
            snap = journal.snapshot(address, info.seq + 1)
            if snap is not None and snap.seq == info.seq and not snap.intact:
                report.problems.append(
                    f"{address} snapshot at seq {snap.seq}: its data does not match its checksum "
                    "(rebuilding falls back to older history)"
                )
    except storage.StorageError as exc:
        report.problems.append(f"{address}: its snapshots cannot be read: {exc}")


def _entry_problem(entry: storage.Entry, registry: Registry | None) -> str | None:
    try:
        if entry.kind == EntryKind.EVENT:
            if registry is not None:
                registry.codec.decode(entry.type, entry.data, position=entry.position)
            else:
                msgspec.msgpack.decode(entry.data)
            return None
        decoder = _RECORDS.get(entry.kind)
        if decoder is None:
            return f"unknown entry kind {entry.kind!r}"
        record = decoder.decode(entry.data)
        if entry.kind == EntryKind.MESSAGE and registry is not None:
            registry.codec.decode(entry.type, bytes(record.body), position=entry.position)
    except (msgspec.DecodeError, storage.UndecodableEntry) as exc:
        return f"{entry.kind} {entry.type!r} cannot be decoded: {exc}"
    return None
