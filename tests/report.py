"""Counts the fault tests report at the end of the run (crash points, faults, cycles...)."""

from __future__ import annotations

from collections import Counter

REPORT: dict[str, Counter[str]] = {}


def add(section: str, **counts: int) -> None:
    """Add ``counts`` to ``section`` of the summary pytest prints at the end."""
    REPORT.setdefault(section, Counter()).update(counts)
