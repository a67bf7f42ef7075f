"""The Jepsen-style crash history (tests/jepsen.py): a real server SIGKILLed cycle after cycle."""

from __future__ import annotations

import os
from pathlib import Path

from .conftest import LONG_FAULTS
from .jepsen import run
from .report import add

CYCLES = int(os.environ.get("STELE_JEPSEN_CYCLES", "20"))
"""Kill cycles of the fast tier; ``--long`` runs ``LONG_FAULTS`` (or CYCLES x LONG_SCALE if more)."""


def test_a_history_of_killed_servers_checks_out(tmp_path: Path, scale: int) -> None:
    cycles = CYCLES if scale == 1 else max(CYCLES * scale, LONG_FAULTS)
    counts = run(tmp_path, cycles=cycles, seed=int(os.environ.get("STELE_JEPSEN_SEED", "6")))
    add("Jepsen-style history (HTTP server SIGKILLed)", **counts)
    assert counts["outcome ok"] > 0, "nothing was acknowledged before the kills: the run proves nothing"
    assert counts["outcome unknown"] > 0, "no call was cut by a kill: the kills missed the traffic"
