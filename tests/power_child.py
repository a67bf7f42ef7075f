"""Runs power-loss workloads, each in a child forked from one prepared process.

Usage: python -m tests.power_child

Reads one JSON job per line on stdin, answers one JSON line per job. Forking
from a process that has already imported Stele (and runs no thread) makes a
crash point cost a few milliseconds instead of an interpreter start.

Jobs:

- ``{"job": "run", "db", "trace", "acks", "crash_on", "crash_at", "policy",
  "seed", "durability", "psow", "messages"}``: serve tells and asks to three
  ``Recorder`` actors through the power-loss VFS, appending ``ack ID`` to
  ``acks`` after each acknowledgement. Answers ``{"status", "syncs", "writes"}``
  (the counters only when the run ends without a cut).
- ``{"job": "recover", "db", "trace"}``: open the journal normally, let
  recovery consume every pending message, answer ``{"status", "live"}`` with
  each actor's state as it serves it.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from typing import Any

import anyio

from runtime import Runtime

from .histories import recover
from .models import Record, Recorder
from .powerloss import PowerLossVFS

ACTORS = 3


async def run(job: dict[str, Any], vfs: PowerLossVFS) -> None:
    acks = os.open(job["acks"], os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    async with Runtime(job["db"], actors=[Recorder], vfs=vfs.name, durability=job["durability"]) as rt:

        async def sender(k: int) -> None:
            for i in range(k, job["messages"], ACTORS):
                msg = Record(i, sender=f"s{k}")
                if i % 2:
                    await rt.ask(f"Recorder/{k}", msg)
                else:
                    await rt.tell(f"Recorder/{k}", msg)
                os.write(acks, f"ack {i}\n".encode())

        async with anyio.create_task_group() as tg:
            for k in range(ACTORS):
                tg.start_soon(sender, k)
    os.close(acks)


def child(job: dict[str, Any], answer: int) -> None:
    Recorder.trace_path = job["trace"]
    result: dict[str, Any] = {"status": 0}
    if job["job"] == "run":
        vfs = PowerLossVFS(
            crash_on=job["crash_on"],
            crash_at=job["crash_at"],
            policy=job["policy"],
            seed=job["seed"],
            psow=job.get("psow"),
        )
        anyio.run(run, job, vfs)
        result.update(syncs=vfs.syncs, writes=vfs.writes)
    else:
        result["live"] = anyio.run(recover, job["db"], [f"Recorder/{k}" for k in range(ACTORS)])
    os.write(answer, json.dumps(result).encode())


def main() -> None:
    for line in sys.stdin:
        job = json.loads(line)
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read)
            try:
                child(job, write)
            except BaseException:
                traceback.print_exc()
                os._exit(1)
            os._exit(0)
        os.close(write)
        with os.fdopen(read, "rb") as f:
            data = f.read()
        _, status = os.waitpid(pid, 0)
        result = json.loads(data) if data else {}
        result["status"] = os.waitstatus_to_exitcode(status)
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
