"""Inputs from Twilio, processors and billers are data, never markup or formulas.

A <Pay> callback stores only values it can vouch for; a confirmation file never hands a
spreadsheet a formula; an account file cannot slip control characters into the cache.
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner
from flask import Flask
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from connectors.files.cells import neutralise, restore
from connectors.files.layouts import (
    DEFAULT_PAYMENT_LAYOUT,
    PAYMENT_FIELDS,
    PaymentLayout,
    PaymentRow,
    read_payment_file,
    write_payment_file,
)
from ivr.accounts.importer import import_accounts
from ivr.accounts.sync import SyncConfig, interval_containing, push
from ivr.cli import main
from ivr.cli import money as money_commands
from ivr.models import Payment
from ivr.web.app import get_config, get_database
from tests.conftest import OPEN_TIME, Twilio, make_app, new_sid, twiml

HOSTILE_BRAND = '=HYPERLINK("http://x","y")'
CHICAGO = ZoneInfo("America/Chicago")


def walk_to_pay(twilio: Twilio, call_sid: str, from_number: str = "+15555550123") -> None:
    """Drive a caller-ID-matched card call by hand up to the <Pay> verb."""
    base = {"CallSid": call_sid, "From": from_number, "To": "+15555550100"}
    twiml(twilio.post("/voice/incoming", **base))
    for state, digits in [("confirm_account", "1"), ("verify", "60614"), ("main_menu", "1"),
                          ("method", "1")]:
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

    real = money_commands.load_app
    monkeypatch.setattr(money_commands, "load_app", tracked)
    try:
        return CliRunner().invoke(main, ["payments", "list", "--json"])
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


@pytest.mark.slow
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
    from ivr.money.payments import PayResult

    def bank_type(value: str) -> str | None:
        return PayResult.from_form({"BankAccountType": value}).bank_account_type

    assert bank_type("consumer-savings") == "consumer-savings"
    assert bank_type("commercial-checking") == "commercial-checking"
    assert bank_type("=cmd|' /C calc'!A0") is None
    assert bank_type("-consumer-checking") is None


# --- finding 2: confirmation files hand no spreadsheet a formula ------------------------------

# OWASP's CSV injection triggers: a cell starting with one of these may run as a formula.
FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")
DASHED = "-1-1"  # account numbers may hold letters and dashes
DASHED_PHONE = "+15555550177"
HOSTILE_ROWS = [
    PaymentRow(DASHED, -1200, 0, OPEN_TIME, "CONF1", "card", HOSTILE_BRAND, "4242"),
    PaymentRow("=1+2", 500, 100, OPEN_TIME, "-CONF2", "ach", None, "89",
               idempotency_key="@SUM(A1)", call_sid="\tCA1"),
    PaymentRow("+1", 1, 0, OPEN_TIME, "'=already quoted", "card", "\r=1", None),
]
EVERY_FIELD = PaymentLayout(
    name="every-field", columns=tuple((name.upper(), name) for name in PAYMENT_FIELDS),
    header_record=("H", "{biller_id}", "{count}", "{sum}"),
    trailer_record=("T", "{count}", "{sum}"),
)


def data_cells(data: bytes, layout: PaymentLayout) -> list[dict[str, str]]:
    """The data rows of a written file as a spreadsheet would split them."""
    rows = list(csv.reader(io.StringIO(data.decode(), newline=""), delimiter=layout.delimiter))
    headers = [header for header, _ in layout.columns]
    return [dict(zip(headers, row, strict=True)) for row in rows if len(row) == len(headers)
            and row != headers]


def assert_no_formulas(data: bytes, layout: PaymentLayout) -> None:
    """No cell starts with a trigger, except amounts our own code wrote (-12.00)."""
    for row in csv.reader(io.StringIO(data.decode(), newline=""), delimiter=layout.delimiter):
        for cell in row:
            if cell.startswith(FORMULA_TRIGGERS):
                assert re.fullmatch(r"-[0-9]+(\.[0-9]{2})?", cell), row


@pytest.mark.parametrize("layout", [DEFAULT_PAYMENT_LAYOUT, EVERY_FIELD])
def test_confirmation_file_text_cells_are_not_formulas(layout: PaymentLayout) -> None:
    out = io.BytesIO()
    write_payment_file(HOSTILE_ROWS, out, layout, values={"biller_id": "=cmd|' /C calc'!A0"})
    data = out.getvalue()
    assert_no_formulas(data, layout)
    first = data_cells(data, layout)[0]
    upper = layout is not DEFAULT_PAYMENT_LAYOUT
    assert first["ACCOUNT_NUMBER" if upper else "account_number"] == "'-1-1"
    assert first["AMOUNT" if upper else "amount"] == "-12.00"  # a number we wrote, not text
    assert b"'=HYPERLINK" in data and b",=" not in data
    # Our own reader gives back exactly what was written.
    back = list(read_payment_file(io.BytesIO(data), layout))
    if layout is DEFAULT_PAYMENT_LAYOUT:
        expected = [replace(r, idempotency_key="", call_sid="") for r in HOSTILE_ROWS]
    else:
        expected = HOSTILE_ROWS
    assert back == expected


def test_pushed_confirmation_file_for_a_dashed_account(
        database_url: str, prompts_dir: Path, tmp_path: Path) -> None:
    outbox = tmp_path / "outbox"
    outbox.mkdir()
    app = make_app(database_url, prompts_dir,
                   sync_settings={"IVR_SYNC_OUTBOX_URL": f"file://{outbox}"})
    accounts = (f"account_number,phones,service_zip,balance_due\r\n"
                f"{DASHED},{DASHED_PHONE},60614,40.00\r\n").encode()
    report = import_accounts(get_database(app), io.BytesIO(accounts), "dashed",
                             pin_key="test-pin-key")
    assert report.applied, report.lines()
    twilio = Twilio(app)
    call_sid = new_sid()
    walk_to_pay(twilio, call_sid, from_number=DASHED_PHONE)
    twiml(twilio.post("/voice/pay/result", **pay_form(
        call_sid, From=DASHED_PHONE, PaymentCardType=HOSTILE_BRAND,
        PaymentConfirmationCode="-CONF9")))
    assert only_payment(app).account_number == DASHED
    config = SyncConfig.from_settings(get_config(app).sync_settings)
    day = interval_containing(OPEN_TIME, 1440, CHICAGO)
    [sent] = push(get_database(app), config, CHICAGO, interval=day,
                  now=day.end + timedelta(hours=1))
    data = (outbox / sent.name).read_bytes()
    assert_no_formulas(data, DEFAULT_PAYMENT_LAYOUT)
    [row] = data_cells(data, DEFAULT_PAYMENT_LAYOUT)
    assert (row["account_number"], row["confirmation_number"]) == ("'-1-1", "'-CONF9")
    assert row["card_brand"] == "" and row["amount"] == "40.00"
    [back] = read_payment_file(io.BytesIO(data), DEFAULT_PAYMENT_LAYOUT)
    assert (back.account_number, back.confirmation_number) == (DASHED, "-CONF9")


@settings(max_examples=300)
@given(text=st.text(alphabet=st.one_of(st.sampled_from([*FORMULA_TRIGGERS, "'", '"', ","]),
                                       st.characters(codec="utf-8"))))
def test_a_neutralised_cell_never_begins_with_a_formula_trigger(text: str) -> None:
    cell = neutralise(text)
    assert not cell.startswith(FORMULA_TRIGGERS)
    assert restore(cell) == text
    # In a file, through the writer's quoting and a spreadsheet-like reader, too.
    row = PaymentRow(text or "x", 100, 0, OPEN_TIME, text or "c", "card", text, None,
                     idempotency_key=text, call_sid=text)
    out = io.BytesIO()
    write_payment_file([row], out, EVERY_FIELD, values={"biller_id": text})
    assert_no_formulas(out.getvalue(), EVERY_FIELD)
    assert list(read_payment_file(io.BytesIO(out.getvalue()), EVERY_FIELD)) == [row]


def test_rejection_report_lines_never_start_a_formula(sqlite_url: str, prompts_dir: Path,
                                                      tmp_path: Path) -> None:
    # A guard: each report line starts with the inbox URL, "line N:" or "file error:", and
    # values inside are shown with repr (a tab is "\t"), whatever the file and its name.
    from ivr.accounts.sync import pull

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "=1+2.csv").write_bytes(
        b"account_number,customer_name,balance_due\r\n=1+2,@x,1.00\r\n-1-1,\t=1+2,2.00\r\n")
    app = make_app(sqlite_url, prompts_dir, sync_settings={"IVR_SYNC_INBOX_URL": f"file://{inbox}"})
    config = SyncConfig.from_settings(get_config(app).sync_settings)
    with pytest.raises(Exception, match="rejected 1 file"):
        pull(get_database(app), config, pin_key="test-pin-key")
    report = (inbox / "rejected" / "=1+2.csv.report.txt").read_text(encoding="utf-8")
    lines = report.splitlines()
    assert len(lines) == 2 and "'=1+2'" in report
    assert not [line for line in lines if line.startswith(FORMULA_TRIGGERS)]
    assert all("\t" not in line for line in lines)


# --- finding 3: control characters stay out of the account cache -----------------------------


def test_control_characters_reject_the_row_with_a_reason(app: Flask) -> None:
    from ivr.models import Account

    data = ("account_number,customer_name,usage_unit,balance_due\r\n"
            "5500000001,\"Evil\x1b]0;pwned\x07Name\",kWh,1.00\r\n"
            "5500000002,Fine Name,\"k\x9bWh\",2.00\r\n"
            "5500000003,\"Two\nLines\",kWh,3.00\r\n").encode()
    report = import_accounts(get_database(app), io.BytesIO(data), "ctl", pin_key="test-pin-key",
                             partial=True)
    assert report.lines()[1:] == [
        "line 2: customer_name: contains a control character (U+001B)",
        "line 3: usage_unit: contains a control character (U+009B); "
        "usage_unit: 'k\\x9bWh' is not a unit name",
    ]
    with get_database(app).session() as db:
        stored = set(db.scalars(select(Account.account_number)
                                .where(Account.account_number.like("55%"))))
    assert stored == {"5500000003"}  # a line break inside a quoted cell is still a name


def test_control_characters_are_refused_in_billers_layouts_too() -> None:
    from connectors.files.account_file import Rejection
    from connectors.files.layouts import AccountLayout, iter_layout_file

    layout = AccountLayout(name="pipes", delimiter="|", columns={
        "account_number": "ACCT", "balance_due": "AMT", "customer_name": "NAME"})
    data = b"ACCT|NAME|AMT\nA1|Bell\x07Ringer|1.00\nA2|Ok|2.00\n"
    results = list(iter_layout_file(io.BytesIO(data), layout))
    assert results[0] == Rejection(2, "A1", "customer_name: contains a control character (U+0007)")
    assert not isinstance(results[1], Rejection)


NAME_TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cc",)), max_size=20)


@settings(max_examples=200)
@given(before=NAME_TEXT, control=st.characters(categories=("Cc",), exclude_characters="\t\n\r"),
       after=NAME_TEXT)
def test_any_control_character_in_a_name_rejects_the_row(before: str, control: str,
                                                         after: str) -> None:
    from connectors.files.account_file import Rejection, iter_account_file

    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerows([["account_number", "customer_name", "balance_due"],
                      # Inside the name: outer spaces, and controls Python counts as spaces,
                      # are trimmed from every cell before it is checked.
                      ["A1", f"x{before}{control}{after}x", "1.00"],
                      ["A2", f"x{before}{after}x", "2.00"]])
    bad, good = iter_account_file(io.BytesIO(out.getvalue().encode()))
    assert isinstance(bad, Rejection) and bad.reason.startswith("customer_name: contains a")
    assert not isinstance(good, Rejection)
