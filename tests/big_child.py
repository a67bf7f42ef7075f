"""A child process that does one thing with the 50 MB journal and reports its peak memory.

``python -m tests.big_child MODE DB``: prints ``{"baseline_mb": …, "peak_mb": …}``, the
process's resident set before the work (everything imported, the journal open) and at its
peak (``ru_maxrss``): a fresh process measures one thing only.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys

import anyio

from runtime import Registry, Runtime, replay
from storage import Journal

from .big_values import SIZE, Big, Fetch


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def write(db: str) -> dict[str, object]:
    async with Runtime(db, actors=[Big]) as rt:
        baseline = rss_mb()
        assert await rt.ask("Big/a", Fetch(7), timeout=300) == SIZE
    return {"baseline_mb": baseline, "peak_mb": rss_mb()}


def history(db: str, *extra: str) -> tuple[float, str]:
    """``python -m runtime history Big/a --json EXTRA``: its peak resident set (MB) and its output."""
    with subprocess.Popen(
        [sys.executable, "-m", "runtime", "history", "Big/a", "--db", db, "--json", *extra],
        stdout=subprocess.PIPE, text=True,
    ) as proc:  # fmt: skip
        assert proc.stdout is not None
        stdout = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    assert proc.returncode == 0
    return usage.ru_maxrss / 1024, stdout


def main() -> None:
    mode, db = sys.argv[1], sys.argv[2]
    out: dict[str, object]
    if mode == "write":
        out = anyio.run(write, db)
    elif mode == "replay":
        with Journal.open(db) as journal:
            baseline = rss_mb()
            done = replay(journal, Registry([Big]))
            assert done.ok and done.steps == 1, done.divergences
        out = {"baseline_mb": baseline, "peak_mb": rss_mb()}
    elif mode == "list":  # every entry, page after page, as a listing reads them
        with Journal.open(db) as journal:
            baseline = rss_mb()
            seen, sizes = 0, []
            while page := journal.entry_previews("Big/a", seen, limit=2):
                sizes += [(p.kind, p.size, p.truncated) for p in page]
                seen = page[-1].seq + 1
        out = {"baseline_mb": baseline, "peak_mb": rss_mb(), "entries": sizes}
    elif mode == "history":  # the command line's listing: its peak against the same command on the reply alone
        baseline, _ = history(db, "--kind", "reply")
        peak, stdout = history(db)
        lines = [json.loads(line) for line in stdout.split("\n") if line]
        out = {"baseline_mb": baseline, "peak_mb": peak, "lines": lines}
    else:
        raise SystemExit(f"unknown mode {mode}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
