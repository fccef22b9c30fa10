"""Shared by the agent-payment tests: a served line with the Twilio stand-in, live calls,
and an agent's browser-like session over real HTTP."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
from flask import Flask

from ivr.models import utcnow
from ivr.ops.auth import add_user
from ivr.web.app import get_database
from tests.conftest import TOKEN, Twilio, new_sid
from tests.servers.threaded import serving
from tests.servers.twilio_api import StandIn
from tests.test_ops_helpers import PASSWORD, ops_app

ACCOUNT_SID = "AC" + "a" * 32
AGENT, VIEWER = "bob", "vic"


@dataclass
class Line:
    """The line served over HTTP, the Twilio stand-in it talks to, and the base URL."""

    app: Flask
    base: str
    twilio: StandIn


@contextmanager
def agent_line(database_url: str, tmp_path: Path, **overrides: Any) -> Iterator[Line]:
    """The line (with an admin, an agent and a viewer) and the stand-in, both on 127.0.0.1."""
    stand_in = StandIn(token=TOKEN).start()
    try:
        app = ops_app(database_url, tmp_path, twilio_account_sid=ACCOUNT_SID,
                      twilio_api_base_url=stand_in.url, **overrides)
        # requests, unlike a browser on 127.0.0.1, keeps Secure cookies off plain http.
        app.config["SESSION_COOKIE_SECURE"] = False
        with get_database(app).session() as db:
            add_user(db, AGENT, PASSWORD, utcnow(), role="agent")
            add_user(db, VIEWER, PASSWORD, utcnow(), role="viewer")
        with serving(app) as base:
            yield Line(app, base, stand_in)
    finally:
        stand_in.stop()


def transferred_call(line: Line, presses: tuple[str, ...] = ("0",),
                     from_number: str = "+15555550123") -> str:
    """A live call that pressed 0 (after ``presses``): the caller waits for an agent."""
    twilio = Twilio(line.app, base_url=line.base)
    sid = new_sid()
    common = {"CallSid": sid, "From": from_number, "To": "+15555550100",
              "AccountSid": ACCOUNT_SID}
    twilio.post("/voice/incoming", **common)
    with get_database(line.app).session() as db:
        from ivr.models import CallSession

        state = db.get(CallSession, sid).state  # type: ignore[union-attr]
    for digits in presses:
        response = twilio.post(f"/voice/step/{state}", Digits=digits, **common)
        assert response.status_code == 200
        with get_database(line.app).session() as db:
            from ivr.models import CallSession

            state = db.get(CallSession, sid).state  # type: ignore[union-attr]
    return sid


class Agent:
    """A console user over real HTTP, posting forms with their CSRF token as a browser does."""

    def __init__(self, base: str, username: str) -> None:
        self.base = base
        self.http = requests.Session()
        page = self.http.get(f"{base}/ops/login", timeout=10)
        response = self.http.post(f"{base}/ops/login", data={
            "csrf_token": _token(page.text), "username": username, "password": PASSWORD},
            allow_redirects=False, timeout=10)
        assert response.status_code == 302, response.text

    def get(self, path: str) -> requests.Response:
        return self.http.get(f"{self.base}{path}", timeout=10)

    def post(self, path: str, **form: str) -> requests.Response:
        token = _token(self.get("/ops/").text)
        return self.http.post(f"{self.base}{path}", data={"csrf_token": token, **form},
                              timeout=20)

    def progress(self, call_sid: str) -> dict[str, Any]:
        response = self.get(f"/ops/agent/calls/{call_sid}/progress.json")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body


def _token(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, html[:500]
    return found.group(1)
