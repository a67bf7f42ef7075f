"""Screenshots of the console for the docs, taken in the real headless Chromium.

    python -m tests.console_screenshots docs/

A journal with a bit of everything (agents calling a tool, asking each other,
waiting for a human, failing; a dead letter; a suspended actor), served by
``serve``, photographed: the overview, and an actor's page with an entry
chosen (its state as of it, and what it changed).
"""

from __future__ import annotations

import concurrent.futures
import re
import sys
import tempfile
from pathlib import Path

import anyio

from runtime import Runtime

from . import browser as chromium_browser
from .console_agents import ACTORS, Consult, Research, bury, populate, suspend
from .served import Server

SIZE = {"width": 1400, "height": 860}


async def _journal(db: str) -> None:
    await bury(db, "Agent/poison")
    async with Runtime(db, actors=ACTORS, grace=0) as rt:
        await populate(rt, hostile=False)
        for who, question in (("grace", "How do durable agents recover?"), ("linus", "What is a journal?")):
            await rt.ask(f"Agent/{who}", Consult(question))
            await rt.ask(f"Agent/{who}", Research(question))
    await suspend(db, "Agent/drifter")


def take(folder: Path) -> list[Path]:
    """Write ``console-overview.png`` and ``console-actor.png`` into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        db = str(Path(scratch) / "agents.db")
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            pool.submit(anyio.run, _journal, db).result()
        server = Server(db, "--no-replicate", module="tests.console_agents")
        try:
            with chromium_browser.chromium() as browser:
                page = browser.new_page(viewport=SIZE)
                page.goto(server.url + "/ui/")
                page.wait_for_selector("#actor-rows tr")
                page.wait_for_timeout(500)  # the live badge settles
                overview = folder / "console-overview.png"
                page.screenshot(path=str(overview))
                page.goto(server.url + "/ui/actors/Agent/grace")
                page.get_by_role("link", name=re.compile(r"^#8 event Answered")).click()
                page.wait_for_selector("#state-body:not([hidden])")
                page.evaluate("window.scrollTo(0, 0)")
                page.wait_for_timeout(300)
                actor = folder / "console-actor.png"
                page.screenshot(path=str(actor))
        finally:
            server.stop()
    return [overview, actor]


if __name__ == "__main__":
    for made in take(Path(sys.argv[1] if len(sys.argv) > 1 else "docs")):
        print(made)
