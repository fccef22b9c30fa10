"""Rules of the flow that are easy to get wrong: lockout after a failed transfer, retries,
the caller's language on file, PIN verification, per-prompt wording variants."""

from __future__ import annotations

from pathlib import Path

from flask import Flask
from sqlalchemy import select

from ivr.models import CallSession, Payment
from ivr.web.app import get_database
from tests.conftest import (
    Twilio,
    call,
    custom_prompts,
    make_app,
    new_sid,
    said_text,
    twiml,
)
from tests.flow import AGENT, YES


def test_failed_transfer_after_wrong_zips_does_not_reopen_verification(app: Flask) -> None:
    twilio = Twilio(app)
    sid = new_sid()
    base = {"CallSid": sid, "From": "+15555550123"}
    twiml(twilio.post("/voice/incoming", **base))  # English on file: no language menu
    twiml(twilio.post("/voice/step/confirm_account", Digits=YES, **base))
    for wrong in ("11111", "22222"):
        twiml(twilio.post("/voice/step/verify", Digits=wrong, **base))
    root = twiml(twilio.post("/voice/step/verify", Digits="33333", **base))
    assert root.find("Dial") is not None  # in business hours: a representative
    # Nobody answers; the caller must not get another go at the ZIP code.
    root = twiml(twilio.post("/voice/dial/done", DialCallStatus="no-answer", **base))
    assert root.find("Hangup") is not None and root.find("Gather") is None
    again = twiml(twilio.post("/voice/step/verify", Digits="60614", **base))
    assert "dollars" not in "".join(again.itertext())


def test_failed_transfer_from_a_menu_returns_to_the_question(app: Flask) -> None:
    twilio = Twilio(app)
    sid = new_sid()
    base = {"CallSid": sid, "From": "+15555550123"}
    for path, digits in [("/voice/incoming", ""),
                         ("/voice/step/confirm_account", YES), ("/voice/step/verify", "60614"),
                         ("/voice/step/main_menu", AGENT)]:
        twiml(twilio.post(path, Digits=digits, **base))
    root = twiml(twilio.post("/voice/dial/done", DialCallStatus="busy", **base))
    gather = root.find("Gather")
    assert gather is not None and gather.get("action") == "/voice/step/main_menu"
    text = "".join(root.itertext())
    assert said_text(app, "agent.no_answer") in text


def test_wrong_zip_does_not_use_up_general_tries(tmp_path: Path, sqlite_url: str) -> None:
    # With max_tries 2 but 3 ZIP attempts allowed, the caller still gets all three.
    prompts = custom_prompts(tmp_path, {"settings.toml": ("max_tries = 3", "max_tries = 2")})
    app = make_app(sqlite_url, prompts)
    result = call(app, "1 11111 22222 60614 -")
    assert result.said().count(said_text(app, "verify.mismatch")) == 2
    assert said_text(app, "menu.pay_full") in result.said()


def test_more_time_resets_the_tries(app: Flask) -> None:
    # silence, silence -> "need more time?", pound -> a fresh start with a longer timeout.
    result = call(app, "1 - - # - 60614 -")
    assert said_text(app, "menu.pay_full") in result.said()
    gathers = [e for e in result.events if e["event"] in {"press", "silence"}]
    assert len(gathers) == 7


def test_a_caller_on_file_is_greeted_in_the_language_on_file(app: Flask) -> None:
    # No language menu: Spanish from the first word, English offered in one line.
    result = call(app, "1 60617 -", from_number="+15555550125")
    first = next(e for e in result.events if e["event"] == "say")
    assert first["language"] == "es-US"
    assert said_text(app, "language.option", "en-US", key="3") in result.said()
    with get_database(app).session() as db:
        session = db.get(CallSession, result.call_sid)
        assert session is not None and session.language == "es-US"
    assert "setenta y seis dólares con veinte centavos" in result.said()


def test_pin_verification(tmp_path: Path, sqlite_url: str) -> None:
    prompts = custom_prompts(tmp_path, {"settings.toml": ('method = "zip"', 'method = "pin"')})
    app = make_app(sqlite_url, prompts)
    wrong = call(app, "1 1111# 9999# 8888#")
    assert said_text(app, "verify.pin") in wrong.said()
    assert said_text(app, "verify.failed_final") in wrong.said()
    right = call(app, "1 2468# 1 1")
    assert said_text(app, "verify.pin") in right.said()
    with get_database(app).session() as db:
        assert len(db.scalars(select(Payment)).all()) == 1
    # No PIN on file (the in-credit demo account): it can never verify by PIN.
    none = call(app, "1 4401009012# 0000# 1234# 5555#", from_number="+15555559999")
    assert said_text(app, "verify.failed_final") in none.said()


def test_ops_variant_for_no_input_is_spoken(tmp_path: Path, sqlite_url: str) -> None:
    prompts = custom_prompts(tmp_path, {
        "en-US.toml": ("[verify.zip]\n",
                       '[verify.zip]\nnoinput = "Take your time: the ZIP code is on your bill."\n'),
        # Variants must exist in every language (`ivr prompts check`).
        "es-US.toml": ("[verify.zip]\n",
                       '[verify.zip]\nnoinput = "Con calma: el código está en su factura."\n'),
    })
    app = make_app(sqlite_url, prompts)
    result = call(app, "1 - 60614 -")
    assert "Take your time: the ZIP code is on your bill." in result.said()
    assert said_text(app, "common.no_input") not in result.said().split("ZIP code")[1]


def test_a_key_after_the_more_time_offer_is_not_the_earlier_questions_answer(app: Flask) -> None:
    # Pay the balance, silence twice at the card-or-bank menu, then 1 at "need more time?":
    # that 1 answers the offer, not the menu heard before it, so no card capture starts.
    result = call(app, "1 60614 1 - - 1 -")
    menu = said_text(app, "method.menu_pay", amount="one hundred twenty-three dollars and "
                     "forty-five cents", last4="1 2 3 4")
    assert result.said().count(said_text(app, "common.more_time")) == 1
    assert not [e for e in result.events if e["event"] == "pay"]
    assert result.said().rfind(menu) > result.said().find(said_text(app, "common.more_time"))
    with get_database(app).session() as db:
        assert db.scalars(select(Payment)).all() == []
