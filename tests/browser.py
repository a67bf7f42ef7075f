"""A real headless Chromium (Debian's ``chromium`` package), driven by Playwright.

Playwright's own browser download cannot be had here, so it launches the
system's Chromium by path; ``.ci/run`` installs it when it is missing.
"""

from __future__ import annotations

import concurrent.futures
import os
import shutil
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import anyio

T = TypeVar("T")

CHROMIUM = os.environ.get("STELE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
"""The browser: ``STELE_CHROMIUM`` (which ``.ci/run`` sets), else ``chromium`` on the PATH."""
ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
]


def missing() -> str | None:
    """Why the browser tests cannot run here, or None."""
    if not os.path.exists(CHROMIUM):
        return (
            f"no Chromium at {CHROMIUM}: install Debian's chromium package (apt-get install chromium), as .ci/run does"
        )
    return None


@contextmanager
def chromium() -> Iterator[Any]:
    """A launched browser (Playwright's ``Browser``)."""
    from playwright.sync_api import sync_playwright

    problem = missing()
    if problem is not None:
        raise RuntimeError(problem)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield browser
        finally:
            browser.close()


def off_loop(fn: Callable[..., Awaitable[T]], *args: Any) -> T:
    """``anyio.run(fn, *args)`` in a thread of its own: Playwright's sync API keeps a loop in this one."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(anyio.run, fn, *args).result()
