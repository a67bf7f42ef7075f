"""Replication you can see: the monitor of what is not yet in object storage,
and replicated acknowledgements.

The monitor compares the writer's own commit record (:mod:`._commits`) with
the newest level-0 LTX file in the replica. Its view is computed in a thread
and read without blocking, so a hung bucket never stalls a caller; the age of
the oldest commit at risk is computed at read time, so it keeps growing while
the bucket hangs.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass

from errors import LitestreamError

from ._commits import CommitLog
from ._litestream import Control, Litestream
from ._replica import RemoteReader, ReplicaTarget

log = logging.getLogger("stele.replication")

DEFAULT_MAX_WAL_BYTES = 256 * 1024 * 1024
"""The WAL size Stele keeps the journal's WAL under, by default (``max_wal_bytes``)."""
MIN_MAX_WAL_BYTES = 1024 * 1024


@dataclass(frozen=True)
class ReplicationStatus:
    """The monitor's view at one moment."""

    commits_at_risk: int
    """Journal transactions committed locally and not yet confirmed in the replica."""
    oldest_at_risk_s: float
    """Age in seconds of the oldest of them (0 when none)."""
    replicated_at: float | None
    """Epoch seconds of the newest upload confirmed in the replica, or None."""
    replicated_position: int
    """The highest journal position confirmed in the replica by this process."""
    litestream_running: bool
    last_error: str | None
    restarts: int
    checked_at: float | None
    """When the replica was last read successfully."""
    url: str
    local_txid: int = 0
    """Litestream's local transaction id (its sync batches, not SQLite commits)."""
    remote_txid: int = 0
    """The highest transaction id found in the replica."""
    wal_bytes: int = 0
    """The size of the journal's WAL file now."""
    max_wal_bytes: int = 0
    """The bound the WAL is kept under (``max_wal_bytes``)."""
    wal_over_bound: bool = False
    """The WAL is over its bound: nothing could checkpoint it (see ``last_error``)."""
    wal_truncations: int = 0
    """How often the WAL was checkpointed and truncated while Litestream was down
    (each time, Litestream takes a full snapshot when it is back)."""
    stalled: bool = False
    """The journal has advanced and the replica has not, for longer than ``stall_after_s``:
    replication has stopped (a hung or dead Litestream, a bucket that accepts nothing)."""
    stalled_for_s: float = 0.0
    """How long the replica has not advanced while commits waited for it (0 when none wait)."""
    stall_after_s: float = 0.0
    """The threshold of ``stalled``."""


Waiter = Callable[[], None]

MIN_NUDGE_GAP_S = 0.55
"""The least time between two syncs the monitor asks for: fewer than two extra uploads a second."""

STALL_MARGIN_S = 3.0
"""How long past the expected upload interval the replica may stand still before it is called stalled."""


def default_stall_after(sync_interval: float) -> float:
    """The default stall threshold: Litestream's two timers (WAL to LTX, LTX to the replica) and a margin."""
    return 2 * sync_interval + STALL_MARGIN_S


class Replication:
    """Supervised (or external) Litestream, the lag monitor and replicated acks for one journal."""

    def __init__(
        self,
        db_path: str,
        url: str,
        *,
        lag_warning_s: float = 5.0,
        poll_interval: float = 0.25,
        sync_interval: float = 1.0,
        binary: str | None = None,
        external_socket: str | None = None,
        nudge_after_s: float | None = 0.35,
        max_wal_bytes: int = DEFAULT_MAX_WAL_BYTES,
        stall_after_s: float | None = None,
    ) -> None:
        self.check_max_wal_bytes(max_wal_bytes)
        self.stall_after_s = stall_after_s if stall_after_s is not None else default_stall_after(sync_interval)
        self._warned_stall = False
        self.db_path = db_path
        self.target = ReplicaTarget.parse(url)
        self.max_wal_bytes = max_wal_bytes
        self.wal_truncations = 0
        self._truncate_wal: Callable[[], bool] | None = None
        self._warned_wal = False
        self.lag_warning_s = lag_warning_s
        self.poll_interval = poll_interval
        self.nudge_after_s = nudge_after_s
        self._nudge = False
        self.nudges = 0
        """Syncs asked for by the monitor (not by replicated acknowledgements)."""
        self._last_nudge = 0.0  # monotonic time the last nudged sync began
        self.reader = RemoteReader(self.target)
        self.litestream: Litestream | None = None
        if external_socket is None:
            self.litestream = Litestream(db_path, self.target, binary=binary, sync_interval=sync_interval)
            self.control = self.litestream.control
        else:
            # Run outside: only watched. Its own settings govern checkpoints.
            self.control = Control(external_socket)
        self.commits: CommitLog | None = None
        self._replicated_at: float | None = None
        self._checked_at: float | None = None
        self._remote_error: str | None = None
        self._sync_error: str | None = None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._cond = threading.Condition()
        self._waiting: list[tuple[int, Waiter]] = []
        self._warned_lag = False
        self._warned_down = False
        self._external_alive = True
        self._local_txid = 0
        self._remote_txid = 0

    @staticmethod
    def check_max_wal_bytes(value: object) -> None:
        """Raise ValueError naming the problem unless ``value`` is a valid ``max_wal_bytes``."""
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"max_wal_bytes must be an integer number of bytes, not {value!r}")
        if value < MIN_MAX_WAL_BYTES:
            raise ValueError(f"max_wal_bytes must be at least {MIN_MAX_WAL_BYTES} (1 MiB), not {value}")

    # -- lifecycle ---------------------------------------------------------------

    def check(self) -> None:
        """Fail now, with a clear error, if the replica cannot be reached."""
        self.reader.check()

    def claim(self) -> None:
        """Stop a Litestream that an earlier owner of the journal left running (the caller owns it now)."""
        if self.litestream is not None:
            self.litestream.stop_strays()

    def start(self, commits: CommitLog, *, truncate_wal: Callable[[], bool] | None = None) -> None:
        """Start Litestream (unless external) and the monitor threads.

        ``truncate_wal`` checkpoints and truncates the WAL; it is called only
        while the supervised Litestream is down and the WAL is over
        ``max_wal_bytes``. On failure everything started is stopped again.
        """
        self.commits = commits
        self._truncate_wal = truncate_wal
        try:
            if self.litestream is not None:
                # While it runs, Litestream checkpoints, and truncates the WAL past this many pages itself.
                self.litestream.truncate_pages = max(1, self.max_wal_bytes // commits.frame_size)
                self.litestream.while_down = self._bound_wal
                commits.wal_limit, commits.over_limit = self.max_wal_bytes, self.litestream.wake
                self.litestream.start()
            else:
                self.control.request("GET", "/info")  # the external one must answer
            threads = ((self._poll, "stele-monitor"), (self._syncer, "stele-sync"), (self._watch, "stele-watchdog"))
            for target, name in threads:
                thread = threading.Thread(target=target, name=name, daemon=True)
                thread.start()
                self._threads.append(thread)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop the monitor, then Litestream last (after its final sync). Safe at any point of a start."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(timeout=10)
        if self.litestream is not None:
            self.litestream.stop()

    def kill(self) -> None:
        """Stop without any final sync, as a host dying would (tests)."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self.litestream is not None:
            self.litestream.abort()

    def threads(self) -> list[threading.Thread]:
        """Every thread this replication started that is still alive (Litestream's supervision included)."""
        mine = [t for t in self._threads if t.is_alive()]
        return mine + (self.litestream.threads() if self.litestream is not None else [])

    # -- the WAL bound -------------------------------------------------------------

    def wal_bytes(self) -> int:
        """The size of the journal's WAL file now (0 if there is none)."""
        try:
            return os.stat(self.db_path + "-wal").st_size
        except OSError:
            return 0

    def _bound_wal(self) -> None:
        """Litestream is down (the supervisor calls this): keep the WAL under its bound.

        Nothing else checkpoints with replication on, so without this the WAL
        would grow until the disk is full while Litestream is down or crash-looping.
        """
        size = self.wal_bytes()
        if size <= self.max_wal_bytes or self._truncate_wal is None or self._stop.is_set():
            return
        log.warning(
            "litestream is down and the WAL of %s has reached %d bytes (bound %d): checkpointing and truncating it; "
            "litestream will take a full snapshot when it is back",
            self.db_path,
            size,
            self.max_wal_bytes,
        )
        if self._truncate_wal():
            self.wal_truncations += 1
            log.warning("the WAL of %s is %d bytes again", self.db_path, self.wal_bytes())

    # -- the view ---------------------------------------------------------------

    def status(self) -> ReplicationStatus:
        """The current view; never blocks on the network."""
        commits = self.commits
        count, oldest = commits.at_risk() if commits is not None else (0, None)
        running = self.litestream.running if self.litestream is not None else self._external_alive
        errors = [e for e in (self._remote_error, self._sync_error) if e]
        if self.litestream is not None and self.litestream.last_error:
            errors.append(self.litestream.last_error)
        now = time.time()
        # Stalled: commits wait, and the replica has taken none since the oldest
        # of them was made (or since it last advanced, if later). A replica that
        # advances, however slowly, is lagging, not stalled.
        progressed = commits.progressed_at if commits is not None else None
        since = max(oldest, progressed or 0.0) if count and oldest is not None else None
        stalled_for = max(0.0, now - since) if since is not None else 0.0
        wal_bytes = self.wal_bytes()
        over = wal_bytes > self.max_wal_bytes
        if over:
            errors.append(f"the WAL is {wal_bytes} bytes, over its bound of {self.max_wal_bytes}")
        return ReplicationStatus(
            commits_at_risk=count,
            oldest_at_risk_s=max(0.0, now - oldest) if oldest is not None else 0.0,
            replicated_at=self._replicated_at,
            replicated_position=commits.replicated_position if commits is not None else 0,
            litestream_running=running,
            last_error="; ".join(errors) or None,
            restarts=self.litestream.restarts if self.litestream is not None else 0,
            checked_at=self._checked_at,
            url=self.target.url,
            local_txid=self._local_txid,
            remote_txid=self._remote_txid,
            wal_bytes=wal_bytes,
            max_wal_bytes=self.max_wal_bytes,
            wal_over_bound=over,
            wal_truncations=self.wal_truncations,
            stalled=stalled_for > self.stall_after_s,
            stalled_for_s=stalled_for,
            stall_after_s=self.stall_after_s,
        )

    def refresh(self) -> None:
        """Read the replica's newest LTX file and move the replicated mark (blocking I/O)."""
        try:
            newest = self.reader.newest()
        except Exception as exc:  # boto errors, OSError: all mean "cannot read the replica now"
            self._remote_error = f"cannot read the replica: {exc}"
            return
        self._remote_error = None
        self._checked_at = time.time()
        if newest is not None and self.commits is not None:
            self.commits.replicated(newest)
            self._replicated_at = newest.timestamp
            self._remote_txid = newest.max_txid

    def _confirm_uploaded(self, answer: dict[str, object]) -> bool:
        """After "no_change": read the header of the file Litestream says it uploaded last.

        Litestream's own timer turned the frames into an LTX file before the
        sync looked, and the sync uploaded it. Its header names the WAL range,
        which moves the mark exactly (a file that is not there, or of another
        WAL, moves nothing), for one small read instead of listing the bucket:
        a listing is what the S3 server spends its CPU on under load.
        """
        txid = answer.get("replicated_txid")
        if answer.get("status") != "no_change" or not isinstance(txid, int) or txid <= 0 or self.commits is None:
            return False
        try:
            ltx = self.reader.header_of(txid)
        except Exception:  # boto errors, OSError: the listing decides instead
            return False
        self.commits.replicated(ltx)
        self._replicated_at = max(self._replicated_at or 0.0, ltx.timestamp)
        return True

    def _poll(self) -> None:
        while not self._stop.wait(self.poll_interval):
            if self.litestream is None:
                self._ping()
            self._read_local_txid()
            self.refresh()  # may hang as long as the bucket does (bounded by the client's timeouts)
            self._wake_waiters()

    def _read_local_txid(self) -> None:
        try:
            answer = self.control.request("GET", f"/txid?path={urllib.parse.quote(self.db_path)}", timeout=1.0)
        except LitestreamError:
            return  # reported by the process state or the ping
        if isinstance(answer, dict) and isinstance(answer.get("txid"), int):
            self._local_txid = answer["txid"]

    def _ping(self) -> None:
        """Is the Litestream run outside still answering?"""
        try:
            self.control.request("GET", "/info", timeout=1.0)
        except LitestreamError as exc:
            self._external_alive = False
            self._sync_error = str(exc)
        else:
            self._external_alive = True
        self._local_txid = 0
        self._remote_txid = 0

    def _watch(self) -> None:
        # Warnings come from a thread of their own that does no I/O: a hung
        # bucket, which stalls the poller, is exactly when they are needed.
        wait = min(self.poll_interval, 0.1)
        while not self._stop.wait(wait):
            self._warn()
            due = self._maybe_nudge()
            # Woken when the next nudge is due rather than at the next tick: a
            # commit's wait for the replica is the nudge's delay plus one sync.
            wait = min(self.poll_interval, 0.1, max(0.005, due)) if due is not None else min(self.poll_interval, 0.1)

    def _maybe_nudge(self) -> float | None:
        """Ask for a sync when the oldest unreplicated commit gets old; else how many seconds until it may be due.

        Litestream's own timers (WAL to LTX, LTX to replica, 1 s each by
        default) run independently, so a commit can wait for both: about 2 s.
        One sync requested when the oldest commit at risk passes
        ``nudge_after_s`` bounds the window near that. Under steady load the
        oldest commit passes it again ``nudge_after_s`` after each sync began,
        so nudged syncs are also kept ``MIN_NUDGE_GAP_S`` apart: each one is an
        extra LTX file and upload, and there are fewer than two a second.
        """
        if self.nudge_after_s is None or self.commits is None:
            return None
        count, oldest = self.commits.at_risk()
        if not count or oldest is None:
            return None
        due = max(oldest + self.nudge_after_s - time.time(), self._last_nudge + MIN_NUDGE_GAP_S - time.monotonic())
        if due > 0:
            return due
        with self._cond:
            if not self._nudge:
                self._nudge = True
                self._cond.notify_all()
        return None

    def _warn(self) -> None:
        status = self.status()
        late = status.oldest_at_risk_s > self.lag_warning_s
        if late and not self._warned_lag:
            log.warning(
                "replication lags: %d commit(s) not in %s, the oldest %.1f s old (%s)",
                status.commits_at_risk,
                self.target.url,
                status.oldest_at_risk_s,
                status.last_error or "no error reported",
            )
        elif not late and self._warned_lag:
            log.warning("replication caught up with %s", self.target.url)
        self._warned_lag = late
        if status.stalled and not self._warned_stall:
            log.warning(
                "replication stalled: the replica %s has not advanced for %.1f s while the journal did: "
                "%d commit(s) not in it, the oldest %.1f s old (litestream running: %s; %s)",
                self.target.url,
                status.stalled_for_s,
                status.commits_at_risk,
                status.oldest_at_risk_s,
                status.litestream_running,
                status.last_error or "no error reported",
            )
        elif not status.stalled and self._warned_stall:
            log.warning("replication resumed: %s advances again", self.target.url)
        self._warned_stall = status.stalled
        down = not status.litestream_running
        if down and not self._warned_down:
            log.warning("litestream is not running: nothing is being replicated (%s)", status.last_error)
        self._warned_down = down
        if status.wal_over_bound and not self._warned_wal:
            log.warning(
                "the WAL of %s is %d bytes, over its bound of %d: nothing has checkpointed it "
                "(litestream running: %s); commits go on",
                self.db_path,
                status.wal_bytes,
                status.max_wal_bytes,
                status.litestream_running,
            )
        elif not status.wal_over_bound and self._warned_wal:
            log.warning("the WAL of %s is back under its bound (%d bytes)", self.db_path, status.wal_bytes)
        self._warned_wal = status.wal_over_bound

    # -- replicated acknowledgements --------------------------------------------

    def wait_for(self, seq: int, done: Waiter) -> None:
        """Call ``done`` (from a monitor thread) once commit ``seq`` is in the replica."""
        commits = self.commits
        if commits is not None and commits.replicated_seq >= seq:
            done()
            return
        with self._cond:
            self._waiting.append((seq, done))
            self._cond.notify_all()

    def forget(self, done: Waiter) -> None:
        """Stop waiting for ``done`` (its caller timed out)."""
        with self._cond:
            self._waiting = [(s, d) for s, d in self._waiting if d is not done]

    def _wake_waiters(self) -> None:
        commits = self.commits
        if commits is None:
            return
        with self._cond:
            ready = [d for s, d in self._waiting if s <= commits.replicated_seq]
            self._waiting = [(s, d) for s, d in self._waiting if s > commits.replicated_seq]
        for done in ready:
            done()

    def _syncer(self) -> None:
        """One sync-and-wait at a time, shared by every caller waiting when it starts."""
        while not self._stop.is_set():
            with self._cond:
                while not self._waiting and not self._nudge and not self._stop.is_set():
                    self._cond.wait()
                if self._stop.is_set():
                    return
                if self._nudge and not self._waiting:
                    self.nudges += 1
                    self._last_nudge = time.monotonic()
                self._nudge = False
            commits = self.commits
            before = commits.count if commits is not None else 0
            try:
                answer = self.control.sync(self.db_path, timeout=5.0)
                self._sync_error = None
            except LitestreamError as exc:
                self._sync_error = str(exc)
                self._stop.wait(0.2)
                answer = {}
            if answer.get("status") == "synced" and commits is not None:
                # "synced" with wait: everything committed before the call is in
                # the replica (measured against 0.5.17): no need to list the bucket.
                commits.confirm(before)
                self._replicated_at = time.time()
            elif not self._confirm_uploaded(answer):
                # "no_change" comes at once when nothing new is local, even with
                # the bucket down: it proves nothing; the replica's files do.
                self.refresh()
            self._wake_waiters()
