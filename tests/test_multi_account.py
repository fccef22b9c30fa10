"""Several accounts on one phone number: the pick list, verification per account, and paying
more than one account in a call (docs/call-flow.md, "Several accounts on one number")."""

from __future__ import annotations

import csv
import io
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

from flask import Flask
from sqlalchemy import select
from sqlalchemy.orm import Session

from connectors.amounts import cents_to_text, decimal_to_cents
from ivr.accounts.importer import import_accounts
from ivr.calls.account_switch import PER_ACCOUNT, PER_CALL
from ivr.calls.steps import Ask, Transfer
from ivr.models import Account, CallSession, Payment, VerificationFailure
from ivr.simulator.demo import DEMO_LANDLORD, demo_rows
from ivr.web.app import get_database
from tests.conftest import CLOSED_TIME, OPEN_TIME, call, said_text
from tests.flow import (
    AGENT,
    ANOTHER_ACCOUNT,
    CARD,
    EN,
    ES,
    MAIN_MENU,
    PAY,
    PICK_OTHER,
    REPEAT,
    SILENCE,
    YES,
    Line,
    demo_line,
    pick,
)

# The landlord's accounts, in the order the pick list gives them (by account number).
LANDLORD = (("4402000011", "60620", 4510), ("4402000022", "60621", 8800),
            ("4402000033", "60622", 12075))
# What must never be said before the account is verified: name, balances, ZIP codes.
SECRETS = ("Pat", "Kim", "forty-five", "eighty-eight", "one hundred twenty", "dollars",
           "60620", "60621", "60622", "6 0 6 2")
# The balance is the one amount offered: 1 at the main menu pays it, 1 by card.
PAY_BY_CARD = [PAY, CARD]
# The third account takes its full balance only: no amount menu either.
PAY_THIRD_BY_CARD = [PAY, CARD]


def _said_between(events: list[dict[str, object]], start: int, stop: int) -> str:
    return "\n".join(str(e["text"]) for e in events[start:stop] if e.get("event") == "say")


def _press_index(events: list[dict[str, object]], digits: str, after: int = 0) -> int:
    return next(i for i, e in enumerate(events)
                if i > after and e.get("event") == "press" and e.get("digits") == digits)


def _payments(app: Flask) -> list[Payment]:
    with get_database(app).session() as db:
        return list(db.scalars(select(Payment).order_by(Payment.id)))


def _account_id(db: Session, number: str) -> int:
    found = db.scalar(select(Account.id).where(Account.account_number == number))
    assert found is not None
    return found


# --- whole calls, SQLite and PostgreSQL ---------------------------------------------------------

def test_landlord_pays_two_of_three_accounts_in_one_call(app: Flask) -> None:
    presses = [EN, pick(1), "60620", *PAY_BY_CARD, ANOTHER_ACCOUNT, pick(3), "60622",
               *PAY_THIRD_BY_CARD]
    result = call(app, presses, from_number=DEMO_LANDLORD)
    events = result.events
    assert [e.get("digits") for e in events if e.get("event") == "press"] == presses
    with get_database(app).session() as db:
        ended = db.get(CallSession, result.call_sid)
        assert ended is not None and ended.state == "receipt"  # every key where it was meant

    # Before the first verification: the last four digits of each account, nothing else.
    first_zip = _press_index(events, "60620")
    before = _said_between(events, 0, first_zip)
    for key, (number, _zip, _cents) in enumerate(LANDLORD, start=1):
        assert said_text(app, "pick.option", key=str(key),
                         last4=" ".join(number[-4:])) in before
    assert said_text(app, "pick.other") in before
    assert not [s for s in SECRETS if s in before], before

    # Switching: the list again (the account just paid still on it), nothing carried over.
    another = _press_index(events, ANOTHER_ACCOUNT, after=first_zip)
    second_zip = _press_index(events, "60622", after=another)
    between = _said_between(events, another, second_zip)
    assert said_text(app, "pick.option", key="1", last4="0 0 1 1") in between
    assert said_text(app, "pick.option", key="3", last4="0 0 3 3") in between
    assert not [s for s in SECRETS if s in between], between
    after = _said_between(events, second_zip, len(events))
    assert "one hundred twenty dollars and seventy-five cents" in after
    assert "forty-five dollars" not in after

    # Two payments, each on its own account, with their own confirmation numbers.
    paid = _payments(app)
    assert [(p.account_number, p.amount_cents, p.call_sid) for p in paid] == [
        ("4402000011", 4510, result.call_sid), ("4402000033", 12075, result.call_sid)]
    assert paid[0].confirmation_code != paid[1].confirmation_code
    codes = [e.get("confirmation") for e in events if e.get("event") == "pay"]
    assert codes == [p.confirmation_code for p in paid]
    text = result.said()
    for payment in paid:
        assert said_text(app, "receipt.number",
                         code=", ".join(payment.confirmation_code)) in text


def test_a_wrong_zip_counts_against_that_account_only(app: Flask) -> None:
    # Two wrong ZIPs on the first account (of 3 allowed per call), then two on the third:
    # the count starts again with each account, and the failures are recorded per account.
    presses = [EN, pick(1), "11111", "22222", "60620", *PAY_BY_CARD, ANOTHER_ACCOUNT, pick(3),
               "33333", "44444", "60622"]
    result = call(app, presses, from_number=DEMO_LANDLORD)
    assert said_text(app, "verify.failed_final") not in result.said()
    database = get_database(app)
    with database.session() as db:
        first, third = (_account_id(db, n) for n in ("4402000011", "4402000033"))
        failed = sorted(db.scalars(select(VerificationFailure.account_id)))
        assert failed == sorted([first, first, third, third])
        session = db.get(CallSession, result.call_sid)
        assert session is not None
        assert (session.account_id, session.verified, session.verify_failures) == (
            third, True, 2)
        assert session.state == "main_menu"


def test_a_locked_account_does_not_lock_the_others(app: Flask) -> None:
    # Five failures from this number lock it out of the second account only.
    database = get_database(app)
    with database.session() as db:
        second = _account_id(db, "4402000022")
        db.add_all([VerificationFailure(account_id=second, call_sid="CAx", caller=DEMO_LANDLORD,
                                        failed_at=OPEN_TIME - timedelta(minutes=i))
                    for i in range(1, 6)])
        db.commit()
    locked = call(app, [EN, pick(2)], from_number=DEMO_LANDLORD)
    assert said_text(app, "verify.locked") in locked.said()
    fine = call(app, [EN, pick(1), "60620"], from_number=DEMO_LANDLORD)
    assert "forty-five dollars and ten cents" in fine.said()


def test_star_on_the_pick_list_asks_for_the_account_number(app: Flask) -> None:
    result = call(app, [EN, PICK_OTHER, "4401001234#", "60614"], from_number=DEMO_LANDLORD)
    text = result.said()
    assert said_text(app, "account.enter") in text
    assert "one hundred twenty-three dollars and forty-five cents" in text


def test_the_pick_list_in_spanish(app: Flask) -> None:
    result = call(app, [ES, PICK_OTHER], from_number=DEMO_LANDLORD)
    text = result.said()
    assert said_text(app, "pick.intro", "es-US") in text
    assert said_text(app, "pick.option", "es-US", key="2", last4="0 0 2 2") in text
    assert said_text(app, "pick.other", "es-US") in text
    assert said_text(app, "account.enter", "es-US") in text


# --- the flow harness (SQLite) --------------------------------------------------------------

def _state(line: Line, call_sid: str) -> CallSession:
    with line.database.session() as db:
        found = db.get(CallSession, call_sid)
        assert found is not None
        db.expunge(found)
        return found


def test_repeat_and_representative_work_on_the_pick_list(tmp_path: Path) -> None:
    with demo_line(tmp_path) as line:
        flow = line.call(DEMO_LANDLORD)
        flow.press(EN)
        assert flow.state == "pick_account"
        assert flow.heard() == ["common.tips", "pick.intro", "pick.option", "pick.option",
                                "pick.option", "pick.other"]
        flow.press(REPEAT)
        assert flow.heard() == ["pick.intro", "pick.option", "pick.option", "pick.option",
                                "pick.other"]
        assert flow.state == "pick_account"
        assert isinstance(flow.press(AGENT), Transfer)


def test_representative_after_hours_asks_the_pick_list_again(tmp_path: Path) -> None:
    with demo_line(tmp_path, now=CLOSED_TIME) as line:
        flow = line.call(DEMO_LANDLORD)
        flow.press(EN)
        step = flow.press(AGENT)
        assert isinstance(step, Ask) and step.state == "pick_account"
        assert "agent.closed_opens" in flow.heard() and "pick.option" in flow.heard()


def test_keys_not_on_the_list_are_no_match(tmp_path: Path) -> None:
    with demo_line(tmp_path) as line:
        flow = line.call(DEMO_LANDLORD)
        flow.press(EN, "4")  # three accounts: 4 is not offered
        assert flow.state == "pick_account"
        assert flow.session().tries == 1 and flow.session().account_id is None
        assert "pick.intro" in flow.heard()


def test_silence_at_the_language_menu_keeps_the_pick_list(tmp_path: Path) -> None:
    with demo_line(tmp_path) as line:
        flow = line.call(DEMO_LANDLORD)
        flow.press(SILENCE)
        assert flow.state == "pick_account"
        assert flow.session().language == line.catalog.settings.default_language


def test_switching_forgets_the_account_just_paid(tmp_path: Path) -> None:
    with demo_line(tmp_path) as line:
        flow = line.call(DEMO_LANDLORD)
        flow.press(EN, pick(1), "60620", *PAY_BY_CARD)
        assert flow.state == "paying"
        paying = flow.session()
        assert paying.verified and paying.amount_cents == 4510
        # The <Pay> result arrives as the webhook would deliver it.
        from ivr.money.payments import handle_pay_result

        with line.database.session() as db:
            session = db.get(CallSession, flow.call_sid)
            assert session is not None
            flow.steps.append(handle_pay_result(line.context(db, session), {
                "Result": "success", "PaymentConfirmationCode": "CONF2",
                "PaymentCardNumber": "xxxx-xxxx-xxxx-1111", "PaymentCardType": "visa"}))
        assert flow.state == "receipt"
        assert "receipt.another" in flow.heard()
        flow.press(ANOTHER_ACCOUNT)
        assert flow.state == "pick_account"
        switched = flow.session()
        for name, value in PER_ACCOUNT.items():
            assert getattr(switched, name) == value, name
        assert switched.pay_tries == 1  # the card-testing guard is per call
        # The account just paid needs its ZIP again; a main-menu key is no way round it.
        flow.press(MAIN_MENU)
        assert flow.state == "verify"
        assert flow.session().account_id is not None and not flow.session().verified


def test_a_caller_on_one_account_pays_another_by_typing_it(tmp_path: Path) -> None:
    with demo_line(tmp_path) as line:
        flow = line.call("+15555550123")
        flow.press(YES, "60614", PAY, CARD)
        from ivr.money.payments import handle_pay_result

        with line.database.session() as db:
            session = db.get(CallSession, flow.call_sid)
            assert session is not None
            flow.steps.append(handle_pay_result(line.context(db, session), {
                "Result": "success", "PaymentConfirmationCode": "CONF1"}))
        flow.press(ANOTHER_ACCOUNT)
        assert flow.state == "account_entry"
        assert flow.heard() == ["account.enter"]
        flow.press("4401003456#")
        assert flow.state == "verify"  # verified afresh
        flow.press("60617")
        assert flow.state == "main_menu"
        assert "summary.balance_due_on" in flow.heard()


# --- many accounts on one number ----------------------------------------------------------------

def _with_landlord_accounts(line: Line, count: int) -> list[str]:
    """Reload the demo accounts with ``count`` on the landlord's number; their numbers."""
    rows = demo_rows(line.now.date())
    template = next(r for r in rows if r["phones"] == DEMO_LANDLORD)
    extra = [{**template, "account_number": f"44030000{i:02d}", "balance_due": "10.00"}
             for i in range(count - 3)]
    rows += extra
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\r\n")
    writer.writeheader()
    writer.writerows(rows)
    total = sum(decimal_to_cents(Decimal(r["balance_due"])) for r in rows)
    out.write(f"TRAILER,{len(rows)},{cents_to_text(total)}\r\n")
    report = import_accounts(line.database, io.BytesIO(out.getvalue().encode()), "many",
                             pin_key="test-pin-key")
    assert report.applied, report.lines()
    return sorted(r["account_number"] for r in rows if r["phones"] == DEMO_LANDLORD)


def test_eight_accounts_take_keys_one_to_eight(tmp_path: Path) -> None:
    with demo_line(tmp_path) as line:
        numbers = _with_landlord_accounts(line, 8)
        flow = line.call(DEMO_LANDLORD)
        step = flow.press(EN)
        assert isinstance(step, Ask)
        options = [s.params for s in step.speech if s.prompt_id == "pick.option"]
        assert options == [{"key": str(i), "last4": " ".join(n[-4:])}
                           for i, n in enumerate(numbers, start=1)]
        flow.press(pick(8))
        with line.database.session() as db:
            assert _state(line, flow.call_sid).account_id == _account_id(db, numbers[7])


def test_nine_accounts_go_to_account_entry(tmp_path: Path) -> None:
    with demo_line(tmp_path) as line:
        _with_landlord_accounts(line, 9)
        flow = line.call(DEMO_LANDLORD)
        flow.press(EN)
        assert flow.state == "account_entry"
        assert "pick.option" not in flow.heard()


def test_every_call_column_is_per_account_or_per_call() -> None:
    columns = {c.key for c in CallSession.__mapper__.column_attrs}
    assert not set(PER_ACCOUNT) & PER_CALL
    assert set(PER_ACCOUNT) | PER_CALL == columns, (
        "classify the new CallSession column in ivr/calls/account_switch.py")
    assert "pay_tries" in PER_CALL and "verify_failures" in PER_ACCOUNT
