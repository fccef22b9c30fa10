"""A call's rows, as its webhooks leave them (ivr.calls.call_row), on SQLite and PostgreSQL.

Each webhook writes the call's changed columns with one Core statement, and on PostgreSQL
the steps of its path in the same statement: the row must hold what the caller was last
asked, every step must be there exactly once, and a webhook that fails writes nothing.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select

from ivr.calls import twiml as twiml_module
from ivr.models import CallEvent, CallSession
from ivr.web.app import get_database
from tests.conftest import Twilio, new_sid, twiml

CALLER = "+15555550123"  # on file for account 4401001234, ZIP 60614


def _row(app: Flask, sid: str) -> CallSession:
    with get_database(app).session() as db:
        found = db.get(CallSession, sid)
        assert found is not None
        return found


def _path(app: Flask, sid: str) -> list[tuple[str, str]]:
    with get_database(app).session() as db:
        return [(e.state, e.event) for e in db.scalars(
            select(CallEvent).where(CallEvent.call_sid == sid).order_by(CallEvent.id))]


def _asks(response: object) -> str:
    gather = twiml(response).find("Gather")
    assert gather is not None
    return str(gather.get("action")).rsplit("/", 1)[-1]


def test_each_webhook_leaves_the_row_where_the_caller_is_and_every_step_once(
        app: Flask) -> None:
    twilio, sid = Twilio(app), new_sid()
    form: dict[str, Any] = {"CallSid": sid, "From": CALLER, "To": "+13125550100",
                            "CallStatus": "in-progress"}
    first = twilio.post("/voice/incoming", **form)
    asked = _asks(first)
    row = _row(app, sid)
    assert row.state == asked == "confirm_account"
    assert (row.from_number, row.account_id is not None, row.verified) == (CALLER, True, False)
    assert (row.tries, row.silences, row.extended_time) == (0, 0, False)
    started: datetime = row.updated_at

    assert _asks(twilio.post("/voice/step/confirm_account", Digits="1", **form)) == "verify"
    assert _asks(twilio.post("/voice/step/verify", Digits="99999", **form)) == "verify"
    row = _row(app, sid)
    assert (row.state, row.verified, row.verify_failures) == ("verify", False, 1)
    assert row.updated_at >= started

    assert _asks(twilio.post("/voice/step/verify", Digits="60614", **form)) == "main_menu"
    twilio.post("/voice/status", **{**form, "CallStatus": "completed"})
    row = _row(app, sid)
    assert (row.state, row.verified, row.call_status) == ("main_menu", True, "completed")
    assert row.outcome == "hung_up" and row.ended_at is not None
    assert _path(app, sid) == [
        ("confirm_account", "enter"), ("confirm_account", "ok"), ("verify", "enter"),
        ("verify", "nomatch"), ("verify", "ok"), ("main_menu", "enter"),
        ("main_menu", "call_end")]


def test_a_webhook_that_fails_writes_neither_the_row_nor_its_steps(
        app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    twilio, sid = Twilio(app), new_sid()
    form: dict[str, Any] = {"CallSid": sid, "From": CALLER, "To": "+13125550100",
                            "CallStatus": "in-progress"}
    twilio.post("/voice/incoming", **form)
    before = (_row(app, sid).state, _path(app, sid))

    def broken(_response: object) -> str:
        raise RuntimeError("TwiML could not be written")

    monkeypatch.setattr("ivr.web.voice.twiml_text", broken)
    answer = twiml(twilio.post("/voice/step/confirm_account", Digits="1", **form))
    assert answer.find("Hangup") is not None  # the apology, not Twilio's application error
    assert (_row(app, sid).state, _path(app, sid)) == before
    monkeypatch.setattr("ivr.web.voice.twiml_text", twiml_module.twiml_text)
    assert _asks(twilio.post("/voice/step/confirm_account", Digits="1", **form)) == "verify"
