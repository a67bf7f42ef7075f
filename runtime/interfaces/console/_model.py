"""What the console's pages show, as plain records: entries, steps, actors, states and their changes.

Every string here that came from a journal is text, never markup: templates
escape it, and the page's script puts it in the document with ``textContent``.
Unprintable characters (terminal escapes, bidirectional overrides) are shown
escaped, as the command line shows them. A payload that does not decode is
shown as what it is (its size and the error), never as a failed page.
"""

from __future__ import annotations

import datetime
import json
import urllib.parse
from collections.abc import Sequence
from typing import Any

import msgspec

import storage
from storage import EntryKind

from ..._records import (
    cancel_decoder,
    chunk_decoder,
    effect_decoder,
    message_decoder,
    reply_decoder,
    request_decoder,
    send_decoder,
    start_decoder,
    timer_decoder,
)
from .._text import json_line, plain

SUMMARY = 240
"""Characters of a one-line summary."""
DETAIL = 64 * 1024
"""Characters of a payload's full text on the page (beyond: cut, and said so)."""
MAX_CHANGES = 200


def when(at: float | None) -> str:
    """UTC time with milliseconds, or ``-``."""
    if at is None:
        return "-"
    try:
        moment = datetime.datetime.fromtimestamp(at, datetime.UTC)
    except (OverflowError, OSError, ValueError):
        return plain(repr(at))
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def iso(at: float | None) -> str:
    """ISO 8601 for ``<time datetime>``."""
    if at is None:
        return ""
    try:
        return datetime.datetime.fromtimestamp(at, datetime.UTC).isoformat(timespec="milliseconds")
    except (OverflowError, OSError, ValueError):
        return ""


def duration(seconds: float | None) -> str:
    """A duration the way a person reads it."""
    if seconds is None or seconds < 0:
        return ""
    if seconds < 1:
        return f"{seconds * 1000:.1f} ms"
    if seconds < 120:
        return f"{seconds:.2f} s"
    return f"{seconds / 60:.1f} min"


def one_line(text: str, limit: int = SUMMARY) -> str:
    """``text`` on one line, escaped, cut at ``limit``."""
    shown = plain(text)
    return shown if len(shown) <= limit else shown[: limit - 1] + "…"


def pretty(value: Any) -> str:
    """``value`` as indented JSON, unprintable characters escaped, cut at :data:`DETAIL`."""
    text = json_line(_builtins(value), indent=2)
    return text if len(text) <= DETAIL else text[:DETAIL] + f"\n… ({len(text) - DETAIL:,} more characters)"


def compact(value: Any) -> str:
    """``value`` as one line of JSON."""
    return json_line(_builtins(value))


def _builtins(value: Any) -> Any:
    try:
        return msgspec.to_builtins(value, str_keys=True, enc_hook=repr)
    except (TypeError, ValueError, OverflowError, RecursionError):
        return repr(value)


def untyped(data: bytes) -> Any:
    """A msgpack payload decoded without its type (raises what msgspec raises)."""
    return msgspec.msgpack.decode(data)


# -- links ---------------------------------------------------------------------------------


class Links:
    """The console's URLs, with every part that came from a journal encoded."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def actor(self, address: str, **query: Any) -> str:
        """An actor's page."""
        path = f"{self.prefix}/actors/{urllib.parse.quote(address, safe='/')}"
        args = {k: v for k, v in query.items() if v is not None}
        return path + ("?" + urllib.parse.urlencode(args) if args else "")

    def follow(self, to: str, step: int, after: int) -> str:
        """The step of ``to`` that processes message ``step``, sent at position ``after``."""
        return f"{self.prefix}/follow?" + urllib.parse.urlencode({"to": to, "step": step, "after": after})

    def page(self, name: str, **query: Any) -> str:
        """Another page of the console."""
        args = {k: v for k, v in query.items() if v is not None and v != ""}
        return f"{self.prefix}/{name}" + ("?" + urllib.parse.urlencode(args) if args else "")


# -- entries and steps -------------------------------------------------------------------------


class EntryView(msgspec.Struct, kw_only=True):
    """One journal entry as the timeline shows it."""

    position: int
    seq: int
    step: int
    kind: str
    type: str
    time: str
    iso: str
    label: str
    summary: str
    detail: str
    ok: bool | None = None
    took: str = ""
    attempt: int = 0
    link: str | None = None
    link_text: str | None = None


def entry_view(entry: storage.Entry, links: Links) -> EntryView:
    """``entry`` decoded for a person; a payload that does not decode says so."""
    view = EntryView(
        position=entry.position,
        seq=entry.seq,
        step=entry.step,
        kind=str(entry.kind),
        type=plain(entry.type),
        time=when(entry.at),
        iso=iso(entry.at),
        label=f"{entry.kind} {one_line(entry.type, 80)}",
        summary="",
        detail="",
    )
    try:
        _describe(entry, view, links)
    except (msgspec.DecodeError, msgspec.ValidationError, TypeError, ValueError, RecursionError) as exc:
        view.summary = one_line(f"undecodable payload ({len(entry.data)} bytes): {exc}")
        view.detail = entry.data[:4096].hex(" ")
        view.ok = None
    return view


def _describe(entry: storage.Entry, view: EntryView, links: Links) -> None:
    kind = entry.kind
    if kind == EntryKind.MESSAGE:
        message = message_decoder.decode(entry.data)
        body = untyped(message.body)
        view.label = f"message {one_line(message.handler, 80)}"
        view.summary = one_line(f"{message.handler}({compact(body)})")
        view.detail = pretty({"handler": message.handler, "body": body, "sender": message.sender})
        if message.sender:
            view.link = links.actor(message.sender, near=entry.position)
            view.link_text = one_line(f"from {message.sender}", 120)
    elif kind in (EntryKind.EFFECT, EntryKind.ATTEMPT):
        record = effect_decoder.decode(entry.data)
        name = entry.type
        view.attempt = record.attempt
        view.ok = record.ok
        view.took = duration(record.finished - record.started) if record.finished else ""
        if name.startswith("promise:"):
            view.label = f"promise {one_line(name[8:], 80)}"
        elif name.startswith("ask:"):
            view.label = f"ask {one_line(name[4:], 80)}"
        else:
            view.label = f"{kind} {one_line(name, 80)}"
        if kind == EntryKind.ATTEMPT:
            view.summary = one_line(
                f"attempt {record.attempt} failed: {record.error_type}: {record.error}; next at {when(record.retry_at)}"
            )
            view.detail = pretty({"error_type": record.error_type, "error": record.error, "retry_at": record.retry_at})
        elif record.ok:
            result = untyped(record.result)
            if name.startswith("ask:"):
                reply = reply_decoder.decode(record.result)
                result = untyped(reply.value) if reply.ok else {"error_type": reply.error_type, "error": reply.error}
            view.summary = one_line(f"→ {compact(result)}")
            view.detail = pretty(result)
        else:
            view.summary = one_line(f"{record.error_type}: {record.error}")
            view.detail = pretty({"error_type": record.error_type, "error": record.error})
        if record.attempt > 1:
            view.summary = one_line(f"attempt {record.attempt}: {view.summary}")
    elif kind == EntryKind.START:
        start = start_decoder.decode(entry.data)
        view.attempt = start.attempt
        again = start.attempt > 1
        view.label = f"{'restart' if again else 'start'} {one_line(entry.type, 80)}"
        view.summary = f"attempt {start.attempt} starts over" if again else "the stream begins"
        view.detail = pretty({"effect": start.index, "attempt": start.attempt})
    elif kind == EntryKind.CHUNK:
        chunk = chunk_decoder.decode(entry.data)
        value = untyped(bytes(chunk.value))
        view.attempt = chunk.attempt
        view.summary = one_line(compact(value))
        view.detail = pretty(value)
    elif kind == EntryKind.EVENT:
        value = untyped(entry.data)
        view.summary = one_line(compact(value))
        view.detail = pretty(value)
    elif kind == EntryKind.SEND:
        send = send_decoder.decode(entry.data)
        body = untyped(send.body)
        view.label = "send"
        view.summary = one_line(f"→ {send.to} {send.handler}({compact(body)})")
        view.detail = pretty({"to": send.to, "handler": send.handler, "body": body, "message": send.step})
        view.link = links.follow(send.to, send.step, entry.position)
        view.link_text = one_line(f"follow to {send.to}", 120)
    elif kind == EntryKind.REQUEST:
        request = request_decoder.decode(entry.data)
        body = untyped(request.body)
        view.label = "ask"
        view.summary = one_line(f"→ {request.to} {request.handler}({compact(body)})")
        view.detail = pretty({"to": request.to, "handler": request.handler, "body": body, "message": request.step})
        view.link = links.follow(request.to, request.step, entry.position)
        view.link_text = one_line(f"follow to {request.to}", 120)
    elif kind == EntryKind.TIMER:
        timer = timer_decoder.decode(entry.data)
        body = untyped(timer.body)
        view.label = "timer"
        view.summary = one_line(f"→ {timer.to} {timer.handler}({compact(body)}) due {when(timer.due)}")
        view.detail = pretty({"id": timer.id, "to": timer.to, "handler": timer.handler, "body": body, "due": timer.due})
        view.link = links.follow(timer.to, timer.step, entry.position)
        view.link_text = one_line(f"follow to {timer.to}", 120)
    elif kind == EntryKind.CANCEL:
        cancel = cancel_decoder.decode(entry.data)
        view.label = "cancel"
        view.summary = one_line(f"timer {cancel.id}")
        view.detail = pretty({"timer": cancel.id})
    elif kind == EntryKind.REPLY:
        reply = reply_decoder.decode(entry.data)
        view.ok = reply.ok
        if reply.ok:
            value = untyped(reply.value)
            view.label = "reply"
            view.summary = one_line(compact(value))
            view.detail = pretty(value)
        else:
            view.label = "reply error"
            view.summary = one_line(f"{reply.error_type}: {reply.error}")
            view.detail = pretty({"error_type": reply.error_type, "error": reply.error})


class StepView(msgspec.Struct, kw_only=True):
    """The entries one message's step wrote."""

    step: int
    handler: str
    status: str
    """``ok``, ``error``, ``open`` (no reply yet), or ``partial`` (it goes on on another page)."""
    time: str
    iso: str
    took: str
    entries: list[EntryView]


def groups(entries: Sequence[storage.Entry]) -> list[list[storage.Entry]]:
    """Contiguous ``entries`` split into steps: a message entry, or another step id, starts one."""
    made: list[list[storage.Entry]] = []
    for entry in entries:
        if made and made[-1][0].step == entry.step and entry.kind != EntryKind.MESSAGE:
            made[-1].append(entry)
        else:
            made.append([entry])
    return made


def steps(entries: Sequence[storage.Entry], links: Links, *, more_after: bool = False) -> list[StepView]:
    """``entries`` (oldest first, contiguous) grouped by step, newest step first; ``more_after``:
    newer entries exist, so a last step without its reply goes on on a newer page."""
    made = []
    split = groups(entries)
    for number, group in enumerate(reversed(split)):
        views = [entry_view(e, links) for e in group]
        head, last = group[0], group[-1]
        handler = views[0].label.removeprefix("message ") if head.kind == EntryKind.MESSAGE else ""
        if last.kind == EntryKind.REPLY:
            status = "ok" if views[-1].ok else "error"
        elif head.kind != EntryKind.MESSAGE or (number == 0 and more_after):
            status = "partial"
        else:
            status = "open"
        took = duration(last.at - head.at) if last.kind == EntryKind.REPLY and head.kind == EntryKind.MESSAGE else ""
        made.append(
            StepView(
                step=head.step,
                handler=handler,
                status=status,
                time=when(head.at),
                iso=iso(head.at),
                took=took,
                entries=views,
            )
        )
    return made


def align(entries: list[storage.Entry], *, trim_before: bool, trim_after: bool) -> list[storage.Entry]:
    """Drop the step cut by the page's older edge (``trim_before``) or newer edge (``trim_after``),
    unless it is all the page has (a step longer than a page).

    Only the edge a page is walked away from may be trimmed: walking to older
    pages, the newer edge is where the previous page ended, so what is cut
    there was shown nowhere else and must stay.
    """
    split = groups(entries)
    if trim_before and len(split) > 1 and split[0][0].kind != EntryKind.MESSAGE:
        split = split[1:]
    if trim_after and len(split) > 1 and split[-1][-1].kind != EntryKind.REPLY:
        split = split[:-1]
    return [entry for group in split for entry in group]


# -- actors --------------------------------------------------------------------------------------


CONDITION_TEXT = {
    "suspended": "suspended",
    "waiting": "waiting",
    "active": "active",
    "idle": "idle",
}


class ActorView(msgspec.Struct, kw_only=True):
    """One row of the overview."""

    address: str
    href: str
    type: str
    key: str
    condition: str
    detail: str
    last_seq: int
    last_time: str
    last_iso: str
    pending: int
    timers: int
    dead_letters: int


def actor_view(summary: storage.ActorSummary, links: Links, waits: dict[str, list[str]] | None = None) -> ActorView:
    """An overview row; ``waits``: what live steps wait on, by address (from ``rt.statistics()``)."""
    detail = ""
    if summary.condition == "suspended":
        detail = one_line(summary.reason or "", 160)
    elif summary.condition == "waiting":
        live = (waits or {}).get(summary.address)
        if live:
            detail = one_line("on " + ", ".join(live), 160)
        elif summary.last_kind == EntryKind.REQUEST:
            detail = "on a reply"
        else:
            detail = f"step open since {when(summary.last_at)}"
    key = summary.address[len(summary.type) + 1 :] if summary.address.startswith(summary.type + "/") else ""
    return ActorView(
        address=plain(summary.address),
        href=links.actor(summary.address),
        type=plain(summary.type),
        key=plain(key),
        condition=summary.condition,
        detail=detail,
        last_seq=summary.last_seq,
        last_time=when(summary.last_at),
        last_iso=iso(summary.last_at),
        pending=summary.pending,
        timers=summary.timers,
        dead_letters=summary.dead_letters,
    )


def waits_of(statistics: Any) -> dict[str, list[str]]:
    """What each live step waits on: ``promise NAME`` or ``reply from ADDRESS``."""
    waits: dict[str, list[str]] = {}
    if statistics is None:
        return waits
    asks = dict(statistics.waiting_asks)
    for address, name in statistics.waiting_promises:
        if name.startswith("reply:"):
            callee = asks.get(address)
            waits.setdefault(address, []).append(f"a reply from {callee}" if callee else "a reply")
        else:
            waits.setdefault(address, []).append(f"promise {name!r}")
    return waits


# -- states and what changed --------------------------------------------------------------------


class Change(msgspec.Struct):
    """One difference between two states: where, and the values before and after."""

    path: str
    change: str
    """``added``, ``removed`` or ``changed``."""
    before: str
    after: str


def changes(before: Any, after: Any, path: str = "state") -> list[Change]:
    """What differs from ``before`` to ``after`` (JSON-like values), at most :data:`MAX_CHANGES`."""
    found: list[Change] = []
    _walk(before, after, path, found)
    return found


def _walk(before: Any, after: Any, path: str, found: list[Change]) -> None:
    if len(found) >= MAX_CHANGES:
        return
    if isinstance(before, dict) and isinstance(after, dict):
        for key in list(before) + [k for k in after if k not in before]:
            where = f"{path}.{key}" if str(key).isidentifier() else f"{path}[{json.dumps(str(key))}]"
            if key not in after:
                found.append(Change(plain(where), "removed", one_line(compact(before[key])), ""))
            elif key not in before:
                found.append(Change(plain(where), "added", "", one_line(compact(after[key]))))
            else:
                _walk(before[key], after[key], where, found)
        return
    if isinstance(before, list) and isinstance(after, list):
        for i in range(max(len(before), len(after))):
            where = f"{path}[{i}]"
            if i >= len(after):
                found.append(Change(where, "removed", one_line(compact(before[i])), ""))
            elif i >= len(before):
                found.append(Change(where, "added", "", one_line(compact(after[i]))))
            else:
                _walk(before[i], after[i], where, found)
        return
    if before != after or type(before) is not type(after):
        found.append(Change(plain(path), "changed", one_line(compact(before)), one_line(compact(after))))
