"""A forwarding HTTP proxy in front of a test server, to stop chosen requests at a known point.

Tests that need "a worker is inside a post right now" put a ``Gate`` between the workers and
the accounting server instead of sleeping and hoping:

- ``hold(method, path, after=n, answered=...)`` stops the (n+1)-th matching request, either
  before it is forwarded (the server never sees it) or after the server has answered (the
  server has applied it, the client has not heard). ``Held.wait()`` returns once it is there;
  the test acts (SIGKILLs the client, say) and ``release()``s it. A request held before
  forwarding is dropped on release: its client is gone.
- ``answer(method, path, status, body)`` answers the next matching request itself, never
  forwarding it: a server's rare failure (hledger-web's "busy" 403) on a request we choose.
- ``together(method, path, parties=n)`` makes the first n matching requests wait for each
  other before any is forwarded: n clients that each send one request at a time are then
  provably inside a request at the same moment.

The gate passes requests on one at a time (``serial``, the default): hledger-web 1.25 fails
requests that overlap inside it ("openFile: resource busy (file is locked)" when a journal
reload meets an append, answered as a 403 "server-side UI is disabled" or a 500), which is the
server's limit, not what the posting tests are about. Clients still wait at the gate at once.

Every wait has a timeout that fails the test loudly rather than hanging it. The gate listens
on a port the kernel picks (bound before its URL is known: no port race).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

import requests

WAIT = 90.0
_HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "content-length", "host",
                "proxy-connection", "te", "trailer", "upgrade",
                "content-encoding"}  # requests has already decoded the body we pass on


class Held:
    """One request stopped by ``Gate.hold``."""

    def __init__(self, answered: bool) -> None:
        self.answered = answered
        self.body = b""
        self._arrived = threading.Event()
        self._released = threading.Event()

    def wait(self, timeout: float = WAIT) -> None:
        """Block until the request is held (AssertionError after ``timeout`` seconds)."""
        if not self._arrived.wait(timeout):
            raise AssertionError(f"no request reached the gate's hold in {timeout} s")

    def json(self) -> Any:
        """The held request's JSON body."""
        return json.loads(self.body)

    def release(self) -> None:
        """Let the held request go (forwarded or answered, or dropped if its client is gone)."""
        self._released.set()


class Together:
    """The first ``parties`` matching requests, held until all of them are in."""

    def __init__(self, parties: int) -> None:
        self.barrier = threading.Barrier(parties, timeout=WAIT)
        self.met = threading.Event()

    def wait(self, timeout: float = WAIT) -> None:
        """Block until all parties were inside a request at once."""
        if not self.met.wait(timeout):
            raise AssertionError(f"{self.barrier.parties} requests were never in flight at "
                                 f"once ({self.barrier.n_waiting} waiting after {timeout} s)")


class Answer:
    """A reply ``Gate.answer`` gives in the server's place."""

    def __init__(self, status: int, body: bytes, content_type: str) -> None:
        self.status = status
        self.body = body
        self.content_type = content_type


class Gate:
    """A proxy to ``target`` (``http://127.0.0.1:port``) on a free 127.0.0.1 port."""

    def __init__(self, target: str, *, serial: bool = True) -> None:
        self.target = target.rstrip("/")
        self.serial = serial
        self._lock = threading.Lock()
        self._one_at_a_time = threading.Lock()
        self._rules: list[tuple[str, str, Callable[[], Held | Together | Answer | None]]] = []
        self._server: ThreadingHTTPServer | None = None
        self._held: list[Held] = []
        self.refused: list[str] = []  # requests the server did not answer with 2xx
        self.seen: list[str] = []  # "METHOD /path" of every request, in arrival order
        self.url = ""

    # -- what to stop ---------------------------------------------------------------------

    def hold(self, method: str, path: str, *, after: int = 0, answered: bool) -> Held:
        """Stop the (``after``+1)-th ``method path`` request from now on (once)."""
        held = Held(answered)
        self._held.append(held)
        seen = {"n": 0}

        def pick() -> Held | None:
            seen["n"] += 1
            return held if seen["n"] == after + 1 else None

        with self._lock:
            self._rules = [(method, path, pick)]
        return held

    def together(self, method: str, path: str, *, parties: int) -> Together:
        """Hold the next ``parties`` ``method path`` requests until all have arrived."""
        together = Together(parties)
        seen = {"n": 0}

        def pick() -> Together | None:
            seen["n"] += 1
            return together if seen["n"] <= parties else None

        with self._lock:
            self._rules = [(method, path, pick)]
        return together

    def answer(self, method: str, path: str, status: int, body: str, *,
               content_type: str = "application/json") -> None:
        """Answer the next ``method path`` request with ``status`` and ``body`` (once); the
        server never sees it."""
        answer = Answer(status, body.encode(), content_type)
        seen = {"n": 0}

        def pick() -> Answer | None:
            seen["n"] += 1
            return answer if seen["n"] == 1 else None

        with self._lock:
            self._rules = [(method, path, pick)]

    def open(self) -> None:
        """Stop nothing from now on."""
        with self._lock:
            self._rules = []

    def _match(self, method: str, path: str) -> Held | Together | Answer | None:
        with self._lock:
            for rule_method, rule_path, pick in self._rules:
                if rule_method == method and path.split("?", 1)[0] == rule_path:
                    return pick()
        return None

    # -- serving --------------------------------------------------------------------------

    def _forward(self, method: str, path: str, headers: dict[str, str],
                 body: bytes) -> requests.Response:
        if not self.serial:
            return requests.request(method, self.target + path, data=body or None,
                                    headers=headers, timeout=60, allow_redirects=False)
        with self._one_at_a_time:
            return requests.request(method, self.target + path, data=body or None,
                                    headers=headers, timeout=60, allow_redirects=False)

    def start(self) -> Self:
        gate = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"  # one request per connection: nothing to pool

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                gate.seen.append(f"{self.command} {self.path}")
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in _HOP_HEADERS}
                stop = gate._match(self.command, self.path)
                if isinstance(stop, Answer):
                    self.send_response(stop.status)
                    self.send_header("Content-Type", stop.content_type)
                    self.send_header("Content-Length", str(len(stop.body)))
                    self.end_headers()
                    self.wfile.write(stop.body)
                    return
                if isinstance(stop, Together):
                    try:
                        stop.barrier.wait()
                        stop.met.set()
                    except threading.BrokenBarrierError:
                        pass  # Together.wait() reports it; forward rather than hang
                elif isinstance(stop, Held) and not stop.answered:
                    stop.body = body
                    stop._arrived.set()
                    stop._released.wait(WAIT)
                    return  # dropped: the test killed its client meanwhile
                response = gate._forward(self.command, self.path, headers, body)
                if response.status_code >= 300:
                    gate.refused.append(f"{self.command} {self.path} {headers} {body[:300]!r}"
                                        f" -> {response.status_code} {response.text[:200]}")
                if isinstance(stop, Held):
                    stop.body = body
                    stop._arrived.set()
                    stop._released.wait(WAIT)
                try:
                    self.send_response(response.status_code)
                    for key, value in response.headers.items():
                        if key.lower() not in _HOP_HEADERS:
                            self.send_header(key, value)
                    self.send_header("Content-Length", str(len(response.content)))
                    self.end_headers()
                    self.wfile.write(response.content)
                except OSError:
                    pass  # the client is gone (killed while held)

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _handle

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self.open()
            for held in self._held:
                held.release()
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
