"""Browsing reads, checked without a runtime: pages of actors and entries, the journal's summary.

What the console shows: every actor's condition, in pages that follow each other
without gaps or repeats in either direction, under every filter; pages of one
actor's entries from any point; one entry by position. Runs against every
backend of ``conftest.harness``.
"""

from __future__ import annotations

import pytest

import storage
from storage import (
    ActorCondition,
    ActorRow,
    ActorStatus,
    Bury,
    EntryKind,
    EntryRow,
    InboxRow,
    PutPromise,
    SetStatus,
    Unit,
)

from .conftest import Harness

AT = 1_800_000_000.0


def message(ident: int, target: str, *, timer: bool = False) -> InboxRow:
    due = AT + 60 if timer else None
    return InboxRow(
        ident, target, "h", "M", b"\x80", due, None, 0, None, AT, f"t{ident}" if timer else None, None, None
    )


def rows(actor: int, first_seq: int, step: int, kinds: list[EntryKind], at: float = AT) -> list[EntryRow]:
    return [storage.entry_row(actor, first_seq + i, step, kind, "T", b"\x01", at + i) for i, kind in enumerate(kinds)]


CLOSED = [EntryKind.MESSAGE, EntryKind.EVENT, EntryKind.REPLY]


def register(harness: Harness, addresses: list[str]) -> None:
    """One closed step (message, event, reply) per actor, actor ids from 1 in this order."""
    harness.commit(
        [
            Unit(
                journal=rows(i, 1, 1000 + i, CLOSED),
                register=ActorRow(i, address, address.partition("/")[0], AT),
                top=1000 + i,
            )
            for i, address in enumerate(addresses, start=1)
        ]
    )


def addresses(page: storage.ActorPage) -> list[str]:
    return [a.address for a in page.actors]


def walk(reads: storage.Reads, limit: int, **filters: str) -> list[str]:
    """Every page forwards, then every page backwards from the end: both must agree."""
    seen: list[str] = []
    page = reads.actor_page(limit=limit, **filters)
    pages = [page]
    while True:
        seen += addresses(page)
        assert len(page.actors) <= limit
        if page.next is None:
            break
        page = reads.actor_page(after=page.next, limit=limit, **filters)
        pages.append(page)
    back: list[str] = []
    page = pages[-1]
    while page.previous is not None:
        page = reads.actor_page(before=page.previous, limit=limit, **filters)
        back = addresses(page) + back
    assert back + addresses(pages[-1]) == seen or len(pages) == 1
    return seen


# -- entries ----------------------------------------------------------------------------------


def test_pages_of_entries_from_the_end_from_a_point_and_backwards(harness: Harness) -> None:
    backend = harness.open()
    register(harness, ["A/a"])
    for step in range(2, 40):
        harness.one(Unit(journal=rows(1, 3 * step - 2, step, CLOSED)))
    assert [e.seq for e in backend.entries_page("A/a", limit=4)] == [114, 115, 116, 117]
    assert [e.seq for e in backend.entries_page("A/a", before_seq=50, limit=3)] == [47, 48, 49]
    assert [e.seq for e in backend.entries_page("A/a", after_seq=50, limit=3)] == [51, 52, 53]
    assert [e.seq for e in backend.entries_page("A/a", after_seq=115, limit=10)] == [116, 117]
    assert [e.seq for e in backend.entries_page("A/a", before_seq=3, limit=10)] == [1, 2]
    assert backend.entries_page("A/a", after_seq=117) == []
    assert backend.entries_page("B/none") == []
    page = backend.entries_page("A/a", before_seq=6, limit=3)
    assert [(e.seq, e.step, e.kind) for e in page] == [(3, 1001, "reply"), (4, 2, "message"), (5, 2, "event")]
    with harness.reading() as outside:
        assert outside.entries_page("A/a", after_seq=50, limit=3) == backend.entries_page("A/a", after_seq=50, limit=3)


def test_one_entry_by_position(harness: Harness) -> None:
    backend = harness.open()
    register(harness, ["A/a", "B/b"])
    for entry in [*backend.entries("A/a"), *backend.entries("B/b")]:
        assert backend.entry(entry.position) == entry
    assert backend.entry(10_000) is None


# -- the summary ------------------------------------------------------------------------------


def test_the_summary_counts_and_lists_types_that_share_prefixes(harness: Harness) -> None:
    backend = harness.open()
    empty = backend.summary()
    assert (empty.actors, empty.types, empty.last_position, empty.pending) == (0, [], 0, 0)
    names = ["A/1", "A/2", "A-b/1", "A.c/1", "A0/1", "AB/1", "AB/2", "Zed/x", "a/lower"]
    register(harness, names)
    harness.commit([Unit(inbox=[message(1, "A/1"), message(2, "A/1"), message(3, "AB/1", timer=True)], top=3)])
    harness.commit([Unit(ops=[Bury(2, 5, "failed", AT)]), Unit(ops=[SetStatus("Zed/x", ActorStatus.SUSPENDED, "x")])])
    made = backend.summary()
    assert made.types == sorted({"A", "A-b", "A.c", "A0", "AB", "Zed", "a"})
    assert (made.actors, made.pending, made.timers, made.dead_letters, made.suspended) == (9, 1, 1, 1, 1)
    assert made.last_position == max(e.position for e in backend.entries("a/lower"))


# -- pages of actors ----------------------------------------------------------------------------


def test_pages_of_actors_follow_each_other_in_both_directions(harness: Harness) -> None:
    backend = harness.open()
    names = sorted(f"{kind}/{i:03d}" for kind in ("Agent", "Agent2", "Ag") for i in range(23))
    register(harness, names)
    for limit in (1, 7, 23, 100):
        assert walk(backend, limit) == names
    assert walk(backend, 5, type="Agent") == [n for n in names if n.startswith("Agent/")]
    assert walk(backend, 5, type="Ag") == [n for n in names if n.startswith("Ag/")]
    first = backend.actor_page(limit=5)
    assert first.previous is None and first.next == names[4]
    last = backend.actor_page(before=None, after=names[-3], limit=5)
    assert addresses(last) == names[-2:] and last.next is None and last.previous == names[-2]
    summary = first.actors[0]
    assert (summary.last_seq, summary.last_kind, summary.condition) == (3, "reply", ActorCondition.IDLE)
    assert summary.last_at == AT + 2 and summary.pending == 0
    with pytest.raises(ValueError, match="after or before"):
        backend.actor_page(after="a", before="b")


def test_search_by_key_is_a_literal_substring_of_the_key(harness: Harness) -> None:
    backend = harness.open()
    register(harness, ["Agent/Alice", "Agent/bob", "Agent/al_ice", "Agent/100%", "Agentx/alice", "Alice/zed"])
    assert addresses(backend.actor_page(search="alice")) == ["Agent/Alice", "Agentx/alice"]
    assert addresses(backend.actor_page(search="l_i")) == ["Agent/al_ice"]  # _ is no wildcard
    assert addresses(backend.actor_page(search="0%")) == ["Agent/100%"]
    assert addresses(backend.actor_page(search="alice", type="Agent")) == ["Agent/Alice"]
    assert addresses(backend.actor_page(search="nobody")) == []


def test_each_condition_is_what_the_journal_says(harness: Harness) -> None:
    backend = harness.open()
    register(harness, ["A/idle", "A/active", "A/waiting", "A/suspended", "A/buried", "A/timer", "A/asked"])
    ids = {a.address: a.id for a in backend.actors()}
    harness.commit(
        [
            Unit(
                inbox=[
                    message(1, "A/active"),
                    message(2, "A/waiting"),
                    message(3, "A/buried"),
                    message(4, "A/timer", timer=True),
                    message(5, "A/suspended"),
                ],
                top=5,
            )
        ]
    )
    # Steps opened (a message, then an effect) and not closed: waiting, while their message is pending.
    harness.commit([Unit(journal=rows(ids["A/waiting"], 4, 2, [EntryKind.MESSAGE, EntryKind.EFFECT]))])
    harness.commit([Unit(journal=rows(ids["A/buried"], 4, 3, [EntryKind.MESSAGE]))])
    harness.commit([Unit(journal=rows(ids["A/asked"], 4, 9, [EntryKind.MESSAGE, EntryKind.REQUEST]))])
    harness.commit([Unit(ops=[Bury(3, 5, "kept failing", AT), SetStatus("A/suspended", ActorStatus.SUSPENDED, "x")])])
    expected = {
        "A/active": ActorCondition.ACTIVE,
        "A/asked": ActorCondition.IDLE,  # its step's message is not in the inbox: nothing resumes it
        "A/buried": ActorCondition.IDLE,  # its step's message became a dead letter: the step is over
        "A/idle": ActorCondition.IDLE,
        "A/suspended": ActorCondition.SUSPENDED,
        "A/timer": ActorCondition.IDLE,  # a timer is not work to do yet
        "A/waiting": ActorCondition.WAITING,
    }
    assert {a.address: a.condition for a in backend.actor_page().actors} == expected
    for condition in ActorCondition:
        wanted = sorted(a for a, c in expected.items() if c == condition)
        assert walk(backend, 1, condition=condition.value) == wanted, condition
    assert walk(backend, 1, condition="dead_letters") == ["A/buried"]
    page = {a.address: a for a in backend.actor_page().actors}
    assert (page["A/timer"].timers, page["A/timer"].pending) == (1, 0)
    assert (page["A/buried"].dead_letters, page["A/waiting"].last_kind) == (1, "effect")
    assert page["A/suspended"].reason == "x"
    with pytest.raises(ValueError, match="condition must be one of"):
        backend.actor_page(condition="sleeping")


def test_a_filter_finds_the_one_match_among_many_in_one_page(harness: Harness) -> None:
    backend = harness.open()
    names = [f"A/{i:05d}" for i in range(3000)]
    register(harness, names)
    harness.commit([Unit(inbox=[message(i, name) for i, name in enumerate(names, start=1)], top=len(names))])
    harness.commit([Unit(journal=rows(len(names), 4, len(names), [EntryKind.MESSAGE]))])
    # Every actor has a message waiting; only the last one's step is open.
    page = backend.actor_page(condition="waiting")
    assert addresses(page) == [names[-1]] and (page.previous, page.next) == (None, None)
    active = backend.actor_page(condition="active", limit=10, after=names[-12])
    assert addresses(active) == names[-11:-1] and active.next is None and active.previous == names[-11]


def test_an_actors_detail_lists_its_inbox_dead_letters_and_promises(harness: Harness) -> None:
    backend = harness.open()
    register(harness, ["A/a", "A/b"])
    harness.commit([Unit(inbox=[message(1, "A/a"), message(2, "A/b"), message(3, "A/a", timer=True)], top=3)])
    harness.commit([Unit(ops=[Bury(1, 5, "poison", AT), PutPromise("A/a", "approval", b"\xc3", AT)])])
    detail = backend.actor_detail("A/a")
    assert detail is not None
    assert [(p.id, p.timer_id) for p in detail.pending] == [(3, "t3")]
    assert [(d.id, d.reason) for d in detail.dead_letters] == [(1, "poison")]
    assert [(p.name, p.value) for p in detail.promises] == [("approval", b"\xc3")]
    assert detail.summary.condition == ActorCondition.IDLE and detail.summary.timers == 1
    assert backend.actor_detail("A/none") is None
    with harness.reading() as outside:
        assert outside.actor_detail("A/a") == detail
