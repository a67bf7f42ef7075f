"""The console in a real headless Chromium: what a person does with it.

Open the overview, find an actor, open its page, see its timeline, choose an
entry and see the state as of it; resolve a promise through the form and see
the actor go on; watch a new entry arrive without reloading; see hostile text
shown as text; send a message, retry and drop dead letters, resume an actor;
query the journal; and follow a file that another process writes. A script
error, or a violation of the page's Content-Security-Policy, fails the test.
"""

from __future__ import annotations

import concurrent.futures
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from runtime import Runtime

from . import browser as chromium_browser
from .console_agents import HOSTILE
from .models import Account, Deposit
from .served import Server, request
from .test_console import build

TIMEOUT_MS = 10_000
"""How long an expectation waits for the page (a bound on a wait, not a timed assertion)."""


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    problem = chromium_browser.missing()
    if problem is not None:
        pytest.fail(problem)
    with chromium_browser.chromium() as launched:
        yield launched


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    from playwright.sync_api import expect

    expect.set_options(timeout=TIMEOUT_MS)
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    opened = context.new_page()
    problems: list[str] = []
    opened.on("pageerror", lambda exc: problems.append(f"script error: {exc}"))
    refused = "Failed to load resource: the server responded with a status of 4"  # an answer the test asked for

    def console(msg: Any) -> None:
        if msg.type == "error" and not msg.text.startswith(refused):
            problems.append(f"console: {msg.text}")

    opened.on("console", console)
    yield opened
    context.close()
    assert problems == []


@pytest.fixture(scope="module")
def journal(tmp_path_factory: pytest.TempPathFactory) -> str:
    db = str(tmp_path_factory.mktemp("browser") / "journal.db")
    with concurrent.futures.ThreadPoolExecutor(1) as pool:  # Playwright keeps a loop in this thread
        pool.submit(build, db).result()
    return db


@pytest.fixture
def served(journal: str, tmp_path: Path) -> Iterator[Server]:
    copy = tmp_path / "journal.db"
    copy.write_bytes(Path(journal).read_bytes())
    server = Server(str(copy), "--no-replicate", module="tests.console_agents")
    yield server
    if server.proc.poll() is None:
        assert server.stop() == 0


def mark(page: Any) -> None:
    """Mark the document: a reload would lose the mark (live means without reloading)."""
    page.evaluate("window.steleMark = 'still here'")


def not_reloaded(page: Any) -> bool:
    return bool(page.evaluate("window.steleMark === 'still here'"))


def entry(page: Any, seq: int, label: str) -> Any:
    return page.get_by_role("link", name=re.compile(rf"^#{seq} {re.escape(label)}"))


def test_find_an_actor_open_its_timeline_and_travel_in_time(served: Server, page: Any) -> None:
    from playwright.sync_api import expect

    page.goto(served.url + "/ui/")
    expect(page.get_by_role("heading", name="Actors", exact=True)).to_be_visible()
    page.get_by_label("Key contains").fill("ada")
    page.get_by_role("button", name="Filter").click()
    rows = page.locator("#actor-rows tr")
    expect(rows).to_have_count(1)
    page.get_by_role("link", name="Agent/ada").click()
    expect(page.get_by_role("heading", name=re.compile("ada"), level=1)).to_be_visible()
    timeline = page.locator("#steps")
    expect(timeline.get_by_role("heading", name=re.compile("^research"))).to_have_count(2)
    expect(timeline.get_by_role("heading", name=re.compile("^consult"))).to_have_count(1)
    expect(timeline).to_contain_text("effect lookup")
    mark(page)

    entry(page, 3, "event Noted").click()  # the first question noted: one question in the state
    state = page.locator("#state-json")
    expect(state).to_contain_text("Why is the sky blue?")
    expect(state).not_to_contain_text("What is a durable actor?")
    expect(page.locator("#state-changes")).to_contain_text("state.questions[0]")
    expect(page.locator("#state-changes")).to_contain_text("added")
    expect(page.get_by_role("heading", name="State as of #3")).to_be_visible()
    assert "at=" in page.url

    entry(page, 10, "event Answered").click()  # later: both questions, the second answer just added
    expect(state).to_contain_text("What is a durable actor?")
    expect(page.locator("#state-changes")).to_contain_text('state.answers["What is a durable actor?"]')
    entry(page, 11, "send").click()  # a send changes no state
    expect(page.locator("#state-changes")).to_contain_text("nothing")
    assert not_reloaded(page)


def test_resolve_a_promise_through_the_form_and_see_the_actor_continue(served: Server, page: Any) -> None:
    from playwright.sync_api import expect

    page.goto(served.url + "/ui/actors/Agent/bob")
    expect(page.locator("#actor-condition")).to_have_text("waiting")
    expect(page.locator("#actor-detail")).to_contain_text("promise 'approval'")
    mark(page)
    page.get_by_label("Value (JSON)").first.fill('{"by": "ada", "ok": true}')
    page.get_by_role("button", name="Resolve approval").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text("Resolve promise “approval” of Agent/bob")
    expect(dialog).to_contain_text('approval = {"by": "ada", "ok": true}')
    dialog.get_by_role("button", name="Resolve").click()
    timeline = page.locator("#steps")
    expect(timeline).to_contain_text("promise approval")
    expect(timeline).to_contain_text("event Decided")
    expect(timeline).to_contain_text("the budget: {'by': 'ada', 'ok': True}")
    expect(page.locator("#steps .step").first.locator(".step-status")).to_have_text("ok")
    expect(page.locator("#actor-condition")).to_have_text("idle")
    expect(page.get_by_role("button", name="Resolve approval")).to_have_count(0)  # nothing waits any more
    assert not_reloaded(page)


def test_cancelling_the_confirmation_does_nothing(served: Server, page: Any) -> None:
    from playwright.sync_api import expect

    page.goto(served.url + "/ui/actors/Agent/bob")
    page.get_by_role("button", name="Resolve approval").click()
    page.get_by_role("dialog").get_by_role("button", name="Cancel").click()
    expect(page.get_by_role("dialog")).to_be_hidden()
    page.reload()
    expect(page.locator("#actor-condition")).to_have_text("waiting")  # still: nothing was sent


def test_a_new_entry_arrives_live(served: Server, page: Any) -> None:
    from playwright.sync_api import expect

    page.goto(served.url + "/ui/actors/Librarian/main")
    expect(page.locator("#stream-state")).to_have_text("updating live")
    mark(page)
    status, _ = request(f"{served.url}/actors/Librarian/main/file", {"topic": "live", "summary": "it arrived"})
    assert status == 200
    timeline = page.locator("#steps")
    expect(timeline.locator(".step").first).to_contain_text("file")
    expect(timeline.locator(".step").first).to_contain_text('"it arrived"')
    expect(timeline.locator(".step").first.locator(".step-status")).to_have_text("ok")
    expect(page.locator("#actor-length")).to_have_text("14")
    assert not_reloaded(page)

    page.goto(served.url + "/ui/")
    mark(page)
    row = page.locator('#actor-rows tr[data-address="Librarian/main"]')
    expect(row).to_contain_text("14")
    request(f"{served.url}/actors/Librarian/main/file", {"topic": "again", "summary": "and again"})
    expect(row).to_contain_text("17")
    assert not_reloaded(page)


def test_hostile_text_is_shown_as_text(served: Server, page: Any) -> None:
    from playwright.sync_api import expect

    page.goto(served.url + "/ui/")
    link = page.get_by_role("link", name=f"Agent/{HOSTILE}", exact=True)
    expect(link).to_be_visible()
    link.click()
    expect(page.locator("h1")).to_contain_text("<script>document.title='pwned'</script>")
    expect(page.locator("#steps")).to_contain_text("<img src=x onerror=")
    assert page.locator("img").count() == 0 and "pwned" not in page.evaluate("document.title.slice(-8)")
    entry(page, 4, "event Answered").click()
    expect(page.locator("#state-json")).to_contain_text("<script>document.title='pwned'</script>")
    # Live: the same text arriving through the page's script is still text.
    page.goto(served.url + "/ui/actors/Agent/ada")
    mark(page)
    assert request(f"{served.url}/actors/Agent/ada/research", {"question": HOSTILE + " arrived live"})[0] == 200
    newest = page.locator("#steps .step").first
    expect(newest).to_contain_text("arrived live")
    expect(newest).to_contain_text("<img src=x onerror=")
    assert page.locator("img").count() == 0
    assert page.evaluate("document.title") == "Agent/ada · Stele"
    assert not_reloaded(page)


def test_send_a_message_from_a_form_made_from_its_type(served: Server, page: Any) -> None:
    from playwright.sync_api import expect

    page.goto(served.url + "/ui/actors/Agent/ada")
    page.get_by_role("region", name="Send a message").get_by_text("research", exact=True).click()  # its form opens
    page.get_by_label(re.compile("^question")).fill("Is this a form?")
    page.get_by_label(re.compile("^depth")).fill("2")
    page.get_by_role("button", name="Send research").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text('"question": "Is this a form?"')
    expect(dialog).to_contain_text('"depth": 2')
    dialog.get_by_role("button", name="Send").click()
    reply = page.locator("form[data-handler=research] .reply")
    expect(reply).to_contain_text("HTTP 200")
    expect(reply).to_contain_text("found 15 things about Is this a form?")
    expect(page.locator("#steps .step").first).to_contain_text("Is this a form?")
    steps = page.locator("#steps .step").count()
    depth = page.get_by_label(re.compile("^depth"))
    depth.fill("1.5")  # not a whole number: the form refuses it before anything is sent
    page.get_by_role("button", name="Send research").click()
    assert depth.evaluate("input => input.validity.valid") is False
    expect(dialog).to_be_hidden()
    assert page.locator("#steps .step").count() == steps


def test_retry_and_drop_dead_letters_and_resume_a_suspended_actor(served: Server, page: Any) -> None:
    from playwright.sync_api import expect

    page.goto(served.url + "/ui/dead-letters")
    letters = page.locator(".letters > li")
    expect(letters).to_have_count(2)
    expect(letters.first).to_contain_text("Agent/poison1")
    letters.first.get_by_role("button", name="Retry").click()
    expect(page.get_by_role("dialog")).to_contain_text("back in its actor's inbox")
    page.get_by_role("dialog").get_by_role("button", name="Retry").click()
    expect(page.locator("#status")).to_contain_text("back in its actor's inbox")
    expect(letters).to_have_count(1)  # the page reloads after an action
    letters.first.get_by_role("button", name="Drop").click()
    page.get_by_role("dialog").get_by_role("button", name="Drop").click()
    expect(page.get_by_text("None.")).to_be_visible()

    page.goto(served.url + "/ui/?condition=suspended")
    page.get_by_role("link", name="Agent/drifter").click()
    expect(page.locator("#actor-condition")).to_have_text("suspended")
    expect(page.get_by_role("heading", name="Suspended")).to_be_visible()
    expect(page.locator("main")).to_contain_text("non-determinism")
    page.get_by_role("button", name="Resume").click()
    page.get_by_role("dialog").get_by_role("button", name="Resume").click()
    expect(page.locator("#actor-condition")).to_have_text("waiting")  # re-ran against its journal, waits for go
    expect(page.get_by_role("button", name="Resolve go")).to_be_visible()


def test_query_the_journal_in_sql(served: Server, page: Any) -> None:
    from playwright.sync_api import expect

    page.goto(served.url + "/ui/sql")
    query = page.get_by_label("Query")
    query.fill("SELECT address, last_seq FROM actors WHERE type = 'Librarian'")
    page.get_by_role("button", name="Run").click()
    result = page.locator("#sql-result")
    expect(result.locator("thead")).to_contain_text("last_seq")
    expect(result.locator("tbody tr")).to_have_count(1)
    expect(result.locator("tbody")).to_contain_text("Librarian/main")
    query.fill("DELETE FROM main.journal")
    page.get_by_role("button", name="Run").click()
    expect(page.locator("#sql-info")).to_contain_text("only reading is allowed")
    page.get_by_role("button", name="effect durations").click()
    page.get_by_role("button", name="Run").click()
    expect(result.locator("tbody")).to_contain_text("lookup")


def test_a_read_only_console_follows_a_file_another_process_writes(db: str, page: Any) -> None:
    from playwright.sync_api import expect

    async def deposit(amount: int) -> None:
        async with Runtime(db, actors=[Account]) as rt:
            await rt.ask("Account/alice", Deposit(amount))

    chromium_browser.off_loop(deposit, 5)
    server = Server(db, module=None)  # python -m runtime ui --db DB
    try:
        page.goto(server.url + "/ui/actors/Account/alice")
        expect(page.locator(".badge.ro")).to_have_text("read-only")
        expect(page.get_by_role("heading", name="Send a message")).to_have_count(0)
        expect(page.locator("#stream-state")).to_have_text("updating live")
        mark(page)
        chromium_browser.off_loop(deposit, 7)  # another process's runtime, as far as the console can tell
        expect(page.locator("#steps .step")).to_have_count(2)
        expect(page.locator("#steps .step").first).to_contain_text('deposit({"amount": 7})')
        assert not_reloaded(page)
    finally:
        assert server.stop() == 0


def test_the_docs_screenshots_can_be_taken(tmp_path: Path) -> None:
    from .console_screenshots import SIZE, take

    with concurrent.futures.ThreadPoolExecutor(1) as pool:  # its own Playwright, away from this module's
        made = pool.submit(take, tmp_path).result()
    for path in made:
        data = path.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
        assert (width, height) == (SIZE["width"], SIZE["height"])
