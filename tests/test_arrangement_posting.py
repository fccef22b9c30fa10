"""Payment arrangements reach the accounting system through the outbox, the worker and a
real-time try, exactly once, on every connector (real servers on 127.0.0.1, both databases);
payments in the same outbox go on exactly as before."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from flask import Flask
from sqlalchemy import select

from connectors.accounting.hledger import arrangement_code
from ivr.cli import main
from ivr.models import (
    Account,
    Arrangement,
    ArrangementInstalment,
    OutboxEntry,
    Payment,
    PostingAttempt,
    utcnow,
)
from ivr.money.posting import drain_once, retry_dead
from ivr.statuses import ArrangementKind, OutboxStatus
from ivr.web.app import get_config, get_database
from tests.conftest import OPEN_TIME, REPO, WEBHOOK_SECRET, make_app, unavailable
from tests.servers.hledger import HledgerServer
from tests.servers.webhook import Receiver

SECRET = WEBHOOK_SECRET  # the receiver fixture's (tests/conftest.py)
ACCOUNT = "4401005678"  # Jordan: disconnection pending, eligible for an arrangement


def posting_app(database_url: str, settings: dict[str, str], now: datetime = OPEN_TIME,
                **overrides: object) -> Flask:
    return make_app(database_url, REPO / "prompts", now, accounting=settings["IVR_ACCOUNTING"],
                    accounting_settings=settings, **overrides)


def queue_arrangement(app: Flask, *, down_cents: int = 7820,
                      account_number: str = ACCOUNT) -> int:
    """An arrangement as the call records it (with its down payment, when it has one, and
    its outbox row), without placing a call. Returns the arrangement's id."""
    with get_database(app).session() as db:
        account = db.scalar(select(Account).where(Account.account_number == account_number))
        assert account is not None
        sid = f"CA{uuid.uuid4().hex}"
        down = None
        if down_cents:
            down = Payment(idempotency_key=str(uuid.uuid4()), call_sid=sid,
                           confirmation_code="DOWN000001", account_id=account.id,
                           account_number=account_number, amount_cents=down_cents,
                           fee_cents=0, method="card", card_brand="visa", card_last4="1111",
                           purpose="down_payment", paid_at=utcnow())
            db.add(down)
            db.flush()
        rest = 31280 - down_cents
        dues = ([(date(2026, 12, 31), rest // 2), (date(2027, 1, 30), rest - rest // 2)]
                if down_cents else [(date(2026, 12, 15), rest)])
        arrangement = Arrangement(
            confirmation_code=f"A{uuid.uuid4().hex[:9].upper()}",
            idempotency_key=str(uuid.uuid4()), call_sid=sid, account_id=account.id,
            account_number=account_number,
            kind=ArrangementKind.INSTALMENTS if down_cents else ArrangementKind.EXTENSION,
            balance_cents=31280, down_payment_cents=down_cents,
            down_payment_id=down.id if down else None, created_at=utcnow(),
            instalments=[ArrangementInstalment(seq=n, due_date=due, amount_cents=cents)
                         for n, (due, cents) in enumerate(dues, start=1)])
        db.add(arrangement)
        db.flush()
        db.add(OutboxEntry(arrangement_id=arrangement.id, next_attempt_at=utcnow()))
        return arrangement.id


def queue_payment(app: Flask) -> int:
    """A bill payment with its outbox row, as the line records one."""
    with get_database(app).session() as db:
        account = db.scalar(select(Account).where(Account.account_number == "4401001234"))
        assert account is not None
        payment = Payment(idempotency_key=str(uuid.uuid4()), call_sid=f"CA{uuid.uuid4().hex}",
                          confirmation_code="PAY0000001", account_id=account.id,
                          account_number="4401001234", amount_cents=12345, fee_cents=0,
                          method="card", card_brand="visa", card_last4="1111",
                          paid_at=utcnow())
        db.add(payment)
        db.flush()
        db.add(OutboxEntry(payment_id=payment.id, next_attempt_at=utcnow()))
        return payment.id


def drain(app: Flask, later: timedelta = timedelta(0)) -> None:
    """One worker pass, as if ``later`` had passed."""
    accounting = app.extensions["ivr.money.accounting"]
    drain_once(get_database(app), accounting.connector, get_config(app), poster="test-worker",
               clock=lambda: utcnow() + later)


def arrangement_row(app: Flask, arrangement_id: int) -> tuple[Arrangement, OutboxEntry]:
    with get_database(app).session() as db:
        arrangement = db.get(Arrangement, arrangement_id)
        entry = db.scalar(select(OutboxEntry).where(
            OutboxEntry.arrangement_id == arrangement_id))
        assert arrangement is not None and entry is not None
        return arrangement, entry


def outcomes(app: Flask, entry_id: int) -> list[str]:
    with get_database(app).session() as db:
        return [str(a.outcome) for a in db.scalars(
            select(PostingAttempt).where(PostingAttempt.outbox_id == entry_id)
            .order_by(PostingAttempt.id))]


# --- webhook -------------------------------------------------------------------------------

def test_worker_sends_an_arrangement_once_to_its_own_endpoint(
        database_url: str, receiver: Receiver) -> None:
    app = posting_app(database_url, receiver.settings())
    arrangement_id = queue_arrangement(app)
    payment_id = queue_payment(app)
    drain(app)
    arrangement, entry = arrangement_row(app, arrangement_id)
    [stored] = receiver.arrangements()
    assert entry.status == "posted" and entry.receipt_id == stored["receipt_id"]
    assert entry.system == "webhook" and arrangement.posting_status == "posted"
    body = stored["arrangement"]
    assert body == {
        "event": "arrangement", "account_number": ACCOUNT,
        "confirmation_number": arrangement.confirmation_code, "kind": "instalments",
        "status": "active", "currency": "USD", "balance": "312.80", "down_payment": "78.20",
        "down_payment_confirmation": "DOWN000001",
        "instalments": [{"due_date": "2026-12-31", "amount": "117.30"},
                        {"due_date": "2027-01-30", "amount": "117.30"}],
        "created_at": arrangement.created_at.astimezone(UTC).replace(
            tzinfo=None, microsecond=0).isoformat() + "Z",
        "idempotency_key": arrangement.idempotency_key}
    # The payment went to the payments endpoint, and only it did.
    [paid] = receiver.payments()
    with get_database(app).session() as db:
        payment = db.get(Payment, payment_id)
        assert payment is not None and payment.posting_status == "posted"
        assert paid["idempotency_key"] == payment.idempotency_key
    drain(app, timedelta(days=1))
    assert len(receiver.arrangements()) == 1 and len(receiver.payments()) == 1


def test_real_time_try_then_the_worker_never_duplicates(
        database_url: str, receiver: Receiver) -> None:
    app = posting_app(database_url, receiver.settings(), post_budget_ms=500)
    accounting = app.extensions["ivr.money.accounting"]
    posted_at_once = queue_arrangement(app, down_cents=0)
    assert accounting.post_arrangement_now(posted_at_once)
    _, entry = arrangement_row(app, posted_at_once)
    assert entry.status == "posted" and outcomes(app, entry.id) == ["posted"]
    # The receiver answers too late for the caller, but stores it: the worker's retry is
    # then a 409 and the arrangement is there once.
    slow = queue_arrangement(app, account_number="4401001234")  # one active per account
    receiver.set_faults({"delay": 1.5, "count": 1})
    assert not accounting.post_arrangement_now(slow)
    arrangement, entry = arrangement_row(app, slow)
    assert entry.status == "pending" and arrangement.posting_status == "queued"
    deadline = time.monotonic() + 10
    while len(receiver.arrangements()) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    drain(app, timedelta(hours=1))
    arrangement, entry = arrangement_row(app, slow)
    assert entry.status == "posted" and arrangement.posting_status == "posted"
    assert outcomes(app, entry.id) == ["retry", "posted"]
    keys = [row["idempotency_key"] for row in receiver.arrangements()]
    assert sorted(keys) == sorted({*keys}) and len(keys) == 2
    assert receiver.payments() == []


def test_without_the_arrangements_url_it_is_dead_lettered_until_configured(
        database_url: str, receiver: Receiver) -> None:
    app = posting_app(database_url, receiver.settings(arrangements=False))
    arrangement_id = queue_arrangement(app)
    queue_payment(app)
    drain(app)
    arrangement, entry = arrangement_row(app, arrangement_id)
    assert entry.status == "dead" and arrangement.posting_status == "dead"
    assert "IVR_WEBHOOK_ARRANGEMENTS_URL is not set" in (entry.last_error or "")
    assert len(receiver.payments()) == 1 and receiver.arrangements() == []
    drain(app, timedelta(days=30))
    assert outcomes(app, entry.id) == ["dead"]  # never retried on its own
    # A person sets the variable and retries it (`ivr outbox retry`, tested below).
    with get_database(app).session() as db:
        assert retry_dead(db, entry.id, utcnow())
    arrangement, entry = arrangement_row(app, arrangement_id)
    assert entry.status == "pending" and arrangement.posting_status == "queued"
    configured = posting_app(database_url, receiver.settings())
    drain(configured)
    arrangement, entry = arrangement_row(configured, arrangement_id)
    assert entry.status == "posted" and arrangement.posting_status == "posted"
    assert len(receiver.arrangements()) == 1 and len(receiver.payments()) == 1


def test_outbox_cli_shows_and_retries_arrangement_rows(
        sqlite_url: str, receiver: Receiver, monkeypatch: pytest.MonkeyPatch) -> None:
    app = posting_app(sqlite_url, receiver.settings(arrangements=False))
    arrangement_id = queue_arrangement(app)
    queue_payment(app)
    drain(app)
    arrangement, entry = arrangement_row(app, arrangement_id)
    monkeypatch.setenv("IVR_DATABASE_URL", sqlite_url)
    listed = CliRunner().invoke(main, ["outbox", "list", "--status", "dead", "--json"])
    assert listed.exit_code == 0, listed.output
    [row] = json.loads(listed.output)
    assert row["id"] == entry.id and row["kind"] == "arrangement"
    assert row["arrangement"] == "instalments" and row["amount"] is None
    assert row["confirmation"] == arrangement.confirmation_code
    assert "IVR_WEBHOOK_ARRANGEMENTS_URL" in row["last_error"]
    assert row["account"] != ACCOUNT and row["account"].endswith(ACCOUNT[-4:])  # masked
    payments = json.loads(CliRunner().invoke(main, ["outbox", "list", "--status", "posted",
                                                    "--json"]).output)
    assert [(r["kind"], r["amount"], r["confirmation"]) for r in payments] == [
        ("payment", "123.45", "PAY0000001")]
    text = CliRunner().invoke(main, ["outbox", "list"]).output
    assert f"arrangement (instalments)  {arrangement.confirmation_code}" in text
    assert "$    123.45  PAY0000001" in text  # a payment's line as it always was
    assert CliRunner().invoke(main, ["outbox", "retry", str(entry.id)]).exit_code == 0
    arrangement, entry = arrangement_row(app, arrangement_id)
    assert entry.status == "pending" and arrangement.posting_status == "queued"


def test_a_connector_without_arrangements_dead_letters_them(sqlite_url: str) -> None:
    from connectors.accounting.base import PaymentPost, PostResult
    from ivr.money.posting import attempt

    class PaymentsOnly:
        name = "webhook"

        def post_payment(self, payment: PaymentPost, timeout: float | None = None
                         ) -> PostResult:
            return PostResult(receipt_id="R-1")

    app = make_app(sqlite_url, REPO / "prompts")
    arrangement_id = queue_arrangement(app)
    _, entry = arrangement_row(app, arrangement_id)
    outcome = attempt(get_database(app), PaymentsOnly(), entry.id,  # type: ignore[arg-type]
                      poster="t", config=get_config(app))
    assert outcome == "dead"
    _, entry = arrangement_row(app, arrangement_id)
    assert "cannot record arrangements" in (entry.last_error or "")
    with get_database(app).session() as db:
        assert retry_dead(db, entry.id, utcnow())
        assert not retry_dead(db, entry.id, utcnow())  # pending now: nothing to retry


def test_bad_arrangements_url_stops_the_line_at_start(sqlite_url: str) -> None:
    from ivr.config import ConfigError

    settings = {"IVR_ACCOUNTING": "webhook", "IVR_WEBHOOK_URL": "https://b.example.com/p",
                "IVR_WEBHOOK_SECRET": SECRET,
                "IVR_WEBHOOK_ARRANGEMENTS_URL": "b.example.com/arrangements"}
    with pytest.raises(ConfigError, match="IVR_WEBHOOK_ARRANGEMENTS_URL"):
        posting_app(sqlite_url, settings)


# --- hledger -------------------------------------------------------------------------------

def test_worker_records_an_arrangement_in_hledger_once_moving_nothing(
        database_url: str, hledger: HledgerServer) -> None:
    app = posting_app(database_url, hledger.settings())
    arrangement_id = queue_arrangement(app)
    before = {number: hledger.balance(number) for number in (ACCOUNT, "4401001234")}
    clearing = hledger.account_balance("assets:bank:clearing")
    drain(app)
    arrangement, entry = arrangement_row(app, arrangement_id)
    code = arrangement_code(arrangement.idempotency_key)
    assert entry.status == "posted" and entry.receipt_id == code
    assert arrangement.posting_status == "posted"
    assert hledger.transactions_with_code(code) == 1
    assert {number: hledger.balance(number) for number in before} == before
    assert hledger.account_balance("assets:bank:clearing") == clearing
    # A retry after an answer that never came (the row back in the queue): found, not added.
    with get_database(app).session() as db:
        row = db.get(OutboxEntry, entry.id)
        assert row is not None
        row.status, row.receipt_id = OutboxStatus.PENDING, None
    drain(app, timedelta(hours=1))
    assert hledger.transactions_with_code(code) == 1
    assert arrangement_row(app, arrangement_id)[1].status == "posted"


# --- Tryton --------------------------------------------------------------------------------

@pytest.mark.slow
def test_worker_notes_an_arrangement_in_tryton_once(tmp_path: Path, database_url: str) -> None:
    from tests.servers.tryton import TrytonUnavailable, start_tryton

    try:
        tryton = start_tryton(tmp_path / "tryton")
    except TrytonUnavailable as exc:
        unavailable(f"Tryton 8.2 could not be installed or started: {exc}")
    try:
        app = posting_app(database_url, tryton.settings(), now=utcnow())
        receivable = tryton.receivable(ACCOUNT)
        arrangement_id = queue_arrangement(app)
        assert app.extensions["ivr.money.accounting"].post_arrangement_now(arrangement_id)
        arrangement, entry = arrangement_row(app, arrangement_id)
        assert entry.status == "posted" and entry.receipt_id.startswith("ir.note,")
        [note] = tryton.notes(ACCOUNT)
        assert arrangement.confirmation_code in note and "Due 2027-01-30: USD 117.30" in note
        assert note.endswith(f"IVR reference [{arrangement.idempotency_key}]")
        assert tryton.receivable(ACCOUNT) == receivable
        with get_database(app).session() as db:
            assert retry_dead(db, entry.id, utcnow()) is False  # posted rows stay posted
            row = db.get(OutboxEntry, entry.id)
            assert row is not None
            row.status = OutboxStatus.PENDING
        drain(app, timedelta(hours=1))
        assert len(tryton.notes(ACCOUNT)) == 1
        assert tryton.receivable(ACCOUNT) == receivable
    finally:
        tryton.stop()
