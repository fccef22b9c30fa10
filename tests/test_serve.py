"""`ivr serve` under gunicorn, driven over real HTTP on 127.0.0.1 by `ivr call --url`."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import psutil
import pytest
import requests
from click.testing import CliRunner

from ivr.cli import main
from ivr.web.app import get_database
from ivr.web.server import SHM
from tests.conftest import REPO, TOKEN, make_app, requires
from tests.servers.line import serve_line

pytestmark = pytest.mark.slow


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, str]]:
    url = f"sqlite:///{tmp_path / 'served.sqlite3'}"
    app = make_app(url, REPO / "prompts")  # migrates and seeds the demo accounts
    get_database(app).dispose()
    with serve_line({"IVR_DATABASE_URL": url, "IVR_TWILIO_AUTH_TOKEN": TOKEN}) as base:
        yield base, url


def test_paid_call_over_http_against_gunicorn(server: tuple[str, str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    base, url = server
    assert requests.post(f"{base}/voice/incoming", data={"CallSid": "CA1"},
                         timeout=5).status_code == 403
    monkeypatch.setenv("IVR_DATABASE_URL", url)
    result = CliRunner().invoke(main, ["call", "--url", base, "--token", TOKEN,
                                       "--press", "1 60614 1 1", "--json"])
    assert result.exit_code == 0, result.output
    events = json.loads(result.output)["events"]
    pay = next(e for e in events if e["event"] == "pay")
    assert pay["result"] == "success"
    listed = json.loads(CliRunner().invoke(main, ["payments", "list", "--json"]).output)
    assert [row["confirmation"] for row in listed] == [pay["confirmation"]]


def test_call_with_wrong_token_hears_nothing(server: tuple[str, str]) -> None:
    base, _ = server
    result = CliRunner().invoke(main, ["call", "--url", base, "--token", "wrong",
                                       "--press", "1", "--json"])
    assert result.exit_code == 2
    assert json.loads(result.output)["ended_by"] == "error"


def test_a_line_signed_by_shared_key_alone_takes_a_paid_call(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A utility whose Webhook Rule signs every webhook with a shared key: the auth token
    # need not be on the line's machines at all.
    url = f"sqlite:///{tmp_path / 'keyed.sqlite3'}"
    get_database(make_app(url, REPO / "prompts")).dispose()
    key = "KS0123456789abcdef0123456789abcdef:a-shared-key-secret"
    monkeypatch.delenv("IVR_TWILIO_AUTH_TOKEN", raising=False)
    with serve_line({"IVR_DATABASE_URL": url, "IVR_TWILIO_WEBHOOK_KEYS": key}) as base:
        refused = CliRunner().invoke(main, ["call", "--url", base, "--token", TOKEN,
                                            "--press", "1", "--json"])
        assert json.loads(refused.output)["ended_by"] == "error"
        result = CliRunner().invoke(main, ["call", "--url", base, "--key", key,
                                           "--press", "1 60614 1 1", "--json"])
    assert result.exit_code == 0, result.output
    pay = next(e for e in json.loads(result.output)["events"] if e["event"] == "pay")
    assert pay["result"] == "success"


def test_call_key_must_be_one_pair() -> None:
    result = CliRunner().invoke(main, ["call", "--url", "http://127.0.0.1:9", "--key",
                                       "KS1:a,KS2:b", "--press", "1"])
    assert result.exit_code != 0 and "--key must be one SID:secret" in result.output


def _master(base: str) -> psutil.Process:
    """The gunicorn master of `ivr serve` at ``base``."""
    port = str(urlsplit(base).port)
    serving = {p.pid: p for p in psutil.process_iter(["cmdline", "ppid"])
               if "serve" in (p.info["cmdline"] or []) and port in p.info["cmdline"]}
    # Its workers are forks of it, with the same command line.
    return next(p for p in serving.values() if p.info["ppid"] not in serving)


def _workers(base: str) -> list[psutil.Process]:
    """The two workers of `ivr serve` at ``base`` (/healthz answers once the first is up)."""
    master = _master(base)
    deadline = time.monotonic() + 10
    while len(workers := master.children()) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(workers) == 2
    return list(workers)


def _open_paths(pid: int) -> list[str]:
    fds = Path(f"/proc/{pid}/fd")
    paths = []
    for fd in fds.iterdir():
        with contextlib.suppress(OSError):  # closed since the listing
            paths.append(os.readlink(fd))
    return paths


@requires(None if SHM.is_dir() else "the machine has no /dev/shm")
def test_the_workers_heartbeat_is_kept_in_memory(server: tuple[str, str]) -> None:
    # Each worker touches its heartbeat file from the loop that accepts callers, once a second:
    # on a disk-backed /tmp a stalled disk would stop new calls with the database healthy.
    base, _ = server
    for worker in _workers(base):
        heartbeats = [p for p in _open_paths(worker.pid) if "wgunicorn-" in p]
        assert heartbeats and all(p.startswith(f"{SHM}/") for p in heartbeats), heartbeats


def test_the_heartbeat_is_touched_once_a_second_however_busy_the_worker(
        server: tuple[str, str]) -> None:
    # gunicorn touches it on every turn of the worker's main loop, several a request, each a
    # system call that lets the GIL go; the master asks for one touch in 30 s.
    base, _ = server
    beats = {}
    for worker in _workers(base):
        for fd in Path(f"/proc/{worker.pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                if "wgunicorn-" in os.readlink(fd):
                    beats[worker.pid] = fd
    assert len(beats) == 2, beats
    stamps: dict[int, set[int]] = {pid: set() for pid in beats}
    answered = 0
    end = time.monotonic() + 3.0
    while time.monotonic() < end:
        # A new connection each time, as Twilio's webhooks come: both workers take some.
        answered += requests.get(f"{base}/healthz", timeout=5).ok
        for pid, fd in beats.items():
            stamps[pid].add(os.stat(fd).st_mtime_ns)
    assert answered > 100
    for pid, seen in stamps.items():
        assert 2 <= len(seen) <= 5, (pid, len(seen))  # alive, and not once per request


def test_clients_that_never_close_do_not_hold_up_callers(server: tuple[str, str]) -> None:
    # A client that asks for "Connection: close" and then keeps its socket open: gunicorn's
    # gthread worker waited up to 2 s for each one's FIN in the thread that accepts new
    # connections, so 16 of them kept both workers from taking any caller for about 16 s.
    base, _ = server
    held = []
    for _ in range(16):
        sock = socket.create_connection(("127.0.0.1", urlsplit(base).port or 80), timeout=10)
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: line\r\nConnection: close\r\n\r\n")
        held.append(sock)
    try:
        time.sleep(0.3)
        started = time.monotonic()
        assert requests.post(f"{base}/voice/incoming", data={"CallSid": "CA1"},
                             timeout=3).status_code == 403  # answered, not held
        assert time.monotonic() - started < 2  # about 10 ms here; 2 s for each held client before
        for sock in held:  # each got its whole answer, then the server's FIN
            answer = b""
            while chunk := sock.recv(4096):
                answer += chunk
            assert answer.startswith(b"HTTP/1.1 200 ")
        # Their sockets are let go 2 s after the FIN (gunicorn's limit), the client or not.
        ours = {sock.getsockname()[1] for sock in held}
        workers = _master(base).children()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(
                c.raddr and c.raddr[1] in ours for w in workers for c in w.net_connections()):
            time.sleep(0.2)
        assert time.monotonic() < deadline
    finally:
        for sock in held:
            sock.close()
