"""Console benchmarks: the overview of 100,000 actors and the page of a 1,000,000-event actor.

A real ``python -m runtime ui`` child over synthesized journals. Time to first
byte and to the whole page over HTTP (100 loads a page), and time to a
rendered page in headless Chromium (navigation timing: the response's first
byte, and the load event, after the stylesheet and the script have run;
30 loads a page) when Debian's chromium is installed.
"""

from __future__ import annotations

import http.client
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from storage import Journal

from ._model import fresh, synthesize

ROOT = Path(__file__).parent.parent
CHROMIUM = os.environ.get("STELE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
"""The browser the tests drive (tests/browser.py): ``STELE_CHROMIUM``, else ``chromium`` on the PATH."""
Result = dict[str, Any]


def _percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_ms": statistics.median(ordered) * 1e3,
        "p99_ms": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1e3,
    }


def _http(host: str, port: int, path: str, loads: int) -> Result:
    first: list[float] = []
    whole: list[float] = []
    size = 0
    for _ in range(loads):
        conn = http.client.HTTPConnection(host, port, timeout=60)
        t0 = time.perf_counter()
        conn.request("GET", path, headers={"Accept": "text/html"})
        answer = conn.getresponse()  # the status line and headers: the first bytes
        t1 = time.perf_counter()
        body = answer.read()
        t2 = time.perf_counter()
        conn.close()
        if answer.status != 200:
            raise RuntimeError(f"{path}: HTTP {answer.status}: {body[:300]!r}")
        first.append(t1 - t0)
        whole.append(t2 - t0)
        size = len(body)
    ttfb, page = _percentiles(first), _percentiles(whole)
    return {
        "ttfb_p50_ms": ttfb["p50_ms"],
        "ttfb_p99_ms": ttfb["p99_ms"],
        "page_p50_ms": page["p50_ms"],
        "page_p99_ms": page["p99_ms"],
        "bytes": size,
    }


def _rendered(base: str, paths: dict[str, str], loads: int) -> dict[str, Result]:
    if not os.path.exists(CHROMIUM):
        return {}
    from playwright.sync_api import sync_playwright

    args = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip
    made: dict[str, Result] = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=args)
        try:
            page = browser.new_page()
            for name, path in paths.items():
                page.goto(
                    base + path, wait_until="load"
                )  # warm: the stylesheet and script cached, as a person has them
                first: list[float] = []
                loaded: list[float] = []
                for _ in range(loads):
                    page.goto(base + path, wait_until="load")
                    timing = page.evaluate(
                        "(() => { const t = performance.getEntriesByType('navigation')[0];"
                        " return [t.responseStart - t.startTime, t.loadEventEnd - t.startTime]; })()"
                    )
                    first.append(timing[0] / 1e3)
                    loaded.append((timing[1] or timing[0]) / 1e3)
                ttfb, done = _percentiles(first), _percentiles(loaded)
                made[name] = {
                    "ttfb_p50_ms": ttfb["p50_ms"],
                    "ttfb_p99_ms": ttfb["p99_ms"],
                    "rendered_p50_ms": done["p50_ms"],
                    "rendered_p99_ms": done["p99_ms"],
                }
        finally:
            browser.close()
    return made


def _serve(db: str) -> tuple[subprocess.Popen[str], str, int]:
    server = subprocess.Popen(
        [sys.executable, "-m", "runtime", "ui", "--db", db, "--http", "127.0.0.1:0", "--module", "benchmarks._model"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert server.stdout is not None
    line = server.stdout.readline()
    if not line.startswith("listening on "):
        server.kill()
        raise RuntimeError(f"ui did not start: {line!r}")
    host, port = line.split()[-1].removeprefix("http://").rsplit(":", 1)
    return server, host, int(port)


def console(workdir: Path, actors: int = 100_000, events: int = 1_000_000, loads: int = 100) -> Result:
    many = fresh(str(workdir / "console-actors.db"))
    t0 = time.perf_counter()
    synthesize(many, actors, 10)
    big = fresh(str(workdir / "console-big-actor.db"))
    synthesize(big, 1, events, snapshot_every=1000, per_step=10)
    built = time.perf_counter() - t0
    with Journal.open(big) as journal:
        info = journal.actor("Counter/0")
        assert info is not None
        middle = journal.entries_page("Counter/0", after_seq=info.last_seq // 2, limit=1)[0]
    results: Result = {"actors": actors, "events": events, "built_s": built, "http": {}, "rendered": {}}
    for db, paths in (
        (
            many,
            {
                "overview": "/ui/",
                "overview, a page deep in": f"/ui/?after=Counter/{actors // 2}",
                "overview, key search": f"/ui/?q={actors // 3}",
                "overview, idle filter": "/ui/?condition=idle",
            },
        ),
        (
            big,
            {
                "actor page, latest": "/ui/actors/Counter/0",
                "actor page, mid-journal entry with its state": f"/ui/actors/Counter/0?at={middle.position}",
                "state as of a mid-journal entry (JSON)": f"/ui/api/state?address=Counter/0&position={middle.position}",
            },
        ),
    ):
        server, host, port = _serve(db)
        try:
            for name, path in paths.items():
                _http(host, port, path, 5)  # warm up
                results["http"][name] = _http(host, port, path, loads)
            pages = {k: v for k, v in paths.items() if "JSON" not in k}
            results["rendered"].update(_rendered(f"http://{host}:{port}", pages, max(10, loads // 3)))
        finally:
            server.terminate()
            server.wait(60)
            if server.stdout is not None:
                server.stdout.close()
    return results
