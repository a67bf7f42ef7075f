"""A client of ``Recorder`` actors that records what it was told about each message.

Outcomes, as a Jepsen history names them: ``ok``; ``accepted`` (an ask kept in
the inbox with no reply yet: it must run exactly once); ``unknown``
(``CommitUnknownError``, a timeout: at most once); ``fail`` and ``refused``
(a definite error, backpressure: never).
"""

from __future__ import annotations

import anyio

from actors import (
    AskTimeoutError,
    BackpressureError,
    CommitUnknownError,
    ReplyUnavailableError,
    SteleError,
)
from runtime import Runtime

from .models import Record

ACTORS = [f"Recorder/{k}" for k in range(3)]
CALL_TIMEOUT = 20.0
"""A call that takes longer is a hang: the test fails."""
FAILING_TIMEOUT = 0.5
"""An ask's timeout while the disk may be failing: its actor may wait for the journal."""


async def call(rt: Runtime, i: int, timeout: float = FAILING_TIMEOUT) -> str:
    """Send message ``i`` (a tell if even, an ask if odd); return the outcome the client saw."""
    address = ACTORS[i % len(ACTORS)]
    try:
        with anyio.fail_after(CALL_TIMEOUT):
            if i % 2:
                await rt.ask(address, Record(i), timeout=timeout)
            else:
                await rt.tell(address, Record(i))
    except (CommitUnknownError, AskTimeoutError):
        return "unknown"
    except ReplyUnavailableError:
        return "accepted"
    except BackpressureError:
        return "refused"  # nothing accepted, by design: the journal is failing
    except SteleError:
        return "fail"
    return "ok"


async def after_healing(rt: Runtime, i: int) -> str:
    """Send ``i`` as a client would once the disk is back: retry while refused, for a bounded time."""
    with anyio.fail_after(CALL_TIMEOUT):
        while (outcome := await call(rt, i, timeout=CALL_TIMEOUT / 2)) == "refused":
            await anyio.sleep(0.02)  # the runtime probes the journal again every PROBE_INTERVAL
    assert outcome == "ok", f"message {i} failed after the disk healed ({outcome}): the runtime did not recover"
    return outcome


def processed_if_acknowledged(outcomes: dict[int, str]) -> set[int]:
    """Messages that must have been processed exactly once."""
    return {i for i, o in outcomes.items() if o in ("ok", "accepted")}


def definitely_failed(outcomes: dict[int, str]) -> set[int]:
    """Messages that must not have been processed at all."""
    return {i for i, o in outcomes.items() if o in ("fail", "refused")}
