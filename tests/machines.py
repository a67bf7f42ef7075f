"""What the Hypothesis state machines over a runtime share: a journal of their
own (a file, or a database of their own on the session's PostgreSQL server),
an event loop in a thread (a blocking portal) and a seeded random."""

from __future__ import annotations

import random
import shutil
import tempfile
from contextlib import AbstractContextManager

import hypothesis
from anyio.from_thread import BlockingPortal, start_blocking_portal
from hypothesis.stateful import RuleBasedStateMachine

from runtime import Runtime

from . import pgserver


class PortalMachine(RuleBasedStateMachine):
    """Rules call the runtime ``self.rt`` through ``self.portal``; teardown closes it all."""

    rt: Runtime
    backend = "sqlite"
    """Where the journal is: ``sqlite`` (a file) or ``postgres`` (a new database)."""

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix=prefix)
        self.db = f"{self.dir}/journal.db" if self.backend == "sqlite" else pgserver.shared().database()
        self._portal_cm: AbstractContextManager[BlockingPortal] = start_blocking_portal()
        self.portal = self._portal_cm.__enter__()
        self.rng = random.Random(0)
        hypothesis.register_random(self.rng)

    def teardown(self) -> None:
        try:
            self.portal.call(self.rt.close)
        finally:
            self._portal_cm.__exit__(None, None, None)
            shutil.rmtree(self.dir, ignore_errors=True)
            if self.backend == "postgres":
                pgserver.shared().drop(self.db)
