"""Clients that send their requests slowly, in pieces, or never finish them, against
`ivr serve` (real gunicorn, one worker of 8 threads): callers are answered all the same
(ivr.web.worker)."""

from __future__ import annotations

import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import pytest
from twilio.request_validator import RequestValidator

from ivr.web.app import get_database
from ivr.web.worker import MAX_GATHERING, REQUEST_SECONDS, SEND_SECONDS
from tests.conftest import REPO, TOKEN, make_app
from tests.servers.line import serve_line

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def line(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url = f"sqlite:///{tmp_path_factory.mktemp('slow') / 'served.sqlite3'}"
    app = make_app(url, REPO / "prompts")
    get_database(app).dispose()
    with serve_line({"IVR_DATABASE_URL": url, "IVR_TWILIO_AUTH_TOKEN": TOKEN},
                    workers=1) as base:
        yield base


def _connect(base: str) -> socket.socket:
    return socket.create_connection(("127.0.0.1", urlsplit(base).port or 80), timeout=10)


def _webhook(base: str, call_sid: str, extra: str = "") -> bytes:
    """A new call's first webhook, signed as Twilio signs it, as bytes on the wire."""
    form = {"CallSid": call_sid, "From": "+13125550101", "To": "+13125550000",
            "CallStatus": "ringing", "AccountSid": "AC" + "0" * 32}
    body = urlencode(form).encode()
    signature = RequestValidator(TOKEN).compute_signature(f"{base}/voice/incoming", form)
    return (f"POST /voice/incoming HTTP/1.1\r\nHost: {urlsplit(base).netloc}\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\n"
            f"Content-Length: {len(body)}\r\nX-Twilio-Signature: {signature}\r\n{extra}\r\n"
            ).encode() + body


def _answer(sock: socket.socket, buffered: bytearray) -> tuple[str, bytes]:
    """The next response on ``sock``: its status line and body (``buffered`` holds what was
    read past it)."""
    while b"\r\n\r\n" not in buffered:
        chunk = sock.recv(65536)
        assert chunk, f"closed before an answer: {bytes(buffered)!r}"
        buffered += chunk
    head, _, rest = bytes(buffered).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    length = next((int(line.split(":", 1)[1]) for line in lines
                   if line.lower().startswith("content-length:")), 0)
    while len(rest) < length:
        chunk = sock.recv(65536)
        assert chunk
        rest += chunk
    buffered[:] = rest[length:]
    return lines[0], rest[:length]


def _ends(sock: socket.socket) -> bytes:
    """Everything ``sock`` still receives until the server closes it."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def _asks_for_language(status: str, body: bytes) -> bool:
    return status == "HTTP/1.1 200 OK" and b"<Gather" in body


def test_clients_that_send_part_of_a_request_do_not_hold_up_callers(line: str) -> None:
    # Each held connection would have kept one of the worker's 8 threads waiting for the
    # rest of its request for as long as it liked: 40 held every caller off for good.
    partial = [
        b"POST /voice/incoming HTTP/1.1\r\nHost: line\r\n",  # the head, unfinished
        _webhook(line, "CAheld")[:-5],  # the body, 5 bytes short
        b"POST /voice/incoming HTTP/1.1\r\nHost: line\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nCallS\r\n",  # a chunked body without its last chunk
    ]
    held = [_connect(line) for _ in range(40)]
    sent = {}
    try:
        for n, sock in enumerate(held):
            if n % 4:  # every fourth sends nothing at all
                sent[sock] = partial[n % 4 - 1]
                sock.sendall(sent[sock])
        time.sleep(0.3)
        caller = _connect(line)
        started = time.monotonic()
        caller.sendall(_webhook(line, "CAcaller"))
        assert _asks_for_language(*_answer(caller, bytearray()))
        assert time.monotonic() - started < 2  # milliseconds; never, before
        caller.close()
        # Past the time a request has to arrive whole, each is let go: with 408 if it
        # had sent something, silently if not.
        time.sleep(REQUEST_SECONDS + 1.5)
        for sock in held:
            ended = _ends(sock)
            if sock in sent:
                assert ended.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), ended
            else:
                assert ended == b""
    finally:
        for sock in held:
            sock.close()


def test_a_request_sent_in_pieces_is_answered(line: str) -> None:
    request = _webhook(line, "CApieces")
    with _connect(line) as sock:
        for piece in (request[:20], request[20:150], request[150:-10], request[-10:]):
            sock.sendall(piece)
            time.sleep(0.2)
        buffered = bytearray()
        assert _asks_for_language(*_answer(sock, buffered))
        # The same kept-alive connection, its next request in two pieces.
        again = _webhook(line, "CApieces2")
        sock.sendall(again[:30])
        time.sleep(0.2)
        sock.sendall(again[30:])
        assert _asks_for_language(*_answer(sock, buffered))


def test_pipelined_requests_are_each_answered(line: str) -> None:
    with _connect(line) as sock:
        sock.sendall(_webhook(line, "CApipe1") + _webhook(line, "CApipe2")
                     + b"GET /healthz HTTP/1.1\r\nHost: line\r\n\r\n")
        buffered = bytearray()
        assert _asks_for_language(*_answer(sock, buffered))
        assert _asks_for_language(*_answer(sock, buffered))
        assert _answer(sock, buffered)[0] == "HTTP/1.1 200 OK"


def test_a_client_that_expects_100_continue_is_told_to_send_its_body(line: str) -> None:
    request = _webhook(line, "CAcontinue", "Expect: 100-continue\r\n")
    head, _, body = request.partition(b"\r\n\r\n")
    with _connect(line) as sock:
        sock.sendall(head + b"\r\n\r\n")
        buffered = bytearray()
        assert _answer(sock, buffered)[0] == "HTTP/1.1 100 Continue"
        sock.sendall(body)
        status, answer = _answer(sock, buffered)
        while status == "HTTP/1.1 100 Continue":  # gunicorn may say it again (RFC 9110 15.2)
            status, answer = _answer(sock, buffered)
        assert _asks_for_language(status, answer)


def test_an_oversized_request_is_refused_before_its_body(line: str) -> None:
    with _connect(line) as sock:
        sock.sendall(b"POST /voice/incoming HTTP/1.1\r\nHost: line\r\n"
                     b"Content-Length: 10000000\r\n\r\n" + b"a" * 1000)
        assert _ends(sock).startswith(b"HTTP/1.1 413 ")


def test_a_flood_of_unfinished_requests_lets_the_oldest_go(line: str) -> None:
    # More connections partway through a request than the worker keeps: the oldest are
    # closed, the newest (a real caller's) answered.
    flood = [_connect(line) for _ in range(MAX_GATHERING + 20)]
    try:
        for sock in flood:
            sock.sendall(b"P")
        time.sleep(0.5)
        caller = _connect(line)
        caller.sendall(_webhook(line, "CAflood"))
        assert _asks_for_language(*_answer(caller, bytearray()))
        caller.close()
        for sock in flood[:20]:
            sock.settimeout(3)
            assert _ends(sock) == b""
        flood[-1].setblocking(False)
        with pytest.raises(BlockingIOError):  # still open, still waiting for its request
            flood[-1].recv(1)
    finally:
        for sock in flood:
            sock.close()


def test_silent_connections_do_not_hold_up_callers(line: str) -> None:
    # Connections that never send a byte: gunicorn's threads waited 5 s for each one's
    # first bytes, so 8 every 5 s held the worker's threads.
    silent = [_connect(line) for _ in range(40)]
    try:
        time.sleep(0.5)
        started = time.monotonic()
        caller = _connect(line)
        caller.sendall(_webhook(line, "CAsilent"))
        assert _asks_for_language(*_answer(caller, bytearray()))
        assert time.monotonic() - started < 2
        caller.close()
    finally:
        for sock in silent:
            sock.close()


def test_a_client_that_stops_reading_its_answer_is_let_go(tmp_path: Path) -> None:
    # A recording too large for the kernel's buffers, asked for and never read: the thread
    # sending it waited until TCP gave up (about 15 minutes).
    prompts = tmp_path / "prompts"
    shutil.copytree(REPO / "prompts", prompts)
    (prompts / "audio").mkdir()
    size = 20_000_000
    (prompts / "audio" / "long.wav").write_bytes(bytes(size))
    url = f"sqlite:///{tmp_path / 'served.sqlite3'}"
    get_database(make_app(url, prompts)).dispose()
    with serve_line({"IVR_DATABASE_URL": url, "IVR_TWILIO_AUTH_TOKEN": TOKEN,
                     "IVR_PROMPTS_DIR": str(prompts)}, workers=1) as base, \
            socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(10)
        sock.connect(("127.0.0.1", urlsplit(base).port or 80))
        sock.sendall(b"GET /voice/audio/long.wav HTTP/1.1\r\nHost: line\r\n\r\n")
        time.sleep(SEND_SECONDS + 2)
        received = _ends(sock)
    assert received.startswith(b"HTTP/1.1 200 OK\r\n")
    assert len(received) < size  # the answer was cut off, the thread let go
