"""Where the time goes: the tells or asks scenario under py-spy, summarised per thread.

    python -m benchmarks.profile tells|asks [--postgres] [--scale K] [--rate HZ] [--top N]

py-spy samples the running process from outside (no instrumentation, so the
threads keep their real timing). Every sample is counted for its thread, idle
ones included, so the shares of one thread add up to 100 %: the event loop's
time in ``select`` is its idle time, the writer's in ``Queue.get`` is its own.
The table gives each function's self share (samples it was on top of the stack)
and inclusive share (samples it was anywhere on the stack). ``--postgres`` runs
the scenario on a private PostgreSQL server (as ``--only postgres`` does) and
adds the server's own CPU time, which py-spy does not see.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

TARGET = """
import sys
from pathlib import Path
import anyio
from benchmarks.__main__ import sequential_asks, tell_throughput
work, scale = Path(sys.argv[2]), int(sys.argv[3])
url = sys.argv[4] if len(sys.argv) > 4 else None
if sys.argv[1] == "tells":
    print(anyio.run(tell_throughput, work, url, 1000, 20 * scale))
else:
    print(anyio.run(sequential_asks, work, url, 20_000 * scale))
"""


def _module(frame: str) -> str:
    """``Writer._run (storage/_writer.py:121)`` -> ``storage/_writer.py``; idle waits by name."""
    where = frame.rpartition(" (")[2].rstrip(")")
    path = where.rpartition(":")[0] or where
    if frame.startswith(("EpollSelector.select", "Condition.wait")):
        return "(idle) " + frame.partition(" ")[0]
    return path if path.startswith(("runtime/", "storage/", "benchmarks/", "actors/")) else path.rpartition("/")[2]


def summarise(raw: Path, top: int) -> str:
    """Per thread: the top functions by self and by inclusive share of its samples."""
    own: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    anywhere: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    totals: collections.Counter[str] = collections.Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        thread, *frames = stack.split(";")
        n = int(count)
        totals[thread] += n
        if frames:
            own[thread][frames[-1]] += n
            for frame in set(frames):
                anywhere[thread][frame] += n
    out = []
    for thread, total in totals.most_common():
        if total < 0.05 * max(totals.values()):
            continue  # short-lived helper threads
        frame, n = own[thread].most_common(1)[0]
        if frame.startswith("Condition.wait") and n > 0.99 * total:
            continue  # an idle worker thread (anyio's pool, used at start and close)
        out.append(f"=== {thread}: {total} samples")
        modules: collections.Counter[str] = collections.Counter()
        for frame, n in own[thread].items():
            modules[_module(frame)] += n
        for title, table in (("self, by module", modules), ("self", own[thread]), ("inclusive", anywhere[thread])):
            out.append(f"  -- {title}")
            out += [f"  {100 * n / total:5.1f} %  {frame}" for frame, n in table.most_common(top)]
    return "\n".join(out)


def _server_cpu(data: Path) -> float:
    """CPU seconds of a PostgreSQL server so far: the postmaster, its live children, and those it reaped."""
    main = int((data / "postmaster.pid").read_text().split()[0])
    ticks = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited meanwhile: its time is in the postmaster's reaped children
        if int(entry.name) == main:
            ticks += sum(int(f) for f in fields[11:15])  # utime, stime, cutime, cstime
        elif int(fields[1]) == main:
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenario", choices=["tells", "asks"])
    parser.add_argument("--rate", type=int, default=500, help="samples per second (default 500)")
    parser.add_argument("--top", type=int, default=25, help="functions per table (default 25)")
    parser.add_argument("--postgres", action="store_true", help="on a private PostgreSQL server")
    parser.add_argument("--scale", type=int, default=1, help="K times the messages (20,000 times K; default 1)")
    args = parser.parse_args()
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        sys.exit("py-spy is not installed: pip install -e '.[dev]'")
    with tempfile.TemporaryDirectory() as work, contextlib.ExitStack() as stack:
        raw = Path(work) / "profile.txt"
        command = [spy, "record", "--threads", "--idle", "--rate", str(args.rate), "--format", "raw"]
        command += ["--output", str(raw), "--", sys.executable, "-c", TARGET, args.scenario, work, str(args.scale)]
        cluster = None
        if args.postgres:
            from tests import pgserver

            server = stack.enter_context(pgserver.server())
            if server.cluster is None:
                sys.exit("--postgres profiles a private server: unset STELE_TEST_POSTGRES_URL")
            cluster = server.cluster
            command.append(server.database())
            before = _server_cpu(cluster.data)
        subprocess.run(command, check=True)
        print(summarise(raw, args.top))
        if cluster is not None:
            print(f"=== the PostgreSQL server's processes: {_server_cpu(cluster.data) - before:.1f} CPU s")


if __name__ == "__main__":
    main()
