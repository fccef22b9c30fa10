""""You already paid today": a second payment on an account within 24 hours needs the
caller's explicit 1, after hearing the first (amount, time, confirmation number)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from flask import Flask
from sqlalchemy import select
from sqlalchemy.orm import Session

from ivr.models import Account, CallSession, Payment
from ivr.prompts import speech
from ivr.web.app import get_database
from tests.conftest import OPEN_TIME, call, said_text, set_clock
from tests.flow import CARD, CONFIRM, FULL, PAY, RECENT, YES, demo_line, key

PAY_AGAIN, TO_MAIN_MENU = key("paid_today", "again"), key("paid_today", "menu")
PAY_IN_FULL = [YES, "60614", PAY, CARD]
ALEX_BALANCE = "one hundred twenty-three dollars and forty-five cents"


def account_id(db: Session, number: str) -> int:
    found = db.scalar(select(Account.id).where(Account.account_number == number))
    assert found is not None
    return found


def payments(app: Flask) -> list[Payment]:
    with get_database(app).session() as db:
        return list(db.scalars(select(Payment).order_by(Payment.id)))


def test_a_second_payment_the_same_day_needs_the_callers_1(app: Flask) -> None:
    call(app, PAY_IN_FULL)  # at 10 AM in Chicago
    [first] = payments(app)
    set_clock(app, OPEN_TIME + timedelta(hours=2))
    # Pay: the notice; 2 back to the menu; pay again: the notice again; 1: amount entry
    # (nothing is due now), 15.00, confirmed, by card.
    result = call(app, [YES, "60614", PAY, TO_MAIN_MENU, PAY, PAY_AGAIN, "1500#", CONFIRM,
                        CARD])
    text = result.said()
    notice = said_text(app, "paid_today.notice", amount=ALEX_BALANCE, day="today",
                       time="10 AM", code=speech.spell(first.confirmation_code))
    assert text.count(notice) == 2
    assert said_text(app, "amount.enter") in text
    assert [p.amount_cents for p in payments(app)] == [123_45, 15_00]


def test_nothing_is_paid_without_the_confirmation(app: Flask) -> None:
    call(app, PAY_IN_FULL)
    set_clock(app, OPEN_TIME + timedelta(hours=23))
    result = call(app, [YES, "60614", PAY, TO_MAIN_MENU, RECENT, PAY, "-", "-", "-", "-"])
    assert said_text(app, "paid_today.menu") in result.said()
    assert len(payments(app)) == 1


def test_a_payment_over_a_day_ago_is_not_announced(app: Flask) -> None:
    call(app, PAY_IN_FULL)
    set_clock(app, OPEN_TIME + timedelta(hours=24, minutes=1))
    result = call(app, [YES, "60614", PAY, "1500#", CONFIRM, CARD])
    assert said_text(app, "paid_today.menu") not in result.said()
    assert len(payments(app)) == 2


def test_yesterday_evening_in_spanish(tmp_path: Path) -> None:
    # Paid at 9:30 PM in Chicago (03:30 UTC), heard the next morning at 8 AM.
    paid = datetime(2026, 12, 2, 3, 30, tzinfo=UTC)
    with demo_line(tmp_path, now=paid) as line:
        with line.database.session() as db:
            db.add(Payment(idempotency_key="k1", call_sid="CA1", confirmation_code="AB-12",
                           account_id=account_id(db, "4401003456"), account_number="4401003456",
                           amount_cents=76_20,
                           fee_cents=0, method="card", language="es-US", paid_at=paid))
        line.now = paid + timedelta(hours=10, minutes=30)
        flow = line.call(from_number="+15555550125")
        flow.press(YES, "60617", PAY)
        assert flow.heard() == ["paid_today.notice", "paid_today.menu"]
        params = dict(flow.steps[-1].speech[0].params)  # type: ignore[union-attr]
        assert params == {"amount": "setenta y seis dólares con veinte centavos", "day": "ayer",
                          "time": "9:30 de la noche", "code": "A, B, 1, 2"}
        flow.press(PAY_AGAIN)
        assert flow.state == "amount_menu" and flow.session().paid_today_confirmed


def test_once_confirmed_a_later_pay_on_the_call_is_not_asked_again(tmp_path: Path) -> None:
    with demo_line(tmp_path) as line:
        with line.database.session() as db:
            db.add(Payment(idempotency_key="k1", call_sid="CA1", confirmation_code="X1",
                           account_id=account_id(db, "4401001234"), account_number="4401001234",
                           amount_cents=10_00,
                           fee_cents=0, method="card", paid_at=line.now - timedelta(hours=1)))
        flow = line.call()
        flow.press(YES, "60614", PAY)
        assert flow.state == "paid_today"
        flow.press(PAY_AGAIN, FULL, CARD)
        # Star at secure entry cancels; the pay-failed menu leads back to the main menu.
        from ivr.money.payments import handle_pay_result

        with line.database.session() as db:
            session = db.get(CallSession, flow.call_sid)
            assert session is not None
            flow.steps.append(handle_pay_result(line.context(db, session),
                                                {"Result": "caller-interrupted-with-star"}))
        flow.press(key("pay_failed", "menu"))
        assert flow.state == "main_menu"
        flow.press(PAY)  # the balance, without the notice again
        assert flow.state == "method" and "paid_today.notice" not in flow.heard()
