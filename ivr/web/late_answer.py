"""Answering a request from another thread, at its deadline, under `ivr serve`.

A WSGI app answers by returning from its thread; a thread stuck on a frozen database never
returns. Under gunicorn the request's socket is in its environ: the watchdog
(ivr/web/deadline.py) writes a whole HTTP/1.1 response on it, with ``Connection: close``,
and shuts the socket, so the caller hears the apology on time. When the stuck thread returns
at last, gunicorn's write of its answer fails on the shut socket and is dropped (gunicorn
logs that at debug level only).
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Mapping
from typing import Any


def socket_answer(environ: Mapping[str, Any], status: str, content_type: str,
                  body: Callable[[], str]) -> Callable[[], None] | None:
    """A way to answer this request later, from any thread: None where there is none.

    Only for plain HTTP/1 under gunicorn: anything else (an HTTP/2 stream, Flask's test
    client, the development server) has no socket of its own to write a response on.
    ``body`` is built only if the answer is needed.
    """
    sock = environ.get("gunicorn.socket")
    if not isinstance(sock, socket.socket) or not str(
            environ.get("SERVER_PROTOCOL", "")).startswith("HTTP/1"):
        return None

    def answer() -> None:
        data = body().encode()
        head = (f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n").encode("latin-1")
        try:
            sock.sendall(head + data)
        finally:
            sock.shutdown(socket.SHUT_RDWR)

    return answer
