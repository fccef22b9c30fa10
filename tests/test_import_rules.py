"""What an account import does to what the line already knows: columns a file lacks, and
payments the biller's file cannot include yet."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

from flask import Flask
from sqlalchemy import select

from ivr.accounts.importer import import_accounts
from ivr.models import Account, OutboxEntry, Payment, SyncRun, utcnow
from ivr.security import check_pin
from ivr.web.app import get_database

NO_PIN_FILE = (
    "account_number,customer_name,balance_due\r\n"
    "4401005678,Jordan Lee,300.00\r\n"
)


def account(app: Flask, number: str) -> Account:
    with get_database(app).session() as db:
        found = db.scalar(select(Account).where(Account.account_number == number))
        assert found is not None
        return found


def test_columns_a_file_lacks_are_left_as_they_were(app: Flask) -> None:
    before = account(app, "4401005678")
    assert before.pin_hash and before.service_zip == "60615"
    report = import_accounts(get_database(app), io.BytesIO(NO_PIN_FILE.encode()), "partial",
                             pin_key="test-pin-key")
    assert report.applied
    after = account(app, "4401005678")
    assert after.balance_due_cents == 30000
    assert check_pin("1357", after.pin_hash, "test-pin-key")  # PIN kept
    assert after.service_zip == "60615" and after.status == "disconnect_pending"
    with get_database(app).session() as db:
        phones = db.scalar(select(Account).where(Account.account_number == "4401005678"))
        assert phones is not None and [p.phone for p in phones.phones] == ["+15555550124"]


def _pay(app: Flask, cents: int, paid_at: datetime, code: str) -> Payment:
    with get_database(app).session() as db:
        acct = db.scalar(select(Account).where(Account.account_number == "4401005678"))
        assert acct is not None
        payment = Payment(idempotency_key=f"k-{code}", call_sid=f"CA{code}",
                          confirmation_code=code, account_id=acct.id,
                          account_number="4401005678", amount_cents=cents, method="card",
                          card_last4="1111", paid_at=paid_at)
        db.add(payment)
        db.flush()
        db.add(OutboxEntry(payment_id=payment.id, next_attempt_at=paid_at))
        return payment


def test_payments_the_biller_has_not_seen_are_taken_off_again(app: Flask) -> None:
    made = utcnow()
    _pay(app, 5000, made - timedelta(hours=2), "UNSEEN01")  # not posted, not in any file
    seen = _pay(app, 7000, made - timedelta(hours=3), "POSTED01")
    sent = _pay(app, 1100, made - timedelta(hours=26), "INFILE01")
    with get_database(app).session() as db:
        entry = db.scalar(select(OutboxEntry).where(OutboxEntry.payment_id == seen.id))
        assert entry is not None
        entry.status, entry.posted_at = "posted", made - timedelta(hours=3)
        # A confirmation file covering the older payment went out before the file was made.
        db.add(SyncRun(kind="push", status="ok", started_at=made - timedelta(hours=1),
                       finished_at=made - timedelta(hours=1),
                       interval_start=sent.paid_at - timedelta(hours=1),
                       interval_end=sent.paid_at + timedelta(hours=1)))
    report = import_accounts(get_database(app), io.BytesIO(NO_PIN_FILE.encode()), "biller",
                             pin_key="test-pin-key", as_of=made)
    assert report.applied and report.reapplied == 1
    # 300.00 in the file, less the 50.00 the biller could not know about yet.
    assert account(app, "4401005678").balance_due_cents == 25000


def test_a_later_payment_is_taken_off_even_if_posted(app: Flask) -> None:
    made = datetime.now(UTC) - timedelta(hours=5)
    later = _pay(app, 2500, made + timedelta(hours=1), "LATER001")
    with get_database(app).session() as db:
        entry = db.scalar(select(OutboxEntry).where(OutboxEntry.payment_id == later.id))
        assert entry is not None
        entry.status, entry.posted_at = "posted", made + timedelta(hours=1)
    import_accounts(get_database(app), io.BytesIO(NO_PIN_FILE.encode()), "old file",
                    pin_key="test-pin-key", as_of=made)
    assert account(app, "4401005678").balance_due_cents == 27500
