"""The graceful close `ivr serve`'s workers make (ivr.web.lingering): the FIN at once, the
socket let go at the client's FIN, after the drain cap, after the linger time, or when too
many linger, without ever waiting in the thread that called it."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from ivr.web import lingering

# (our end, the client's end) of each socket pair a test made.
Pairs = list[tuple[socket.socket, socket.socket]]


@pytest.fixture
def closer() -> lingering._Lingering:
    return lingering._Lingering()


@pytest.fixture
def pairs() -> Iterator[Pairs]:
    made: Pairs = []
    yield made
    for ours, theirs in made:
        ours.close()
        theirs.close()


def _pair(pairs: Pairs) -> tuple[socket.socket, socket.socket]:
    ours, theirs = socket.socketpair()
    pairs.append((ours, theirs))
    return ours, theirs


def _closed_within(sock: socket.socket, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while sock.fileno() != -1 and time.monotonic() < deadline:
        time.sleep(0.02)
    return sock.fileno() == -1


def test_the_client_gets_the_fin_at_once_and_its_close_ends_it(
        closer: lingering._Lingering, pairs: Pairs) -> None:
    ours, theirs = _pair(pairs)
    theirs.settimeout(1)
    started = time.monotonic()
    closer.close(ours)
    assert time.monotonic() - started < 0.05  # the caller never waits for the client
    assert theirs.recv(10) == b""  # the FIN
    assert ours.fileno() != -1  # still read, in case the client sends the rest
    theirs.close()
    assert _closed_within(ours, 1)


def test_a_client_that_never_closes_is_let_go_after_the_linger_time(
        closer: lingering._Lingering, pairs: Pairs,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lingering, "LINGER_SECONDS", 0.3)
    ours, _theirs = _pair(pairs)
    closer.close(ours)
    time.sleep(0.15)
    assert ours.fileno() != -1
    assert _closed_within(ours, 1)


def test_a_client_that_keeps_sending_is_let_go_after_the_drain_cap(
        closer: lingering._Lingering, pairs: Pairs,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lingering, "MAX_DRAIN", 1000)
    ours, theirs = _pair(pairs)
    closer.close(ours)
    theirs.sendall(b"x" * 1500)
    assert _closed_within(ours, 1)  # long before the 2 s


def test_too_many_lingering_lets_the_oldest_go(
        closer: lingering._Lingering, pairs: Pairs,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lingering, "MAX_LINGERING", 2)
    socks = [_pair(pairs)[0] for _ in range(3)]
    for sock in socks:
        closer.close(sock)
    assert _closed_within(socks[0], 1)
    assert socks[1].fileno() != -1 and socks[2].fileno() != -1

