"""Whether the bytes a client has sent so far hold a whole HTTP/1.1 request.

`ivr serve`'s workers read each request in their main loop until it is whole, and only then
give it a request thread (ivr.web.worker). This module only reads bytes: it never parses
more of a request than it takes to know where the request ends, and leaves judging it to
gunicorn's parser. Anything it cannot make sense of counts as whole, so that gunicorn
answers it (a 400) at once, without waiting for more.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

# The longest head (request line and fields) read before it must have ended. gunicorn
# allows a 4 KB request line and 100 fields of 8 KB; a real client sends a few hundred
# bytes (Twilio's webhook heads are under 1 KB).
MAX_HEAD = 64 * 1024
# The largest request read whole: a webhook's form is a few KB, a console form less.
MAX_REQUEST = 512 * 1024

_CRLF = b"\r\n"
_END = b"\r\n\r\n"
_HEX = re.compile(rb"[0-9A-Fa-f]{1,16}")


class Verdict(enum.Enum):
    """What to do with the bytes read so far."""

    MORE = "more"  # wait for the rest
    WHOLE = "whole"  # a request thread can read it without waiting on the client
    TOO_LARGE = "too_large"  # answer 413 and close


@dataclass(frozen=True)
class Reading:
    """The verdict, and whether the client waits for ``100 Continue`` before its body."""

    verdict: Verdict
    awaits_continue: bool = False


_WHOLE = Reading(Verdict.WHOLE)
_MORE = Reading(Verdict.MORE)
_TOO_LARGE = Reading(Verdict.TOO_LARGE)


def read_so_far(data: bytes) -> Reading:
    """The verdict on ``data``, the bytes a connection has sent since its last request."""
    start = len(data) - len(data.lstrip(_CRLF))  # empty lines before a request are allowed
    end = data.find(_END, start)
    if end < 0:
        return _TOO_LARGE if len(data) > MAX_HEAD else _MORE
    lines = data[start:end].split(_CRLF)
    fields: dict[bytes, list[bytes]] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if colon:
            fields.setdefault(name.strip().lower(), []).append(value.strip().lower())
    lengths = fields.get(b"content-length", [])
    codings = fields.get(b"transfer-encoding", [])
    body = end + len(_END)
    if codings:
        if lengths or not b"".join(codings).endswith(b"chunked"):
            return _WHOLE  # gunicorn refuses both: no body to wait for
        done = _chunked_end(data, body)
    elif lengths:
        if len(set(lengths)) != 1 or not lengths[0].isdigit():
            return _WHOLE  # gunicorn refuses it
        length = int(lengths[0])
        if length > MAX_REQUEST:
            return _TOO_LARGE
        done = len(data) >= body + length
    else:
        return _WHOLE
    if done:
        return _WHOLE
    if len(data) > MAX_REQUEST:
        return _TOO_LARGE
    expect = fields.get(b"expect", [])
    return Reading(Verdict.MORE, awaits_continue=expect == [b"100-continue"]
                   and lines[0].rstrip().endswith(b"HTTP/1.1") and len(data) == body)


def _chunked_end(data: bytes, pos: int) -> bool:
    """Whether ``data`` holds a chunked body starting at ``pos`` through its last chunk and
    trailer section. A malformed size line counts as the end: gunicorn refuses it."""
    while True:
        line_end = data.find(_CRLF, pos)
        if line_end < 0:
            return False
        size_text = data[pos:line_end].split(b";", 1)[0].strip()
        if not _HEX.fullmatch(size_text):
            return True
        size = int(size_text, 16)
        if size == 0:
            # The trailer section: empty (CRLF at once) or fields ended by an empty line.
            return data.startswith(_CRLF, line_end + 2) or data.find(_END, line_end) >= 0
        pos = line_end + 2 + size + 2
        if pos > len(data):
            return False
