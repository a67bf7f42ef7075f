"""Rebuilding an actor from its journal: latest decodable snapshot, then later events.

The same ``@apply`` methods run here as when the events were first emitted, so
live and rebuilt state cannot differ unless an applier is impure (G5).

An actor whose history was compacted keeps it from its *floor* on: the
snapshot there is the oldest state there is, so a rebuild never falls back
below it (there is no older history to fall back on), and a state asked for
below it raises :class:`~errors.OutsideRetentionError` rather than being
folded from a history with a hole.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any
from zlib import crc32

import msgspec

import storage
from actors import Actor, OutsideRetentionError
from actors._actor import ActorDescription
from storage import Entry

log = logging.getLogger("stele.runtime")


class Loaded:
    """An actor rebuilt from the journal."""

    __slots__ = ("events", "info", "instance", "open_step", "snapshot_seq")

    def __init__(
        self,
        instance: Actor,
        info: storage.ActorInfo | None,
        snapshot_seq: int,
        events: int,
        open_step: list[Entry],
    ) -> None:
        self.instance = instance
        self.info = info
        self.snapshot_seq = snapshot_seq
        self.events = events
        self.open_step = open_step


def load(
    source: storage.Reads,
    desc: ActorDescription,
    codec: storage.Codec,
    address: str,
    key: str,
    *,
    use_snapshots: bool = True,
    until_seq: int | None = None,
) -> Loaded:
    """Rebuild ``address``; ``use_snapshots=False`` folds every event from the start (from the floor on).

    ``until_seq``: the state after that sequence number (time travel).
    """
    try:
        return _load(source, desc, codec, address, key, use_snapshots=use_snapshots, until_seq=until_seq)
    except OutsideRetentionError as exc:
        if until_seq is None or until_seq >= exc.floor:
            # A compaction moved the floor between the snapshot read and the events
            # read: read again, from the snapshot at the new floor or later.
            return _load(source, desc, codec, address, key, use_snapshots=use_snapshots, until_seq=until_seq)
        raise


def _load(
    source: storage.Reads,
    desc: ActorDescription,
    codec: storage.Codec,
    address: str,
    key: str,
    *,
    use_snapshots: bool,
    until_seq: int | None,
) -> Loaded:
    info = source.actor(address)
    instance = desc.cls(key, desc.state_type())
    if info is None:  # never journaled anything: a fresh actor, no more reads
        return Loaded(instance, None, 0, 0, [])
    floor = info.floor
    if floor and until_seq is not None and until_seq < floor:
        first = next(iter(source.entries(address, floor)), None)
        raise OutsideRetentionError(address, first.position if first is not None else -1, floor, seq=until_seq)
    snapshot_seq = 0
    if use_snapshots or floor:
        # Without snapshots, a compacted history still starts from the state at its floor.
        before = floor + 1 if not use_snapshots else (None if until_seq is None else until_seq + 1)
        snap = source.snapshot_of(info.id, address, before)
        while snap is not None:
            try:
                if not snap.intact:
                    raise storage.corrupt(f"snapshot {address}#{snap.seq}", -1, snap.type)
                instance.state = codec.decode(snap.type, snap.data, position=-1)
            except storage.UndecodableEntry as exc:
                # G5: a snapshot is only an optimisation; fall back to older history.
                log.warning(
                    "%s: snapshot at seq %d cannot be decoded (%s); using older history", address, snap.seq, exc
                )
                snap = source.snapshot_of(info.id, address, snap.seq)
                continue
            snapshot_seq = snap.seq
            break
        if snapshot_seq < floor:
            # Never fold from the start over a history that begins at the floor.
            raise storage.UndecodableEntry(
                f"{address} keeps its history from seq {floor} on (older history was compacted), and its "
                "snapshot there cannot be read with this code: the actor cannot be rebuilt "
                "(restore the journal from a replica taken before the compaction, or fix the state's type)",
                position=-1,
                type_name=desc.type_name,
                seq=floor,
            )
    rows = source.event_rows(info.id, snapshot_seq, until_seq)
    fold(desc, codec, instance, rows)
    open_step = source.open_step(info.id, address) if until_seq is None else []
    return Loaded(instance, info, snapshot_seq, len(rows), open_step)


def fold(desc: ActorDescription, codec: storage.Codec, instance: Actor, rows: list[storage.EventRow]) -> None:
    """Apply event rows ``(position, seq, type, data, crc)`` to ``instance`` in order, checking each crc."""
    checksum = crc32  # locals: this loop is activation's (and a rebuild's) hot path
    # Each type name decodes to one type, so its decoder and applier are looked
    # up once per name, not once per event.
    known: dict[str, tuple[Callable[[bytes], Any], Callable[[Any, Any], None]]] = {}
    for position, seq, type_name, data, crc in rows:
        if crc is not None and checksum(data) != crc:
            raise storage.corrupt(f"journal entry {instance.address}#{seq}", position, type_name, seq)
        pair = known.get(type_name)
        if pair is None:
            pair = known[type_name] = _resolve(desc, codec, type_name, data, position)
        decode, applier = pair
        try:
            event = decode(data)
        except msgspec.DecodeError:
            codec.decode(type_name, data, position=position)  # raises the error that names the entry
            raise
        applier(instance, event)


def _resolve(
    desc: ActorDescription, codec: storage.Codec, type_name: str, data: bytes, position: int
) -> tuple[Callable[[bytes], Any], Callable[[Any, Any], None]]:
    """The decoder and the applier of events named ``type_name``, or the error that says why there is none."""
    event = codec.decode(type_name, data, position=position)
    applier = desc.appliers.get(type(event))
    if applier is None:
        raise storage.UndecodableEntry(
            f"journal entry at position {position} is an event {type_name!r} "
            f"that {desc.type_name} has no @apply method for",
            position=position,
            type_name=type_name,
        )
    return codec.decoder(type_name).decode, applier
