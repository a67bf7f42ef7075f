"""A TCP proxy on 127.0.0.1 in front of a real PostgreSQL server, for losing what the network can lose.

Faults, on demand: ``lose_next_reply()`` forwards the client's next bytes to
the server and drops the server's answer, cutting both sides (the server did
the work; the client never hears of it); ``lose_reply_to(text)`` does the same
to the next bytes that contain ``text`` (one statement among a client's
others) and then refuses new connections until ``heal()``, so that the client
cannot read back what happened; ``cut()`` closes every connection and refuses
new ones until ``heal()``.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading
from urllib.parse import urlsplit, urlunsplit


class Proxy:
    """Forwards 127.0.0.1:port to the server of ``url``; ``url_through`` is the URL through it."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self._target = (parts.hostname or "127.0.0.1", parts.port or 5432)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        port = self._listener.getsockname()[1]
        user = parts.netloc.rpartition("@")[0]
        self.url = urlunsplit((parts.scheme, f"{user}@127.0.0.1:{port}", parts.path, parts.query, parts.fragment))
        self._lock = threading.Lock()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._refusing = False
        self._lose_reply = False
        self._lose_reply_to: bytes | None = None
        self.replies_lost = 0
        self._stopped = False
        self._thread = threading.Thread(target=self._accept, name="pg-proxy", daemon=True)
        self._thread.start()

    def lose_next_reply(self) -> None:
        """The next bytes from a client reach the server; its answer is dropped and the connection cut."""
        with self._lock:
            self._lose_reply = True

    def lose_reply_to(self, text: bytes) -> None:
        """The next bytes from a client that contain ``text`` reach the server; its answer is dropped,
        the connection cut, and new connections are refused until :meth:`heal`."""
        with self._lock:
            self._lose_reply_to = text

    def cut(self) -> None:
        """Close every connection, and refuse new ones until :meth:`heal`."""
        with self._lock:
            self._refusing = True
            pairs, self._pairs = self._pairs, []
        for pair in pairs:
            _close(*pair)

    def heal(self) -> None:
        """Accept connections again."""
        with self._lock:
            self._refusing = False

    def stop(self) -> None:
        """Stop listening and cut everything."""
        self._stopped = True
        self.cut()
        self._thread.join(5)
        self._listener.close()

    def _accept(self) -> None:
        while not self._stopped:
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                refusing = self._refusing
            if refusing:
                client.close()
                continue
            try:
                server = socket.create_connection(self._target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._pairs.append((client, server))
            threading.Thread(target=self._pump, args=(client, server), name="pg-proxy-pump", daemon=True).start()

    def _pump(self, client: socket.socket, server: socket.socket) -> None:
        sel = selectors.DefaultSelector()
        try:
            client.setblocking(True)
            server.setblocking(True)
            sel.register(client, selectors.EVENT_READ, server)
            sel.register(server, selectors.EVENT_READ, client)
            armed = False  # this connection sent bytes while a lost reply was asked for
            refuse = False  # and new connections are refused once it is lost
            while not self._stopped:
                for key, _ in sel.select(timeout=0.2):
                    source: socket.socket = key.fileobj  # type: ignore[assignment]
                    data = source.recv(65536)
                    if not data:
                        return
                    if source is client:
                        with self._lock:
                            if self._lose_reply:
                                self._lose_reply, armed = False, True
                            elif self._lose_reply_to is not None and self._lose_reply_to in data:
                                self._lose_reply_to, armed, refuse = None, True, True
                    elif armed:
                        # The server answered what the client sent: drop it, cut both sides.
                        with self._lock:
                            self.replies_lost += 1
                            self._refusing = self._refusing or refuse
                        return
                    key.data.sendall(data)
        except OSError:
            return
        finally:
            sel.close()
            _close(client, server)
            with self._lock:
                if (client, server) in self._pairs:
                    self._pairs.remove((client, server))


def _close(*socks: socket.socket) -> None:
    for sock in socks:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            sock.close()
