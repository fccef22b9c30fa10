"""Text receipts after a payment, sent through twilio's Client to a local stand-in."""

from __future__ import annotations

import base64
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask

from ivr.calls.twilio_api import TwilioApiError, send_text
from ivr.web.app import get_config
from tests.conftest import REPO, TOKEN, call, make_app, said_text
from tests.servers.twilio_api import StandIn

pytestmark = pytest.mark.slow

SID = "AC" + "1" * 32


@pytest.fixture
def twilio_api() -> Iterator[StandIn]:
    stand_in = StandIn().start()
    yield stand_in
    stand_in.stop()


@pytest.fixture
def receipts_app(tmp_path: Path, sqlite_url: str, twilio_api: StandIn) -> Flask:
    prompts = tmp_path / "prompts"
    shutil.copytree(REPO / "prompts", prompts)
    settings = prompts / "settings.toml"
    settings.write_text(settings.read_text().replace("text = false", "text = true"))
    return make_app(sqlite_url, prompts, twilio_account_sid=SID, sms_from="+15555550100",
                    twilio_api_base_url=twilio_api.url)


def test_text_receipt_is_sent_with_masked_data(receipts_app: Flask, twilio_api: StandIn) -> None:
    result = call(receipts_app, "1 60614 1 1 3 -")
    text = result.said()
    assert said_text(receipts_app, "receipt.text_sent", last4="0 1 2 3") in text
    [sent] = twilio_api.requests
    assert sent["path"] == f"/2010-04-01/Accounts/{SID}/Messages.json"
    assert sent["form"]["To"] == "+15555550123" and sent["form"]["From"] == "+15555550100"
    body = sent["form"]["Body"]
    pay = next(e for e in result.events if e["event"] == "pay")
    assert "$123.45" in body and str(pay["confirmation"]) in body
    assert "1234" in body and "1111" in body
    assert "4401001234" not in body and "4111111111111111" not in body
    user, _ = base64.b64decode(sent["auth"].split()[1]).decode().split(":", 1)
    assert user == SID
    # Offered once: after sending, the menu no longer offers it.
    assert text.count(said_text(receipts_app, "receipt.menu_text")) == 1


def test_text_failure_is_said_and_the_call_goes_on(receipts_app: Flask,
                                                   twilio_api: StandIn) -> None:
    twilio_api.fail_status = 500
    result = call(receipts_app, "1 60614 1 1 3 1 -")
    text = result.said()
    assert said_text(receipts_app, "receipt.text_failed") in text
    assert len(twilio_api.requests) == 1
    assert said_text(receipts_app, "goodbye.thanks") in text  # silence at the end: goodbye


def test_a_receipt_is_sent_while_the_auth_token_is_being_rotated(
        tmp_path: Path, sqlite_url: str, twilio_api: StandIn) -> None:
    # Twilio has promoted the secondary token; this node still has the old one first.
    old, promoted = TOKEN, "b" * 32
    twilio_api.accepted_tokens = (promoted,)
    prompts = tmp_path / "prompts"
    shutil.copytree(REPO / "prompts", prompts)
    settings = prompts / "settings.toml"
    settings.write_text(settings.read_text().replace("text = false", "text = true"))
    app = make_app(sqlite_url, prompts, twilio_account_sid=SID, sms_from="+15555550100",
                   twilio_api_base_url=twilio_api.url, twilio_secondary_auth_token=promoted)
    text = call(app, "1 60614 1 1 3 -").said()
    assert said_text(app, "receipt.text_sent", last4="0 1 2 3") in text
    passwords = [base64.b64decode(r["auth"].split()[1]).decode().split(":", 1)[1]
                 for r in twilio_api.requests]
    assert passwords == [old, promoted]  # refused once (401: nothing sent), then sent
    twilio_api.accepted_tokens = ("c" * 32,)  # neither: it fails as any refusal does
    with pytest.raises(TwilioApiError, match="Authenticate"):
        send_text(get_config(app), "+15555550123", "a receipt")
    assert len(twilio_api.requests) == 4


def test_no_text_offer_when_disabled(app: Flask) -> None:
    result = call(app, "1 60614 1 1 3")
    assert said_text(app, "receipt.menu_text") not in result.said()
    assert said_text(app, "common.no_match") in result.said()


def test_bank_authorization_is_recorded_and_stopped_before_bank_entry(
        sqlite_url: str, twilio_api: StandIn) -> None:
    from sqlalchemy import select

    from ivr.models import AchAuthorization
    from ivr.web.app import get_database

    app = make_app(sqlite_url, REPO / "prompts", twilio_account_sid=SID,
                   twilio_api_base_url=twilio_api.url)
    result = call(app, "1 60614 1 2 1 1")
    pay = next(e for e in result.events if e["event"] == "pay")
    assert pay["result"] == "success" and pay["method"] == "ach-debit"
    paths = [r["path"] for r in twilio_api.requests]
    start = f"/2010-04-01/Accounts/{SID}/Calls/{result.call_sid}/Recordings.json"
    stop = f"/2010-04-01/Accounts/{SID}/Calls/{result.call_sid}/Recordings/RE{'1' * 32}.json"
    assert paths == [start, stop]
    assert twilio_api.requests[1]["form"]["Status"] == "stopped"
    with get_database(app).session() as db:
        [auth] = db.scalars(select(AchAuthorization)).all()
        assert auth.recording_sid == "RE" + "1" * 32


def test_bank_authorization_still_stored_when_recording_fails(
        sqlite_url: str, twilio_api: StandIn) -> None:
    from sqlalchemy import select

    from ivr.models import AchAuthorization
    from ivr.web.app import get_database

    twilio_api.fail_status = 500
    app = make_app(sqlite_url, REPO / "prompts", twilio_account_sid=SID,
                   twilio_api_base_url=twilio_api.url)
    result = call(app, "1 60614 1 2 1 1")
    assert next(e for e in result.events if e["event"] == "pay")["result"] == "success"
    with get_database(app).session() as db:
        [auth] = db.scalars(select(AchAuthorization)).all()
        assert auth.recording_sid is None and auth.script_text
