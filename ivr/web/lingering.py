"""Graceful closes that never wait in the worker's main loop (ivr.web.worker).

gunicorn closes a connection whose request asked for it (``Connection: close``) gracefully
(RFC 9112, section 9.6): it sends its FIN, then reads what the client still sends until the
client closes too, for up to 2 s. The gthread worker does that read in its main thread, the
one that accepts connections and hands requests to the request threads. So a client that
sends one request and then keeps its socket open held a worker for 2 s, and a handful of
them, one after the other, for longer than Twilio waits for a webhook (15 s): measured, 5
such connections held a worker for 9.7 s. Here the FIN is still sent at once (the client
sees the end of the answer as before), and the lingering read moves to one thread per
process that watches every such socket together and closes each at the client's FIN, after
64 KB, or after 2 s, whichever comes first.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import queue
import selectors
import socket
import threading
import time

log = logging.getLogger(__name__)

# gunicorn's own limits for a graceful close (gunicorn.util.close_graceful).
LINGER_SECONDS = 2.0
MAX_DRAIN = 65536
# Sockets lingering at once per process; beyond that the oldest is closed at once (a flood
# of clients that never close would otherwise hold a file descriptor each for 2 s).
MAX_LINGERING = 256
_POLL = 0.1


class _Lingering:
    """Sockets whose FIN has been sent, read until the client closes, then closed."""

    def __init__(self) -> None:
        self._new: queue.SimpleQueue[socket.socket] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._pid = 0  # the thread is started in the process that closes (after a fork)

    def close(self, sock: socket.socket) -> None:
        """Send the FIN now; the rest of the close happens in the lingering thread."""
        try:
            sock.shutdown(socket.SHUT_WR)
            sock.setblocking(False)
        except OSError:  # the client is gone already
            sock.close()
            return
        with self._lock:
            if self._pid != os.getpid():
                self._pid = os.getpid()
                threading.Thread(target=self._run, name="ivr-lingering", daemon=True).start()
        self._new.put(sock)

    def _run(self) -> None:
        watched: collections.OrderedDict[socket.socket, list[float]] = collections.OrderedDict()
        with selectors.DefaultSelector() as selector:
            while True:
                try:
                    self._turn(selector, watched)
                except Exception:  # never let the thread die: every later socket would leak
                    log.exception("lingering close failed")
                    time.sleep(_POLL)

    def _turn(self, selector: selectors.BaseSelector,
              watched: collections.OrderedDict[socket.socket, list[float]]) -> None:
        # Nothing to watch: sleep until something is (no wake-ups on an idle line).
        new = [self._new.get()] if not watched else []
        while not self._new.empty():
            new.append(self._new.get())
        for sock in new:
            try:
                selector.register(sock, selectors.EVENT_READ)
            except (OSError, ValueError):
                sock.close()
                continue
            watched[sock] = [time.monotonic() + LINGER_SECONDS, 0]
            if len(watched) > MAX_LINGERING:
                self._done(selector, watched, next(iter(watched)))
        for key, _ in selector.select(_POLL):
            sock = key.fileobj  # type: ignore[assignment]
            try:
                data = sock.recv(4096)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            watched[sock][1] += len(data)
            if not data or watched[sock][1] >= MAX_DRAIN:
                self._done(selector, watched, sock)
        now = time.monotonic()
        for sock in [s for s, (deadline, _) in watched.items() if deadline <= now]:
            self._done(selector, watched, sock)

    @staticmethod
    def _done(selector: selectors.BaseSelector,
              watched: collections.OrderedDict[socket.socket, list[float]],
              sock: socket.socket) -> None:
        del watched[sock]
        with contextlib.suppress(KeyError, ValueError):
            selector.unregister(sock)
        sock.close()


_LINGERING = _Lingering()


def close_lingering(sock: socket.socket) -> None:
    """Send ``sock``'s FIN now, and close it once the client has closed too (or after
    ``LINGER_SECONDS``), in this process's lingering thread."""
    _LINGERING.close(sock)
