"""Retry policies for effects (LLM and tool calls fail; the journal remembers how often)."""

from __future__ import annotations

import msgspec


class Retry(msgspec.Struct, frozen=True):
    """Retry an effect up to ``max_attempts`` times with exponential backoff.

    The n-th retry waits ``min(max_delay, initial * multiplier ** (n - 1))``
    seconds, spread by ``±jitter`` of itself. Every failed attempt and the time
    of the next one are journaled, so a crash during a backoff neither restarts
    the count nor shortens the wait.
    """

    max_attempts: int = 3
    initial: float = 1.0
    multiplier: float = 2.0
    max_delay: float = 60.0
    jitter: float = 0.1

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("Retry.max_attempts must be at least 1")
        if self.initial < 0 or self.multiplier < 1 or self.max_delay < 0 or not 0 <= self.jitter <= 1:
            raise ValueError("Retry wants initial >= 0, multiplier >= 1, max_delay >= 0 and 0 <= jitter <= 1")

    def delay(self, retry: int, unit: float) -> float:
        """The wait before retry number ``retry`` (1-based); ``unit`` in [0, 1) picks the jitter."""
        base = min(self.max_delay, self.initial * self.multiplier ** (retry - 1))
        return max(0.0, base * (1 + self.jitter * (2 * unit - 1)))
