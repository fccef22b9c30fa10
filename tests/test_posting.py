"""Posting payments to real accounting servers on 127.0.0.1: in real time, through the
outbox when the system is down or slow, retries, dead letters, and crashed workers."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from click.testing import CliRunner
from flask import Flask
from sqlalchemy import select

from connectors.accounting.hledger import transaction_code
from ivr.cli import main
from ivr.models import Account, OutboxEntry, Payment, PostingAttempt, utcnow
from ivr.money.posting import drain_once
from ivr.web.app import get_config, get_database
from tests.conftest import OPEN_TIME, REPO, WEBHOOK_SECRET, call, make_app, said_text, unavailable
from tests.servers.gate import Gate
from tests.servers.hledger import HledgerServer
from tests.servers.webhook import Receiver

pytestmark = pytest.mark.slow

SECRET = WEBHOOK_SECRET  # the receiver fixture's (tests/conftest.py)


def posting_app(database_url: str, settings: dict[str, str], now: datetime = OPEN_TIME,
                **overrides: object) -> Flask:
    system = settings["IVR_ACCOUNTING"]
    return make_app(database_url, REPO / "prompts", now, accounting=system,
                    accounting_settings=settings, **overrides)


def outbox(app: Flask) -> list[OutboxEntry]:
    with get_database(app).session() as db:
        return list(db.scalars(select(OutboxEntry).order_by(OutboxEntry.id)))


def attempts(app: Flask) -> list[PostingAttempt]:
    with get_database(app).session() as db:
        return list(db.scalars(select(PostingAttempt).order_by(PostingAttempt.id)))


def drain(app: Flask, later: timedelta = timedelta(0)) -> None:
    """One worker pass, as if ``later`` had passed (so backoff delays are due)."""
    accounting = app.extensions["ivr.money.accounting"]
    drain_once(get_database(app), accounting.connector, get_config(app), poster="test-worker",
               clock=lambda: utcnow() + later)


def drain_at(app: Flask, when: datetime) -> None:
    """One worker pass with the clock at ``when``."""
    accounting = app.extensions["ivr.money.accounting"]
    drain_once(get_database(app), accounting.connector, get_config(app), poster="test-worker",
               clock=lambda: when)


PAID_CALL = "1 60614 1 1"


def test_paid_call_is_posted_to_the_webhook_receiver_in_real_time(
        database_url: str, receiver: Receiver) -> None:
    app = posting_app(database_url, receiver.settings())
    result = call(app, PAID_CALL)
    assert said_text(app, "pay.success_posted") in result.said()
    [stored] = receiver.payments()
    [payment] = payments(app)
    body = stored["payment"]
    assert body["idempotency_key"] == payment.idempotency_key
    assert body["amount"] == "123.45" and body["account_number"] == "4401001234"
    assert body["last4"] == "1111" and body["method"] == "card"
    assert body["confirmation_number"] == payment.confirmation_code
    [entry] = outbox(app)
    assert entry.status == "posted" and entry.receipt_id == stored["receipt_id"]
    assert payment.posting_status == "posted"
    drain(app, timedelta(hours=1))
    assert len(receiver.payments()) == 1  # nothing left for the worker: posted once


def test_paid_call_is_posted_to_hledger(sqlite_url: str, hledger: HledgerServer) -> None:
    app = posting_app(sqlite_url, hledger.settings())
    before = hledger.balance("4401001234")
    result = call(app, PAID_CALL)
    assert said_text(app, "pay.success_posted") in result.said()
    [payment] = payments(app)
    assert hledger.balance("4401001234") == before - Decimal(payment.amount_cents) / 100
    assert hledger.transactions_with_code(outbox(app)[0].receipt_id or "") == 1


def payments(app: Flask) -> list[Payment]:
    with get_database(app).session() as db:
        return list(db.scalars(select(Payment).order_by(Payment.id)))


def test_receiver_down_at_payment_time_queues_then_posts_once(
        database_url: str, receiver: Receiver) -> None:
    app = posting_app(database_url, receiver.settings())
    receiver.stop()
    result = call(app, PAID_CALL)
    # Truthful: received, will be applied. Not "posted".
    assert said_text(app, "pay.success_pending") in result.said()
    assert said_text(app, "pay.success_posted") not in result.said()
    [entry] = outbox(app)
    assert entry.status == "pending" and entry.attempts == 1 and entry.last_error
    # Backed off by at least half the 5 s first step (the other half is jitter) ...
    [failed] = attempts(app)
    assert entry.next_attempt_at - failed.at >= timedelta(seconds=2.5)
    receiver.restart()
    # ... and not retried before then, however long the restart took on this machine.
    drain_at(app, entry.next_attempt_at - timedelta(milliseconds=1))
    assert receiver.payments() == []
    drain(app, timedelta(hours=1))
    drain(app, timedelta(hours=2))
    assert len(receiver.payments()) == 1
    [entry] = outbox(app)
    assert entry.status == "posted" and entry.attempts == 2
    assert [a.outcome for a in attempts(app)] == ["retry", "posted"]


def test_receiver_slower_than_budget_queues_and_posts_exactly_once(
        sqlite_url: str, receiver: Receiver) -> None:
    app = posting_app(sqlite_url, receiver.settings(), post_budget_ms=300)
    receiver.set_faults({"delay": 1.5, "count": 1})
    result = call(app, PAID_CALL)
    # The caller was not kept waiting for the slow answer: had the line waited, the payment
    # would be posted; it is told the payment is received and queued instead.
    assert said_text(app, "pay.success_pending") in result.said()
    [entry] = outbox(app)
    assert entry.status == "pending" and entry.attempts == 1
    # The slow request lands after we gave up on it (however long this machine takes) ...
    deadline = time.monotonic() + 30
    while not receiver.payments():
        assert time.monotonic() < deadline, "the slow request never landed"
        time.sleep(0.05)
    # ... and the worker's retry finds it rather than posting it again.
    drain(app, timedelta(hours=1))
    assert len(receiver.payments()) == 1
    [entry] = outbox(app)
    assert entry.status == "posted"


def queue_payments(app: Flask, count: int, account_number: str = "4401001234") -> list[str]:
    """Payments as the line records them (payment + outbox row), without placing calls."""
    keys = []
    with get_database(app).session() as db:
        account = db.scalar(select(Account).where(Account.account_number == account_number))
        assert account is not None
        for i in range(count):
            key = str(uuid.uuid4())
            payment = Payment(idempotency_key=key, call_sid=f"CA{uuid.uuid4().hex}",
                              confirmation_code=f"Q{i:09d}", account_id=account.id,
                              account_number=account_number, amount_cents=100 + i,
                              fee_cents=0, method="card", card_brand="visa", card_last4="1111",
                              paid_at=utcnow())
            db.add(payment)
            db.flush()
            db.add(OutboxEntry(payment_id=payment.id, next_attempt_at=utcnow()))
            keys.append(key)
    return keys


def test_500_and_429_are_retried_with_backoff(sqlite_url: str, receiver: Receiver) -> None:
    app = posting_app(sqlite_url, receiver.settings())
    queue_payments(app, 1)
    receiver.set_faults({"status": 500, "count": 2})
    drain(app)
    [entry] = outbox(app)
    first_delay = (entry.next_attempt_at - utcnow()).total_seconds()
    assert entry.status == "pending" and first_delay > 0
    drain(app, timedelta(hours=1))
    [entry] = outbox(app)
    assert entry.attempts == 2 and entry.status == "pending"
    receiver.set_faults({"status": 429, "retry_after": 600, "count": 1})
    drained_after = utcnow() + timedelta(hours=2)
    drain(app, timedelta(hours=2))
    [entry] = outbox(app)
    assert entry.attempts == 3
    # Retry-After (600 s) is honoured even though the backoff alone would be shorter.
    assert entry.next_attempt_at >= drained_after + timedelta(seconds=600)
    drain(app, timedelta(hours=3))
    [entry] = outbox(app)
    assert entry.status == "posted" and entry.attempts == 4
    assert [a.outcome for a in attempts(app)] == ["retry", "retry", "retry", "posted"]
    assert len(receiver.payments()) == 1


def test_validation_error_is_dead_lettered_visible_and_not_retried(
        sqlite_url: str, receiver: Receiver, monkeypatch: pytest.MonkeyPatch) -> None:
    app = posting_app(sqlite_url, receiver.settings())
    queue_payments(app, 1)
    receiver.set_faults({"status": 422, "body": {"error": "unknown account"}})
    drain(app)
    [entry] = outbox(app)
    assert entry.status == "dead" and "422" in (entry.last_error or "")
    assert payments(app)[0].posting_status == "dead"
    drain(app, timedelta(days=30))
    assert len(attempts(app)) == 1  # never retried on its own
    monkeypatch.setenv("IVR_DATABASE_URL", sqlite_url)
    listed = CliRunner().invoke(main, ["outbox", "list", "--status", "dead", "--json"])
    rows = json.loads(listed.output)
    assert [r["id"] for r in rows] == [entry.id] and "422" in rows[0]["last_error"]
    # A person fixes the cause and retries it.
    receiver.clear_faults()
    assert CliRunner().invoke(main, ["outbox", "retry", str(entry.id)]).exit_code == 0
    drain(app)
    assert outbox(app)[0].status == "posted" and len(receiver.payments()) == 1


def test_one_batch_records_posted_retried_and_refused_rows_each_as_it_went(
        database_url: str, receiver: Receiver) -> None:
    # Four posts in flight at once, their outcomes recorded together: each row, its payment
    # and its attempt must still say what happened to that row.
    app = posting_app(database_url, receiver.settings(), worker_concurrency=4)
    keys = queue_payments(app, 6)
    receiver.set_faults({"status": 500, "count": 2},
                        {"status": 422, "count": 1, "body": {"error": "unknown account"}})
    before = utcnow()
    drain(app)
    entries = outbox(app)
    assert sorted(e.status for e in entries) == ["dead", "pending", "pending",
                                                 "posted", "posted", "posted"]
    assert all(e.attempts == 1 and e.claimed_by is None and e.claimed_until is None
               for e in entries)
    by_payment = {p.id: p for p in payments(app)}
    stored = {p["idempotency_key"] for p in receiver.payments()}
    for entry in entries:
        payment = by_payment[entry.payment_id]
        if entry.status == "posted":
            assert payment.posting_status == "posted" and entry.posted_at is not None
            assert entry.receipt_id and entry.last_error is None
            assert payment.idempotency_key in stored
        elif entry.status == "pending":
            assert payment.posting_status == "queued" and "500" in (entry.last_error or "")
            assert entry.next_attempt_at > before and entry.posted_at is None
        else:
            assert payment.posting_status == "dead" and "422" in (entry.last_error or "")
    assert len(stored) == 3 and stored <= set(keys)
    outcomes = {a.outbox_id: (a.outcome, a.error) for a in attempts(app)}
    assert sorted(o for o, _ in outcomes.values()) == ["dead", "posted", "posted", "posted",
                                                        "retry", "retry"]
    for entry in entries:
        outcome, error = outcomes[entry.id]
        assert outcome == {"posted": "posted", "pending": "retry", "dead": "dead"}[entry.status]
        assert error == entry.last_error
    # The two retried rows post on the next pass; nothing else is sent again.
    drain(app, timedelta(hours=1))
    assert sorted(e.status for e in outbox(app)) == ["dead"] + ["posted"] * 5
    assert len(receiver.payments()) == 5


def test_out_of_attempts_is_dead_lettered(sqlite_url: str, receiver: Receiver) -> None:
    app = posting_app(sqlite_url, receiver.settings(), outbox_max_attempts=3)
    queue_payments(app, 1)
    receiver.set_faults({"status": 503})
    for hours in range(4):
        drain(app, timedelta(hours=hours * 10))
    [entry] = outbox(app)
    assert entry.status == "dead" and entry.attempts == 3
    assert [a.outcome for a in attempts(app)] == ["retry", "retry", "dead"]


def worker_env(database_url: str, settings: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IVR_")}
    env.update(settings)
    env.update({"IVR_DATABASE_URL": database_url, "IVR_PROMPTS_DIR": str(REPO / "prompts"),
                "IVR_OUTBOX_CLAIM_SECONDS": "1", "IVR_LOG_LEVEL": "WARNING",
                "IVR_PIN_KEY": "test-pin-key", "IVR_SECRET_KEY": "test-secret-key",
                "IVR_OUTBOX_BACKOFF_SECONDS": "0.2",
                "IVR_OUTBOX_BACKOFF_MAX_SECONDS": "1"})
    return env


def start_worker(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", "from ivr.cli import main; main()", "worker", "--idle", "0.1"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_all_posted(app: Flask, timeout: float, gate: Gate | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(e.status == "posted" for e in outbox(app)):
            return
        time.sleep(0.2)
    pending = [(e.id, e.status, e.last_error) for e in outbox(app) if e.status != "posted"]
    refused = gate.refused if gate else []
    raise AssertionError(f"not all posted: {pending[:5]}; refused by the server: {refused}")


def gated_worker_env(app: Flask, hledger: HledgerServer, gate: Gate) -> dict[str, str]:
    """Workers that reach hledger through ``gate``; a held request waits on the test, not on
    the connector's read timeout."""
    env = worker_env(get_database(app).url, {**hledger.settings(), "IVR_HLEDGER_URL": gate.url})
    env["IVR_ACCOUNTING_READ_TIMEOUT"] = "300"
    return env


def attempts_of(app: Flask, key: str) -> list[PostingAttempt]:
    """The recorded attempts for the payment with idempotency key ``key``."""
    with get_database(app).session() as db:
        return list(db.scalars(
            select(PostingAttempt)
            .join(OutboxEntry, OutboxEntry.id == PostingAttempt.outbox_id)
            .join(Payment, Payment.id == OutboxEntry.payment_id)
            .where(Payment.idempotency_key == key).order_by(PostingAttempt.id)))


def test_workers_killed_mid_post_still_post_each_payment_exactly_once(
        database_url: str, hledger: HledgerServer) -> None:
    app = posting_app(database_url, hledger.settings())
    keys = queue_payments(app, 30)
    code_to_key = {transaction_code(key): key for key in keys}
    before = hledger.balance("4401001234")
    cut: dict[str, tuple[str, bool]] = {}  # key of the post a worker died in -> (worker, landed)
    with Gate(hledger.url) as gate:
        env = gated_worker_env(app, hledger, gate)
        # Each worker posts two payments, then is SIGKILLed inside its third post: either
        # before the write reaches the books, or after the books took it but before the
        # worker heard back (so it could not record it). Its claim is left to expire.
        for landed in (False, True, False, True):
            held = gate.hold("PUT", "/add", after=2, answered=landed)
            worker = start_worker(env)
            try:
                held.wait()
            finally:
                worker.kill()
                worker.wait(timeout=10)
            held.release()
            key = code_to_key[held.json()["tcode"]]
            assert hledger.transactions_with_code(key) == (1 if landed else 0)
            cut[key] = (f"worker:{socket.gethostname()}:{worker.pid}", landed)
        gate.open()
        finisher = start_worker(env)
        try:
            wait_all_posted(app, 60, gate)
        finally:
            finisher.terminate()
            finisher.wait(timeout=10)
    for key in keys:
        assert hledger.transactions_with_code(key) == 1, diagnose(app, hledger, key)
    for key, (killed, _landed) in cut.items():
        # The killed worker had posted (and recorded) payments before it died ...
        done = [a.outcome for a in attempts(app) if a.poster == killed]
        assert len(done) >= 2 and set(done) == {"posted"}, (killed, done)
        # ... and recorded nothing for the one it died in: another worker took its claim over.
        posters = [a.poster for a in attempts_of(app, key)]
        assert posters and killed not in posters, (key, killed, posters)
    total = sum(p.amount_cents for p in payments(app))
    assert hledger.balance("4401001234") == before - Decimal(total) / 100


def diagnose(app: Flask, hledger: HledgerServer, key: str) -> str:
    """Why a payment is not exactly once in the journal: its attempts and the server's view."""
    import requests

    with get_database(app).session() as db:
        rows = db.execute(select(PostingAttempt.poster, PostingAttempt.outcome,
                                 PostingAttempt.error, OutboxEntry.receipt_id)
                          .join(OutboxEntry, OutboxEntry.id == PostingAttempt.outbox_id)
                          .join(Payment, Payment.id == OutboxEntry.payment_id)
                          .where(Payment.idempotency_key == key)).all()
    served = requests.get(f"{hledger.url}/transactions", timeout=5).text.count(key)
    return (f"{key}: file has {hledger.transactions_with_code(key)}, API has {served}; "
            f"attempts {rows}")


def test_two_workers_at_once_never_double_post(database_url: str,
                                               hledger: HledgerServer) -> None:
    app = posting_app(database_url, hledger.settings())
    keys = queue_payments(app, 30)
    with Gate(hledger.url) as gate:
        env = gated_worker_env(app, hledger, gate)
        # Claims outlast the wait below, and are small enough (120 // 12 = 10 rows) that
        # each of the three workers gets some of the 30 rows.
        env["IVR_OUTBOX_CLAIM_SECONDS"] = "120"
        # No write reaches the books until all three workers are inside a post at once.
        together = gate.together("PUT", "/add", parties=3)
        workers = [start_worker(env) for _ in range(3)]
        try:
            together.wait()
            wait_all_posted(app, 60, gate)
        finally:
            for w in workers:
                w.terminate()
                w.wait(timeout=10)
    for key in keys:
        assert hledger.transactions_with_code(key) == 1, diagnose(app, hledger, key)
    assert len(attempts(app)) == 30  # one attempt per payment: no one posted twice
    assert {a.poster for a in attempts(app)} == {
        f"worker:{socket.gethostname()}:{w.pid}" for w in workers}


def test_live_balance_is_read_and_falls_back_to_cache(
        sqlite_url: str, hledger: HledgerServer, monkeypatch: pytest.MonkeyPatch) -> None:
    app = posting_app(sqlite_url, hledger.settings(), lookup_timeout_ms=300,
                      breaker_failures=2, breaker_reset_seconds=60)
    # The biller's books say 100.00 more than the cached file (a new bill posted today).
    hledger.append_journal(
        "\n2026-12-01 New bill  ; acct:4401001234\n"
        "    receivables:customers:4401001234   USD 100.00\n    income:utility\n")
    live = call(app, "1 60614 -")
    assert "two hundred twenty-three dollars and forty-five cents" in live.said()
    accounting = app.extensions["ivr.money.accounting"]
    # What each live lookup was allowed and what became of it (not how long the call took:
    # that the connector keeps to its timeout is test_hledger_connector's business).
    lookups: list[tuple[float | None, str]] = []
    lookup = accounting.connector.lookup_balance

    def recorded(account_number: str, timeout: float | None = None) -> object:
        try:
            found = lookup(account_number, timeout=timeout)
        except Exception as exc:
            lookups.append((timeout, str(exc)))
            raise
        lookups.append((timeout, "answered"))
        return found

    monkeypatch.setattr(accounting.connector, "lookup_balance", recorded)
    hledger.pause()  # it accepts connections but never answers
    try:
        for _ in range(2):
            slow = call(app, "1 60614 -")
            # The cache (refreshed by the last live read) answers.
            assert "two hundred twenty-three dollars" in slow.said()
        # Each call gave the stalled server only the lookup budget, then used the cache.
        assert [t for t, _ in lookups] == [0.3, 0.3]
        assert all("timed out" in what for _, what in lookups), lookups
        assert accounting.lookup_breaker.is_open
        skipped = call(app, "1 60614 -")
        assert "two hundred twenty-three dollars" in skipped.said()
        assert len(lookups) == 2  # the open breaker skips the lookup: no wait at all
    finally:
        hledger.resume()


def test_worker_once_and_reconcile_cli(sqlite_url: str, receiver: Receiver,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    app = posting_app(sqlite_url, receiver.settings())
    queue_payments(app, 3)
    for key, value in worker_env(sqlite_url, receiver.settings()).items():
        monkeypatch.setenv(key, value)
    receiver.set_faults({"status": 422, "count": 1})
    result = CliRunner().invoke(main, ["worker", "--once"])
    assert result.exit_code == 0, result.output
    assert "posted 2, retried 0, dead 1" in result.output
    # The payments' own day (not "now", which may have passed midnight since).
    day = payments(app)[0].paid_at.astimezone(
        app.extensions["ivr.prompts.catalog"].get().settings.transfer.timezone)
    report = CliRunner().invoke(main, ["reconcile", "--date", day.date().isoformat(), "--json"])
    assert report.exit_code == 0, report.output
    data = json.loads(report.output)
    assert (data["captured"], data["posted"], data["dead"], data["queued"]) == (3, 2, 1, 0)
    assert data["ok"] and len(data["differences"]) == 1
    # A payment that could never be posted (its outbox row gone) is unexplained: exit 1.
    with get_database(app).session() as db:
        gone = db.scalars(select(OutboxEntry).where(OutboxEntry.status == "posted")).first()
        assert gone is not None
        for row in db.scalars(select(PostingAttempt).where(PostingAttempt.outbox_id == gone.id)):
            db.delete(row)
        db.flush()
        db.delete(gone)
    report = CliRunner().invoke(main, ["reconcile", "--date", day.date().isoformat()])
    assert report.exit_code == 1 and "UNEXPLAINED" in report.output


def test_paid_call_is_applied_in_tryton(tmp_path: Path, database_url: str) -> None:
    from tests.servers.tryton import TrytonUnavailable, start_tryton

    try:
        tryton = start_tryton(tmp_path / "tryton")
    except TrytonUnavailable as exc:
        unavailable(f"Tryton 8.2 could not be installed or started: {exc}")
    try:
        settings = {"IVR_ACCOUNTING": "tryton", **tryton.settings()}
        # Real time here: Tryton dates the payment move with its own today.
        app = posting_app(database_url, settings, now=utcnow())
        # The disconnection-pending account has two open invoices: 187.50 (older), 125.30.
        before = tryton.invoice_amounts("4401005678")
        result = call(app, "1 4401005678# 60615 1 2 1", from_number="+15555559999")
        assert said_text(app, "pay.success_posted") in result.said()
        after = tryton.invoice_amounts("4401005678")
        assert sum(before) - sum(after) == Decimal("187.50")
        assert Decimal(0) in after  # the older invoice is paid off, the newer one still open
        drain(app, timedelta(hours=1))
        assert tryton.invoice_amounts("4401005678") == after  # posted once, nothing re-sent
    finally:
        tryton.stop()
