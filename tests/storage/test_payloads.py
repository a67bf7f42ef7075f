"""Payloads stored once, checked without a runtime: what every backend must do with large values.

On every backend a large value is read back whole by every read, from inside
and from outside, listed from a bounded read, and a unit that fails leaves
nothing of it. Where the backend stores payloads (``Harness.payloads``: SQLite)
a value above the threshold is stored as content-addressed chunks, the same
content once wherever it appears, and chunks only transient rows referred to
are reclaimed once nothing refers to them while the journal's are kept; a
backend that does not (PostgreSQL) refuses a threshold, clearly, and keeps
values in their rows. Runs against every backend of ``conftest.harness``.
"""

from __future__ import annotations

import os
import struct
import zlib

import msgspec
import pytest

import storage
from storage import (
    ActorRow,
    Bury,
    EntryKind,
    ForgetKey,
    InboxRow,
    PutPromise,
    Reclaim,
    RecordKey,
    Revive,
    TakePromise,
    Unit,
    entry_row,
    snapshot_row,
)

from .conftest import Harness

AT = 1_800_000_000.0
encode = msgspec.msgpack.encode


def text(n: int, seed: int = 0) -> str:
    """``n`` characters that compress about as well as a model's answer (not to nothing)."""
    return os.urandom(n // 2).hex() if seed == 0 else (f"{seed}-" + os.urandom(n // 2).hex())[:n]


def inbox(ident: int, payload: bytes) -> InboxRow:
    return InboxRow(ident, "A/1", "h", "M", payload, None, None, 0, None, AT, None, None, None)


def turn(actor: int, seq: int, message: int, answer: str, *, register: bool = False) -> Unit:
    """A step whose effect returned ``answer``, whose event records it and whose reply carries it."""
    effect = encode({"index": 0, "ok": True, "result": answer, "started": AT, "finished": AT + 1.5})
    return Unit(
        journal=[
            entry_row(actor, seq, message, EntryKind.MESSAGE, "M", encode({"handler": "h", "body": {}}), AT),
            entry_row(actor, seq + 1, message, EntryKind.EFFECT, "model", effect, AT),
            entry_row(actor, seq + 2, message, EntryKind.EVENT, "Answered", encode({"text": answer}), AT),
            entry_row(actor, seq + 3, message, EntryKind.REPLY, "str", encode({"ok": True, "value": answer}), AT),
        ],
        register=ActorRow(actor, f"A/{actor}", "A", AT) if register else None,
        top=message,
    )


STORING = pytest.mark.parametrize("harness", ["sqlite-file", "sqlite-fault-vfs"], indirect=True)
"""The backends that store large values once (PostgreSQL keeps every value in its row: no chunks
to share or reclaim); parametrised rather than skipped, so no conformance test is ever skipped."""


def test_one_answer_in_an_effect_an_event_a_reply_and_a_snapshot_is_stored_once(harness: Harness) -> None:
    backend = harness.open()
    answer = text(4000)
    state = encode({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": answer}]})
    unit = turn(1, 1, 1, answer, register=True)
    unit.snapshots = [snapshot_row(1, 4, "S", state, AT)]
    assert harness.one(unit) is None
    stats = backend.payload_stats()
    assert (stats.chunks >= 1) == harness.payloads
    assert stats.content_bytes < 1.25 * len(answer)  # one copy, not four
    entries = list(backend.entries("A/1"))
    assert entries[1].decoded()["result"] == answer
    assert entries[2].decoded() == {"text": answer}
    assert entries[3].decoded()["value"] == answer
    info = backend.actor("A/1")
    assert info is not None
    assert [msgspec.msgpack.decode(row[3]) for row in backend.event_rows(info.id)] == [{"text": answer}]
    snap = backend.snapshot("A/1")
    assert snap is not None and snap.data == state and snap.intact
    with harness.reading() as outside:  # the same from a read-only view, while owned
        assert [e.data for e in outside.entries("A/1")] == [e.data for e in entries]
        assert outside.payload_stats() == stats


def test_small_values_stay_in_their_rows_and_storage_can_be_turned_off(harness: Harness) -> None:
    backend = harness.open(payload_threshold=None)
    answer = text(4000)
    assert harness.one(turn(1, 1, 1, answer, register=True)) is None
    assert backend.payload_stats().chunks == 0
    backend = harness.reopen()  # the default threshold
    assert harness.one(turn(1, 5, 2, "short")) is None
    assert backend.payload_stats().chunks == 0
    assert harness.one(turn(1, 9, 3, answer)) is None
    assert (backend.payload_stats().chunks >= 1) == harness.payloads
    assert [e.decoded().get("text") for e in backend.entries("A/1", kind=EntryKind.EVENT)] == [answer, "short", answer]


def test_a_value_of_megabytes_is_cut_and_an_edited_copy_shares_most_of_it(harness: Harness) -> None:
    backend = harness.open()
    big = os.urandom(3_000_000)
    edited = big[:1_000_000] + b"an insertion" + big[1_000_000:]
    assert harness.one(turn(1, 1, 1, "a", register=True)) is None
    assert harness.one(Unit(journal=[entry_row(1, 5, 2, EntryKind.EVENT, "Blob", encode({"b": big}), AT)])) is None
    first = backend.payload_stats()
    assert harness.one(Unit(journal=[entry_row(1, 6, 3, EntryKind.EVENT, "Blob", encode({"b": edited}), AT)])) is None
    second = backend.payload_stats()
    assert second.content_bytes - first.content_bytes < 0.05 * len(big)  # content-defined chunks realign
    events = [e.decoded()["b"] for e in backend.entries("A/1", from_seq=5)]
    assert events == [big, edited]
    value = backend.entry_value("A/1", 6)  # read piece by piece: the same bytes
    assert value is not None and value.size == len(encode({"b": edited}))
    assert b"".join(value.pieces()) == encode({"b": edited})
    assert value.read(1_000_000, 12) == encode({"b": edited})[1_000_000:1_000_012]
    assert backend.entry_value("A/1", 7) is None


@STORING
def test_transient_values_are_reclaimed_once_nothing_refers_to_them(harness: Harness) -> None:
    assert harness.payloads
    backend = harness.open()
    message, reply, promised, letter = (encode({"body": text(3000)}) for _ in range(4))
    assert harness.one(turn(1, 1, 1, "a", register=True)) is None
    assert harness.one(Unit(inbox=[inbox(2, message), inbox(3, letter)], top=3)) is None
    ops = [RecordKey("k", "A/1", 2, reply, AT, "ask", "h"), PutPromise("A/1", "p", promised, AT)]
    assert harness.one(Unit(ops=ops)) is None
    assert harness.one(Unit(ops=[Bury(3, 5, "failed", AT)])) is None
    assert {p.id: p.payload for p in backend.pending()} == {2: message}
    assert (backend.idempotent("k") or _missing()).reply == reply
    assert backend.promise("A/1", "p") == promised
    assert [d.payload for d in backend.dead_letters()] == [letter]
    stats = backend.payload_stats()
    assert stats.reclaimable == stats.chunks >= 4
    assert harness.one(Unit(ops=[Reclaim()])) is None
    assert backend.payload_stats() == stats  # every one is still referred to
    assert harness.one(Unit(ops=[Revive(3, AT)])) is None  # back in the inbox: still referred to
    assert {p.id: p.payload for p in backend.pending()} == {2: message, 3: letter}
    assert harness.one(Unit(consumed=[2, 3], ops=[ForgetKey("k", AT + 1), TakePromise("A/1", "p"), Reclaim()])) is None
    assert backend.payload_stats().chunks == 0
    assert backend.pending() == [] and backend.idempotent("k") is None and backend.promise("A/1", "p") is None


def test_a_message_whose_reference_is_long_keeps_its_chunks_through_a_reclaim(harness: Harness) -> None:
    # Many long strings, each followed by a short one: the list of pieces is about a third
    # of the value (the short strings stay inline in it), so even nested its reference is
    # kilobytes long. A reclaim must still find every chunk it names.
    backend = harness.open()
    body = encode([[text(600, seed=i + 1), text(240, seed=-i - 1)] for i in range(12_000)])
    assert harness.one(turn(1, 1, 1, "a", register=True)) is None
    assert harness.one(Unit(inbox=[inbox(2, body)], top=2)) is None
    assert harness.one(Unit(ops=[Reclaim()])) is None
    assert [p.payload for p in backend.pending()] == [body]
    assert harness.one(Unit(consumed=[2], ops=[Reclaim()])) is None
    assert backend.payload_stats().chunks == 0


def test_the_browsing_reads_see_values_not_references(harness: Harness) -> None:
    # The console's reads: a page of entries, one entry by position, an actor's inbox,
    # dead letters and promises.
    backend = harness.open()
    answer = text(5000)
    message, letter, promised = (encode({"body": text(3000)}) for _ in range(3))
    assert harness.one(turn(1, 1, 1, answer, register=True)) is None
    assert harness.one(Unit(inbox=[inbox(2, message), inbox(3, letter)], top=3)) is None
    assert harness.one(Unit(ops=[Bury(3, 5, "failed", AT), PutPromise("A/1", "p", promised, AT)])) is None
    page = backend.entries_page("A/1")
    assert [e.decoded().get("text") for e in page if e.kind == EntryKind.EVENT] == [answer]
    assert page == list(backend.entries("A/1"))
    one = backend.entry(page[2].position)
    assert one is not None and one.decoded() == {"text": answer}
    detail = backend.actor_detail("A/1")
    assert detail is not None
    assert [p.payload for p in detail.pending] == [message]
    assert [d.payload for d in detail.dead_letters] == [letter]
    assert [p.value for p in detail.promises] == [promised]


def test_a_value_whose_crc_is_that_of_every_reference_is_still_read_as_itself(harness: Harness) -> None:
    # A reference ends with its own CRC-32, so every reference has the same CRC-32 (CRC's
    # residue). A value made to have that CRC-32 too must not be taken for stored as is.
    backend = harness.open()
    start = os.urandom(3000)
    head = encode(start + b"1234")[: -len(start) - 4]  # msgpack's header of a bin of that length
    value = head + start + struct.pack("<I", zlib.crc32(head + start))
    assert zlib.crc32(value) == 0x2144DF1C and msgspec.msgpack.decode(value)
    assert harness.one(turn(1, 1, 1, "a", register=True)) is None
    assert harness.one(Unit(journal=[entry_row(1, 5, 2, EntryKind.EVENT, "Blob", value, AT)])) is None
    (entry,) = backend.entries("A/1", from_seq=5)
    assert entry.data == value
    with harness.reading() as outside:
        assert [e.data for e in outside.entries("A/1", from_seq=5)] == [value]


def test_what_the_journal_refers_to_is_never_reclaimed(harness: Harness) -> None:
    backend = harness.open()
    answer = text(3000)
    body = encode({"question": answer})
    assert harness.one(turn(1, 1, 1, "a", register=True)) is None
    assert harness.one(Unit(inbox=[inbox(2, body)], top=2)) is None
    record = encode({"handler": "h", "body": {"question": answer}})
    step = Unit(
        journal=[entry_row(1, 5, 2, EntryKind.MESSAGE, "M", record, AT)],
        consumed=[2],
        top=2,
    )
    assert harness.one(step) is None  # the message leaves the inbox; its entry holds the same answer
    assert harness.one(Unit(ops=[Reclaim()])) is None
    assert backend.payload_stats().reclaimable == 0
    assert (backend.payload_stats().chunks >= 1) == harness.payloads
    assert next(iter(backend.entries("A/1", from_seq=5))).decoded()["body"] == {"question": answer}


def test_a_unit_that_fails_stores_no_payload_and_the_others_keep_theirs(harness: Harness) -> None:
    backend = harness.open()
    assert harness.one(turn(1, 1, 1, "a", register=True)) is None
    mine, theirs = text(5000), text(5000)
    clash = turn(1, 1, 2, mine)  # seq 1 again: fails alone, with its answer
    fine = turn(1, 5, 3, theirs)
    outcomes = harness.commit([clash], [fine])
    assert isinstance(outcomes[0][0], storage.IntegrityError) and outcomes[1] == [None]
    stats = backend.payload_stats()
    assert stats.content_bytes < 1.25 * len(theirs)  # nothing of the failed unit's answer
    assert [e.decoded().get("text") for e in backend.entries("A/1", kind=EntryKind.EVENT)] == ["a", theirs]


def test_previews_read_a_bounded_part_of_a_large_value(harness: Harness) -> None:
    backend = harness.open()
    big = "x" * 3_000_000
    many = list(range(50_000))
    assert harness.one(turn(1, 1, 1, big, register=True)) is None
    listing = encode({"n": many, "t": "end"})
    assert harness.one(Unit(journal=[entry_row(1, 5, 2, EntryKind.EVENT, "L", listing, AT)])) is None
    assert harness.one(Unit(journal=[entry_row(1, 6, 3, EntryKind.EVENT, "S", encode({"small": 1}), AT)])) is None
    page = backend.entry_previews("A/1")
    assert [p.seq for p in page] == [1, 2, 3, 4, 5, 6]
    effect = page[1]
    assert effect.truncated and effect.stored == harness.payloads and effect.size > 3_000_000
    assert effect.data["result"].startswith("xxxx") and effect.data["result"].endswith("[3,000,000 bytes]")
    assert len(effect.data["result"]) < 2000 and effect.data["finished"] == AT + 1.5  # what follows is still read
    listed = page[4].data
    assert page[4].truncated and listed["n"][:3] == [0, 1, 2] and listed["n"][-1] == "… [49,900 more]"
    assert listed["t"] == "end"
    assert not page[5].truncated and page[5].data == {"small": 1} and not page[5].stored
    assert [p.seq for p in backend.entry_previews("A/1", from_seq=3, kind=EntryKind.EVENT, limit=1)] == [3]


def _missing() -> storage.Idempotent:
    raise AssertionError("the key was not recorded")


def test_a_commit_of_payloads_that_did_not_land_is_retried_and_stores_each_chunk_once(faulty: Harness) -> None:
    harness = faulty
    assert harness.fault is not None
    backend = harness.open()
    answer = text(6000)
    harness.fault.fail_next_commit(backend)  # fails without landing: read back, not there, retried
    unit = turn(1, 1, 1, answer, register=True)
    unit.inbox = [inbox(2, encode({"question": answer}))]
    unit.top = 2
    assert harness.one(unit) is None
    assert harness.fault.injected == 1
    assert backend.payload_stats().content_bytes < 1.25 * len(answer)
    assert [e.decoded() for e in backend.entries("A/1", kind=EntryKind.EVENT)] == [{"text": answer}]
    assert [p.payload for p in backend.pending()] == [encode({"question": answer})]


@pytest.mark.parametrize("harness", ["postgres"], indirect=True)
def test_a_backend_without_payload_storage_refuses_a_threshold_and_keeps_large_values_whole(
    harness: Harness,
) -> None:
    assert not harness.payloads
    with pytest.raises(ValueError, match="payload_threshold=1024: payloads stored once are for SQLite journals"):
        harness.open(payload_threshold=1024)
    backend = harness.open()  # unset: every value in its row
    answer = text(200_000)
    assert harness.one(turn(1, 1, 1, answer, register=True)) is None
    assert harness.one(Unit(ops=[Reclaim()])) is None  # nothing to reclaim, and no error
    assert backend.payload_stats() == storage.PayloadStats(0, 0, 0, 0)
    assert list(backend.payload_problems()) == []
    assert [e.decoded()["text"] for e in backend.entries("A/1", kind=EntryKind.EVENT)] == [answer]
