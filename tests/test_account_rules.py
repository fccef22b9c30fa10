"""Per-account payment rules: the rules as a table (ivr.calls.account_rules), then whole calls
for each rule (the flow harness, and signed webhooks on SQLite and PostgreSQL), and the fee
warning of `ivr prompts check`."""

from __future__ import annotations

import csv
import io
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from flask import Flask
from sqlalchemy import select

from connectors.amounts import cents_to_text, decimal_to_cents
from ivr.accounts.importer import import_accounts
from ivr.calls import account_rules
from ivr.calls.steps import PayCapture
from ivr.cli import main
from ivr.db import Database
from ivr.models import Account, Payment
from ivr.prompts.settings import LineSettings, parse_line_settings
from ivr.prompts.warnings import settings_warnings
from ivr.simulator.demo import demo_rows
from ivr.web.app import get_database
from tests.conftest import OPEN_TIME, call, custom_prompts, make_app, said_text
from tests.flow import (
    ACCEPT_FEE,
    CHANGE,
    CHECKING,
    CONFIRM,
    CONTINUE,
    DECLINE_FEE,
    EN,
    FULL,
    OTHER_AMOUNT,
    PAY,
    PAY_OTHER,
    RECENT,
    YES,
    demo_line,
    key,
)

CASEY = "4401007890"  # +15555550127, ZIP 60618, disconnected, owes 265.40, reconnects for 185.40
NO_BANK = "4402000022"  # ZIP 60621, 88.00, ach_allowed N
FULL_ONLY = "4402000033"  # ZIP 60622, 120.75, full_payment_required Y
STRANGER = "+15555550199"  # on no account: the caller types the account number
RECONNECT = key("amount_menu", "reconnect")
PAY_AGAIN, TO_MAIN_MENU = key("paid_today", "again"), key("paid_today", "menu")
TODAY = date(2026, 12, 1)

# --- the rules, as a table ---------------------------------------------------------------------


def settings(ach: bool = True, reconnect: bool = True,
             reconnect_methods: tuple[str, ...] = ("card",), **tables: Any) -> LineSettings:
    data: dict[str, Any] = {
        "ach": {"enabled": ach, "office_phone": "+15555550100"},
        "reconnect": {"enabled": reconnect, "methods": list(reconnect_methods)},
        **tables,
    }
    return parse_line_settings(data)


def account(**fields: Any) -> Account:
    values: dict[str, Any] = {
        "account_number": "1", "status": "active", "balance_due_cents": 100_00,
        "past_due_cents": 0, "payment_allowed": True, "ach_allowed": True,
        "card_allowed": True, "minimum_payment_cents": None, "full_payment_required": False,
        "reconnect_cents": None, **fields}
    return Account(**values)


@pytest.mark.parametrize(("fields", "line", "allowed", "why"), [
    ({}, {}, ("card", "ach"), None),
    ({}, {"ach": False}, ("card",), None),  # the line's own rule: said nowhere, as before
    ({"ach_allowed": False}, {}, ("card",), "account"),
    ({"card_allowed": False}, {}, ("ach",), "account"),
    ({"card_allowed": False}, {"ach": False}, (), None),
    ({"card_allowed": False, "ach_allowed": False}, {}, (), None),
    ({"status": "disconnected"}, {}, ("card",), "reconnect"),
    ({"status": "disconnected"}, {"reconnect_methods": ("card", "ach")}, ("card", "ach"), None),
    ({"status": "disconnected"}, {"reconnect_methods": ("ach",)}, ("ach",), "reconnect"),
    ({"status": "disconnected", "ach_allowed": False}, {}, ("card",), "account"),
    ({"status": "disconnected", "card_allowed": False}, {}, (), None),
    ({"status": "disconnected"}, {"reconnect": False}, ("card", "ach"), None),
    ({"status": "disconnect_pending"}, {}, ("card", "ach"), None),
])
def test_methods(fields: dict[str, Any], line: dict[str, Any], allowed: tuple[str, ...],
                 why: str | None) -> None:
    methods = account_rules.methods(account(**fields), settings(**line), TODAY)
    assert (methods.allowed, methods.why_one) == (allowed, why)
    assert account_rules.phone_payable(account(**fields), settings(**line), TODAY) == bool(allowed)


@pytest.mark.parametrize(("fields", "payable"), [
    ({}, True),
    ({"payment_allowed": False}, False),
    ({"status": "closed"}, False),
    ({"status": "disconnected"}, True),
])
def test_phone_payable(fields: dict[str, Any], payable: bool) -> None:
    assert account_rules.phone_payable(account(**fields), settings(), TODAY) is payable


LIMITS = {"amount": {"minimum": "1.00", "maximum": "500.00"}}


@pytest.mark.parametrize(("fields", "cents", "refusal"), [
    ({}, 50_00, None),
    ({}, 99, ("amount.below_minimum", "minimum", 1_00)),
    ({}, 500_01, ("amount.above_maximum", "maximum", 500_00)),
    ({"balance_due_cents": 800_00}, 800_00, ("amount.above_maximum", "maximum", 500_00)),
    # The account's minimum raises the line's...
    ({"minimum_payment_cents": 40_00}, 39_99, ("amount.below_account_minimum", "minimum",
                                               40_00)),
    ({"minimum_payment_cents": 40_00}, 40_00, None),
    # ...but never above the balance owed: a smaller balance can still be paid in full.
    ({"minimum_payment_cents": 150_00}, 99_99, ("amount.below_account_minimum", "minimum",
                                                100_00)),
    ({"minimum_payment_cents": 150_00}, 100_00, None),
    # Below the line's minimum, the line's reason is said.
    ({"minimum_payment_cents": 40_00}, 50, ("amount.below_minimum", "minimum", 1_00)),
    # Nothing owed: no account minimum.
    ({"minimum_payment_cents": 40_00, "balance_due_cents": 0}, 5_00, None),
    # Full balance only.
    ({"full_payment_required": True}, 100_00, None),
    ({"full_payment_required": True}, 50_00, ("amount.full_only", "amount", 100_00)),
    ({"full_payment_required": True}, 100_01, ("amount.full_only", "amount", 100_00)),
    ({"full_payment_required": True}, 50, ("amount.full_only", "amount", 100_00)),
    ({"full_payment_required": True, "balance_due_cents": -5_00}, 20_00, None),
    # A disconnected account that takes the full balance only may pay its reconnection.
    ({"full_payment_required": True, "status": "disconnected", "reconnect_cents": 60_00},
     60_00, None),
    ({"full_payment_required": True, "status": "disconnected", "reconnect_cents": 60_00},
     70_00, ("amount.full_only", "amount", 100_00)),
    ({"full_payment_required": True, "status": "active", "reconnect_cents": 60_00},
     60_00, ("amount.full_only", "amount", 100_00)),
])
def test_refusal(fields: dict[str, Any], cents: int,
                 refusal: tuple[str, str, int] | None) -> None:
    found = account_rules.refusal(account(**fields), settings(**LIMITS), cents)
    assert found == (account_rules.Refusal(*refusal) if refusal else None)


@pytest.mark.parametrize(("fields", "line", "cents", "amount", "purpose"), [
    ({"status": "disconnected", "reconnect_cents": 185_40}, {}, 185_40, 185_40, "reconnect"),
    ({"status": "disconnected", "reconnect_cents": 185_40}, {}, 265_40, 185_40, "reconnect"),
    ({"status": "disconnected", "reconnect_cents": 185_40}, {}, 185_39, 185_40, None),
    ({"status": "disconnected"}, {}, 100_00, 100_00, "reconnect"),  # no amount: the balance
    ({"status": "disconnected", "reconnect_cents": 0}, {}, 100_00, 100_00, "reconnect"),
    ({"status": "disconnected"}, {"reconnect": False}, 100_00, 100_00, None),
    ({"status": "active", "reconnect_cents": 50_00}, {}, 100_00, 50_00, None),
])
def test_reconnection(fields: dict[str, Any], line: dict[str, Any], cents: int, amount: int,
                      purpose: str | None) -> None:
    acct = account(**fields)
    assert account_rules.reconnect_amount(acct) == amount
    assert account_rules.purpose(acct, settings(**line), cents) == purpose


# --- the fee warning ---------------------------------------------------------------------------


@pytest.mark.parametrize(("fee", "ach", "warned"), [
    ({"card": "1.50", "ach": "0.00"}, True, True),
    ({"card": "0.00", "ach": "0.50"}, True, True),
    ({"card": "1.50", "ach": "1.50"}, True, False),
    ({"card": "1.50", "ach": "0.00"}, False, False),  # one way to pay: one fee
    ({}, True, False),
])
def test_fee_warning(fee: dict[str, str], ach: bool, warned: bool) -> None:
    warnings = settings_warnings(settings(ach=ach, fee=fee))
    assert bool(warnings) is warned
    if warned:
        assert "fee.card" in warnings[0] and "fee.ach" in warnings[0]


def test_prompts_check_warns_but_passes(tmp_path: Path, prompts_dir: Path) -> None:
    prompts = custom_prompts(tmp_path, {"settings.toml": ('card = "0.00"', 'card = "1.95"')})
    result = CliRunner().invoke(main, ["prompts", "check", "--dir", str(prompts)])
    assert result.exit_code == 0, result.output
    assert "warning: settings.toml: fee.card (1.95) and fee.ach (0.00) differ" in result.output
    assert "prompts OK" in result.output
    shipped = CliRunner().invoke(main, ["prompts", "check", "--dir", str(prompts_dir)])
    assert shipped.exit_code == 0 and "warning" not in shipped.output


# --- whole calls: the flow harness -------------------------------------------------------------


def account_file(today: date, changes: dict[str, dict[str, str]]) -> bytes:
    """The demo account file with some cells changed (as a biller's next file would)."""
    rows = [{**row, **changes.get(row["account_number"], {})} for row in demo_rows(today)]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\r\n")
    writer.writeheader()
    writer.writerows(rows)
    total = sum(decimal_to_cents(Decimal(row["balance_due"])) for row in rows)
    out.write(f"TRAILER,{len(rows)},{cents_to_text(total)}\r\n")
    return out.getvalue().encode("utf-8")


def load(database: Database, changes: dict[str, dict[str, str]]) -> None:
    report = import_accounts(database, io.BytesIO(account_file(OPEN_TIME.date(), changes)),
                             "changed", pin_key="test-pin-key")
    assert report.applied, report.lines()


def test_a_reconnection_amount_is_offered_and_paid_by_card_only(tmp_path: Path) -> None:
    with demo_line(tmp_path) as line:
        flow = line.call(from_number="+15555550127")
        flow.press(YES, "60618")
        assert "summary.reconnect" in flow.heard() and "summary.disconnected" not in flow.heard()
        assert flow.heard()[-1] == "menu.main"
        flow.press(PAY)
        assert flow.heard() == ["amount.menu_full", "amount.menu_other", "amount.menu_reconnect"]
        flow.press(RECONNECT)
        assert flow.session().amount_cents == 185_40
        assert flow.session().payment_purpose == "reconnect"
        # Card only: no method menu, and the caller hears why.
        assert flow.heard() == ["method.reconnect_card_only", "confirm.card"]
        step = flow.press(CONTINUE)
        assert isinstance(step, PayCapture) and step.method == "credit-card"
        assert step.charge_cents == 185_40


def test_paying_less_than_the_reconnection_amount_is_a_plain_payment(tmp_path: Path) -> None:
    with demo_line(tmp_path) as line:
        flow = line.call(from_number="+15555550127")
        flow.press(YES, "60618", PAY, OTHER_AMOUNT, "5000#")
        assert flow.session().payment_purpose is None
        flow.press(CHANGE, FULL)
        assert flow.session().payment_purpose == "reconnect"  # the balance restores it too


def test_without_reconnection_a_disconnected_account_pays_as_before(tmp_path: Path) -> None:
    prompts = custom_prompts(tmp_path, {"settings.toml": (
        'enabled = true\nmethods = ["card"]', 'enabled = false\nmethods = ["card"]')})
    with demo_line(tmp_path, prompts) as line:
        assert not line.catalog.settings.reconnect.enabled
        flow = line.call(from_number="+15555550127")
        flow.press(YES, "60618")
        assert "summary.disconnected" in flow.heard() and "summary.reconnect" not in flow.heard()
        # The balance is the one amount to offer: the main menu's 1 pays it.
        assert flow.heard()[-1] == "menu.pay_full"
        flow.press(PAY)
        assert flow.heard() == ["method.menu_pay"]
        assert flow.session().payment_purpose is None


def test_an_account_that_refuses_bank_debits_pays_by_card_and_hears_why(tmp_path: Path) -> None:
    with demo_line(tmp_path) as line:
        flow = line.call(from_number=STRANGER)
        flow.press(EN, f"{NO_BANK}#", "60621", PAY)
        assert flow.heard() == ["method.card_only", "confirm.card"]
        assert flow.session().method == "card"


def test_a_fee_declined_with_one_way_to_pay_cancels(tmp_path: Path) -> None:
    prompts = custom_prompts(tmp_path, {"settings.toml": ('card = "0.00"', 'card = "1.50"')})
    with demo_line(tmp_path, prompts) as line:
        flow = line.call(from_number=STRANGER)
        flow.press(EN, f"{NO_BANK}#", "60621", PAY)
        assert flow.heard() == ["method.card_only", "fee.disclose_no_choice"]
        flow.press(DECLINE_FEE)
        assert flow.state == "main_menu"
        assert flow.heard()[:2] == ["pay.cancelled", "menu.pay_full"]
        # With both ways to pay, declining goes back to the method menu, as before (which
        # does not say the amount: the fee and the confirmation with it do).
        alex = line.call()
        alex.press(YES, "60614", PAY)
        assert alex.heard() == ["method.menu"]
        alex.press(key("method", "card"))
        assert alex.heard() == ["fee.disclose"]
        alex.press(DECLINE_FEE)
        assert alex.state == "method"
        assert alex.heard() == ["fee.declined", "method.menu"]
        alex.press(key("method", "card"), ACCEPT_FEE)
        assert alex.heard() == ["confirm.card_with_fee"]


def test_an_account_that_refuses_cards_goes_to_the_bank_account_type(tmp_path: Path) -> None:
    with demo_line(tmp_path) as line:
        load(line.database, {"4401001234": {"card_allowed": "N"}})
        flow = line.call()
        flow.press(YES, "60614", PAY)
        assert flow.heard() == ["method.bank_only", "method.bank_type"]
        assert flow.state == "bank_type" and flow.session().method == "ach"
        flow.press(CHECKING)
        assert flow.state == "ach_authorize"


def test_an_account_with_no_way_left_to_pay_is_not_offered_pay(tmp_path: Path) -> None:
    with demo_line(tmp_path) as line:
        load(line.database, {"4401001234": {"card_allowed": "N", "ach_allowed": "N"}})
        flow = line.call()
        flow.press(YES, "60614")
        assert flow.heard()[-2:] == ["summary.no_phone_payments", "menu.main_no_pay"]
        flow.press(PAY)
        assert flow.state == "main_menu" and flow.heard()[0] == "common.no_match"
        flow.press(RECENT)
        assert flow.session().tries == 0


def test_a_disconnected_account_without_a_reconnection_method_hears_a_representative(
        tmp_path: Path) -> None:
    with demo_line(tmp_path) as line:
        load(line.database, {CASEY: {"card_allowed": "N"}})  # bank only; reconnection by card
        flow = line.call(from_number="+15555550127")
        flow.press(YES, "60618")
        heard = flow.heard()
        assert "summary.disconnected" in heard and "summary.no_phone_payments" in heard
        assert heard[-1] == "menu.main_no_pay"


def test_full_payment_only_refuses_another_amount_with_the_reason(tmp_path: Path) -> None:
    with demo_line(tmp_path) as line:
        flow = line.call(from_number=STRANGER)
        flow.press(EN, f"{FULL_ONLY}#", "60622")
        # No other amount at the main menu...
        assert flow.heard()[-1] == "menu.main"
        flow.press(PAY_OTHER)
        assert flow.heard()[0] == "common.no_match"
        # ...and no amount menu: the full balance, with the rule, then both ways to pay.
        flow.press(PAY)
        assert flow.heard() == ["amount.full_only", "method.menu_pay"]
        assert flow.steps[-1].speech[0].params == {  # type: ignore[union-attr]
            "amount": "one hundred twenty dollars and seventy-five cents"}
        assert flow.session().amount_cents == 120_75


def test_full_payment_only_above_the_line_maximum_cannot_pay_by_phone(tmp_path: Path) -> None:
    prompts = custom_prompts(tmp_path, {"settings.toml": ('maximum = "5000.00"',
                                                          'maximum = "100.00"')})
    with demo_line(tmp_path, prompts) as line:
        flow = line.call(from_number=STRANGER)
        flow.press(EN, f"{FULL_ONLY}#", "60622", PAY)
        assert flow.state == "main_menu"
        assert flow.heard() == ["amount.full_only", "amount.above_maximum", "menu.main"]


def test_full_payment_only_hides_the_disconnection_amount(tmp_path: Path) -> None:
    with demo_line(tmp_path) as line:
        load(line.database, {"4401005678": {"full_payment_required": "Y"}})
        flow = line.call(from_number="+15555550124")
        flow.press(YES, "60615", PAY)
        assert flow.heard() == ["amount.full_only", "method.menu_pay"]
        assert flow.session().amount_cents == 312_80


def test_full_payment_only_of_a_disconnected_account_offers_its_reconnection(
        tmp_path: Path) -> None:
    with demo_line(tmp_path) as line:
        load(line.database, {CASEY: {"full_payment_required": "Y"}})
        flow = line.call(from_number="+15555550127")
        flow.press(YES, "60618", PAY)
        assert flow.heard() == ["amount.menu_full", "amount.menu_reconnect"]
        flow.press(OTHER_AMOUNT)
        assert flow.heard()[0] == "common.no_match"
        flow.press(RECONNECT)
        assert flow.session().amount_cents == 185_40
        assert flow.state == "final_confirm"  # reconnections are paid by card


def test_an_account_minimum_refuses_smaller_amounts(tmp_path: Path) -> None:
    with demo_line(tmp_path) as line:
        load(line.database, {"4401001234": {"minimum_payment": "50.00"},
                             "4401005678": {"minimum_payment": "200.00"},
                             "4401003456": {"minimum_payment": "100.00"}})
        alex = line.call()
        alex.press(YES, "60614", PAY_OTHER, "2000#")
        assert alex.state == "amount_entry" and alex.heard()[0] == "amount.below_account_minimum"
        assert alex.steps[-1].speech[0].params == {"minimum": "fifty dollars"}  # type: ignore[union-attr]
        alex.press("5000#")
        assert alex.state == "amount_confirm" and alex.session().amount_cents == 50_00
        # 187.50 avoids the disconnection but is below the account's 200.00: not offered.
        jordan = line.call(from_number="+15555550124")
        jordan.press(YES, "60615", PAY)  # so the balance is the one amount to offer
        assert jordan.heard() == ["method.menu_pay"]
        assert jordan.session().amount_cents == 312_80
        # A balance (76.20) below the account's minimum (100.00) can be paid in full...
        rosa = line.call(from_number="+15555550125")
        rosa.press(YES, "60617", PAY)
        assert rosa.state == "method" and rosa.session().amount_cents == 76_20
        # ...and nothing less than it.
        rosa = line.call(from_number="+15555550125")
        rosa.press(YES, "60617", PAY_OTHER, "7000#")
        assert rosa.heard()[0] == "amount.below_account_minimum"
        assert rosa.steps[-1].speech[0].params == {  # type: ignore[union-attr]
            "minimum": "setenta y seis dólares con veinte centavos"}  # Rosa's language on file


# --- whole calls through signed webhooks, on SQLite and PostgreSQL ------------------------------


def payments(app: Flask) -> list[Payment]:
    with get_database(app).session() as db:
        return list(db.scalars(select(Payment).order_by(Payment.id)))


def cached(app: Flask, number: str) -> Account:
    with get_database(app).session() as db:
        found = db.scalar(select(Account).where(Account.account_number == number))
        assert found is not None
        return found


def test_casey_pays_the_reconnection_amount_by_card(app: Flask) -> None:
    result = call(app, [YES, "60618", PAY, RECONNECT, CONTINUE],
                  from_number="+15555550127")
    text = result.said()
    assert said_text(app, "summary.reconnect",
                     amount="one hundred eighty-five dollars and forty cents") in text
    assert said_text(app, "amount.menu_reconnect",
                     amount="one hundred eighty-five dollars and forty cents") in text
    assert said_text(app, "method.reconnect_card_only") in text
    assert said_text(app, "method.menu") not in text
    assert said_text(app, "pay.reconnect_next") in text
    [payment] = payments(app)
    assert (payment.account_number, payment.amount_cents, payment.method, payment.purpose) == (
        CASEY, 185_40, "card", "reconnect")
    # The next call hears neither the disconnection nor a reconnection amount again.
    casey = cached(app, CASEY)
    assert (casey.status, casey.reconnect_cents, casey.balance_due_cents) == (
        "active", None, 80_00)


def test_no_bank_account_pays_by_card_after_account_entry(app: Flask) -> None:
    result = call(app, [EN, f"{NO_BANK}#", "60621", PAY, CONTINUE],
                  from_number=STRANGER)
    text = result.said()
    assert said_text(app, "method.card_only") in text
    assert said_text(app, "method.menu") not in text
    assert said_text(app, "pay.reconnect_next") not in text
    [payment] = payments(app)
    assert (payment.account_number, payment.amount_cents, payment.method, payment.purpose) == (
        NO_BANK, 88_00, "card", None)


def test_full_payment_only_through_webhooks(app: Flask) -> None:
    result = call(app, [EN, f"{FULL_ONLY}#", "60622", PAY, key("method", "card")],
                  from_number=STRANGER)
    full = "one hundred twenty dollars and seventy-five cents"
    assert result.said().count(said_text(app, "amount.full_only", amount=full)) == 1
    assert [(p.account_number, p.amount_cents) for p in payments(app)] == [(FULL_ONLY, 120_75)]


def test_an_account_minimum_through_webhooks(database_url: str, prompts_dir: Path) -> None:
    app = make_app(database_url, prompts_dir)
    load(get_database(app), {"4401001234": {"minimum_payment": "50.00"}})
    result = call(app, [YES, "60614", PAY_OTHER, "2000#", "6000#", CONFIRM,
                        key("method", "card")])
    assert said_text(app, "amount.below_account_minimum", minimum="fifty dollars") in \
        result.said()
    assert [p.amount_cents for p in payments(app)] == [60_00]
