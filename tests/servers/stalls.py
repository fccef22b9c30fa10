"""Network stand-ins for a database that stops answering, in the test process.

``SilentListener`` accepts TCP connections and never sends a byte (a PostgreSQL that hangs
before the startup reply). ``FreezableProxy`` forwards to a real server until ``freeze()``,
then holds every byte in both directions until ``thaw()`` (a server that hangs mid-session,
with pooled connections already open). Both are context managers and close every socket
they opened on exit, which also unblocks any client still waiting on them.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from typing import Self


class _Listener:
    """A TCP listener on 127.0.0.1 with an accept loop in a daemon thread."""

    def __init__(self) -> None:
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._server.getsockname()[1]
        self._sockets: list[socket.socket] = []
        self._closed = threading.Event()
        threading.Thread(target=self._accept_loop, daemon=True).start()

    def _accept_loop(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            self._sockets.append(client)
            self._accepted(client)

    def _accepted(self, client: socket.socket) -> None:
        """Called for each accepted connection."""

    def close(self) -> None:
        """Stop listening and close every connection."""
        self._closed.set()
        self._server.close()
        for sock in list(self._sockets):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SilentListener(_Listener):
    """Accepts connections and never answers."""


class FreezableProxy(_Listener):
    """Forwards to ``upstream`` (host, port); ``freeze()`` stops every byte until ``thaw()``."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self._flowing = threading.Event()
        self._flowing.set()
        super().__init__()

    def freeze(self) -> None:
        """From now on, bytes are read but held: both sides wait for an answer."""
        self._flowing.clear()

    def thaw(self) -> None:
        """Deliver what was held and forward again."""
        self._flowing.set()

    def close(self) -> None:
        """Let held pumps run so they see the close, then close everything."""
        self._closed.set()
        self._flowing.set()
        super().close()

    def _accepted(self, client: socket.socket) -> None:
        try:
            server = socket.create_connection(self.upstream, timeout=5)
        except OSError:
            client.close()
            return
        server.settimeout(None)
        self._sockets.append(server)
        threading.Thread(target=self._pump, args=(client, server), daemon=True).start()
        threading.Thread(target=self._pump, args=(server, client), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket) -> None:
        while True:
            try:
                data = source.recv(65536)
            except OSError:
                data = b""
            self._flowing.wait()
            if not data or self._closed.is_set():
                for sock in (source, target):
                    with contextlib.suppress(OSError):
                        sock.shutdown(socket.SHUT_RDWR)
                return
            try:
                target.sendall(data)
            except OSError:
                return
