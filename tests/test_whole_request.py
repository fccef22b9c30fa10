"""Where a request ends, as `ivr serve`'s workers judge it before a thread takes the request
(ivr.web.whole_request)."""

from __future__ import annotations

import pytest

from ivr.web.whole_request import MAX_HEAD, MAX_REQUEST, Verdict, read_so_far

FORM = b"CallSid=CA1&Digits=1"
POST = (b"POST /voice/step/menu HTTP/1.1\r\nHost: line\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\n")


def _post(extra: bytes = b"", body: bytes = FORM) -> bytes:
    return POST + b"Content-Length: %d\r\n" % len(body) + extra + b"\r\n" + body


@pytest.mark.parametrize("data", [
    b"",
    b"GET /healthz HTTP/1.1\r\n",
    b"GET /healthz HTTP/1.1\r\nHost: line\r\n",  # the head has not ended
    _post()[:-1],  # one byte of the body short
    _post()[: len(_post()) - len(FORM)],  # the head alone
])
def test_a_request_short_of_its_end_waits(data: bytes) -> None:
    assert read_so_far(data).verdict is Verdict.MORE


@pytest.mark.parametrize("data", [
    b"GET /healthz HTTP/1.1\r\nHost: line\r\n\r\n",
    b"\r\n\r\nGET /healthz HTTP/1.1\r\nHost: line\r\n\r\n",  # empty lines before it
    _post(),
    _post() + b"POST /voice/status HTTP/1.1\r\n",  # a pipelined request's start after it
    POST.replace(b"Content-Type", b"content-LENGTH: 3\r\nContent-Type") + b"\r\nabc",
])
def test_a_whole_request_goes_to_a_thread(data: bytes) -> None:
    assert read_so_far(data).verdict is Verdict.WHOLE


def test_empty_lines_before_a_request_are_not_its_end() -> None:
    assert read_so_far(b"\r\n\r\nGET /healthz HTTP/1.1\r\n").verdict is Verdict.MORE


CHUNKED = POST + b"Transfer-Encoding: chunked\r\n\r\n"


@pytest.mark.parametrize(("body", "verdict"), [
    (b"", Verdict.MORE),
    (b"5\r\nCallS", Verdict.MORE),
    (b"5\r\nCallS\r\n", Verdict.MORE),
    (b"5\r\nCallS\r\n0\r\n", Verdict.MORE),  # the empty trailer section still to come
    (b"5\r\nCallS\r\n0\r\n\r\n", Verdict.WHOLE),
    (b"5;ext=1\r\nCallS\r\nf\r\nid=CA1&Digits=1\r\n0\r\n\r\n", Verdict.WHOLE),
    (b"0\r\nX-Trailer: 1\r\n", Verdict.MORE),
    (b"0\r\nX-Trailer: 1\r\n\r\n", Verdict.WHOLE),
    # A chunk's data that looks like the end is data, not the end.
    (b"7\r\n0\r\n\r\n\r\n\r\n", Verdict.MORE),
    (b"zz\r\n", Verdict.WHOLE),  # malformed: gunicorn answers 400 without waiting
    (b"0x5\r\n", Verdict.WHOLE),
])
def test_a_chunked_body_ends_with_its_last_chunk(body: bytes, verdict: Verdict) -> None:
    assert read_so_far(CHUNKED + body).verdict is verdict


@pytest.mark.parametrize("extra", [
    b"Content-Length: 5\r\nContent-Length: 6\r\n",
    b"Content-Length: five\r\n",
    b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
    b"Transfer-Encoding: gzip\r\n",
])
def test_a_request_gunicorn_refuses_is_not_waited_for(extra: bytes) -> None:
    data = POST + extra + b"\r\n"
    assert read_so_far(data).verdict is Verdict.WHOLE


def test_too_large_a_request_is_refused_before_its_body() -> None:
    head = POST + b"Content-Length: %d\r\n\r\n" % (MAX_REQUEST + 1)
    assert read_so_far(head).verdict is Verdict.TOO_LARGE
    assert read_so_far(POST + b"Content-Length: %d\r\n\r\n" % MAX_REQUEST).verdict is Verdict.MORE


def test_a_head_that_never_ends_is_refused() -> None:
    endless = b"GET / HTTP/1.1\r\n" + b"X-Pad: " + b"a" * MAX_HEAD
    assert read_so_far(endless).verdict is Verdict.TOO_LARGE
    assert read_so_far(endless[:MAX_HEAD]).verdict is Verdict.MORE


def test_a_chunked_body_past_the_limit_is_refused() -> None:
    chunk = b"%x\r\n" % 65536 + b"a" * 65536 + b"\r\n"
    assert read_so_far(CHUNKED + chunk * 7).verdict is Verdict.MORE
    assert read_so_far(CHUNKED + chunk * 8 + b"1").verdict is Verdict.TOO_LARGE


def test_a_client_that_expects_100_continue_is_told_to_go_on_before_its_body() -> None:
    data = POST + b"Content-Length: 20\r\nExpect: 100-Continue\r\n\r\n"
    assert read_so_far(data).awaits_continue
    assert not read_so_far(data + b"Call").awaits_continue  # the body has begun
    assert not read_so_far(data.replace(b"HTTP/1.1", b"HTTP/1.0")).awaits_continue
    empty = _post(b"Expect: 100-continue\r\n", body=b"")
    assert read_so_far(empty).verdict is Verdict.WHOLE  # no body: nothing to wait for
