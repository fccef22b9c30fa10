"""Refunds and voids recorded in the console travel the reversal path (real Tryton on
127.0.0.1 for the books); partial refunds are amounts; the return rates page warns."""

from __future__ import annotations

import uuid
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from ivr.models import Account, OutboxEntry, Payment, Reversal, utcnow
from ivr.money.posting import drain_once
from ivr.money.reversals import Reverse, record_reversal
from ivr.statuses import OutboxStatus, PaymentStatus, ReversalKind
from ivr.web.app import get_config, get_database
from tests.conftest import OPEN_TIME, call
from tests.flow import CARD, PAY, SILENCE, YES
from tests.test_ops_helpers import USER, assert_accessible, ops_app, signed_in, token
from tests.test_returns import SETTINGS

ALEX = "4401001234"
CARD_PAYMENT = [YES, "60614", PAY, CARD, SILENCE]


def card_payment(app: Flask) -> Payment:
    call(app, CARD_PAYMENT)
    with get_database(app).session() as db:
        payment = db.scalars(select(Payment).order_by(Payment.id.desc())).first()
        assert payment is not None and payment.method == "card"
        db.expunge(payment)
        return payment


def owed(app: Flask) -> int:
    with get_database(app).session() as db:
        return db.scalars(select(Account.balance_due_cents)
                          .where(Account.account_number == ALEX)).one()


def reverse(client: FlaskClient, payment_id: int, **form: str) -> Any:
    url = f"/ops/payments/{payment_id}"
    return client.post(f"{url}/reverse", data={"csrf_token": token(client, url), **form},
                       follow_redirects=True)


def stored(app: Flask, payment_id: int) -> tuple[Payment, list[Reversal]]:
    with get_database(app).session() as db:
        payment = db.get(Payment, payment_id)
        assert payment is not None
        rows = list(db.scalars(select(Reversal).where(Reversal.payment_id == payment_id)))
        db.expunge_all()
        return payment, rows


@pytest.mark.slow
def test_a_card_refund_reverses_the_payment_in_tryton_once(
        database_url: str, tmp_path: Path, tryton: Any) -> None:
    app = ops_app(database_url, tmp_path, now=utcnow(), accounting="tryton",
                  accounting_settings=tryton.settings())
    books = tryton.receivable(ALEX)
    before = owed(app)
    payment = card_payment(app)
    assert tryton.receivable(ALEX) == books - Decimal("123.45")  # posted during the call
    client = signed_in(app)
    page = reverse(client, payment.id, kind="refund", amount="123.45",
                   reason="customer paid twice; refunded at the processor")
    assert "Refund of $123.45 recorded" in page.text
    refunded, [reversal] = stored(app, payment.id)
    assert refunded.status == PaymentStatus.REFUNDED
    assert (reversal.kind, reversal.recorded_by, reversal.amount_cents) == ("refund", USER, 12345)
    assert owed(app) == before
    accounting = app.extensions["ivr.money.accounting"]
    drain_once(get_database(app), accounting.connector, get_config(app), poster="w")
    assert tryton.receivable(ALEX) == books
    moves = tryton.moves(f"IVR reversal {payment.confirmation_code} [%")
    assert len(moves) == 1 and moves[0]["state"] == "posted"
    # Killed after the move landed, before it was recorded: the retry finds it.
    with get_database(app).session() as db:
        row = db.scalars(select(OutboxEntry).where(
            OutboxEntry.reversal_id == reversal.id)).one()
        assert row.status == OutboxStatus.POSTED
        row.status, row.receipt_id = OutboxStatus.PENDING, None
    drain_once(get_database(app), accounting.connector, get_config(app), poster="w",
               clock=lambda: utcnow() + timedelta(hours=1))
    assert len(tryton.moves(f"IVR reversal {payment.confirmation_code} [%")) == 1
    assert tryton.receivable(ALEX) == books
    # Nothing is left to refund.
    page = reverse(client, payment.id, kind="refund", amount="1.00", reason="again")
    assert "Nothing recorded: the payment is already refunded" in page.text


def test_partial_refunds_are_amounts_up_to_what_remains(tmp_path: Path) -> None:
    app = ops_app(f"sqlite:///{tmp_path / 'ops.sqlite3'}", tmp_path)
    payment = card_payment(app)
    before = owed(app)
    client = signed_in(app)
    assert "Refund amount (at most $123.45)" in client.get(f"/ops/payments/{payment.id}").text
    assert "Refund of $20.00 recorded" in reverse(client, payment.id, kind="refund",
                                                  amount="20.00", reason="late fee").text
    partly, _ = stored(app, payment.id)
    assert partly.status == PaymentStatus.PAID and owed(app) == before + 2000
    for form, why in (({"amount": "103.46"}, "between 1 and 10345 cents"),
                      ({"amount": "ten"}, "is not an amount"),
                      ({"amount": "5.00", "reason": ""}, "Say why"),
                      ({"amount": "5.00", "kind": "chargeback"}, "Choose refund or void")):
        page = reverse(client, payment.id, **{"kind": "refund", "reason": "r", **form})
        assert why in page.text, why
    assert owed(app) == before + 2000
    page = reverse(client, payment.id, kind="void", reason="processor voided the rest")
    assert "Void of $103.45 recorded" in page.text
    voided, rows = stored(app, payment.id)
    assert voided.status == PaymentStatus.VOIDED and owed(app) == before + 12345
    assert [r.amount_cents for r in rows] == [2000, 10345]
    assert_accessible(client.get(f"/ops/payments/{payment.id}").text)


def test_signed_out_nobody_can_record_a_refund(tmp_path: Path) -> None:
    app = ops_app(f"sqlite:///{tmp_path / 'ops.sqlite3'}", tmp_path)
    payment = card_payment(app)
    client = app.test_client()
    response = client.post(f"/ops/payments/{payment.id}/reverse",
                           data={"kind": "refund", "amount": "1.00", "reason": "x"})
    assert response.status_code in (302, 400)
    assert stored(app, payment.id)[1] == []


def test_return_rates_page_warns_as_a_rate_nears_its_threshold(tmp_path: Path) -> None:
    app = ops_app(f"sqlite:///{tmp_path / 'ops.sqlite3'}", tmp_path)
    with get_database(app).session() as db:
        alex = db.scalars(select(Account).where(Account.account_number == ALEX)).one()
        debits = [Payment(idempotency_key=str(uuid.uuid4()), call_sid=f"CA{n:032d}",
                          confirmation_code=f"ACH{n:07d}", account_id=alex.id,
                          account_number=ALEX, amount_cents=1000, method="ach",
                          bank_last="89", paid_at=OPEN_TIME - timedelta(days=n))
                  for n in range(8)]
        db.add_all(debits)
        db.flush()
        record_reversal(db, debits[3], Reverse(
            kind=ReversalKind.RETURN, amount_cents=1000, code="R01",
            effective_date=OPEN_TIME.date(), recorded_by="returns file 1"), SETTINGS)
    html = signed_in(app).get("/ops/returns").text
    # 1 return of 8 debits: 12.50% overall, at 83% of the 15% threshold (warns from 80%).
    assert "12.50%" in html and "Warning: nearing the threshold" in html
    assert html.count("Below") == 2
    assert "R01 <span class=\"muted\">insufficient funds</span>" in html
    assert_accessible(html)
