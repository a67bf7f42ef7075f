"""An addressed actor as the runtime holds it: mailbox, instance (when active), position."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

from actors import Actor
from actors._actor import ActorDescription, HandlerInfo
from storage import ActorRow, Backoff, Entry, InboxRow

from ._reuse import StepReuse

RETRY_MAX_S = 5.0
"""The longest an actor waits before trying a message again after its commit failed."""


class Msg:
    """One message in a mailbox.

    ``inbox`` says whether it is durable in the inbox table (a tell, or an ask
    that became durable at its first effect); ``waiter`` receives an ask's reply.
    """

    __slots__ = (
        "accepted",
        "attempts",
        "cancelled",
        "dropped",
        "due",
        "handler",
        "idempotency_key",
        "inbox",
        "message",
        "payload",
        "recovered",
        "reply_to",
        "reuse",
        "sender",
        "step",
        "timer_id",
        "type_name",
        "waiter",
    )

    def __init__(
        self,
        step: int,
        handler: HandlerInfo,
        message: Any,
        type_name: str,
        payload: bytes,
        waiter: asyncio.Future[Any] | None,
        inbox: bool,
        sender: str | None = None,
    ) -> None:
        self.step = step
        self.handler = handler
        self.message = message
        self.type_name = type_name
        self.payload = payload
        self.waiter = waiter
        self.inbox = inbox
        self.sender = sender
        self.accepted: asyncio.Future[None] | None = None
        """A tell's inbox commit while it is pending (its step may already run)."""
        self.dropped = False
        """The tell's inbox commit failed: it was never accepted."""
        self.idempotency_key: str | None = None
        """An ask's key: its reply is recorded under it with the step."""
        self.attempts = 0
        self.recovered = False
        """Found in the inbox at start; the first its actor runs is counted durably before it runs."""
        self.reply_to: tuple[str, str] | None = None
        """For an actor's ask: (the asking actor, the promise its reply resolves)."""
        self.due: float | None = None
        self.timer_id: str | None = None
        self.cancelled = False
        """A pending timer cancelled by a step: it must not be delivered."""
        self.reuse: StepReuse | None = None
        """A fork's re-delivered message: the source's effect results its step may reuse."""

    def inbox_row(self, target: str, at: float, *, key: str | None = None) -> InboxRow:
        """This message as an inbox row; ``key`` is a client's idempotency key."""
        caller, name = self.reply_to if self.reply_to is not None else (None, None)
        return InboxRow(
            self.step, target, self.handler.name, self.type_name, self.payload, self.due, key, 0, self.sender, at,
            self.timer_id, caller, name,
        )  # fmt: skip


class Cell:
    """Everything the runtime knows about one address."""

    __slots__ = (
        "actor_id",
        "address",
        "busy",
        "current",
        "desc",
        "failed",
        "instance",
        "key",
        "lease",
        "loading",
        "mailbox",
        "next_seq",
        "open_step",
        "queued",
        "reason",
        "registered",
        "retry",
        "since_snapshot",
        "suspended",
    )

    def __init__(self, address: str, desc: ActorDescription, key: str) -> None:
        self.address = address
        self.desc = desc
        self.key = key
        self.mailbox: deque[Msg] = deque()
        self.instance: Actor | None = None
        self.busy = False
        """A step of this actor is running or committing: it takes no other message."""
        self.current: Msg | None = None
        """The message of the running step."""
        self.queued = False
        """The cell is in the runtime's ready list."""
        self.loading = False
        self.next_seq = 1
        self.since_snapshot = 0
        self.open_step: list[Entry] | None = None
        """Entries of a step a crash interrupted, to resume with its journaled effects."""
        self.suspended = False
        self.reason = ""
        self.failed: BaseException | None = None
        """Why the actor could not be loaded (in memory only; the journal is untouched)."""
        self.retry = Backoff(first=0.05, limit=RETRY_MAX_S)
        """How long to wait before this actor tries a message again after a failed commit."""
        self.registered = False
        """The actor registry has a row for this address."""
        self.actor_id = 0
        """The id journal rows name this actor by; set when it is loaded."""
        self.lease = -1
        """With many nodes: the generation of this node's lease on the actor's shard when its state was
        loaded; its steps commit only while the node still holds that very lease."""

    def registration(self, at: float) -> ActorRow | None:
        """The registry row a unit must insert for this actor, unless it exists."""
        return None if self.registered else ActorRow(self.actor_id, self.address, self.desc.type_name, at)

    @property
    def idle(self) -> bool:
        """Active but doing nothing, and nothing to do: may be passivated."""
        return not (self.busy or self.mailbox or self.loading)


def first_outcome(future: asyncio.Future[Any], outcomes: list[Any]) -> None:
    """Hand a one-unit submission's outcome to ``future``, unless its waiter gave up (cancelled)."""
    if not future.done():
        future.set_result(outcomes[0])
