"""Stele's benchmark harness: one command, one table, one JSON file, all from one run.

    python -m benchmarks [--only a,b,...] [--dir DIR] [--quick]

Every figure is set next to the raw-APSW baseline (raw) measured in the same run
on the same file system, because this machine is noisy and only ratios travel.
Note: fsync here is far faster than on real disks (docs/performance.md), so the
durable figures flatter real hardware, ask latency most of all.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import anyio
import apsw

from actors._actor import describe
from runtime import Registry, Runtime, load
from storage import Journal, _sqlite

from . import (
    _compact,
    _console,
    _dbos,
    _drill,
    _effects,
    _http,
    _model,
    _nodes,
    _payloads,
    _postgres,
    _replication,
    _streams,
    _timers,
)
from ._model import Counter, Inc, Progress, synthesize

ROOT = Path(__file__).parent
Result = dict[str, Any]


def fresh(workdir: Path, name: str) -> str:
    return _model.fresh(str(workdir / name))


# -- raw: raw APSW baseline ------------------------------------------------------------


def one_row_commits(path: str, conn: apsw.Connection, commits: int = 5000) -> list[float]:
    """Latencies of ``commits`` one-row commits of 200 bytes."""
    row = (os.urandom(200),)
    latencies = []
    for _ in range(commits):
        t0 = time.perf_counter()
        with conn:
            conn.execute("INSERT INTO t(data) VALUES (?)", row)
        latencies.append(time.perf_counter() - t0)
    return latencies


def raw_baseline(workdir: Path) -> Result:
    path = fresh(workdir, "raw.db")
    conn = apsw.Connection(path)
    conn.execute("PRAGMA journal_mode = WAL").fetchall()
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, data BLOB NOT NULL)")
    row = (os.urandom(200),)
    total = 200_000
    started = time.perf_counter()
    for _ in range(total // 1000):
        with conn:
            conn.executemany("INSERT INTO t(data) VALUES (?)", [row] * 1000)
    rows_per_s = total / (time.perf_counter() - started)
    latencies = one_row_commits(path, conn)
    conn.close()
    # The same commits with psow=0, as Stele opens journals: each commit padded
    # to a sector boundary (storage/_sqlite.py says why).
    padded = apsw.Connection(f"file:{path}?psow=0", flags=apsw.SQLITE_OPEN_READWRITE | apsw.SQLITE_OPEN_URI)
    padded.execute("PRAGMA synchronous = FULL")
    padded_latencies = one_row_commits(path, padded)
    padded.close()
    return {
        "rows_per_s": rows_per_s,
        "commits_per_s": len(latencies) / sum(latencies),
        "commit_p50_us": statistics.median(latencies) * 1e6,
        "psow0_commits_per_s": len(padded_latencies) / sum(padded_latencies),
        "psow0_commit_p50_us": statistics.median(padded_latencies) * 1e6,
    }


# -- tells: tell throughput ---------------------------------------------------------------


async def tell_throughput(
    workdir: Path,
    location: str | None = None,
    actors: int = 1000,
    per_actor: int = 20,
    payload_threshold: int | Literal["auto"] | None = "auto",
) -> Result:
    path = location or fresh(workdir, "tells.db")
    Progress.steps, Progress.target = 0, actors * per_actor
    Progress.reached = asyncio.Event()
    rt = Runtime(path, actors=[Counter], payload_threshold=payload_threshold)
    await rt.__aenter__()

    async def sender(a: int) -> None:
        for _ in range(per_actor):
            await rt.tell(f"Counter/{a}", Inc(1))

    started = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for a in range(actors):
            tg.start_soon(sender, a)
    await Progress.reached.wait()
    await rt.close()  # waits for the last steps to commit
    elapsed = time.perf_counter() - started
    stats = rt.stats
    Progress.reached = None
    return {
        "messages_per_s": actors * per_actor / elapsed,
        "commits": stats.batches,
        "units_per_commit": stats.units / max(stats.batches, 1),
        # Where the time goes: the share of the run the writer spent committing (the rest, the
        # event loop ran the engine while the writer waited for work).
        "writer_busy_share": stats.commit_seconds / elapsed,
    }


# -- asks: sequential asks ------------------------------------------------------------------


async def sequential_asks(
    workdir: Path,
    location: str | None = None,
    count: int = 5000,
    payload_threshold: int | Literal["auto"] | None = "auto",
) -> Result:
    path = location or fresh(workdir, "asks.db")
    latencies = []
    async with Runtime(path, actors=[Counter], payload_threshold=payload_threshold) as rt:
        for _ in range(200):  # warm up
            await rt.ask("Counter/solo", Inc(1))
        for _ in range(count):
            t0 = time.perf_counter()
            await rt.ask("Counter/solo", Inc(1))
            latencies.append(time.perf_counter() - t0)
    latencies.sort()
    return {
        "asks_per_s": count / sum(latencies),
        "p50_us": latencies[len(latencies) // 2] * 1e6,
        "p99_us": latencies[int(len(latencies) * 0.99)] * 1e6,
    }


async def psow_cost(workdir: Path, count: int = 3000) -> Result:
    """psow: Sequential asks with psow=1 (SQLite's default) and psow=0 (Stele's), in turn."""
    results: Result = {}
    for psow in (True, False, True, False):  # interleaved: the machine drifts
        _sqlite.POWERSAFE_OVERWRITE = psow
        try:
            run = await sequential_asks(workdir, count=count)
        finally:
            _sqlite.POWERSAFE_OVERWRITE = False
        key = f"psow{int(psow)}"
        best = results.get(key)
        if best is None or run["asks_per_s"] > best["asks_per_s"]:
            results[key] = run
    return results


# -- rebuild: rebuilding one actor ----------------------------------------------------------------


def rebuild(workdir: Path, events: int = 100_000) -> Result:
    path = fresh(workdir, "rebuild.db")
    synthesize(path, 1, events, snapshot_every=1000)
    registry = Registry([Counter])
    desc = describe(Counter)
    with Journal.open(path) as journal:
        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            loaded = load(journal, desc, registry.codec, "Counter/0", "0", use_snapshots=False)
            best = min(best, time.perf_counter() - t0)
        assert loaded.instance.state.count == events
        snap_times = []
        for _ in range(20):
            t0 = time.perf_counter()
            loaded = load(journal, desc, registry.codec, "Counter/0", "0")  # latest snapshot + tail
            snap_times.append(time.perf_counter() - t0)
        assert loaded.instance.state.count == events
    return {"events_per_s": events / best, "with_snapshots_ms": statistics.median(snap_times) * 1e3}


# -- memory and first-reply run in child processes: clean memory, clean start ------------------------------


def child(kind: str, workdir: Path, *args: str) -> Result:
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks._child", kind, str(workdir), *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT.parent,
    )
    if out.returncode != 0:
        raise RuntimeError(f"benchmark child {kind} failed:\n{out.stderr}")
    result: Result = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def startup(workdir: Path, quick: bool) -> Result:
    results: Result = {}
    sizes = [(10_000, 10)] if quick else [(10_000, 10), (100_000, 10)]
    for actors, per_actor in sizes:
        path = fresh(workdir, f"startup-{actors}.db")
        t0 = time.perf_counter()
        synthesize(path, actors, per_actor)
        built = time.perf_counter() - t0
        figure = child("startup", workdir, path, str(actors))
        results[f"{actors * per_actor}_events_s"] = figure["first_reply_s"]
        results[f"{actors * per_actor}_events_built_s"] = built
    return results


# -- the table ----------------------------------------------------------------------------------

SCENARIOS = (
    "tells", "asks", "rebuild", "memory", "first-reply", "replication", "http", "timers", "effects", "psow", "console",
    "drill", "postgres", "dbos", "payloads", "streams", "compact", "nodes",
)  # fmt: skip
"""Every scenario but ``raw``, the baseline, which always runs; named for what they measure."""
LETTERS = dict(zip("bcdefghijk", ("tells", "asks", "rebuild", "memory", "first-reply", "replication", "http",
                                  "timers", "effects", "psow"), strict=True))  # fmt: skip
"""The letters earlier notes and issues used: --only b,c,d still works."""


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--only",
        default=",".join(SCENARIOS),
        help=f"comma-separated scenarios: {', '.join(SCENARIOS)} (or their old letters a-k)",
    )
    parser.add_argument("--dir", default=str(ROOT / "results" / "work"), help="where journal files go")
    parser.add_argument("--quick", action="store_true", help="smaller memory and first-reply runs, for a smoke run")
    args = parser.parse_args()
    only = {LETTERS.get(name, name) for name in args.only.split(",")}
    unknown = only - set(SCENARIOS)
    if unknown:
        parser.error(f"no scenario {', '.join(sorted(unknown))}; there are: {', '.join(SCENARIOS)}")
    workdir = Path(args.dir)
    workdir.mkdir(parents=True, exist_ok=True)
    results: Result = {"when": time.strftime("%Y-%m-%dT%H:%M:%S"), "python": sys.version.split()[0]}
    results["raw"] = raw_baseline(workdir)  # always: every ratio is to this run's baseline
    scenarios: dict[str, Callable[[], Result]] = {
        "tells": lambda: anyio.run(tell_throughput, workdir),
        "asks": lambda: anyio.run(sequential_asks, workdir),
        "rebuild": lambda: rebuild(workdir),
        "memory": lambda: child("rss", workdir, "20000" if args.quick else "100000"),
        "first-reply": lambda: startup(workdir, args.quick),
        # replication: paced at fractions of this run's tell rate
        "replication": lambda: _replication.run(
            workdir, results.get("tells", {}).get("messages_per_s", 20_000.0), args.quick
        ),
        "streams": lambda: {
            "chunks": anyio.run(_streams.chunks, workdir),
            "reader": _streams.reader_latency(workdir),
        },
        "timers": lambda: anyio.run(_timers.timers, workdir),
        "effects": lambda: anyio.run(_effects.effects, workdir),
        "psow": lambda: anyio.run(psow_cost, workdir),
        "postgres": lambda: _postgres.run(workdir, tell_throughput, sequential_asks),
        "dbos": lambda: _dbos.run(workdir, quick=args.quick),
        "nodes": lambda: _nodes.run(workdir, quick=args.quick),
        "console": lambda: _console.console(
            workdir, 10_000 if args.quick else 100_000, 100_000 if args.quick else 1_000_000
        ),
        "drill": lambda: _drill.run(workdir, 100_000 if args.quick else 1_000_000),
        "compact": lambda: {
            **_compact.run(workdir, 100_000 if args.quick else 1_000_000),
            "large": _compact.run_large(workdir, 5 if args.quick else 20, 40 if args.quick else 100),
        },
        "payloads": lambda: _payloads.run(workdir, args.quick, tell_throughput, sequential_asks),
        "http": lambda: {
            "http": _http.http_asks(workdir),
            "inspect": _http.inspection(workdir, 100_000 if args.quick else 1_000_000),
        },
    }
    for key, run in scenarios.items():
        if key in only:
            print(f"running {key} …", file=sys.stderr, flush=True)
            results[key] = run()
    report(results)
    out = ROOT / "results" / "latest.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"\nwritten to {out}")
    shutil.rmtree(workdir, ignore_errors=True)


def report(r: Result) -> None:
    a = r["raw"]
    rows = [
        ("raw rows/s, 1,000 per tx", a["rows_per_s"], "", ""),
        ("raw one-row commits/s", a["commits_per_s"], "", f"p50 {a['commit_p50_us']:.0f} µs"),
        (
            "raw, psow=0 (as Stele opens)",
            a["psow0_commits_per_s"],
            f"{a['psow0_commits_per_s'] / a['commits_per_s']:.2f} x commits/s",
            f"p50 {a['psow0_commit_p50_us']:.0f} µs",
        ),
    ]
    if "tells" in r:
        ratio = r["tells"]["messages_per_s"] / a["rows_per_s"]
        rows.append(("tells/s, 1,000 actors x 20", r["tells"]["messages_per_s"], f"{ratio:.3f} x rows/s", "≥ 0.07"))
    if "asks" in r:
        c = r["asks"]
        ratio = c["asks_per_s"] / a["commits_per_s"]
        rows.append(
            ("sequential asks/s", c["asks_per_s"], f"{ratio:.2f} x commits/s", "≥ 0.4, p99 ≤ 1 ms"),
        )
        rows.append(("    ask latency p50 / p99 µs", c["p50_us"], f"{c['p99_us']:.0f} µs p99", ""))
    if "rebuild" in r:
        ratio = r["rebuild"]["events_per_s"] / a["rows_per_s"]
        rows.append(("rebuild events/s, no snapshots", r["rebuild"]["events_per_s"], f"{ratio:.2f} x rows/s", "≥ 1.5"))
        rows.append(("    rebuild with snapshots, ms", r["rebuild"]["with_snapshots_ms"], "", "≤ 5 ms"))
    if "memory" in r:
        e = r["memory"]
        rows.append(
            (f"memory: peak RSS MB, {e['actors']:,} actors", e["peak_rss_mb"], f"curve {e['rss_curve_mb']}", "≤ 500")
        )
    if "first-reply" in r:
        for key, value in r["first-reply"].items():
            if key.endswith("_events_s"):
                events = int(key.split("_")[0])
                rows.append((f"first reply, {events:,} events, s", value, "", "≤ 1 s"))
    if "replication" in r:
        g = r["replication"]
        for level in ("25%", "50%", "100%"):
            lag = g["lag"][level]
            rows.append(
                (
                    f"replication lag at {level} of tells, age p50 s",
                    lag["age_p50_s"],
                    f"p99 {lag['age_p99_s']:.2f} s; commits p99 {lag['commits_p99']:.0f}; {lag['rate']:,.0f}/s; "
                    f"{lag.get('extra_uploads_per_s', 0):.1f} extra uploads/s",
                    "p99 ≤ 1.5 s up to 50%, ≤ 2 extra uploads/s",
                )
            )
        rows.append(("replication back to steady after 5 s outage, s", g["outage"]["back_to_steady_s"], "", "≤ 15 s"))
        ask = g["replicated_ask"]
        rows.append(("replicated ask p50 ms", ask["p50_ms"], f"p99 {ask['p99_ms']:.1f} ms", "p50 ≤ 30, p99 ≤ 150"))
        rest = g["restore"]
        rows.append((f"restore {rest['journal_mb']:.0f} MB + verify, s", rest["restore_and_verify_s"], "", "≤ 3 s"))
    if "http" in r:
        h = r["http"]["http"]
        rows.append(
            (
                f"HTTP asks/s, {h['clients']} clients",
                h["asks_per_s"],
                f"p50 {h['p50_ms']:.1f} ms, p99 {h['p99_ms']:.1f} ms",
                "≥ 3,000, p99 ≤ 50 ms",
            )
        )
        i = r["http"]["inspect"]
        rows.append((f"history page, {i['events']:,}-event actor, ms", i["history_page_ms"], "", "≤ 100 ms"))
        rows.append((f"state --at, {i['events']:,}-event actor, ms", i["state_at_ms"], "", "≤ 100 ms"))
    if "timers" in r:
        t = r["timers"]
        rows.append((f"timers scheduled/s, {t['timers']:,}", t["scheduled_per_s"], "", ""))
        rows.append(
            (f"timers fired/s, {t['timers']:,}", t["fired_per_s"], f"{t['early']} early", "≥ 20,000, none early")
        )
    if "effects" in r:
        j = r["effects"]
        ratio = j["effects_per_s"] / a["rows_per_s"]
        rows.append(("effects/s, 100 actors x chains of 10", j["effects_per_s"], f"{ratio:.3f} x rows/s", "≥ 0.07"))
    if "psow" in r:
        k = r["psow"]
        for psow in ("psow1", "psow0"):
            ratio = k[psow]["asks_per_s"] / a["commits_per_s"]
            rows.append(
                (f"sequential asks/s, {psow[:4]}={psow[4]}", k[psow]["asks_per_s"], f"{ratio:.2f} x commits/s",
                 f"p50 {k[psow]['p50_us']:.0f} µs, p99 {k[psow]['p99_us']:.0f} µs"),
            )  # fmt: skip
    if "postgres" in r:
        rows.extend(postgres_rows(r["postgres"]))
    if "nodes" in r:
        n = r["nodes"]
        for name in ("1 node(s)", "3 node(s)"):
            t = n[name]
            rows.append((f"asks/s over HTTP, {name}, 1,000 actors", t["asks_per_s"],
                         f"CPU s: nodes {t['node_cpu_s']:.1f}, db {t['db_cpu_s']:.1f}, load {t['load_cpu_s']:.1f}",
                         f"commit {t['commit_s']:.1f} s; {t['remote']:,} crossed"))  # fmt: skip
        k = n["takeover"]
        rows.append((f"take-over after SIGKILL, lease {k['lease_s']:g} s, p50 s", k["p50_s"],
                     f"max {k['max_s']:.2f} s over {k['cycles']} cycles", "≤ 10 s"))  # fmt: skip
    if "dbos" in r:
        d = r["dbos"]
        rows.append((f"DBOS runs/s, 10 steps, {d['dbos']['concurrency']} at a time", d["dbos"]["runs_per_s"], "",
                     "same PostgreSQL server"))  # fmt: skip
        rows.append(("Stele runs/s, 10 effects, same workload", d["stele"]["runs_per_s"], f"{d['ratio']:.1f} x DBOS",
                     "≥ 10 x DBOS"))  # fmt: skip
    if "console" in r:
        co = r["console"]
        for name, h in co["http"].items():
            scale = f"{co['actors']:,} actors" if name.startswith("overview") else f"{co['events']:,} events"
            rows.append(
                (f"console {name} ({scale}), TTFB p50 ms", h["ttfb_p50_ms"],
                 f"p99 {h['ttfb_p99_ms']:.1f}; page p50 {h['page_p50_ms']:.1f}, p99 {h['page_p99_ms']:.1f} ms",
                 "page p99 < 1,000 ms"),
            )  # fmt: skip
        for name, g in co["rendered"].items():
            rows.append(
                (f"console {name}, rendered p50 ms", g["rendered_p50_ms"],
                 f"p99 {g['rendered_p99_ms']:.1f} ms; TTFB p50 {g['ttfb_p50_ms']:.1f}, p99 {g['ttfb_p99_ms']:.1f}",
                 "< 1,000 ms"),
            )  # fmt: skip
    if "drill" in r:
        d = r["drill"]
        rows.append(
            (
                f"restore drill, {d['events']:,}-event journal, s",
                d["drill_s"],
                f"restore {d['restore_s']:.1f}, compare {d['compare_s']:.1f}, replay {d['replay_s']:.1f}, "
                f"rebuild {d['rebuild_s']:.1f}",
                "≤ 60 s",
            )
        )
    if "payloads" in r:
        conv = r["payloads"]["conversation"]
        on, off = conv["on"], conv["off"]
        calls, unique = on["calls"], on["unique_bytes"]
        for name, figures in (("on", on), ("off", off)):
            rows.append(
                (
                    f"{calls}-call conversation, payloads {name}: journal KB",
                    figures["used_bytes"] / 1024,
                    f"{figures['used_bytes'] / unique:.2f} x its {unique / 1024:,.0f} KB unique",
                    "≤ 3 x unique" if name == "on" else "",
                )
            )
            rows.append(
                (
                    f"    Litestream uploaded, payloads {name}, KB",
                    figures["uploaded_bytes"] / 1024,
                    f"{figures['uploaded_bytes'] / unique:.2f} x unique",
                    "",
                )
            )
        small = r["payloads"]["small"]
        rows.append(
            (
                "tells/s, small payloads, payloads on",
                small["on"]["tells_per_s"],
                f"{small['on']['tells_per_s'] / small['off']['tells_per_s']:.3f} x off "
                f"({small['off']['tells_per_s']:,.0f}); {small['on']['tells_per_s'] / a['rows_per_s']:.3f} x rows/s",
                "no regression",
            )
        )
        rows.append(
            (
                "sequential asks/s, small payloads, payloads on",
                small["on"]["asks_per_s"],
                f"{small['on']['asks_per_s'] / small['off']['asks_per_s']:.3f} x off "
                f"({small['off']['asks_per_s']:,.0f}); "
                f"{small['on']['asks_per_s'] / a['commits_per_s']:.2f} x commits/s",
                "no regression",
            )
        )
    if "streams" in r:
        s = r["streams"]["chunks"]
        ratio = s["chunks_per_s"] / a["rows_per_s"]
        rows.append(
            (
                f"stream chunks/s, {s['streams']:,} concurrent streams",
                s["chunks_per_s"],
                f"{ratio:.3f} x rows/s; {s['chunks_per_unit']:.0f} chunks/unit",
                "≥ 0.1",
            )
        )
        lat = r["streams"]["reader"]
        rows.append(
            (
                f"stream reader latency, journal to SSE client, p50 ms ({lat['pace_ms']:.0f} ms/token)",
                lat["p50_ms"],
                f"p99 {lat['p99_ms']:.1f} ms",
                "",
            )
        )
    if "compact" in r:
        m = r["compact"]
        rows.append(
            (
                f"compaction, {m['events']:,}-event journal, s",
                m["seconds"],
                f"{m['entries_removed']:,} entries in {m['commits']:,} commits; "
                f"file {m['file_mb_before']:.0f} -> {m['file_mb_after']:.0f} MB",
                "",
            )
        )
        rows.append(
            (
                "    other asks during it, p99 ms",
                m["asks_during"]["p99_ms"],
                f"max {m['asks_during']['max_ms']:.1f} ms; without: p99 {m['asks_without']['p99_ms']:.2f}",
                "",
            )
        )
        big = m["large"]
        rows.append(
            (
                f"compaction, {big['agents']} agents x {big['turns']} turns of large values, s",
                big["seconds"],
                f"{big['chunks_before'] - big['chunks_after']:,} of {big['chunks_before']:,} chunks; "
                f"{big['bytes_before'] / 1e6:.1f} -> {big['bytes_after'] / 1e6:.1f} MB",
                "",
            )
        )
    width = max(len(row[0]) for row in rows)
    print(f"\n{'scenario':<{width}}  {'figure':>14}  {'ratio / detail':<28} target")
    for name, value, ratio, target in rows:
        shown = f"{value:,.0f}" if value >= 100 else f"{value:.2f}" if value >= 1 else f"{value:.4f}"
        print(f"{name:<{width}}  {shown:>14}  {ratio:<28} {target}")


def postgres_rows(p: Result) -> list[tuple[str, float, str, str]]:
    """The PostgreSQL rows, each ratio to the raw baseline on the same server in the same run."""
    raw = p["raw"]
    rows = [
        (f"PostgreSQL {p['server']}: raw rows/s, unnest, 1,000 per tx", raw["rows_per_s"], "", ""),
        ("PostgreSQL raw one-row commits/s", raw["commits_per_s"], "", f"p50 {raw['commit_p50_us']:.0f} µs"),
    ]
    if "tells" in p:
        ratio = p["tells"]["messages_per_s"] / raw["rows_per_s"]
        rows.append(("PostgreSQL tells/s, 1,000 actors x 20", p["tells"]["messages_per_s"], f"{ratio:.3f} x rows/s",
                     f"≥ 0.10; writer busy {p['tells']['writer_busy_share']:.0%}"))  # fmt: skip
    if "asks" in p:
        c = p["asks"]
        ratio = c["asks_per_s"] / raw["commits_per_s"]
        rows.append(("PostgreSQL sequential asks/s", c["asks_per_s"], f"{ratio:.2f} x commits/s", "≥ 0.4"))
        rows.append(("    ask latency p50 / p99 µs", c["p50_us"], f"{c['p99_us']:.0f} µs p99", ""))
    return rows


if __name__ == "__main__":
    main()
