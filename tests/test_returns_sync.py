"""Returns files arrive by `ivr sync pull` (real OpenSSH sshd on 127.0.0.1), apart from
account files; reversals leave in the next payment confirmation file as records of their
own, and a file without them is exactly as before."""

from __future__ import annotations

import io
from datetime import UTC, date, datetime, timedelta

import pytest
from flask import Flask
from sqlalchemy import func, select

from connectors.files.layouts import DEFAULT_PAYMENT_LAYOUT, read_payment_file
from ivr.accounts.sync import SyncError, pull, push
from ivr.models import Account, Payment, Reversal
from ivr.money.reversals import Reverse, record_reversal
from ivr.statuses import IngestOutcome, PaymentStatus, ReversalKind
from ivr.web.app import get_database
from tests.servers.sshd import SshdServer
from tests.test_returns import HEADER, SETTINGS
from tests.test_sync import CHICAGO, account_file, add_payment, config_of, day, put, sync_app

pytestmark = pytest.mark.slow

PAID_AT = datetime(2026, 11, 30, 15, 0, tzinfo=UTC)


def ach_payment(app: Flask, code: str, cents: int = 5000) -> int:
    add_payment(app, PAID_AT, cents, code)
    with get_database(app).session() as db:
        payment = db.scalars(select(Payment).where(Payment.confirmation_code == code)).one()
        payment.method, payment.card_brand, payment.card_last4 = "ach", None, None
        payment.bank_last = "89"
        return payment.id


def status_of(app: Flask, payment_id: int) -> PaymentStatus:
    with get_database(app).session() as db:
        payment = db.get(Payment, payment_id)
        assert payment is not None
        return payment.status


def test_pull_applies_returns_files_apart_from_account_files_once(
        sqlite_url: str, sshd: SshdServer) -> None:
    app = sync_app(sqlite_url, sshd, IVR_SYNC_RETURNS_PATTERN="returns_*.csv")
    first = ach_payment(app, "ACHRET01")
    data = (HEADER + "ACHRET01,R02,2026-12-02,50.00,,account closed\n").encode()
    put(sshd, "accounts.csv", account_file())
    put(sshd, "returns_20261202.csv", data)
    results = pull(get_database(app), config_of(app), pin_key="test-pin-key", zone=CHICAGO,
                   returns=SETTINGS)
    assert [(r.name, r.outcome) for r in results] == [
        ("accounts.csv", IngestOutcome.APPLIED), ("returns_20261202.csv", IngestOutcome.APPLIED)]
    assert status_of(app, first) == PaymentStatus.RETURNED
    assert (sshd.root / "inbox" / "archive" / "returns_20261202.csv").exists()
    # The same content again under another name: nothing changes.
    put(sshd, "returns_20261202-resent.csv", data)
    [again] = pull(get_database(app), config_of(app), pin_key="test-pin-key", zone=CHICAGO,
                   returns=SETTINGS)
    assert again.outcome == IngestOutcome.APPLIED and again.report is not None
    assert "already applied" in again.report.lines()[0]
    with get_database(app).session() as db:
        assert db.scalar(select(func.count()).select_from(Reversal)) == 1
    # A bad one is refused whole, with its report beside it.
    put(sshd, "returns_bad.csv", (HEADER + "ACHRET01,R1,2026-12-02,50.00,,\n").encode())
    with pytest.raises(SyncError, match=r"returns_bad\.csv"):
        pull(get_database(app), config_of(app), pin_key="test-pin-key", zone=CHICAGO,
             returns=SETTINGS)
    report = (sshd.root / "inbox" / "rejected" / "returns_bad.csv.report.txt").read_text()
    assert "is not a return code" in report


def test_the_confirmation_file_carries_reversals_as_records_of_their_own(
        sqlite_url: str, sshd: SshdServer) -> None:
    app = sync_app(sqlite_url, sshd)
    kept = ach_payment(app, "ACHKEEP1", 2000)
    returned = ach_payment(app, "ACHRET02", 5000)
    with get_database(app).session() as db:
        payment = db.get(Payment, returned)
        assert payment is not None
        reversal = record_reversal(db, payment, Reverse(
            kind=ReversalKind.RETURN, amount_cents=5000, effective_date=date(2026, 11, 30),
            code="R01", recorded_by="test"), SETTINGS)
        reversal.created_at = datetime(2026, 11, 30, 20, 0, tzinfo=UTC)
    now = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    [sent] = push(get_database(app), config_of(app), CHICAGO, interval=day("2026-11-30"),
                  now=now)
    data = (sshd.root / "outbox" / sent.name).read_bytes()
    lines = data.decode().splitlines()
    assert lines[-2:] == ["REVERSAL,4401001234,50.00,2026-11-30,ACHRET02,return,R01",
                          "TRAILER,2,70.00"]
    # Readers of payments see the payments; the trailer counts them alone.
    rows = list(read_payment_file(io.BytesIO(data), DEFAULT_PAYMENT_LAYOUT))
    assert [r.confirmation_number for r in rows] == ["ACHKEEP1", "ACHRET02"]
    assert status_of(app, kept) == PaymentStatus.PAID
    with get_database(app).session() as db:
        alex = db.scalars(select(Account).where(Account.account_number == "4401001234")).one()
        assert alex.ach_off_until == date(2026, 11, 30) + timedelta(days=SETTINGS.bank_off_days)
