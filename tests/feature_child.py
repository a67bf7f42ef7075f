"""Child process for the feature crash tests: python -m tests.feature_child DB TRACE MODE.

MODE starts a scenario (timer, ask, backoff, promise) and then serves until
killed; MODE ``drain`` only recovers and waits until the inbox is empty.
Every effect appends a line to TRACE (outside the journal) before returning.
"""

from __future__ import annotations

import os
import sys

import anyio
import msgspec

from actors import Actor, Retry, apply, handler
from runtime import Runtime
from storage import Journal

TRACE = os.environ.get("STELE_TRACE", "trace.txt")


def trace(line: str) -> None:
    with open(TRACE, "a") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())


class Start(msgspec.Struct):
    pass


class Fire(msgspec.Struct):
    pass


class Work(msgspec.Struct):
    pass


class Done(msgspec.Struct):
    what: str


async def slow_work(key: str) -> str:
    trace(f"work-start {key}")
    await anyio.sleep(1.0)
    trace(f"work-end {key}")
    return "worked"


def flaky(key: str) -> str:
    calls = 0
    if os.path.exists(TRACE):
        with open(TRACE) as f:
            calls = sum(1 for line in f if line.startswith("flaky "))
    trace(f"flaky {key} {calls + 1}")
    if calls == 0:
        raise ConnectionError("first call fails")
    return "ok"


class Subject(Actor):
    class State(msgspec.Struct):
        done: list[str] = msgspec.field(default_factory=list)

    state: State

    @handler
    async def start(self, msg: Start) -> None:
        mode = os.environ["STELE_MODE"]
        if mode == "timer":
            self.ctx.schedule(1.0, self.address, Fire())
            trace("scheduled")
        elif mode == "ask":
            reply = await self.ctx.ask("Helper/h", Work(), timeout=60)
            self.emit(Done(f"ask:{reply}"))
        elif mode == "tell":
            await self.ctx.effect(slow_work, self.ctx.idempotency_key)
            await self.ctx.tell("Helper/h", Note("from subject"))
            self.emit(Done("told"))
        elif mode == "ask-reply":
            reply = await self.ctx.ask("Helper/h", Quick(), timeout=60)
            await self.ctx.effect(slow_work, self.ctx.idempotency_key)  # killed here, after the reply
            self.emit(Done(f"ask:{reply}"))
        elif mode == "backoff":
            result = await self.ctx.effect(flaky, self.ctx.idempotency_key, retry=Retry(3, initial=1.5, jitter=0))
            self.emit(Done(f"backoff:{result}"))
        elif mode == "promise":
            trace("waiting")
            value = await self.ctx.promise("go", timeout=60)
            self.emit(Done(f"promise:{value}"))

    @handler
    async def fire(self, msg: Fire) -> None:
        self.emit(Done("timer"))

    @apply
    def _done(self, ev: Done) -> None:
        self.state.done.append(ev.what)


class Note(msgspec.Struct):
    text: str


class Quick(msgspec.Struct):
    pass


class Helper(Actor):
    @handler
    async def work(self, msg: Work) -> str:
        return str(await self.ctx.effect(slow_work, self.ctx.idempotency_key))

    @handler
    async def note(self, msg: Note) -> None:
        trace(f"note {msg.text}")

    @handler
    async def quick(self, msg: Quick) -> str:
        trace("quick")
        return "quick"


async def main(db: str, mode: str) -> None:
    async with Runtime(db, actors=[Subject, Helper]) as rt:
        print("ready", flush=True)
        if mode == "resolve":
            await rt.resolve("Subject/s", "go", "yes")
            mode = "drain"
        if mode == "drain":
            with anyio.fail_after(30):
                while True:
                    with Journal.open(db) as journal:
                        if not journal.pending():
                            break
                    await anyio.sleep(0.02)
            print("drained", flush=True)
            return
        await rt.tell("Subject/s", Start())
        print("started", flush=True)
        await anyio.sleep(60)


if __name__ == "__main__":
    anyio.run(main, sys.argv[1], sys.argv[2])
