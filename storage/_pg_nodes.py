"""Many runtime processes (nodes) on one PostgreSQL database: shard leases, fencing, routing.

Actors are spread over :data:`SHARDS` shards by their address
(:func:`shard_of`, the same function in Python and in SQL). A node owns a
shard through a lease in ``stele_shards``: an owner, a generation that rises
with every change of owner, and an expiry on the database's clock. The owner
renews its leases every third of the lease time; a lease that is not renewed
expires, and any live node then takes the shard over (raising the
generation). Every commit of a step checks, in the same transaction, that its
node still holds its actor's shard at the generation the node acquired
(``stele_fence``, which also locks the lease row until the commit ends): a
node that was paused or cut off past its lease commits nothing afterwards.

Messages for an actor another node owns go into the inbox table like any
other; the owner is woken by ``NOTIFY stele`` (and polls its shards' inbox as
a fallback). An ask's reply goes back as a promise row of the asking node's
own address, ``~node/ID``.

All SQL for this lives here; :class:`PgNodes` runs it on connections of its own.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

import msgspec
import psycopg

from ._contract import Pending
from ._errors import OperationalError
from ._pg_connect import broken, connect, redact, translate
from ._pg_rows import _PENDING
from ._pg_schema import SHARDS

log = logging.getLogger("stele.storage")

Conn = psycopg.Connection[Any]

CHANNEL = "stele"
"""The channel every node listens on."""

NODE_PREFIX = "~node/"
"""The address of a node's own promises (the replies to the asks it sent elsewhere)."""

def shard_of(address: str) -> int:
    """The shard of ``address`` (``stele_shard`` in SQL computes the same)."""
    return int(hashlib.md5(address.encode(), usedforsecurity=False).hexdigest()[:7], 16) % SHARDS


def node_address(node: str) -> str:
    """The promise address of node ``node``: replies to its asks arrive there."""
    return NODE_PREFIX + node


class NodeInfo(msgspec.Struct, frozen=True):
    """One node as the database sees it."""

    id: str
    host: str
    pid: int
    http: str | None
    started: float
    heartbeat: float
    """The database's clock at its last renewal."""
    lease_s: float
    alive: bool
    """It renewed within its lease time."""
    shards: int
    """Shards it holds an unexpired lease on."""
    actors: int
    """Registered actors in those shards."""


class ShardLease(msgspec.Struct, frozen=True):
    """One shard's lease."""

    shard: int
    owner: str | None
    generation: int
    expires_in_s: float
    """Seconds until it expires (negative: expired)."""


class PgNodes:
    """A node's own connection to the shared database: leases, ids, wake-ups; thread-safe."""

    def __init__(self, url: str) -> None:
        self._url = url
        self.where = redact(url)
        self._lock = threading.Lock()
        self._conn: Conn | None = None
        self._listener: threading.Thread | None = None
        self._stop = threading.Event()

    # -- one connection, reconnected once when broken -----------------------------------------

    def _run(self, fn: Callable[[Conn], Any]) -> Any:
        with self._lock:
            for attempt in (1, 2):
                conn = self._conn
                if conn is None or conn.closed or conn.broken:
                    self._conn = conn = connect(self._url)
                try:
                    return fn(conn)
                except Exception as exc:
                    lost = broken(exc) or conn.closed or conn.broken
                    if lost:
                        conn.close()
                        self._conn = None
                    if lost and attempt == 1:
                        continue
                    if isinstance(exc, psycopg.Error):
                        raise translate(exc, f"node operation on {self.where} failed") from None
                    raise
        raise AssertionError("unreachable")

    # -- membership and leases ------------------------------------------------------------------

    def join(self, node: str, host: str, pid: int, http: str | None, lease_s: float) -> None:
        """Record ``node`` as alive; forget replies left for nodes that are gone."""

        def run(conn: Conn) -> None:
            with conn.transaction():
                conn.execute(
                    "INSERT INTO stele_nodes(id, host, pid, http, started, heartbeat, lease_s) "
                    "VALUES (%s, %s, %s, %s, stele_now(), stele_now(), %s) "
                    "ON CONFLICT (id) DO UPDATE SET heartbeat = stele_now(), http = excluded.http",
                    (node, host, pid, http, lease_s),
                )
                conn.execute(
                    "DELETE FROM stele_nodes WHERE heartbeat < stele_now() - 10 * lease_s - 60 AND id <> %s",
                    (node,),
                )
                conn.execute(
                    "DELETE FROM promises WHERE address LIKE %s AND substr(address, %s) NOT IN "
                    "(SELECT id FROM stele_nodes)",
                    (NODE_PREFIX + "%", len(NODE_PREFIX) + 1),
                )

        self._run(run)

    def renew(self, node: str, held: dict[int, int], lease_s: float) -> tuple[dict[int, int], int]:
        """Extend the leases ``node`` holds (shard -> generation); those kept, and the live nodes."""

        def run(conn: Conn) -> tuple[dict[int, int], int]:
            with conn.transaction():
                conn.execute(
                    "UPDATE stele_nodes SET heartbeat = stele_now(), lease_s = %s WHERE id = %s", (lease_s, node)
                )
                kept = {
                    int(shard): int(generation)
                    for shard, generation in conn.execute(
                        "UPDATE stele_shards AS s SET expires = stele_now() + %s "
                        "FROM unnest(%s::integer[], %s::bigint[]) AS h(shard, generation) "
                        "WHERE s.shard = h.shard AND s.generation = h.generation AND s.owner = %s "
                        "AND s.expires > stele_now() RETURNING s.shard, s.generation",
                        (lease_s, list(held), list(held.values()), node),
                    )
                }
                row = conn.execute(
                    "SELECT count(*) FROM stele_nodes WHERE heartbeat > stele_now() - lease_s"
                ).fetchone()
            return kept, int(row[0]) if row else 1

        result: tuple[dict[int, int], int] = self._run(run)
        return result

    def acquire(self, node: str, want: int, lease_s: float) -> dict[int, int]:
        """Take up to ``want`` shards nobody holds (never held, released, or expired); shard -> generation."""
        if want <= 0:
            return {}

        def run(conn: Conn) -> dict[int, int]:
            with conn.transaction():
                rows = conn.execute(
                    "UPDATE stele_shards AS s SET owner = %s, generation = s.generation + 1, "
                    "expires = stele_now() + %s FROM (SELECT shard FROM stele_shards "
                    "WHERE owner IS NULL OR expires <= stele_now() ORDER BY shard LIMIT %s "
                    "FOR UPDATE SKIP LOCKED) AS free WHERE s.shard = free.shard RETURNING s.shard, s.generation",
                    (node, lease_s, want),
                ).fetchall()
            return {int(shard): int(generation) for shard, generation in rows}

        result: dict[int, int] = self._run(run)
        return result

    def release(self, node: str, shards: dict[int, int]) -> None:
        """Give up these leases at once (a clean stop, or more than a fair share)."""
        if not shards:
            return
        self._run(
            lambda conn: conn.execute(
                "UPDATE stele_shards AS s SET owner = NULL, expires = 0 "
                "FROM unnest(%s::integer[], %s::bigint[]) AS h(shard, generation) "
                "WHERE s.shard = h.shard AND s.generation = h.generation AND s.owner = %s",
                (list(shards), list(shards.values()), node),
            )
        )

    def leave(self, node: str, shards: dict[int, int]) -> None:
        """A clean stop: release every lease and forget the node."""

        def run(conn: Conn) -> None:
            with conn.transaction():
                conn.execute(
                    "UPDATE stele_shards AS s SET owner = NULL, expires = 0 "
                    "FROM unnest(%s::integer[], %s::bigint[]) AS h(shard, generation) "
                    "WHERE s.shard = h.shard AND s.generation = h.generation AND s.owner = %s",
                    (list(shards), list(shards.values()), node),
                )
                conn.execute("DELETE FROM stele_nodes WHERE id = %s", (node,))

        self._run(run)

    # -- ids --------------------------------------------------------------------------------------

    def reserve(self, count: int) -> int:
        """Reserve ``count`` ids (message ids, and actor ids, which need only be unique): the first."""
        row = self._run(
            lambda conn: conn.execute(
                "UPDATE meta SET int_value = greatest(int_value, "
                "(SELECT coalesce(max(id), 0) FROM actors)) + %s WHERE key = 'step_hwm' RETURNING int_value",
                (count,),
            ).fetchone()
        )
        if row is None:
            raise OperationalError(f"{self.where} has no message-id high-water mark (meta step_hwm)")
        return int(row[0]) - count + 1

    # -- routing ----------------------------------------------------------------------------------

    def pending_in(self, shards: Sequence[int]) -> list[Pending]:
        """Every pending inbox message (and timer) of actors in ``shards``, in id order."""
        rows = self._run(
            lambda conn: conn.execute(
                f"SELECT {_PENDING} FROM inbox WHERE stele_shard(target) = ANY(%s) ORDER BY id", (list(shards),)
            ).fetchall()
        )
        return [Pending(*row) for row in rows]

    def pending_ids(self, ids: Sequence[int]) -> list[Pending]:
        """The pending inbox messages among ``ids``."""
        rows = self._run(
            lambda conn: conn.execute(
                f"SELECT {_PENDING} FROM inbox WHERE id = ANY(%s) ORDER BY id", (list(ids),)
            ).fetchall()
        )
        return [Pending(*row) for row in rows]

    def notify(self, payloads: Sequence[str]) -> None:
        """Wake the nodes: one notification per payload on :data:`CHANNEL`."""
        if payloads:
            self._run(
                lambda conn: conn.execute(
                    "SELECT pg_notify(%s, p) FROM unnest(%s::text[]) AS p", (CHANNEL, list(payloads))
                )
            )

    def listen(self, received: Callable[[str | None], None]) -> None:
        """Call ``received(payload)`` for every notification on :data:`CHANNEL`, in a thread of its own,
        and ``received(None)`` after each (re)connection (notifications may have been missed)."""

        def run() -> None:
            while not self._stop.is_set():
                try:
                    with connect(self._url) as conn:
                        conn.execute(f"LISTEN {CHANNEL}")
                        received(None)
                        while not self._stop.is_set():
                            for note in conn.notifies(timeout=0.5):
                                received(note.payload)
                except Exception as exc:
                    if self._stop.is_set():
                        return
                    log.warning("node listener on %s lost its connection (%s); reconnecting", self.where, exc)
                    self._stop.wait(0.5)

        self._listener = threading.Thread(target=run, name="stele-node-listener", daemon=True)
        self._listener.start()

    # -- looking ----------------------------------------------------------------------------------

    def nodes(self) -> list[NodeInfo]:
        """Every node recorded, with its leases and how many actors they cover."""
        return nodes(self._run, self.where)

    def close(self) -> None:
        """Stop listening and close the connections."""
        self._stop.set()
        if self._listener is not None:
            self._listener.join(5)
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


def nodes(run: Callable[[Callable[[Conn], Any]], Any], where: str) -> list[NodeInfo]:
    """The nodes of a database (``run`` runs a query on a connection to it)."""

    def query(conn: Conn) -> list[NodeInfo]:
        if conn.execute("SELECT to_regclass('stele_nodes') IS NOT NULL").fetchone() != (True,):
            return []
        rows = conn.execute(
            """WITH now AS (SELECT stele_now() AS t),
                held AS (SELECT owner, shard FROM stele_shards, now WHERE owner IS NOT NULL AND expires > now.t),
                counts AS (SELECT stele_shard(address) AS shard, count(*) AS n FROM actors GROUP BY 1)
            SELECT n.id, n.host, n.pid, n.http, n.started, n.heartbeat, n.lease_s,
                   n.heartbeat > now.t - n.lease_s,
                   (SELECT count(*) FROM held WHERE held.owner = n.id),
                   (SELECT coalesce(sum(c.n), 0) FROM held JOIN counts AS c USING (shard) WHERE held.owner = n.id)
            FROM stele_nodes AS n, now ORDER BY n.started, n.id"""
        ).fetchall()
        return [
            NodeInfo(str(r[0]), str(r[1]), int(r[2]), r[3], float(r[4]), float(r[5]), float(r[6]), bool(r[7]),
                     int(r[8]), int(r[9]))
            for r in rows
        ]  # fmt: skip

    result: list[NodeInfo] = run(query)
    return result


def leases(run: Callable[[Callable[[Conn], Any]], Any]) -> list[ShardLease]:
    """Every shard's lease."""

    def query(conn: Conn) -> list[ShardLease]:
        if conn.execute("SELECT to_regclass('stele_shards') IS NOT NULL").fetchone() != (True,):
            return []
        return [
            ShardLease(int(r[0]), r[1], int(r[2]), float(r[3]))
            for r in conn.execute(
                "SELECT shard, owner, generation, expires - stele_now() FROM stele_shards ORDER BY shard"
            )
        ]

    result: list[ShardLease] = run(query)
    return result


def view(url: str) -> tuple[list[NodeInfo], list[ShardLease]]:
    """The nodes of the database at ``url`` and every shard's lease (read-only; for ``nodes`` and status)."""
    where = redact(url)
    conn = connect(url, readonly=True)
    try:

        def run(fn: Callable[[Conn], Any]) -> Any:
            try:
                return fn(conn)
            except psycopg.Error as exc:
                raise translate(exc, f"cannot read the nodes of {where}") from None

        return nodes(run, where), leases(run)
    finally:
        conn.close()
