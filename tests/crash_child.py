"""Child process for the kill -9 test: serves a stream of tells until killed.

Usage: python -m tests.crash_child DB TRACE FIRST_ID COUNT

Prints ``ready``, then ``send ID`` before and ``ack ID`` (or ``refused ID``, under
backpressure) after each tell. With COUNT 0 it only recovers: waits until the
inbox is empty, prints each actor's state as ``state ADDRESS JSON`` and exits
cleanly.
"""

from __future__ import annotations

import json
import sys

import anyio

from actors import BackpressureError
from runtime import Runtime

from .histories import recover
from .models import Record, Recorder

ACTORS = 5


async def serve(db: str, first: int, count: int) -> None:
    if count == 0:  # recover only, and report what each actor serves
        print("ready", flush=True)
        for address, seen in (await recover(db, [f"Recorder/{k}" for k in range(ACTORS)])).items():
            print(f"state {address} {json.dumps(seen)}", flush=True)
        return
    async with Runtime(db, actors=[Recorder]) as rt:
        print("ready", flush=True)

        async def sender(k: int) -> None:
            for i in range(first + k, first + count, ACTORS):
                print(f"send {i}", flush=True)
                try:
                    await rt.tell(f"Recorder/{k}", Record(i, sender=f"s{k}"))
                except BackpressureError:  # the backlog of earlier cycles: nothing accepted
                    print(f"refused {i}", flush=True)
                    await anyio.sleep(0.01)
                    continue
                print(f"ack {i}", flush=True)

        async with anyio.create_task_group() as tg:
            for k in range(ACTORS):
                tg.start_soon(sender, k)
        await anyio.sleep(60)  # keep serving until killed


def main() -> None:
    db, trace, first, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    Recorder.trace_path = trace
    anyio.run(serve, db, first, count)


if __name__ == "__main__":
    main()
