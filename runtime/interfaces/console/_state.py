"""Time travel: an actor's state as of any entry of its journal, and what that entry changed.

The state after an entry is the state rebuilt from the journal up to it (the
newest snapshot before it, then the events after that snapshot, through the
actor's own ``@apply`` methods, as a restart rebuilds it). Only events change
state, so the state before an event is that state without it: one rebuild and
one more event, however long the journal.

Rebuilding runs the actor's code, so it needs the actor classes: under
``serve`` the runtime has them; ``python -m runtime ui`` has them only when
given ``--module`` (a journal never chooses the code that reads it). Without
them the console shows the newest snapshot before the entry, as stored.
"""

from __future__ import annotations

from typing import Any

import msgspec

import storage
from storage import EntryKind

from ..._rebuild import fold, load
from ..._registry import Registry
from ._model import Change, Links, changes, entry_view, pretty, untyped, when


class StateView(msgspec.Struct, kw_only=True):
    """The state as of one entry."""

    address: str
    position: int
    seq: int
    kind: str
    label: str
    time: str
    entry: str
    """The entry's payload, in full."""
    state: str | None
    """The state after the entry, as indented JSON (None: it cannot be rebuilt here)."""
    changes: list[Change]
    """What the entry changed (only events change state)."""
    note: str
    snapshot_seq: int
    events: int
    """Events folded over the snapshot to get here."""


class StateProblem(Exception):
    """The entry is not this actor's, or not there."""


def state_at(
    journal: storage.Journal, registry: Registry | None, address: str, position: int, links: Links
) -> StateView:
    """The state of ``address`` as of its entry at ``position``."""
    entry = journal.entry(position)
    if entry is None or entry.actor != address:
        raise StateProblem(f"{address} has no entry at position {position}")
    shown = entry_view(entry, links)
    base: dict[str, Any] = {
        "address": address,
        "position": position,
        "seq": entry.seq,
        "kind": str(entry.kind),
        "label": shown.label,
        "time": shown.time,
        "entry": shown.detail,
    }
    desc = None
    if registry is not None:
        desc = registry.actors.get(address.partition("/")[0])
    if registry is None or desc is None:
        return _without_code(journal, address, entry, base, registry is None)
    key = address.partition("/")[2]
    try:
        loaded = load(journal, desc, registry.codec, address, key, until_seq=entry.seq - 1)
        before = msgspec.to_builtins(loaded.instance.state, str_keys=True)
        events = loaded.events
        info = loaded.info
        if entry.kind == EntryKind.EVENT and info is not None:
            fold(desc, registry.codec, loaded.instance, journal.event_rows(info.id, entry.seq - 1, entry.seq))
            events += 1
        after = msgspec.to_builtins(loaded.instance.state, str_keys=True)
    except storage.UndecodableEntry as exc:
        return StateView(
            **base, state=None, changes=[], note=f"the state cannot be rebuilt: {exc}", snapshot_seq=0, events=0
        )
    note = (
        f"after entry #{entry.seq}: snapshot at #{loaded.snapshot_seq}, then {events} event(s)"
        if loaded.snapshot_seq
        else f"after entry #{entry.seq}: {events} event(s) from the start"
    )
    return StateView(
        **base,
        state=pretty(after),
        changes=changes(before, after),
        note=note,
        snapshot_seq=loaded.snapshot_seq,
        events=events,
    )


def _without_code(
    journal: storage.Journal, address: str, entry: storage.Entry, base: dict[str, Any], no_module: bool
) -> StateView:
    why = (
        "the state is rebuilt by the actor's own code, which this console was not given: "
        "start it with --module MODULE to see it"
        if no_module
        else f"no actor class of type {address.partition('/')[0]!r} is hosted here"
    )
    snapshot = journal.snapshot(address, before=entry.seq + 1)
    if snapshot is None or not snapshot.intact:
        return StateView(**base, state=None, changes=[], note=why + ".", snapshot_seq=0, events=0)
    try:
        stored = untyped(snapshot.data)
    except (msgspec.DecodeError, ValueError, TypeError):
        return StateView(**base, state=None, changes=[], note=why + ".", snapshot_seq=0, events=0)
    later = f"; {entry.seq - snapshot.seq} entries since" if snapshot.seq < entry.seq else ""
    return StateView(
        **base,
        state=pretty(stored),
        changes=[],
        note=f"{why}. Shown: the snapshot at #{snapshot.seq} ({when(snapshot.at)}){later}, as stored.",
        snapshot_seq=snapshot.seq,
        events=0,
    )
