"""Payloads stored once, through the runtime: a long conversation costs space linear in its
length; large values are replayed, checked, listed and served; corruption of a stored chunk is
named, never served."""

from __future__ import annotations

from pathlib import Path

import anyio
import msgspec
import pytest

import storage
from runtime import Registry, Runtime, replay
from runtime.interfaces._check import check
from storage import Journal

from . import report
from .conftest import outside
from .conversation import Chat, Say, question

CALLS = 100


def used_bytes(path: str) -> int:
    """Bytes of the journal's pages that hold something (its WAL included), free pages left out."""
    conn = outside(path, readonly=True)
    try:
        pages = conn.execute("PRAGMA page_count").get
        free = conn.execute("PRAGMA freelist_count").get
        size = conn.execute("PRAGMA page_size").get
    finally:
        conn.close()
    return int((pages - free) * size)


async def converse(path: str, calls: int, *, payload_threshold: int | None) -> int:
    """Hold a conversation of ``calls`` model calls; the unique bytes of the conversation."""
    unique = 0
    async with Runtime(path, actors=[Chat], payload_threshold=payload_threshold) as rt:
        for i in range(calls):
            text = question(i)
            answer = await rt.ask("Chat/long", Say(text))
            unique += len(text.encode()) + len(answer.encode())
    return unique


async def test_a_long_conversation_costs_space_linear_in_its_length(tmp_path: Path) -> None:
    stored = str(tmp_path / "stored.db")
    unique = await converse(stored, CALLS, payload_threshold=1024)
    inline = str(tmp_path / "inline.db")
    assert await converse(inline, CALLS, payload_threshold=None) == unique
    with_payloads, without = used_bytes(stored), used_bytes(inline)
    with Journal.open(stored) as journal:
        stats = journal.payload_stats()
        snapshots = len(list(journal.snapshots("Chat/long")))
        assert replay(journal, Registry([Chat])).ok
    report.add(
        "payloads: a conversation of 100 model calls (KB)",
        unique=unique // 1024,
        used_with_payloads=with_payloads // 1024,
        used_without=without // 1024,
    )
    assert snapshots >= CALLS * 2 // 10 - 1
    assert with_payloads <= 3 * unique, (with_payloads, unique)
    # Each answer's content is stored once, whatever compression does for it.
    assert stats.content_bytes <= 1.3 * unique, (stats, unique)
    assert without > 3 * with_payloads  # and what it was without
    async with Runtime(stored, actors=[Chat]) as rt:  # rebuilt from a snapshot of references
        assert len((await rt.ask("Chat/long", Say("one more"))).encode()) >= 2000


async def test_the_journal_grows_linearly_not_quadratically(tmp_path: Path) -> None:
    """Twice the calls, about twice the space (quadratic growth would be about four times)."""
    sizes = []
    for calls in (40, 80):
        path = str(tmp_path / f"c{calls}.db")
        await converse(path, calls, payload_threshold=1024)
        sizes.append(used_bytes(path))
    assert sizes[1] < 2.6 * sizes[0], sizes


async def test_a_corrupt_chunk_is_named_by_position_and_never_served(tmp_path: Path) -> None:
    path = str(tmp_path / "j.db")
    await converse(path, 12, payload_threshold=1024)
    conn = outside(path)
    with conn:
        (ident, data) = conn.execute("SELECT id, data FROM payloads ORDER BY id LIMIT 1 OFFSET 3").get
        flipped = bytes([data[0] ^ 0xFF]) + data[1:]
        conn.execute("UPDATE payloads SET data = ? WHERE id = ?", (flipped, ident))
    conn.close()
    found = check(path)
    assert not found.ok
    assert any(f"payload chunk {ident} does not match its checksum" in p for p in found.problems)
    assert any("position" in p and "payload cannot be read" in p for p in found.problems)
    with (
        Journal.open(path) as journal,
        pytest.raises(Exception, match=r"position \d+ is corrupt: its payload cannot be read"),
    ):
        for _ in journal.entries("Chat/long"):
            pass
    async with Runtime(path, actors=[Chat]) as rt:  # an error naming where, never a wrong answer
        with pytest.raises(Exception, match="corrupt"):
            with anyio.fail_after(10):
                await rt.ask("Chat/long", Say("again"))


async def test_an_old_journal_migrates_and_stores_payloads(tmp_path: Path) -> None:
    import shutil

    copy = str(tmp_path / "v1.db")
    shutil.copy(Path(__file__).parent / "golden" / "v1.db", copy)
    async with Runtime(copy, actors=[Chat]) as rt:
        long_question = "why? " * 1000
        answer = await rt.ask("Chat/new", Say(long_question))
    with Journal.open(copy) as journal:
        assert journal.payload_stats().chunks > 0
        said = [msgspec.msgpack.decode(e.data) for e in journal.entries("Chat/new", kind="event")]
        assert said == [{"text": long_question}, {"text": answer}]


async def test_sql_over_the_journal_reads_stored_payloads_as_values(tmp_path: Path) -> None:
    path = str(tmp_path / "j.db")
    await converse(path, 6, payload_threshold=1024)  # 24 events: a snapshot after 10 and 20
    with Journal.open(path) as journal:
        answers = [msgspec.msgpack.decode(e.data)["text"] for e in journal.entries("Chat/long", kind="event")][1::2]
        assert journal.payload_stats().chunks > 0
    result = storage.query(
        path, "SELECT payload ->> '$.text' FROM entries WHERE kind = 'event' AND type = 'Answered' ORDER BY position"
    )
    assert [row[0] for row in result.rows] == answers
    state = storage.query(path, "SELECT state ->> '$.turns[1].content' FROM snapshots ORDER BY seq LIMIT 1")
    assert state.rows == [[answers[0]]]


async def test_a_journal_of_stored_payloads_copies_to_postgresql_and_to_a_file_as_values(
    tmp_path: Path, pg_url: str
) -> None:
    """A copy carries values, not references: the target (a database, or a new file) reads them whole."""
    path = str(tmp_path / "j.db")
    await converse(path, 12, payload_threshold=1024)
    with Journal.open(path) as journal:
        assert journal.payload_stats().chunks > 0
        entries = list(journal.entries("Chat/long"))
        snapshot = journal.snapshot("Chat/long")
    copied = str(tmp_path / "copy.db")
    for target in (pg_url, copied):
        storage.copy_journal(path, target)
        with Journal.open(target) as journal:
            assert list(journal.entries("Chat/long")) == entries
            assert journal.snapshot("Chat/long") == snapshot
            assert journal.payload_stats().chunks == 0  # values in their rows: a copy stores nothing once
            assert replay(journal, Registry([Chat])).ok
    assert check(copied).ok
    with pytest.raises(ValueError, match="payloads stored once are for SQLite journals"):
        Runtime(pg_url, actors=[Chat], payload_threshold=1024)
    async with Runtime(pg_url, actors=[Chat]) as rt:  # the conversation goes on, from the copied snapshot
        assert len((await rt.ask("Chat/long", Say("one more"))).encode()) >= 2000
