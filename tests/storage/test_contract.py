"""The storage contract, checked without a runtime: what every backend must do.

Units of typed rows and named operations commit whole or not at all, many to a
transaction; one bad unit fails alone; a definite failure leaves nothing; an
owned journal reads the same from outside; every operation does what its name
says. Runs against every backend of ``conftest.harness``.
"""

from __future__ import annotations

import pytest

import storage
from errors import IdempotencyKeyError, JournalIntegrityError, JournalOwnedError, UnconsumedError, UnstorableValueError
from storage import (
    ActorRow,
    ActorStatus,
    Bury,
    CancelTimer,
    DropDeadLetter,
    EntryKind,
    EntryRow,
    ForgetKey,
    InboxRow,
    MarkAttempt,
    PutMeta,
    PutPromise,
    RecordKey,
    Revive,
    SetStatus,
    TakePromise,
    Unit,
    entry_row,
    snapshot_row,
)

from .conftest import Harness

AT = 1_800_000_000.0


def inbox(ident: int, target: str = "A/a", *, key: str | None = None, timer: str | None = None) -> InboxRow:
    due = AT + 60 if timer is not None else None
    return InboxRow(ident, target, "h", "M", b"\x80", due, key, 0, None, AT, timer, None, None)


def entry(actor: int, seq: int, message: int, kind: EntryKind = EntryKind.EVENT, data: bytes = b"\x01") -> EntryRow:
    return entry_row(actor, seq, message, kind, "T", data, AT)


def step(actor: int, first_seq: int, message: int, *, register: bool = False, consume: bool = True) -> Unit:
    """A step's unit: its message, an event and its reply, consuming its inbox row."""
    return Unit(
        journal=[
            entry(actor, first_seq, message, EntryKind.MESSAGE),
            entry(actor, first_seq + 1, message, EntryKind.EVENT),
            entry(actor, first_seq + 2, message, EntryKind.REPLY),
        ],
        consumed=[message] if consume else (),
        register=ActorRow(actor, f"A/{actor}", "A", AT) if register else None,
        top=message,
    )


def kinds(reads: storage.Reads, address: str) -> list[tuple[int, str]]:
    return [(e.seq, e.kind) for e in reads.entries(address)]


# -- batching, isolation, outcomes --------------------------------------------------------


def test_many_submissions_share_one_transaction_and_each_gets_its_outcome(harness: Harness) -> None:
    backend = harness.open()
    before = backend.stats.batches
    groups = [[Unit(inbox=[inbox(i, f"A/{i}")], top=i)] for i in range(1, 41)]
    results = harness.commit(*groups)
    assert results == [[None]] * 40
    assert backend.stats.batches - before == 1  # all forty in one commit
    assert [p.id for p in backend.pending()] == list(range(1, 41))


def test_one_bad_unit_fails_alone_and_the_others_commit(harness: Harness) -> None:
    backend = harness.open()
    assert harness.one(Unit(inbox=[inbox(1)], top=1)) is None
    good = step(1, 1, 1, register=True)
    twice = Unit(journal=[entry(2, 1, 9)], consumed=[7], register=ActorRow(2, "A/2", "A", AT), top=9)
    unstorable = Unit(ops=[PutMeta("k", 2**63)])
    also_good = Unit(inbox=[inbox(3, "A/3")], top=3)
    (outcomes,) = harness.commit([good, twice, unstorable, also_good])
    assert outcomes[0] is None and outcomes[3] is None
    assert isinstance(outcomes[1], UnconsumedError)  # message 7 was never pending: its step would run twice
    assert isinstance(outcomes[2], UnstorableValueError)  # the unit's own data: no retry can store it
    assert kinds(backend, "A/1") == [(1, "message"), (2, "event"), (3, "reply")]
    assert backend.actor("A/2") is None and backend.meta("k") is None  # nothing of the failed units
    assert [p.id for p in backend.pending()] == [3]


def test_a_definite_failure_leaves_nothing_and_the_writer_goes_on(harness: Harness) -> None:
    backend = harness.open()
    assert harness.one(Unit(inbox=[inbox(1, key="k")], top=1)) is None
    duplicate = Unit(inbox=[inbox(2, key="k")], journal=[entry(5, 1, 2)], top=2)  # the key is unique
    assert isinstance(harness.one(duplicate), JournalIntegrityError)
    assert backend.entries("A/5") is not None and list(backend.entries("A/5")) == []
    assert harness.one(Unit(inbox=[inbox(3)], top=3)) is None
    assert [p.id for p in backend.pending()] == [1, 3]


def test_a_message_accepted_and_consumed_in_one_transaction_is_never_pending(harness: Harness) -> None:
    # The writer may skip the inbox table for a message consumed in the very
    # transaction that accepts it; it must look the same from outside.
    backend = harness.open()
    (accept, consume) = harness.commit([Unit(inbox=[inbox(1)], top=1)], [step(1, 1, 1, register=True)])
    assert accept == [None] and consume == [None]
    assert backend.pending() == []
    assert kinds(backend, "A/1")[-1] == (3, "reply")


def test_a_step_that_consumes_a_processed_message_fails_alone(harness: Harness) -> None:
    backend = harness.open()
    harness.commit([Unit(inbox=[inbox(1)], top=1)])
    assert harness.one(step(1, 1, 1, register=True)) is None
    assert isinstance(harness.one(step(1, 4, 1)), UnconsumedError)
    assert [seq for seq, _ in kinds(backend, "A/1")] == [1, 2, 3]


def test_the_message_id_high_water_mark_survives_a_restart(harness: Harness) -> None:
    backend = harness.open()
    harness.commit([Unit(inbox=[inbox(41)], top=41)], [Unit(ops=[PutMeta("x", 1)], top=77)])
    assert harness.reopen().step_hwm >= 77
    assert backend is not harness.backend


def test_values_at_the_edges_come_back_as_they_went_in(harness: Harness) -> None:
    backend = harness.open()
    big = 2**63 - 1
    row = InboxRow(big - 1, "Ä/✓ 𝄞", "h", "M", b"", -1.5e300, "ключ", big, "s\u00e9nder", 0.0, None, None, None)
    entries = [entry_row(big, 2**62, big - 1, EntryKind.EVENT, "Tÿpe", b"\x00" * 3, 1e-300)]
    actor = ActorRow(big, "Ä/✓ 𝄞", "Ä", -0.0)
    assert harness.one(Unit(inbox=[row], journal=entries, register=actor, top=big - 1)) is None
    (pending,) = backend.pending()
    assert (pending.id, pending.target, pending.payload, pending.due, pending.idempotency_key) == (
        big - 1,
        "Ä/✓ 𝄞",
        b"",
        -1.5e300,
        "ключ",
    )
    assert (pending.attempts, pending.sender, pending.at) == (big, "s\u00e9nder", 0.0)
    (entry,) = backend.entries("Ä/✓ 𝄞")
    assert (entry.seq, entry.step, entry.type, entry.data, entry.at) == (2**62, big - 1, "Tÿpe", b"\x00" * 3, 1e-300)


# -- reads, from inside and from outside ------------------------------------------------------


def test_an_owned_journal_reads_the_same_from_outside_and_cannot_be_owned_twice(harness: Harness) -> None:
    backend = harness.open()
    harness.commit([Unit(inbox=[inbox(1)], top=1)], [step(1, 1, 1, register=True)])
    with harness.reading() as outside:
        assert kinds(outside, "A/1") == kinds(backend, "A/1")
        assert outside.actors() == backend.actors()
        harness.commit([Unit(inbox=[inbox(2)], top=2)])  # the owner writes on meanwhile
        assert [p.id for p in outside.pending()] == [2]
    with pytest.raises(JournalOwnedError):
        harness.open()


def test_entries_snapshots_and_time_travel(harness: Harness) -> None:
    backend = harness.open()
    harness.commit([step(1, 1, 1, register=True, consume=False)])
    harness.commit([step(1, 4, 2, consume=False)])
    harness.commit([Unit(snapshots=[snapshot_row(1, 5, "S", b"\x91\x05", AT)])])
    assert [e.seq for e in backend.entries("A/1", from_seq=3)] == [3, 4, 5, 6]
    assert [e.seq for e in backend.entries("A/1", kind=EntryKind.EVENT)] == [2, 5]
    info = backend.actor("A/1")
    assert info is not None and info.last_seq == 6 and info.status == ActorStatus.ACTIVE
    assert [s.seq for s in backend.snapshots("A/1")] == [5]
    snap = backend.snapshot("A/1")
    assert snap is not None and snap.seq == 5 and snap.data == b"\x91\x05" and snap.intact
    assert backend.snapshot("A/1", before=5) is None
    assert [row[1] for row in backend.event_rows(info.id, after_seq=2)] == [5]
    positions = [e.position for e in backend.entries("A/1")]
    assert backend.seq_at("A/1", positions[3]) == 4
    assert backend.seq_at("A/1", positions[0] - 1) == 0


def test_an_interrupted_step_reads_back_message_first(harness: Harness) -> None:
    backend = harness.open()
    harness.commit([step(1, 1, 1, register=True, consume=False)])
    harness.commit([Unit(journal=[entry(1, 4, 2, EntryKind.MESSAGE), entry(1, 5, 2, EntryKind.EFFECT)])])
    info = backend.actor("A/1")
    assert info is not None
    assert [(e.seq, e.kind) for e in backend.open_step(info.id, "A/1")] == [(4, "message"), (5, "effect")]
    harness.commit([Unit(journal=[entry(1, 6, 2, EntryKind.REPLY)])])
    assert backend.open_step(info.id, "A/1") == []


def test_an_actors_stream_is_its_starts_chunks_and_streamed_effects_in_order(harness: Harness) -> None:
    backend = harness.open()
    rows = [
        (EntryKind.MESSAGE, "M"),
        (EntryKind.EFFECT, "search"),  # a plain effect: not part of the stream
        (EntryKind.START, "stream:llm"),
        (EntryKind.CHUNK, "stream:llm"),
        (EntryKind.EVENT, "E"),
        (EntryKind.ATTEMPT, "stream:llm"),
        (EntryKind.ATTEMPT, "search"),
        (EntryKind.START, "stream:llm"),
        (EntryKind.CHUNK, "stream:llm"),
        (EntryKind.CHUNK, "stream:llm"),
        (EntryKind.EFFECT, "stream:llm"),
        (EntryKind.EFFECT, "Stream:llm"),  # the prefix is exact
        (EntryKind.REPLY, "int"),
    ]
    journal = [entry_row(1, seq, 1, kind, type_, bytes([seq]), AT) for seq, (kind, type_) in enumerate(rows, 1)]
    other = [entry_row(2, 1, 2, EntryKind.CHUNK, "stream:llm", b"\x01", AT)]
    assert harness.commit(
        [Unit(journal=journal, register=ActorRow(1, "A/1", "A", AT), top=1)],
        [Unit(journal=other, register=ActorRow(2, "A/2", "A", AT), top=2)],
    ) == [[None], [None]]
    expected = [3, 4, 6, 8, 9, 10, 11]
    with harness.reading() as outside:
        for reads in (backend, outside):
            got = reads.stream_entries("A/1")
            assert [e.seq for e in got] == expected
            assert [(e.kind, e.type, e.data) for e in got] == [(*rows[s - 1], bytes([s])) for s in expected]
            assert [e.seq for e in reads.stream_entries("A/1", from_seq=7)] == [8, 9, 10, 11]
            assert [e.seq for e in reads.stream_entries("A/1", from_seq=4, limit=2)] == [4, 6]  # a page
            assert reads.stream_entries("A/1", from_seq=12) == []
            assert reads.stream_entries("A/nobody") == []
            assert [e.actor for e in reads.stream_entries("A/2")] == ["A/2"]


def test_the_inbox_keeps_timers_and_reply_routes_apart_from_client_keys(harness: Harness) -> None:
    backend = harness.open()
    request = InboxRow(2, "B/b", "h", "M", b"\x80", None, None, 0, "A/a", AT, None, "A/a", "reply:A/a/1/0")
    harness.commit([Unit(inbox=[inbox(1, key="timer:x"), request, inbox(3, timer="A/a/1/t0")], top=3)])
    (client, routed, timer) = backend.pending()
    assert client.idempotency_key == "timer:x" and client.timer_id is None and client.reply_to is None
    assert (routed.reply_to, routed.reply_name) == ("A/a", "reply:A/a/1/0")
    assert timer.timer_id == "A/a/1/t0" and timer.due == AT + 60
    assert harness.one(Unit(ops=[CancelTimer("A/a/1/t0")])) is None
    assert [p.id for p in backend.pending()] == [1, 2]


# -- the named operations ---------------------------------------------------------------------


def test_idempotency_keys_record_their_use_and_are_forgotten_in_batches(harness: Harness) -> None:
    backend = harness.open()
    harness.commit([Unit(inbox=[inbox(1, key="k1")], ops=[RecordKey("k1", "A/a", 1, None, AT, "ask", "h")], top=1)])
    record, pending = backend.key_status("k1", 1)
    assert record is not None and record.kind == "ask" and record.handler == "h" and pending
    harness.commit([step(1, 1, 1, register=True), Unit(ops=[RecordKey("k1", "A/a", 1, b"\x01", AT + 0.5, "ask", "h")])])
    record, pending = backend.key_status("k1", 1)
    assert record is not None and record.reply == b"\x01" and not pending
    harness.commit([Unit(ops=[RecordKey(f"t{i}", "A/a", 10 + i, None, AT + i, "tell", "h") for i in range(5)])])
    assert backend.expired_keys(AT + 3, limit=10) == ["t0", "k1", "t1", "t2"]
    assert backend.expired_keys(AT + 3, limit=2) == ["t0", "k1"]
    harness.commit([Unit(ops=[ForgetKey("t0", AT + 3), ForgetKey("t4", AT + 3)])])  # t4 is newer: kept
    assert backend.idempotent("t0") is None and backend.idempotent("t4") is not None


def test_a_promise_is_resolved_once_and_taken_once(harness: Harness) -> None:
    backend = harness.open()
    assert harness.one(Unit(ops=[PutPromise("A/a", "p", b"\x01", AT)])) is None
    again = harness.one(Unit(ops=[PutPromise("A/a", "p", b"\x02", AT)]))
    assert isinstance(again, JournalIntegrityError) and not isinstance(again, IdempotencyKeyError)
    assert backend.promise("A/a", "p") == b"\x01"
    assert harness.one(Unit(ops=[PutPromise("A/a", "p", b"\x03", AT, replace=True)])) is None  # an actor's reply
    assert backend.promise("A/a", "p") == b"\x03"
    assert harness.one(Unit(ops=[TakePromise("A/a", "p")])) is None
    assert backend.promise("A/a", "p") is None


def test_dead_letters_are_buried_revived_and_dropped(harness: Harness) -> None:
    backend = harness.open()
    harness.commit([Unit(inbox=[inbox(1), inbox(2)], top=2)])
    harness.commit([Unit(ops=[MarkAttempt(1, 3)])])
    assert [p.attempts for p in backend.pending()] == [3, 0]
    harness.commit([Unit(ops=[Bury(1, 4, "kept failing", AT), Bury(2, 1, "also", AT)])])
    assert backend.pending() == []
    letters = backend.dead_letters()
    assert [(d.id, d.attempts, d.reason) for d in letters] == [(1, 4, "kept failing"), (2, 1, "also")]
    harness.commit([Unit(ops=[Revive(1, AT + 1)]), Unit(ops=[DropDeadLetter(2)])])
    assert [(p.id, p.attempts) for p in backend.pending()] == [(1, 0)]
    assert backend.dead_letters() == []


def test_an_actor_is_suspended_and_resumed(harness: Harness) -> None:
    backend = harness.open()
    harness.commit([step(1, 1, 1, register=True, consume=False)])
    harness.commit([Unit(ops=[SetStatus("A/1", ActorStatus.SUSPENDED, "diverged at 3")])])
    info = backend.actor("A/1")
    assert info is not None and (info.status, info.reason) == ("suspended", "diverged at 3")
    harness.commit([Unit(ops=[SetStatus("A/1", ActorStatus.ACTIVE)])])
    info = backend.actor("A/1")
    assert info is not None and (info.status, info.reason) == ("active", None)


def test_meta_keeps_the_last_value(harness: Harness) -> None:
    backend = harness.open()
    harness.commit([Unit(ops=[PutMeta("module", "a"), PutMeta("n", 7)])], [Unit(ops=[PutMeta("module", "b")])])
    assert (backend.meta("module"), backend.meta("n"), backend.meta("absent")) == ("b", 7, None)
    with harness.reading() as outside:
        assert outside.meta("module") == "b"


# -- outcomes under faults (backends that can inject them) --------------------------------------


def test_a_failed_commit_that_did_not_land_is_retried_and_reported_once(faulty: Harness) -> None:
    harness = faulty
    assert harness.fault is not None
    backend = harness.open()
    harness.fault.fail_next_commit(backend)
    assert harness.one(Unit(inbox=[inbox(1)], top=1)) is None  # read back, not there, retried, committed
    assert harness.fault.injected == 1
    assert [p.id for p in backend.pending()] == [1]


def test_a_commit_that_cannot_be_read_back_is_unknown_not_failed(faulty: Harness) -> None:
    harness = faulty
    assert harness.fault is not None
    backend = harness.open()
    harness.fault.cut_off(backend)
    outcome = harness.one(Unit(inbox=[inbox(1)], top=1))
    assert isinstance(outcome, storage.CommitUnknown)
    assert backend.failing is not None  # the journal says it is failing
    harness.fault.heal()
    assert harness.one(Unit(inbox=[inbox(2)], top=2)) is None
    assert backend.failing is None
    assert {p.id for p in backend.pending()} <= {1, 2} and 2 in {p.id for p in backend.pending()}
