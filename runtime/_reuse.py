"""Effect reuse in a fork: the source's recorded results, while the fork does what the source did.

A fork with ``replay_after`` delivers the source's later messages to the fork
again, running the current code. Each effect the fork calls is matched with
the effect the source recorded at the same place (the same step, the same
index): the same name and the same arguments (compared by digest) reuse the
recorded result, journaled in the fork with ``reused`` naming the source's
entry. The first effect that does not match (another name, other arguments,
one more or one fewer than the source ran) ends reuse for the rest of the
fork: from there on every effect runs for real. An ask matches on its target
and message, a promise on its name.
"""

from __future__ import annotations

import hashlib
from typing import Any

import msgspec

import storage
from storage import EntryKind

from ._records import EffectRecord, effect_decoder, message_decoder, request_decoder
from ._values import ENCODE_ERRORS

_encode = msgspec.msgpack.Encoder().encode
PROMISE = b"promise"
"""What a promise's arguments digest to: its name, in its label, is all it is called with."""


def digest(data: bytes) -> bytes:
    """A short digest of encoded arguments (collisions are not a concern at 64 bits for equality checks)."""
    return hashlib.blake2b(data, digest_size=8).digest()


def arguments(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bytes:
    """The digest of an effect's arguments; empty when they cannot be encoded (such an effect is never reused)."""
    try:
        return digest(_encode([args, kwargs]))
    except ENCODE_ERRORS:
        return b""


class SourceStep(msgspec.Struct, frozen=True):
    """One completed step of the source, to deliver to the fork again."""

    position: int
    """Its message entry's journal position (in the source's journal)."""
    handler: str
    body: bytes
    seed: int
    now: float
    sender: str | None
    effects: list[tuple[int, str, bytes, EffectRecord]]
    """``(position, label, arguments digest, record)`` of each effect, ask and promise, in order."""


def source_step(entries: list[storage.Entry]) -> SourceStep:
    """A completed step (its message first, its reply last) as a fork reuses it."""
    head = message_decoder.decode(entries[0].data)
    requests = {}
    for e in entries:
        if e.kind == EntryKind.REQUEST:
            request = request_decoder.decode(e.data)
            requests[request.index] = digest(bytes(request.body))
    effects = []
    for e in entries:
        if e.kind != EntryKind.EFFECT:
            continue
        record = effect_decoder.decode(e.data)
        if e.type.startswith("ask:"):
            args = requests.get(record.index, b"")
        elif e.type.startswith("promise:"):
            args = PROMISE
        else:
            args = record.args
        effects.append((e.position, e.type, args, record))
    return SourceStep(entries[0].position, head.handler, bytes(head.body), head.seed, head.now, head.sender, effects)


class Reuse:
    """One fork's reuse: on until the first effect that does not match the source's."""

    def __init__(self) -> None:
        self.divergence: str | None = None
        """Where the fork first did otherwise than the source (None: it has not)."""
        self.diverged_at: int | None = None
        """The source's journal position there."""
        self.reused = 0
        self.ran = 0

    @property
    def active(self) -> bool:
        """Whether results are still reused."""
        return self.divergence is None

    def diverge(self, position: int, why: str) -> None:
        """Reuse ends here (the first divergence only is kept)."""
        if self.divergence is None:
            self.divergence = why
            self.diverged_at = position


class StepReuse:
    """What one re-delivered message's step may reuse (see :class:`Reuse`)."""

    __slots__ = ("plan", "source", "used")

    def __init__(self, plan: Reuse, source: SourceStep) -> None:
        self.plan = plan
        self.source = source
        self.used = 0

    def take(self, index: int, label: str, args: bytes) -> EffectRecord | None:
        """The source's result for the fork's effect ``index``, if it matches; None: run it for real."""
        plan = self.plan
        effects = self.source.effects
        if plan.active:
            if index >= len(effects):
                plan.diverge(self.source.position, f"effect #{index} {label}: the source's step ran no more effects")
            else:
                position, recorded, recorded_args, record = effects[index]
                if recorded != label:
                    plan.diverge(position, f"effect #{index}: {label} where the source ran {recorded}")
                elif not args or recorded_args != args:
                    plan.diverge(position, f"effect #{index} {label}: called with other arguments than the source's")
                else:
                    self.used = index + 1
                    plan.reused += 1
                    return msgspec.structs.replace(record, index=index, args=args, reused=position)
        plan.ran += 1
        return None

    def finish(self) -> None:
        """The step is over: one that ran fewer effects than the source's diverged there."""
        if self.plan.active and self.used < len(self.source.effects):
            position, label, _, _ = self.source.effects[self.used]
            self.plan.diverge(position, f"effect #{self.used} {label}: the source ran it, the fork did not")
