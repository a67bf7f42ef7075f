"""Durable timers: exactly once, never early, promptly after downtime; a virtual
clock runs an hour of them in milliseconds."""

from __future__ import annotations

import datetime

import anyio
import msgspec
import pytest

from actors import Actor, HandlerError, UnknownTimerError, apply, handler
from runtime import Registry, Runtime, VirtualClock, replay
from storage import Journal

from .conftest import BACKENDS, dump


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Every test here runs on a SQLite file and on a PostgreSQL database (``db`` makes either)."""
    return str(request.param)


class Remind(msgspec.Struct):
    after: float
    note: str


class Fire(msgspec.Struct):
    note: str
    due: float


class Fired(msgspec.Struct):
    note: str
    due: float
    at: float


class Cancel(msgspec.Struct):
    timer_id: str


class GetFired(msgspec.Struct):
    pass


class Alarm(Actor):
    class State(msgspec.Struct):
        fired: list[tuple[str, float, float]] = msgspec.field(default_factory=list)
        timers: list[str] = msgspec.field(default_factory=list)

    state: State

    @handler
    async def remind(self, msg: Remind) -> str:
        due = self.ctx.now() + msg.after
        return self.ctx.schedule(msg.after, self.address, Fire(msg.note, due))

    @handler
    async def fire(self, msg: Fire) -> None:
        self.emit(Fired(msg.note, msg.due, self.ctx.now()))

    @handler
    async def cancel(self, msg: Cancel) -> None:
        self.ctx.cancel(msg.timer_id)

    @handler
    async def get_fired(self, msg: GetFired) -> list[tuple[str, float, float]]:
        return self.state.fired

    @apply
    def _fired(self, ev: Fired) -> None:
        self.state.fired.append((ev.note, ev.due, ev.at))


def fired(db: str, address: str = "Alarm/a") -> list[tuple[str, float, float]]:
    with Journal.open(db) as journal:
        return [
            (e.decoded()["note"], e.decoded()["due"], e.decoded()["at"]) for e in journal.entries(address, kind="event")
        ]


async def settle(clock: VirtualClock, seconds: float, step: float, rt: Runtime | None = None) -> None:
    """Move the clock on by ``step`` at a time; with ``rt``, each step only once what it made due has run.

    Without waiting, a step of the clock every millisecond outruns a journal
    whose commits take longer (a loaded machine, a database server): timers
    then fire many steps late, though never early.
    """
    for _ in range(int(seconds / step)):
        clock.advance(step)
        await anyio.sleep(0.001)
        if rt is not None:
            with anyio.fail_after(30):
                while True:
                    stats = rt.statistics()
                    due = stats.next_timer_due is not None and stats.next_timer_due <= clock()
                    if not due and stats.pending == 0 and stats.steps_in_flight == 0:
                        break
                    await anyio.sleep(0.001)


async def test_an_hour_of_timers_fire_exactly_once_and_never_early(db: str) -> None:
    clock = VirtualClock()
    async with Runtime(db, actors=[Alarm], clock=clock) as rt:
        dues = []
        for i in range(60):
            dues.append(clock() + 60.0 * i + 7)
            await rt.ask("Alarm/a", Remind(after=60.0 * i + 7, note=f"n{i}"))
        for _ in range(370):
            clock.advance(10)
            # Each step waits for the timers it made due: a loaded machine
            # delivers late in real time, never late on the virtual clock.
            due_now = sum(due <= clock() for due in dues)
            with anyio.fail_after(30):
                while len(await rt.ask("Alarm/a", GetFired())) < due_now:
                    await anyio.sleep(0.001)
    history = fired(db)
    assert sorted(note for note, _, _ in history) == sorted(f"n{i}" for i in range(60))
    assert all(at >= due for _, due, at in history)  # never early
    assert all(at - due <= 10.0 for _, due, at in history)  # late by at most one clock step


async def test_a_timer_due_during_downtime_fires_promptly_at_start(db: str) -> None:
    clock = VirtualClock()
    async with Runtime(db, actors=[Alarm], clock=clock) as rt:
        await rt.ask("Alarm/a", Remind(after=60, note="later"))
    clock.advance(3600)  # the runtime is down for an hour
    async with Runtime(db, actors=[Alarm], clock=clock):
        with anyio.fail_after(5):
            while not fired(db):
                await anyio.sleep(0.01)
    ((note, due, at),) = fired(db)
    assert note == "later" and at >= due


async def test_a_cancelled_timer_never_fires_and_unknown_ids_are_refused(db: str) -> None:
    clock = VirtualClock()
    async with Runtime(db, actors=[Alarm], clock=clock) as rt:
        keep = await rt.ask("Alarm/a", Remind(after=30, note="keep"))
        drop = await rt.ask("Alarm/a", Remind(after=30, note="drop"))
        await rt.ask("Alarm/a", Cancel(drop))
        before = dump(db)
        with pytest.raises(HandlerError, match="no pending timer 'nope'"):
            await rt.ask("Alarm/a", Cancel("nope"))
        with pytest.raises(HandlerError, match="no pending timer"):
            await rt.ask("Alarm/a", Cancel(drop))  # already cancelled
        assert dump(db)["inbox"] == before["inbox"]
        await settle(clock, 60, 5)
        await anyio.sleep(0.05)
        assert keep != drop
    assert [note for note, _, _ in fired(db)] == ["keep"]
    with Journal.open(db) as journal:
        assert journal.pending() == []


class Bad(msgspec.Struct):
    pass


class PastAlarm(Alarm):
    name = "Past"

    @handler
    async def bad(self, msg: Bad) -> None:
        self.ctx.schedule(datetime.datetime(2000, 1, 1, tzinfo=datetime.UTC), self.address, Fire("x", 0.0))


async def test_scheduling_in_the_past_is_refused(db: str) -> None:
    async with Runtime(db, actors=[PastAlarm], clock=VirtualClock()) as rt:
        with pytest.raises(HandlerError, match="cannot schedule in the past"):
            await rt.ask("Past/p", Remind(after=-1, note="x"))
        with pytest.raises(HandlerError, match="cannot schedule in the past"):
            await rt.ask("Past/p", Bad())
        with pytest.raises(UnknownTimerError):
            raise UnknownTimerError("checked by name")
    with Journal.open(db) as journal:
        assert journal.pending() == []


async def test_timers_replay(db: str) -> None:
    clock = VirtualClock()
    async with Runtime(db, actors=[Alarm], clock=clock) as rt:
        await rt.ask("Alarm/a", Remind(after=5, note="one"))
        drop = await rt.ask("Alarm/a", Remind(after=50, note="two"))
        await rt.ask("Alarm/a", Cancel(drop))
        await settle(clock, 10, 1)
        await anyio.sleep(0.05)
    with Journal.open(db) as journal:
        report = replay(journal, Registry([Alarm]))
    assert report.ok, report.divergences


async def test_wall_clock_jumps_across_restarts_fire_each_timer_once_never_early(db: str) -> None:
    start = 1_800_000_000.0
    async with Runtime(db, actors=[Alarm], clock=VirtualClock(start)) as rt:
        for i in range(6):
            await rt.ask("Alarm/a", Remind(after=100.0 * (i + 1), note=f"n{i}"))  # due start+100 ... start+600
        state_before = await rt.ask("Alarm/a", GetFired())
    # The machine comes back with its clock an hour behind: nothing is due yet,
    # and timers wait for the wall clock to reach them (never early).
    behind = VirtualClock(start - 3600)
    async with Runtime(db, actors=[Alarm], clock=behind) as rt:
        await settle(behind, 3600, 100)
        await anyio.sleep(0.05)
        assert fired(db) == []
        await settle(behind, 250, 10)  # now start+250: n0 and n1 are due
        await anyio.sleep(0.05)
        assert [note for note, _, _ in fired(db)] == ["n0", "n1"]
    # Then with its clock a day ahead: the rest fire at once, once each.
    async with Runtime(db, actors=[Alarm], clock=VirtualClock(start + 86_400)) as rt:
        with anyio.fail_after(5):
            while len(fired(db)) < 6:
                await anyio.sleep(0.01)
        await anyio.sleep(0.05)
        live = await rt.ask("Alarm/a", GetFired())
    history = fired(db)
    assert [note for note, _, _ in history] == [f"n{i}" for i in range(6)]
    assert all(at >= due for _, due, at in history), history
    assert state_before == []
    # Replay reads time from the journal, never from the wall clock: run it
    # under a clock that says something else entirely, and nothing diverges.
    with Journal.open(db) as journal:
        report = replay(journal, Registry([Alarm]))
    assert report.ok, report.divergences
    async with Runtime(db, actors=[Alarm], clock=VirtualClock(start - 10 * 86_400)) as rt:
        assert await rt.ask("Alarm/a", GetFired()) == live
