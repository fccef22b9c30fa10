"""`ivr serve`'s worker: gunicorn's threaded (gthread) worker, with two changes that keep a
handful of connections from stopping it taking callers.

- **A request thread gets a request only once the whole of it has arrived.** gunicorn hands
  a connection to one of its threads as soon as its first bytes arrive, and the thread then
  waits, with no time limit, for the rest of the head and the body. A client that sends
  part of a request and stops (a "slowloris") so holds a thread for as long as it likes:
  measured, 20 connections that each sent a request line and one field held every thread
  of `ivr serve` (2 workers x 8), and the next webhook was not answered within 20 s. Here
  the worker's main loop, which already watches every idle connection, reads each request
  without blocking until ``ivr.web.whole_request`` says it is whole, and only then gives it
  to a thread, whose parser reads it from memory. (gunicorn's threads also waited up to 5 s
  for a new connection's first bytes: 8 silent connections every 5 s held a worker. The
  kernel now hands a connection over once its first bytes have come, TCP_DEFER_ACCEPT.)
  A request not whole within ``REQUEST_SECONDS`` is answered 408 and closed; one larger
  than 512 KB, 413; when more than ``MAX_GATHERING`` connections are partway through a
  request, the oldest is closed (a real client's request arrives in one go and never waits
  that long).
- **Graceful closes linger in a thread of their own** (ivr.web.lingering).

Its main loop also tells the master it is alive at most once a second, where gunicorn does
on every turn of the loop (``HEARTBEAT_SECONDS``).

A request thread also waits at most ``SEND_SECONDS`` at a time for its client to take the
answer. Answers are a few KB, which the kernel's buffers take at once; a large recording
under ``prompts/audio/`` is not (a client that reads it slowly holds a thread while it does:
the buffering proxy in front takes answers whole, docs/deployment.md).

Connections over TLS or HTTP/2 with prior knowledge (neither of which `ivr serve` sets up:
the TLS proxy in front does) are handed on as gunicorn does.
"""

from __future__ import annotations

import collections
import contextlib
import selectors
import socket
import time
from functools import partial
from typing import Any

from gunicorn import util
from gunicorn.http2 import negotiation
from gunicorn.workers.gthread import TConn, ThreadWorker

from ivr.web.lingering import close_lingering
from ivr.web.whole_request import Verdict, read_so_far

# How long a client has to send the whole of a request, from when the worker starts
# reading it. Twilio and the proxy in front send a request in one go.
REQUEST_SECONDS = 10.0
# How long a request thread waits for a client to take (more of) its answer: a client
# that stops reading, or is gone without a word, would otherwise hold the thread until
# TCP gives up (about 15 minutes).
SEND_SECONDS = 15.0
# Connections partway through a request at once, per worker process.
MAX_GATHERING = 256
# How often the main loop tells the master it is alive. gunicorn touches its heartbeat file
# on every turn of the loop, two or three a request, each a system call that lets the GIL
# go; the master asks for a touch once every `timeout` (30 s under `ivr serve`).
HEARTBEAT_SECONDS = 1.0
_READ = 65536

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


def _refusal(status: str) -> bytes:
    return (f"HTTP/1.1 {status}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
            .encode("ascii"))


_TIMED_OUT = _refusal("408 Request Timeout")
_TOO_LARGE = _refusal("413 Content Too Large")


class _Conn(TConn):  # type: ignore[misc]
    """gunicorn's connection, holding what the main loop read of its next request."""

    gathered = b""
    whole = False  # the request in ``gathered`` is whole: a thread may take it
    continued = False  # ``100 Continue`` sent for the request being read
    deadline = 0.0

    def init(self) -> None:
        super().init()  # makes the parser the first time
        self.sock.settimeout(SEND_SECONDS)  # blocking, as gunicorn set it, but not for ever
        if self.gathered:  # the thread's parser reads the request from memory
            self.parser.unreader.unread(self.gathered)
            self.gathered = b""

    def close(self, graceful: bool = False) -> None:
        if graceful:
            close_lingering(self.sock)
        else:
            super().close()


class LineThreadWorker(ThreadWorker):  # type: ignore[misc]
    """gunicorn's gthread worker that reads requests whole before a thread takes them and
    whose graceful closes never wait in its main thread."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Connections partway through a request, oldest first (so by deadline).
        self._gathering: collections.OrderedDict[_Conn, None] = collections.OrderedDict()
        self._alive_at = -HEARTBEAT_SECONDS

    def notify(self) -> None:
        now = time.monotonic()
        if now - self._alive_at >= HEARTBEAT_SECONDS:
            self._alive_at = now
            super().notify()

    def init_process(self) -> None:
        # The kernel hands a connection over once its first bytes have come (Linux; nginx's
        # "deferred"), so the read right after accept usually finds the request whole.
        if hasattr(socket, "TCP_DEFER_ACCEPT"):
            for listener in self.sockets:
                with contextlib.suppress(OSError):
                    listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT, 1)
        super().init_process()

    def enqueue_req(self, conn: Any) -> None:
        # Every way a connection reaches a thread comes here, in the main thread: a new
        # connection, a kept-alive one with a new request, one with a pipelined request.
        conn.__class__ = _Conn
        if conn.whole or conn.is_http2 or self.cfg.is_ssl or \
                negotiation.prior_knowledge_allowed(self.cfg, conn.client):
            conn.whole = False
            super().enqueue_req(conn)
            return
        # A pipelined request's first bytes may be in the parser already.
        conn.gathered = conn.parser.unreader.take_buffered() if conn.parser else b""
        conn.continued = False
        conn.sock.setblocking(False)
        verdict = self._read(conn)
        if verdict is not Verdict.MORE:
            self._settle(conn, verdict)
            return
        conn.deadline = time.monotonic() + REQUEST_SECONDS
        self._gathering[conn] = None
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._on_readable, conn))
        if len(self._gathering) > MAX_GATHERING:
            self._drop(next(iter(self._gathering)), b"")

    def _on_readable(self, conn: _Conn, _sock: socket.socket) -> None:
        verdict = self._read(conn)
        if verdict is not Verdict.MORE:
            del self._gathering[conn]
            self.poller.unregister(conn.sock)
            self._settle(conn, verdict)

    def _read(self, conn: _Conn) -> Verdict | None:
        """Read what ``conn``'s client has sent so far: the verdict on its request, or None
        when the client has closed or failed before sending a whole one."""
        ended = False
        try:
            data = conn.sock.recv(_READ)
            ended = not data
            conn.gathered += data
        except BlockingIOError:
            pass
        except OSError:
            ended = True
        reading = read_so_far(conn.gathered)
        if reading.verdict is Verdict.MORE:
            if ended:
                return None
            if reading.awaits_continue and not conn.continued:
                conn.continued = True
                self._send(conn, _CONTINUE)
        # A whole request is answered even if the client has closed its side since.
        return reading.verdict

    def _settle(self, conn: _Conn, verdict: Verdict | None) -> None:
        """Give a whole request to a thread, or refuse it; the main loop no longer reads it."""
        if verdict is Verdict.WHOLE:
            conn.whole = conn.data_ready = True
            self.enqueue_req(conn)
        else:
            self._refuse(conn, _TOO_LARGE if verdict is Verdict.TOO_LARGE else b"")

    def murder_pending(self) -> None:
        super().murder_pending()
        now = time.monotonic()
        while self._gathering:
            conn = next(iter(self._gathering))
            if conn.deadline > now:
                break
            self._drop(conn, _TIMED_OUT if conn.gathered else b"")

    def _drop(self, conn: _Conn, answer: bytes) -> None:
        del self._gathering[conn]
        with contextlib.suppress(KeyError, ValueError):
            self.poller.unregister(conn.sock)
        self._refuse(conn, answer)

    def _refuse(self, conn: _Conn, answer: bytes) -> None:
        """Answer ``answer`` (if any) and close, the connection no longer counted."""
        self.nr_conns -= 1
        conn.gathered = b""
        if answer:
            self._send(conn, answer)
            close_lingering(conn.sock)  # its unread request must not reset the answer
        else:
            util.close(conn.sock)

    @staticmethod
    def _send(conn: _Conn, data: bytes) -> None:
        # A few bytes into an empty socket buffer; a client that cannot take them loses them.
        with contextlib.suppress(OSError):
            conn.sock.send(data)
