"""Where the time goes: the tells or asks scenario under py-spy, summarised per thread.

    python -m benchmarks.profile tells|asks [--rate HZ] [--top N]

py-spy samples the running process from outside (no instrumentation, so the
threads keep their real timing). Every sample is counted for its thread, idle
ones included, so the shares of one thread add up to 100 %: the event loop's
time in ``select`` is its idle time, the writer's in ``Queue.get`` is its own.
The table gives each function's self share (samples it was on top of the stack)
and inclusive share (samples it was anywhere on the stack).
"""

from __future__ import annotations

import argparse
import collections
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
work = Path(sys.argv[2])
if sys.argv[1] == "tells":
    print(anyio.run(tell_throughput, work))
else:
    print(anyio.run(sequential_asks, work, 20_000))
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenario", choices=["tells", "asks"])
    parser.add_argument("--rate", type=int, default=500, help="samples per second (default 500)")
    parser.add_argument("--top", type=int, default=25, help="functions per table (default 25)")
    args = parser.parse_args()
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        sys.exit("py-spy is not installed: pip install -e '.[dev]'")
    with tempfile.TemporaryDirectory() as work:
        raw = Path(work) / "profile.txt"
        command = [spy, "record", "--threads", "--idle", "--rate", str(args.rate), "--format", "raw"]
        command += ["--output", str(raw), "--", sys.executable, "-c", TARGET, args.scenario, work]
        subprocess.run(command, check=True)
        print(summarise(raw, args.top))


if __name__ == "__main__":
    main()
