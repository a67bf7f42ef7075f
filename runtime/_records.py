"""The payloads of the journal's own entry kinds.

Events are stored as the user's own Structs; messages, effects, sends and
replies are wrapped in these frozen records (defaults omitted: smaller rows). They evolve under msgspec's rules:
new fields get defaults, no field changes type, no name is reused.
"""

from __future__ import annotations

import msgspec

NIL = msgspec.Raw(b"\xc0")
"""msgpack ``nil``, the payload of an absent value."""


class MessageRecord(msgspec.Struct, frozen=True, omit_defaults=True):
    """kind ``message``: the message a step processes, and its journaled seed and time."""

    handler: str
    body: msgspec.Raw
    seed: int
    now: float
    sender: str | None = None


class EffectRecord(msgspec.Struct, frozen=True, omit_defaults=True):
    """kind ``effect``: one effect's outcome, journaled as soon as it completes."""

    index: int
    ok: bool
    result: msgspec.Raw = NIL
    error_type: str = ""
    error: str = ""
    started: float = 0.0
    finished: float = 0.0
    attempt: int = 1
    retry_at: float = 0.0
    """kind ``attempt`` only: when the next attempt is due (durable backoff)."""
    cut: bool = False
    """A streamed effect the handler left before its end: ``result`` holds what it read."""
    args: bytes = b""
    """A digest of the effect's arguments (empty when they cannot be encoded): a fork reuses
    this result only for the same effect called with the same arguments."""
    reused: int = 0
    """In a fork: the source's journal position whose recorded result this is (0: it ran)."""


class StartRecord(msgspec.Struct, frozen=True, omit_defaults=True):
    """kind ``start``: attempt ``attempt`` of the streamed effect ``index`` begins (from its first chunk)."""

    index: int
    attempt: int


class ChunkRecord(msgspec.Struct, frozen=True, omit_defaults=True):
    """kind ``chunk``: one chunk of attempt ``attempt`` of the streamed effect ``index``."""

    index: int
    attempt: int
    value: msgspec.Raw


class SendRecord(msgspec.Struct, frozen=True, omit_defaults=True):
    """kind ``send``: a message sent to another actor, committed with the step."""

    to: str
    handler: str
    body: msgspec.Raw
    step: int


class RequestRecord(msgspec.Struct, frozen=True, omit_defaults=True):
    """kind ``request``: an ask sent to another actor, committed before waiting."""

    index: int
    to: str
    handler: str
    body: msgspec.Raw
    step: int


class TimerRecord(msgspec.Struct, frozen=True, omit_defaults=True):
    """kind ``timer``: a message scheduled for later, committed with the step."""

    id: str
    to: str
    handler: str
    body: msgspec.Raw
    step: int
    due: float


class CancelRecord(msgspec.Struct, frozen=True, omit_defaults=True):
    """kind ``cancel``: a pending timer cancelled by the step."""

    id: str


class ReplyRecord(msgspec.Struct, frozen=True, omit_defaults=True):
    """kind ``reply``: how the step ended; it closes the step."""

    ok: bool
    value: msgspec.Raw = NIL
    error_type: str = ""
    error: str = ""


class ForkRecord(msgspec.Struct, frozen=True, omit_defaults=True):
    """kind ``fork``: a fork's first entry, where its history came from (a snapshot at the same seq holds its state)."""

    source: str
    """The address forked."""
    position: int
    """The source's journal position the fork starts from."""
    seq: int
    """The source's last sequence number at that position."""
    replay_after: bool = False
    """Whether the source's later messages were delivered to the fork again."""
    replica: str = ""
    """The replica the source history was restored from (empty: the live journal)."""
    timestamp: str = ""
    """The point in time it was restored at (empty: its latest)."""


message_decoder = msgspec.msgpack.Decoder(MessageRecord)
effect_decoder = msgspec.msgpack.Decoder(EffectRecord)
send_decoder = msgspec.msgpack.Decoder(SendRecord)
reply_decoder = msgspec.msgpack.Decoder(ReplyRecord)
timer_decoder = msgspec.msgpack.Decoder(TimerRecord)
request_decoder = msgspec.msgpack.Decoder(RequestRecord)
cancel_decoder = msgspec.msgpack.Decoder(CancelRecord)
start_decoder = msgspec.msgpack.Decoder(StartRecord)
chunk_decoder = msgspec.msgpack.Decoder(ChunkRecord)
fork_decoder = msgspec.msgpack.Decoder(ForkRecord)
