"""Payments, postings and dead-letter retries, reconciliation, and file runs in the console."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import select

from ivr.models import (
    ImportRun,
    IngestedFile,
    OutboxEntry,
    Payment,
    PostingAttempt,
    SyncRun,
)
from ivr.web.app import get_database
from tests.conftest import OPEN_TIME, call
from tests.test_ops_helpers import (
    assert_accessible,
    assert_no_secrets,
    ops_app,
    signed_in,
    token,
)

pytestmark = pytest.mark.slow


@pytest.fixture
def app(database_url: str, tmp_path: Path) -> Flask:
    """Two paid calls: one queued for posting, one dead-lettered with a telling error."""
    app = ops_app(database_url, tmp_path)
    call(app, "1 60614 1 1")
    call(app, "1 4401005678# 60615 1 2 2 1 1", from_number="+15555550199")
    with get_database(app).session() as db:
        _card, bank = db.scalars(select(Payment).order_by(Payment.id)).all()
        entry = db.scalars(select(OutboxEntry).where(OutboxEntry.payment_id == bank.id)).one()
        entry.status, entry.attempts, entry.system = "dead", 3, "webhook"
        entry.last_error = "HTTP 422: account 4401005678 is closed in the ledger"
        bank.posting_status = "dead"
        db.add(PostingAttempt(outbox_id=entry.id, at=OPEN_TIME, poster="worker:x:1",
                              system="webhook", outcome="dead", duration_ms=120,
                              error="HTTP 422: account 4401005678 is closed in the ledger"))
    return app


def test_payments_page_is_masked(app: Flask) -> None:
    client = signed_in(app)
    page = client.get("/ops/payments")
    assert page.status_code == 200
    html = page.text
    assert "******1234" in html and "******5678" in html
    assert "Visa ending 1111" in html
    assert "Bank (checking) ending" in html
    assert "$123.45" in html
    assert "posted 0, queued 1, dead-lettered 1" in html
    assert "account ******5678 is closed" in html
    assert html.count("Retry posting</button>") == 1
    assert_accessible(html)
    assert_no_secrets(html)
    dead = client.get("/ops/payments?status=dead")
    assert dead.text.count("ending") == 1 and "Bank (checking)" in dead.text
    assert client.get("/ops/payments?date=2026-12-01").text.count("ending") == 2
    assert "No payments." in client.get("/ops/payments?date=2026-11-30").text


@pytest.mark.parametrize(("query", "message"), [("status=lost", "Unknown status"),
                                                 ("date=tomorrow", "is not a date")])
def test_payments_page_validation(app: Flask, query: str, message: str) -> None:
    page = signed_in(app).get(f"/ops/payments?{query}")
    assert page.status_code == 400 and message in page.text and 'role="alert"' in page.text


def test_payment_detail_lists_attempts(app: Flask) -> None:
    with get_database(app).session() as db:
        bank = db.scalars(select(Payment).where(Payment.method == "ach")).one()
    page = signed_in(app).get(f"/ops/payments/{bank.id}")
    assert page.status_code == 200
    assert "worker:x:1" in page.text and "120 ms" in page.text
    assert "account ******5678 is closed" in page.text
    assert_no_secrets(page.text)
    assert_accessible(page.text)
    assert signed_in(app).get("/ops/payments/999").status_code == 404


def test_retry_a_dead_letter(app: Flask) -> None:
    client = signed_in(app)
    with get_database(app).session() as db:
        entry = db.scalars(select(OutboxEntry).where(OutboxEntry.status == "dead")).one()
    response = client.post(f"/ops/outbox/{entry.id}/retry",
                           data={"csrf_token": token(client, "/ops/payments"),
                                 "back": "/ops/payments?status=dead"})
    assert response.status_code == 302
    assert response.headers["Location"] == "/ops/payments?status=dead"
    page = client.get(response.headers["Location"])
    assert "is queued again" in page.text and "No payments." in page.text
    with get_database(app).session() as db:
        entry = db.get(OutboxEntry, entry.id)
        assert entry is not None and (entry.status, entry.attempts) == ("pending", 0)
        assert entry.payment.posting_status == "queued"
    again = client.post(f"/ops/outbox/{entry.id}/retry",
                        data={"csrf_token": token(client, "/ops/payments"),
                              "back": "https://evil.example/"})
    assert again.headers["Location"] == "/ops/payments?status=dead"
    assert "is not dead-lettered" in client.get("/ops/payments").text


def test_reconciliation_page(app: Flask) -> None:
    client = signed_in(app)
    page = client.get("/ops/reconcile")
    assert page.status_code == 200
    html = page.text
    assert "Reconciliation: 2026-12-01" in html
    assert "Everything is explained" in html
    assert "dead-lettered: HTTP 422: account ******5678 is closed" in html
    assert_no_secrets(html)
    assert_accessible(html)
    other = client.get("/ops/reconcile?date=2026-11-30")
    assert "Reconciliation: 2026-11-30" in other.text and other.text.count("None.") == 2
    bad = client.get("/ops/reconcile?date=12/01/2026")
    assert bad.status_code == 400 and "is not a date" in bad.text


def test_file_runs(app: Flask) -> None:
    with get_database(app).session() as db:
        imported = ImportRun(source="/srv/inbox/accounts-20261201.csv", started_at=OPEN_TIME,
                             status="rejected", records=3, rejected=1, report={"lines": [
                                 "accounts-20261201.csv: REJECTED, cache unchanged; "
                                 "3 accounts, 1 rejected lines",
                                 "line 4: account_number: '4401001234' duplicates line 2",
                                 "line 5: phones: '+15555550123x' is not a phone number"]})
        db.add(imported)
        db.flush()
        pull = SyncRun(kind="pull", status="failed", started_at=OPEN_TIME,
                       finished_at=OPEN_TIME + timedelta(seconds=4), host="ivr-1",
                       files=[{"name": "accounts-20261201.csv", "outcome": "rejected",
                               "records": 3, "rejected": 1}], records=0, rejected=1,
                       detail="SyncError: rejected 1 file(s), cache unchanged for them: "
                              "accounts-20261201.csv")
        push = SyncRun(kind="push", status="ok", started_at=OPEN_TIME + timedelta(minutes=5),
                       host="ivr-1", files=[{"name": "payments-20261130.csv", "count": 2,
                                             "sum_cents": 20000, "sha256": "ab" * 32}],
                       records=2)
        db.add_all([pull, push])
        db.flush()
        db.add(IngestedFile(name="accounts-20261201.csv", size=512, mtime=1, sha256="cd" * 32,
                            status="rejected", records=3, rejected=1, run_id=pull.id,
                            import_run_id=imported.id, seen_at=OPEN_TIME))
        ids = (pull.id, push.id, imported.id)
    client = signed_in(app)
    page = client.get("/ops/files")
    assert page.status_code == 200
    html = page.text
    for text in ("accounts-20261201.csv", f'href="/ops/files/runs/{ids[0]}"',
                 f'href="/ops/files/imports/{ids[2]}"', "ivr-1", "status-failed"):
        assert text in html
    assert_accessible(html)
    assert_no_secrets(html)
    run = client.get(f"/ops/files/runs/{ids[0]}")
    assert "name: accounts-20261201.csv, outcome: rejected, records: 3, rejected: 1" in run.text
    assert "SyncError: rejected 1 file(s)" in run.text
    pushed = client.get(f"/ops/files/runs/{ids[1]}")
    assert "count: 2, sum_cents: $200.00" in pushed.text and "abab" not in pushed.text
    report = client.get(f"/ops/files/imports/{ids[2]}")
    assert "line 4: account_number: &#39;******1234&#39; duplicates line 2" in report.text
    assert "is not a phone number" in report.text and "5550123" not in report.text
    assert_no_secrets(report.text)
    assert_no_secrets(run.text)
    for url in ("/ops/files/runs/999", "/ops/files/imports/999"):
        assert client.get(url).status_code == 404


def test_empty_file_runs(sqlite_url: str, tmp_path: Path) -> None:
    page = signed_in(ops_app(sqlite_url, tmp_path)).get("/ops/files")
    assert "No sync runs recorded." in page.text and "No files received." in page.text


def test_home_page(app: Flask) -> None:
    page = signed_in(app).get("/ops/")
    assert page.status_code == 200
    assert "Overview: 2026-12-01" in page.text
    assert 'href="/ops/payments?status=dead">1</a>' in page.text
    assert_accessible(page.text)
    assert_no_secrets(page.text)
