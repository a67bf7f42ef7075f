"""The console's pages: the actors overview, an actor's timeline, dead letters, health, SQL.

Server-rendered HTML (Jinja2, every value escaped) with a small script for
what a page does without reloading: time travel, live updates (server-sent
events), and confirmed actions. The pages work without the script, which only
enhances them; the actions need it (they are JSON POSTs with a CSRF token).
"""

from __future__ import annotations

import logging
import os
from typing import Any

import jinja2
import msgspec
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

import storage

from . import _actions
from ._auth import Sessions
from ._forms import forms
from ._live import Changes, Watcher, event, stream
from ._model import Links, actor_view, align, duration, iso, one_line, steps, waits_of, when
from ._source import Source
from ._state import StateProblem, state_at

log = logging.getLogger("stele.console")

PAGE = 50
"""Actors on an overview page."""
TIMELINE = 200
"""Entries on a timeline page."""
FOLLOW_SCAN = 20_000
"""Entries of the receiving actor looked through to find the step of a message sent to it."""
_PACKAGE = __name__.rpartition(".")[0]


class Console:
    """The console as an ASGI app (``console.asgi``), to mount at ``prefix``."""

    def __init__(self, source: Source, sessions: Sessions, *, prefix: str = "/ui") -> None:
        self.source = source
        self.sessions = sessions
        self.prefix = prefix
        self.links = Links(prefix)
        self.watcher = Watcher(source)
        source.start_sampling()  # under serve, on the runtime's loop: the health charts start with the server
        self.templates = jinja2.Environment(
            loader=jinja2.PackageLoader(_PACKAGE, "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        actions = _actions.Actions(sessions, source)
        self.asgi = Starlette(
            routes=[
                Route("/", self.overview, methods=["GET"]),
                Route("/actors/{address:path}", self.actor, methods=["GET"]),
                Route("/follow", self.follow, methods=["GET"]),
                Route("/dead-letters", self.dead_letters, methods=["GET"]),
                Route("/health", self.health, methods=["GET"]),
                Route("/sql", self.sql, methods=["GET"]),
                Route("/login", self.login_page, methods=["GET"]),
                Route("/login", actions.login, methods=["POST"]),
                Route("/logout", actions.logout, methods=["POST"]),
                Route("/api/state", self.state, methods=["GET"]),
                Route("/api/sql", actions.sql, methods=["POST"]),
                Route("/api/resolve", actions.resolve, methods=["POST"]),
                Route("/api/retry", actions.retry, methods=["POST"]),
                Route("/api/drop", actions.drop, methods=["POST"]),
                Route("/api/resume", actions.resume, methods=["POST"]),
                Route("/api/send", actions.send, methods=["POST"]),
                Route("/live/overview", self.live_overview, methods=["GET"]),
                Route("/live/actor", self.live_actor, methods=["GET"]),
                Route("/live/health", self.live_health, methods=["GET"]),
                Mount("/static", StaticFiles(packages=[(_PACKAGE, "static")]), name="static"),
            ],
            exception_handlers={HTTPException: self._http_error, storage.StorageError: self._journal_error},
        )

    def close(self) -> None:
        """End live streams (at their next wake-up, within a second) and release the journal."""
        self.source.close()
        self.watcher.close()

    # -- rendering ----------------------------------------------------------------------------

    def render(self, request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
        """A page: ``template`` with the context every page has."""
        session = self.sessions.session(list(request.scope.get("headers") or []))
        page = self.templates.get_template(template).render(
            prefix=self.prefix,
            links=self.links,
            live=self.source.live,
            path=os.path.basename(self.source.shown),
            full_path=self.source.shown,
            origin=self.source.origin,
            signed_in=self.sessions.required and session is not None,
            csrf=self.sessions.csrf(session) if session is not None else "",
            **context,
        )
        headers = {
            "Cache-Control": "no-store",
            # Nothing but this console's own script and styles runs or loads, whatever a page holds.
            "Content-Security-Policy": (
                "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
            ),
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "same-origin",
        }
        return HTMLResponse(page, status_code=status, headers=headers)

    def problem(self, request: Request, status: int, title: str, message: str) -> HTMLResponse:
        """An error page."""
        return self.render(request, "problem.html", status, title=title, message=message)

    async def _http_error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return self.problem(request, exc.status_code, "Not here", str(exc.detail))

    async def _journal_error(self, request: Request, exc: Exception) -> Response:
        log.warning("console: %s %s: %s", request.method, request.url.path, exc)
        return self.problem(request, 503, "The journal cannot be read", str(exc))

    # -- the overview ----------------------------------------------------------------------------

    def _filters(self, request: Request) -> dict[str, str | None]:
        q = request.query_params
        condition = q.get("condition") or None
        if condition is not None and condition not in storage.ACTOR_FILTERS:
            raise HTTPException(400, f"no such condition {condition!r}: {', '.join(storage.ACTOR_FILTERS)}")
        return {"type": q.get("type") or None, "condition": condition, "q": q.get("q") or None}

    async def _page(self, request: Request) -> tuple[storage.JournalSummary, storage.ActorPage, dict[str, Any]]:
        filters = self._filters(request)
        q = request.query_params
        limit = _number(q.get("limit"), PAGE, 1, 500)
        after, before = q.get("after"), q.get("before")

        def read(journal: storage.Journal) -> tuple[storage.JournalSummary, storage.ActorPage]:
            page = journal.actor_page(
                after=after,
                before=None if after is not None else before,
                limit=limit,
                type=filters["type"],
                search=filters["q"],
                condition=filters["condition"],
            )
            return journal.summary(), page

        summary, page = await self.source.read(read)
        return summary, page, {**filters, "limit": limit if limit != PAGE else None}

    def _rows(self, page: storage.ActorPage) -> list[dict[str, Any]]:
        waits = waits_of(self.source.statistics())
        return [msgspec.to_builtins(actor_view(a, self.links, waits)) for a in page.actors]

    async def overview(self, request: Request) -> Response:
        """Every actor, in pages, filtered by type, condition and key."""
        self.source.start_sampling()
        summary, page, filters = await self._page(request)
        query = {k: v for k, v in filters.items() if v}
        return self.render(
            request,
            "overview.html",
            summary=summary,
            rows=self._rows(page),
            filters=filters,
            conditions=storage.ACTOR_FILTERS,
            previous=self.links.page("", before=page.previous, **query) if page.previous else None,
            following=self.links.page("", after=page.next, **query) if page.next else None,
            first=self.links.page("", **query),
            live_url=self.links.page("live/overview", **{**dict(request.query_params)}),
            runtime=self._runtime_line(),
        )

    def _runtime_line(self) -> dict[str, Any] | None:
        figures = self.source.statistics()
        if figures is None:
            return None
        replication = figures.replication
        return {
            "open": figures.open,
            "active": figures.active_actors,
            "steps": figures.steps_in_flight,
            "pending": figures.pending,
            "failing": figures.journal_failing,
            "at_risk": replication.commits_at_risk if replication is not None else None,
            "oldest": replication.oldest_at_risk_s if replication is not None else None,
        }

    async def live_overview(self, request: Request) -> Response:
        """The overview's rows and counts, whenever they change."""
        changes = Changes()

        async def update() -> list[bytes]:
            summary, page, _ = await self._page(request)
            return changes.event(
                "page",
                {
                    "rows": self._rows(page),
                    "summary": msgspec.to_builtins(summary),
                    "runtime": self._runtime_line(),
                },
            )

        return stream(self.watcher, update, live=self.source.live)

    # -- an actor -------------------------------------------------------------------------------

    async def actor(self, request: Request) -> Response:
        """One actor: its timeline by step, the state at a chosen entry, what waits for it, what can be done."""
        address = request.path_params["address"]
        q = request.query_params
        limit = _number(q.get("limit"), TIMELINE, 10, 2000)
        after = _optional(q.get("after"))
        before = _optional(q.get("before"))
        at = _optional(q.get("at"))
        near = _optional(q.get("near"))
        registry = self.source.registry

        def read(journal: storage.Journal) -> dict[str, Any] | None:
            detail = journal.actor_detail(address)
            if detail is None:
                return None
            last_seq = detail.summary.last_seq
            selected = None
            if at is not None:
                selected = journal.entry(at)
                if selected is not None and selected.actor != address:
                    selected = None
            elif near is not None:
                # The last entry at or before that position (its first, if it wrote none by then).
                seq = journal.seq_at(address, near)
                found = journal.entries_page(address, after_seq=max(seq - 1, 0), limit=1)
                selected = found[0] if found else None
            if after is not None:
                entries = journal.entries_page(address, after_seq=after, limit=limit + 1)
                more_after = len(entries) > limit
                entries = entries[:limit]
            else:
                top = before
                if top is None and selected is not None:
                    top = min(selected.seq + limit // 2, last_seq) + 1
                entries = journal.entries_page(address, before_seq=top, limit=limit + 1)
                entries = entries[-limit:] if len(entries) > limit else entries
                more_after = bool(entries) and entries[-1].seq < last_seq
            more_before = bool(entries) and entries[0].seq > 1
            centred = after is None and before is None and selected is not None
            entries = align(
                entries,
                trim_before=more_before and (after is None or centred),
                trim_after=more_after and (after is not None or centred),
            )
            state = None
            if selected is not None:
                state = state_at(journal, registry, address, selected.position, self.links)
            return {
                "detail": detail,
                "entries": entries,
                "selected": selected,
                "state": state,
                "more_before": more_before,
                "more_after": more_after,
            }

        try:
            got = await self.source.read(read)
        except StateProblem as exc:
            return self.problem(request, 404, "No such entry", str(exc))
        except storage.UndecodableEntry as exc:
            return self.problem(request, 500, "A journal entry is corrupt", str(exc))
        if got is None:
            return self.problem(request, 404, "No such actor", f"the journal has no actor {one_line(address)}")
        detail: storage.ActorDetail = got["detail"]
        entries: list[storage.Entry] = got["entries"]
        summary = detail.summary
        waits = waits_of(self.source.statistics())
        view = actor_view(summary, self.links, waits)
        first_seq = entries[0].seq if entries else 0
        last_seq = entries[-1].seq if entries else 0
        latest = not got["more_after"]
        desc = registry.actors.get(summary.type) if registry is not None else None
        waiting_for = [n for n in _waiting_for(self.source.statistics(), address) if not n.startswith("reply:")]
        missing = _optional(q.get("missing"))
        return self.render(
            request,
            "actor.html",
            address=one_line(address, 500),
            raw_address=address,
            actor=view,
            summary=summary,
            steps=steps(entries, self.links, more_after=got["more_after"]),
            selected=got["selected"].position if got["selected"] is not None else None,
            state=got["state"],
            older=self.links.actor(address, before=first_seq, limit=q.get("limit")) if got["more_before"] else None,
            newer=self.links.actor(address, after=last_seq, limit=q.get("limit")) if got["more_after"] else None,
            latest_url=self.links.actor(address) if not latest else None,
            live_url=self.links.page("live/actor", address=address, after=last_seq) if latest else None,
            pending=[_pending_view(p) for p in detail.pending],
            letters=[_letter_view(d) for d in detail.dead_letters],
            promises=[
                {"name": one_line(p.name, 200), "value": _payload(p.value), "time": when(p.at)} for p in detail.promises
            ],
            waiting_for=[one_line(n, 200) for n in waiting_for],
            waiting_raw=waiting_for,
            forms=forms(desc) if desc is not None and self.source.live else [],
            state_url=self.links.page("api/state", address=address),
            missing=missing,
            missing_after=_optional(q.get("after_position")),
            has_code=registry is not None and desc is not None,
        )

    async def state(self, request: Request) -> Response:
        """``GET /api/state?address=&position=``: the state as of one entry, as JSON (time travel)."""
        address = request.query_params.get("address", "")
        position = _optional(request.query_params.get("position"))
        if not address or position is None:
            return _json({"error": "malformed", "message": "give address and position"}, 400)

        def read(journal: storage.Journal) -> Any:
            return state_at(journal, self.source.registry, address, position, self.links)

        try:
            made = await self.source.read(read)
        except StateProblem as exc:
            return _json({"error": "not_found", "message": str(exc)}, 404)
        except storage.UndecodableEntry as exc:
            return _json({"error": exc.code, "message": str(exc)}, 500)
        return _json(msgspec.to_builtins(made))

    async def follow(self, request: Request) -> Response:
        """The step of actor ``to`` that processes message ``step``, sent at journal position ``after``.

        Message ids are not in the receiver's index, so its entries from the
        sending position on are read, up to :data:`FOLLOW_SCAN` of them: a
        message is processed soon after it is sent, unless it waits (a timer,
        a backlog), and then the page says it was not found yet.
        """
        q = request.query_params
        to = q.get("to", "")
        step = _optional(q.get("step"))
        after = _optional(q.get("after")) or 0
        if not to or step is None:
            raise HTTPException(400, "give to, step and after")

        def find(journal: storage.Journal) -> int | None:
            seq = journal.seq_at(to, after)
            looked = 0
            while looked < FOLLOW_SCAN:
                page = journal.entries_page(to, after_seq=seq, limit=1000)
                for entry in page:
                    if entry.step == step:
                        return entry.position
                if len(page) < 1000:
                    return None
                looked += len(page)
                seq = page[-1].seq
            return None

        position = await self.source.read(find)
        if position is not None:
            return RedirectResponse(self.links.actor(to, at=position) + f"#entry-{position}", 303)
        return RedirectResponse(self.links.actor(to, near=after, missing=step, after_position=after), 303)

    async def live_actor(self, request: Request) -> Response:
        """New entries of one actor, and its condition, as they happen."""
        address = request.query_params.get("address", "")
        last = [_optional(request.query_params.get("after")) or 0]
        changes = Changes()

        async def update() -> list[bytes]:
            def read(journal: storage.Journal) -> tuple[list[storage.Entry], storage.ActorDetail | None]:
                return journal.entries_page(address, after_seq=last[0], limit=500), journal.actor_detail(address)

            entries, detail = await self.source.read(read)
            sent: list[bytes] = []
            if entries:
                last[0] = entries[-1].seq
                views = [msgspec.to_builtins(v) for step in reversed(steps(entries, self.links)) for v in step.entries]
                sent.append(event("entries", views))
            if detail is not None:
                waits = waits_of(self.source.statistics())
                sent += changes.event(
                    "actor",
                    {
                        **msgspec.to_builtins(actor_view(detail.summary, self.links, waits)),
                        "waiting_for": [
                            n for n in _waiting_for(self.source.statistics(), address) if not n.startswith("reply:")
                        ],
                        "inbox": [_pending_view(p) for p in detail.pending],
                    },
                )
            return sent

        return stream(self.watcher, update, live=self.source.live)

    # -- dead letters, health, SQL ---------------------------------------------------------------------

    async def dead_letters(self, request: Request) -> Response:
        """Every dead letter, with retry and drop."""
        letters = await self.source.read(lambda journal: journal.dead_letters())
        return self.render(request, "dead_letters.html", letters=[_letter_view(d) for d in letters])

    async def health(self, request: Request) -> Response:
        """Replication, the WAL, the journal's health, backpressure."""
        self.source.start_sampling()
        figures = await self._health_figures()
        return self.render(request, "health.html", figures=figures, live_url=self.links.page("live/health"))

    async def _health_figures(self) -> dict[str, Any]:
        def read(journal: storage.Journal) -> dict[str, Any]:
            summary = journal.summary()
            return {
                "summary": msgspec.to_builtins(summary),
                "module": journal.meta("module"),
                "http": journal.meta("http"),
            }

        made = await self.source.read(read)
        made["files"] = self.source.file_sizes()
        figures = self.source.statistics()
        rt = self.source.runtime
        if figures is not None and rt is not None:
            replication = figures.replication
            made["runtime"] = {
                "open": figures.open,
                "active_actors": figures.active_actors,
                "addresses": figures.addresses,
                "steps_in_flight": figures.steps_in_flight,
                "pending": figures.pending,
                "max_pending": rt.limits.max_pending,
                "mailbox_depth": figures.mailbox_depth,
                "deepest_mailbox": figures.deepest_mailbox,
                "max_mailbox": rt.limits.max_mailbox,
                "journal_failing": figures.journal_failing,
                "timers": figures.timers,
                "next_timer": when(figures.next_timer_due) if figures.next_timer_due else "-",
                "commits": figures.writer.batches,
                "units": figures.writer.units,
                "durability": rt.durability,
            }
            made["replication"] = (
                {
                    **msgspec.to_builtins(replication),
                    "replicated_at_text": when(replication.replicated_at),
                    "checked_at_text": when(replication.checked_at),
                    "oldest_text": duration(replication.oldest_at_risk_s) or "0 s",
                }
                if replication is not None
                else None
            )
            made["history"] = [msgspec.to_builtins(sample) for sample in self.source.history]
        else:
            made["runtime"] = None
            made["replication"] = None
            made["history"] = []
        return made

    async def live_health(self, request: Request) -> Response:
        """The health page's figures, every second or two."""
        changes = Changes()

        async def update() -> list[bytes]:
            return changes.event("health", await self._health_figures())

        return stream(self.watcher, update, live=self.source.live)

    async def sql(self, request: Request) -> Response:
        """A query box over the journal's views."""
        views = []
        for name, (what, _) in storage.VIEWS.items():
            views.append({"name": name, "what": what})
        return self.render(request, "sql.html", views=views, query=request.query_params.get("q", ""))

    async def login_page(self, request: Request) -> Response:
        """Sign in with the server's token."""
        back = request.query_params.get("next", "")
        if not back.startswith(self.prefix + "/") or back.startswith("//"):
            back = self.prefix + "/"
        return self.render(request, "login.html", next=back, required=self.sessions.required)


def _pending_view(p: storage.Pending) -> dict[str, Any]:
    kind = "timer" if p.timer_id else ("ask from " + p.reply_to if p.reply_to else "message")
    return {
        "id": p.id,
        "kind": one_line(kind, 200),
        "handler": one_line(p.handler, 100),
        "payload": _payload(p.payload),
        "due": when(p.due) if p.due else "",
        "due_iso": iso(p.due),
        "attempts": p.attempts,
        "sender": one_line(p.sender or "", 200),
        "time": when(p.at),
    }


def _letter_view(d: storage.DeadLetter) -> dict[str, Any]:
    return {
        "id": d.id,
        "address": one_line(d.address, 300),
        "raw_address": d.address,
        "handler": one_line(d.handler, 100),
        "payload": _payload(d.payload),
        "attempts": d.attempts,
        "reason": one_line(d.reason, 600),
        "time": when(d.at),
        "sender": one_line(d.sender or "", 200),
    }


def _payload(data: bytes) -> str:
    text = storage.payload_json(data)
    return one_line(text, 400) if text is not None else f"({len(data)} bytes, not msgpack)"


def _waiting_for(statistics: Any, address: str) -> list[str]:
    if statistics is None:
        return []
    return [name for who, name in statistics.waiting_promises if who == address]


def _number(raw: str | None, default: int, low: int, high: int) -> int:
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise HTTPException(400, f"not a whole number: {raw[:40]!r}") from None
    return max(low, min(high, value))


def _optional(raw: str | None) -> int | None:
    if raw is None or raw == "":
        return None
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 18:
        raise HTTPException(400, f"not a position or sequence number: {raw[:40]!r}")
    return int(raw)


def _json(body: Any, status: int = 200) -> Response:
    return Response(msgspec.json.encode(body), status_code=status, media_type="application/json")
