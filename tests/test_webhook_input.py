"""What webhooks do with odd input and modes: control characters, unsigned mode."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import select

import ivr.calls.machine as machine
from ivr.models import CallEvent, CallSession, Payment
from ivr.web.app import get_database
from tests.conftest import Twilio, _truncate_postgres, make_app, new_sid, twiml


@pytest.fixture
def ivr_logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Records of the ``ivr`` loggers (they do not propagate to the root logger)."""
    logger = logging.getLogger("ivr")
    logger.addHandler(caplog.handler)
    try:
        yield caplog
    finally:
        logger.removeHandler(caplog.handler)


def _nul(value: str) -> str:
    """A value with NUL and other control characters in it, as a fuzzer would send."""
    return f"\x00{value[:2]}\x00\x1f{value[2:]}\x7f\x00"


def test_control_characters_in_every_field_on_postgres(
        postgres_url: str, prompts_dir: Path, ivr_logs: pytest.LogCaptureFixture) -> None:
    _truncate_postgres(postgres_url)
    app = make_app(postgres_url, prompts_dir)
    twilio = Twilio(app)
    sid = new_sid()
    base = {"CallSid": _nul(sid), "From": _nul("+15555550123"), "To": _nul("+15555550100")}
    twiml(twilio.post("/voice/incoming", **base))
    for state, digits in [("confirm_account", "1"), ("verify", "60614"), ("main_menu", "1"),
                          ("method", "1")]:
        root = twiml(twilio.post(f"/voice/step/{state}", Digits=_nul(digits), **base))
    assert root.find("Pay") is not None  # the call went all the way to <Pay>
    paid = twiml(twilio.post("/voice/pay/result", **base, **{
        key: _nul(value) for key, value in {
            "Result": "success", "PaymentConfirmationCode": "CONF12345X",
            "PaymentCardNumber": "xxxx-xxxx-xxxx-4242", "PaymentCardType": "visa",
            "ExpirationDate": "1230", "PaymentMethod": "credit-card"}.items()}))
    assert paid.find("Gather") is not None  # the receipt menu
    twiml(twilio.post("/voice/dial/done", DialCallStatus=_nul("completed"), **base))
    assert twilio.post("/voice/status", CallStatus=_nul("completed"), **base).status_code == 200
    errors = [r for r in ivr_logs.records if r.getMessage() == "webhook failed"]
    assert not errors
    with get_database(app).session() as db:
        call = db.scalar(select(CallSession).where(CallSession.call_sid == sid))
        payment = db.scalar(select(Payment).where(Payment.call_sid == sid))
        events = list(db.scalars(select(CallEvent.event).where(CallEvent.call_sid == sid)))
    assert call is not None and call.from_number == "+15555550123"
    assert call.to_number == "+15555550100"
    assert call.call_status == "completed" and call.ended_at is not None
    assert payment is not None
    assert (payment.confirmation_code, payment.card_last4) == ("CONF12345X", "4242")
    assert "transfer_done" in events


def test_unsigned_mode_is_in_every_webhook_log_line(
        sqlite_url: str, prompts_dir: Path, ivr_logs: pytest.LogCaptureFixture) -> None:
    signed = make_app(sqlite_url, prompts_dir)
    twiml(Twilio(signed).post("/voice/incoming", CallSid=new_sid()))
    unsigned = make_app(sqlite_url, prompts_dir, allow_unsigned=True, twilio_auth_token="")
    twiml(Twilio(unsigned).post("/voice/incoming", sign=False, CallSid=new_sid()))
    twiml(Twilio(unsigned).post("/voice/status", sign=False, CallSid=new_sid(),
                                CallStatus="completed"))
    lines: list[dict[str, object]] = [getattr(r, "fields", {}) for r in ivr_logs.records
                                      if r.getMessage() == "webhook"]
    assert len(lines) == 3
    assert "unsigned" not in lines[0]
    assert [line.get("unsigned") for line in lines[1:]] == [True, True]


@pytest.mark.slow
def test_webhook_answers_apology_when_deadline_passes(sqlite_url: str, prompts_dir: Path,
                                                      ivr_logs: pytest.LogCaptureFixture,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    app: Flask = make_app(sqlite_url, prompts_dir, webhook_deadline_ms=300)
    real_start = machine.start

    def slow_start(ctx: object) -> object:
        time.sleep(1.0)
        return real_start(ctx)  # type: ignore[arg-type]

    monkeypatch.setattr(machine, "start", slow_start)
    started = time.monotonic()
    root = twiml(Twilio(app).post("/voice/incoming", CallSid=new_sid()))
    assert time.monotonic() - started < 0.9
    assert root[-1].tag == "Hangup"
    outcomes = [getattr(r, "fields", {}).get("outcome") for r in ivr_logs.records
                if r.getMessage() == "webhook"]
    assert outcomes == ["deadline"]
    # The abandoned work still ends, and says so.
    waited = time.monotonic() + 5
    while not any(r.getMessage() == "work finished after its deadline"
                  for r in ivr_logs.records) and time.monotonic() < waited:
        time.sleep(0.05)
    late = [getattr(r, "fields", {}) for r in ivr_logs.records
            if r.getMessage() == "work finished after its deadline"]
    assert [(f["route"], f["outcome"]) for f in late] == [("incoming", "finished")]
