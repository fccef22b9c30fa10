"""Inputs from Twilio, processors and billers are data, never markup or formulas.

A <Pay> callback stores only values it can vouch for; a confirmation file never hands a
spreadsheet a formula; an account file cannot slip control characters into the cache.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from click.testing import CliRunner
from flask import Flask
from sqlalchemy import select

from ivr import cli, get_database
from ivr.models import Payment
from tests.conftest import Twilio, new_sid, twiml

HOSTILE_BRAND = '=HYPERLINK("http://x","y")'


def walk_to_pay(twilio: Twilio, call_sid: str, from_number: str = "+15555550123") -> None:
    """Drive a caller-ID-matched card call by hand up to the <Pay> verb."""
    base = {"CallSid": call_sid, "From": from_number, "To": "+15555550100"}
    twiml(twilio.post("/voice/incoming", **base))
    for state, digits in [("language", "1"), ("confirm_account", "1"), ("verify", "60614"),
                          ("main_menu", "1"), ("amount_menu", "1"), ("amount_confirm", "1"),
                          ("method", "1"), ("final_confirm", "1")]:
        twiml(twilio.post(f"/voice/step/{state}", Digits=digits, **base))


def pay_form(call_sid: str, **changes: str) -> dict[str, str]:
    """A successful card result as Twilio posts it, with ``changes`` applied."""
    form = {"CallSid": call_sid, "From": "+15555550123", "Result": "success",
            "PaymentConfirmationCode": "CONF12345X", "PaymentCardNumber": "xxxx-xxxx-xxxx-4242",
            "PaymentCardType": "visa", "ExpirationDate": "1230",
            "PaymentMethod": "credit-card"}
    return form | changes


def payments_list_json(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Run `ivr payments list --json` on ``database_url``, closing its pool afterwards."""
    monkeypatch.setenv("IVR_DATABASE_URL", database_url)
    monkeypatch.setenv("IVR_PIN_KEY", "test-pin-key")
    made: list[Flask] = []

    def tracked(**overrides: Any) -> Flask:
        made.append(real(**overrides))
        return made[-1]

    real = cli._app
    monkeypatch.setattr(cli, "_app", tracked)
    try:
        return CliRunner().invoke(cli.main, ["payments", "list", "--json"])
    finally:
        for made_app in made:
            get_database(made_app).dispose()


def only_payment(app: Flask) -> Payment:
    with get_database(app).session() as db:
        [payment] = db.scalars(select(Payment)).all()
        return payment


# --- finding 1: what a <Pay> callback may store ----------------------------------------------


def test_hostile_card_brand_is_not_stored_or_listed(
        app: Flask, database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    twilio = Twilio(app)
    call_sid = new_sid()
    walk_to_pay(twilio, call_sid)
    twiml(twilio.post("/voice/pay/result", **pay_form(call_sid, PaymentCardType=HOSTILE_BRAND)))
    payment = only_payment(app)
    # Recorded (the money was taken), but the brand is not one Twilio documents: unknown.
    assert payment.card_last4 == "4242" and payment.card_exp == "1230"
    assert payment.card_brand is None
    result = payments_list_json(database_url, monkeypatch)
    assert result.exit_code == 0, result.output
    [listed] = json.loads(result.output)
    assert listed["card_brand"] is None
    assert "HYPERLINK" not in result.output


@pytest.mark.parametrize(
    ("changes", "field", "stored"),
    [
        ({"PaymentCardType": "Visa"}, "card_brand", "visa"),  # Twilio's spelling, any case
        ({"PaymentCardType": "diners-club"}, "card_brand", "diners-club"),
        ({"PaymentCardType": "@SUM(1+1)"}, "card_brand", None),
        ({"PaymentCardType": "visa\r\n=1+2"}, "card_brand", None),
        # Digits of other scripts are digits to \d, but not to a confirmation file's reader.
        ({"PaymentCardNumber": "xxxx-xxxx-xxxx-\u0664\u0662\u0664\u0662"}, "card_last4", None),
        ({"ExpirationDate": "\u0661\u0662\u0663\u0660"}, "card_exp", None),
        ({"ExpirationDate": "1330"}, "card_exp", None),  # no 13th month
        ({"ExpirationDate": "=1+2"}, "card_exp", None),
    ],
)
def test_pay_callback_fields_carry_only_what_they_should(
        lite_app: Flask, changes: dict[str, str], field: str, stored: str | None) -> None:
    twilio = Twilio(lite_app)
    call_sid = new_sid()
    walk_to_pay(twilio, call_sid)
    twiml(twilio.post("/voice/pay/result", **pay_form(call_sid, **changes)))
    assert getattr(only_payment(lite_app), field) == stored


def test_bank_account_type_is_one_twilio_documents() -> None:
    from ivr.payments import PayResult

    def bank_type(value: str) -> str | None:
        return PayResult.from_form({"BankAccountType": value}).bank_account_type

    assert bank_type("consumer-savings") == "consumer-savings"
    assert bank_type("commercial-checking") == "commercial-checking"
    assert bank_type("=cmd|' /C calc'!A0") is None
    assert bank_type("-consumer-checking") is None
