"""The writer's own record of its commits: where each ends in the WAL, and when.

Litestream's transaction ids count its sync batches, not SQLite commits, so
lag cannot be read from Litestream (measured with 0.5.17). Instead every commit is
recorded here by a WAL hook on the write connection: the WAL generation (its
salts) and the byte offset where the commit's last frame ends. An LTX file in
the replica names the same salts and the WAL range it holds, so each commit
maps exactly to the first LTX file containing it. Comparing times instead
leaves commits that straddle an LTX boundary "at risk" forever.
"""

from __future__ import annotations

import os
import struct
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import apsw

from ._replica import Ltx

WAL_HEADER = 32
FRAME_HEADER = 24


MAX_RECORDS = 50_000
"""Beyond this many unreplicated records (a long outage), neighbours are merged."""


@dataclass(frozen=True)
class Commit:
    """One commit of the writer (or ``commits`` neighbouring ones, merged)."""

    seq: int
    generation: int
    wal_end: int
    at: float
    position: int
    commits: int = 1


class CommitLog:
    """Commits not yet known to be replicated, oldest first. Thread-safe."""

    def __init__(self, wal_path: str, page_size: int) -> None:
        self._wal_path = wal_path
        self._frame = FRAME_HEADER + page_size
        self._lock = threading.Lock()
        self._pending: deque[Commit] = deque()
        self._generations: dict[tuple[int, int], int] = {}  # WAL salts -> generation number
        """WAL salts -> generation number, for the generations pending commits may name."""
        self._next_generation = 0
        self._last_salt: tuple[int, ...] = ()
        self._last_frames = 0
        self.count = 0
        """Commits recorded so far (a commit's ``seq``)."""
        self.position = 0
        """The journal position the next recorded commit ends at (set by the writer)."""
        self.replicated_seq = 0
        self.replicated_position = 0
        self.progressed_at: float | None = None
        """When the replica last took commits this log had recorded (epoch seconds), if ever."""
        self._at_risk = 0
        self.wal_limit: int | None = None
        """A WAL size past which a commit calls ``over_limit`` (from the writer thread)."""
        self.over_limit: Callable[[], None] | None = None

    @property
    def known_generations(self) -> frozenset[tuple[int, int]]:
        """The WAL generations (salts) the log still remembers: those of commits not yet replicated."""
        with self._lock:
            return frozenset(self._generations)

    def record_existing(self, position: int) -> None:
        """Count what is already in the WAL at start as one commit: it may not be replicated yet."""
        try:
            size = os.path.getsize(self._wal_path)
        except FileNotFoundError:
            return
        if size > WAL_HEADER:
            frames = (size - WAL_HEADER) // self._frame
            self.position = position
            self._record(frames)

    def hook(self, conn: apsw.Connection, name: str, frames: int) -> int:
        """APSW WAL hook: called in the writer thread right after each commit."""
        if name == "main":
            self._record(frames)
        return apsw.SQLITE_OK

    def _record(self, frames: int) -> None:
        # The WAL restarts with new salts after a checkpoint, which Litestream
        # runs on its own schedule: read them at every commit (one 32-byte
        # pread per group commit), not only when the frame count drops.
        salt, frames = self._read_wal(frames)
        limit, over = self.wal_limit, self.over_limit
        if limit is not None and over is not None and WAL_HEADER + frames * self._frame > limit:
            over()
        with self._lock:
            generation = self._generations.get(salt) if salt is not None else None
            if generation is None:
                generation = self._next_generation
                self._next_generation += 1
                if salt is not None:
                    self._generations[salt] = generation
                # else: the WAL was truncated by another connection (a checkpoint)
                # between this commit and its hook, and its salts are gone. The
                # commit gets a generation of its own, later than every known
                # one and named by no LTX file: only an LTX file of a later WAL
                # (the checkpoint ran after this commit) or a sync confirms it.
            self.count += 1
            self._pending.append(
                Commit(self.count, generation, WAL_HEADER + frames * self._frame, time.time(), self.position)
            )
            self._at_risk += 1
            if len(self._pending) > MAX_RECORDS:
                self._merge()

    @property
    def frame_size(self) -> int:
        """Bytes per WAL frame (header and page)."""
        return self._frame

    def knows_current_wal(self) -> bool:
        """Whether a commit has been recorded in the WAL as it is now (its salts)."""
        salt = self._current_salt()
        with self._lock:
            return salt is not None and salt in self._generations

    def _current_salt(self) -> tuple[int, int] | None:
        try:
            with open(self._wal_path, "rb") as f:
                header = f.read(WAL_HEADER)
        except OSError:
            return None
        if len(header) < WAL_HEADER:
            return None
        salt1, salt2 = struct.unpack_from(">II", header, 16)
        return salt1, salt2

    def _forget_generations(self) -> None:
        """Drop the salts of generations older than every pending commit's (and the newest's).

        An LTX file naming one of them can move nothing: every pending commit is
        in a later generation. Without this the map grows by one entry per WAL
        generation for as long as the process runs.
        """
        if not self._generations:
            return
        oldest = self._pending[0].generation if self._pending else self._next_generation - 1
        if min(self._generations.values()) < oldest:
            self._generations = {salt: g for salt, g in self._generations.items() if g >= oldest}

    def _merge(self) -> None:
        """Merge neighbours two by two: memory stays bounded through a long outage.

        A merged record is replicated only once its last commit is, so the
        count at risk stays exact or errs on the side of risk.
        """
        merged: deque[Commit] = deque()
        records = list(self._pending)
        i = 0
        while i < len(records):
            a = records[i]
            b = records[i + 1] if i + 1 < len(records) else None
            if b is not None and b.generation == a.generation:
                merged.append(Commit(b.seq, b.generation, b.wal_end, a.at, b.position, a.commits + b.commits))
                i += 2
            else:
                merged.append(a)
                i += 1
        self._pending = merged

    def _read_wal(self, frames: int) -> tuple[tuple[int, int] | None, int]:
        """The WAL's salts (None if it is gone), and how many frames end at the commit's own last frame.

        With ``psow=0`` SQLite pads a commit to a sector boundary with copies of
        its last frame (at most one, as a frame is larger than a sector). Each
        copy is marked as a commit too, and Litestream may read the WAL between
        the commit frame and its copy: the commit ends at the commit frame. A
        transaction writes each page once, so a last frame with the page number
        of the frame before it is a copy.
        """
        try:
            f = open(self._wal_path, "rb")  # noqa: SIM115 - closed below
        except OSError:
            self._last_salt = ()
            return None, frames
        with f:
            header = f.read(WAL_HEADER)
            if len(header) < WAL_HEADER:  # truncated after this commit, before this hook
                self._last_salt = ()
                return None, frames
            salt = struct.unpack_from(">II", header, 16)
            # Only a frame of this commit can be copied: not the previous commit's last frame.
            earlier = self._last_frames if salt == self._last_salt else 0
            self._last_salt, self._last_frames = salt, frames
            if frames - 2 >= earlier:
                f.seek(WAL_HEADER + (frames - 2) * self._frame)
                before = f.read(8)
                f.seek(WAL_HEADER + (frames - 1) * self._frame)
                last = f.read(8)
                if len(last) == 8 and last == before:  # same page, same database size
                    frames -= 1
        return (salt[0], salt[1]), frames

    def replicated(self, ltx: Ltx) -> None:
        """Everything up to the WAL range of ``ltx`` is in the replica."""
        # A generation no commit was recorded in is either older than this
        # process (it says nothing new) or the WAL as it is now, restarted by
        # Litestream after its checkpoint: Litestream writes into it first, and
        # checkpoints only once every earlier frame is in its LTX files, which
        # it uploads in order. Then every commit recorded so far is replicated.
        current = self._current_salt() if ltx.salt not in self._generations else None
        with self._lock:
            generation = self._generations.get(ltx.salt)
            if generation is None and current == ltx.salt:
                generation = self._next_generation  # later than every recorded one
            if generation is None:
                return  # a WAL generation from before this process: says nothing new
            pending = self._pending
            while pending and (
                pending[0].generation < generation
                or (pending[0].generation == generation and pending[0].wal_end <= ltx.wal_end)
            ):
                self._done(pending.popleft())
            self._forget_generations()

    def confirm(self, seq: int) -> None:
        """Commits up to ``seq`` are known to be in the replica (Litestream said so)."""
        with self._lock:
            pending = self._pending
            while pending and pending[0].seq <= seq:
                self._done(pending.popleft())
            self._forget_generations()

    def _done(self, commit: Commit) -> None:
        """``commit`` is in the replica (the lock is held)."""
        self._at_risk -= commit.commits
        self.replicated_seq = commit.seq
        self.replicated_position = max(self.replicated_position, commit.position)
        self.progressed_at = time.time()

    def at_risk(self) -> tuple[int, float | None]:
        """How many commits are not known to be replicated, and when the oldest was made."""
        with self._lock:
            if not self._pending:
                return 0, None
            return self._at_risk, self._pending[0].at
