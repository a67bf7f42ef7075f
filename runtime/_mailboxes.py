"""Every address the runtime knows, with its mailbox; which are ready to run; how much waits.

One object owns the cells, the ready list and the count of messages accepted
and not yet consumed, so that putting a message in a mailbox happens in one
place (:meth:`Mailboxes.deliver`) and backpressure is decided in one place
(:meth:`Mailboxes.admit`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from actors import BackpressureError

from ._cell import Cell, Msg
from ._registry import Registry


class Mailboxes:
    """The cells by address, the ready list, and the count of messages waiting in all.

    ``schedule`` is called when a cell becomes ready (the scheduler runs a
    round soon); ``journal_admits``, once set, raises while the journal
    refuses new messages (see :class:`~runtime._health.JournalHealth`).
    """

    def __init__(
        self,
        registry: Registry,
        *,
        max_mailbox: int,
        max_pending: int,
        schedule: Callable[[], None],
    ) -> None:
        self._registry = registry
        self.max_mailbox = max_mailbox
        self.max_pending = max_pending
        self._schedule = schedule
        self.journal_admits: Callable[[], None] = _always
        self.cells: dict[str, Cell] = {}
        self.ready: list[Cell] = []
        self.pending = 0
        """Messages accepted and not yet consumed, in every mailbox (and under way)."""
        self.holding: set[int] | None = None
        """With many nodes: the ids of the messages delivered here (the node's ``seen``)."""

    def __iter__(self) -> Iterator[Cell]:
        return iter(self.cells.values())

    def get(self, address: str) -> Cell | None:
        """The cell of ``address``, if the runtime holds one."""
        return self.cells.get(address)

    def cell(self, address: str) -> Cell:
        """The cell of ``address``, made if needed (the address must resolve)."""
        cell = self.cells.get(address)
        if cell is None:
            desc, key = self._registry.resolve(address)
            cell = self.cells[address] = Cell(address, desc, key)
        return cell

    def admit(self, address: str) -> None:
        """Fail fast, writing nothing, when the mailboxes are full or the journal fails (backpressure).

        Refusing makes nothing: a cell is made only for a message that is let in.
        """
        self.journal_admits()
        cell = self.cells.get(address)
        waiting = len(cell.mailbox) if cell is not None else 0
        if waiting >= self.max_mailbox:
            raise BackpressureError(
                f"{address} has {waiting} messages waiting (max_mailbox={self.max_mailbox}); retry later"
            )
        if self.pending >= self.max_pending:
            raise BackpressureError(
                f"{self.pending} messages are waiting in all (max_pending={self.max_pending}); retry later"
            )

    def deliver(self, cell: Cell, msg: Msg) -> None:
        """Put a newly accepted ``msg`` at the end of ``cell``'s mailbox: it waits, and the cell is ready."""
        cell.mailbox.append(msg)
        self.pending += 1
        if self.holding is not None:
            self.holding.add(msg.step)
        self.make_ready(cell)

    def consumed(self, count: int = 1) -> None:
        """``count`` messages left the mailboxes for good (processed, dropped, buried, refused)."""
        self.pending -= count

    def make_ready(self, cell: Cell) -> None:
        """``cell`` has something to do: it runs in the next round."""
        if not cell.queued:
            cell.queued = True
            self.ready.append(cell)
            self._schedule()

    def schedule(self) -> None:
        """Run a round soon though no cell became ready (a tell for an actor another node owns)."""
        self._schedule()

    def take_ready(self) -> list[Cell]:
        """The cells ready now, in the order they became ready (the list starts anew)."""
        ready, self.ready = self.ready, []
        for cell in ready:
            cell.queued = False
        return ready

    def forget(self, cell: Cell) -> None:
        """Drop ``cell`` if it holds nothing worth keeping (no messages, not busy, loading, suspended or failed)."""
        if not (cell.mailbox or cell.busy or cell.loading or cell.suspended or cell.failed):
            self.cells.pop(cell.address, None)

    def find(self, address: str, message: int) -> Msg | None:
        """The message with id ``message`` if ``address`` is running it or has it in its mailbox."""
        cell = self.cells.get(address)
        if cell is None:
            return None
        if cell.current is not None and cell.current.step == message:
            return cell.current
        return next((m for m in cell.mailbox if m.step == message), None)

    def depths(self) -> dict[str, int]:
        """The mailboxes that hold messages, and how many each."""
        return {cell.address: len(cell.mailbox) for cell in self.cells.values() if cell.mailbox}


def _always() -> None:
    """Admit: no journal health is watched (yet)."""
