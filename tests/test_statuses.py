"""Status columns hold the same words as before (operators' rows and reports keep their
meaning), read back as enum members, and refuse a word outside their set."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import StatementError

from ivr.db import Database
from ivr.models import OutboxEntry, Payment, utcnow
from ivr.statuses import OutboxStatus, PostingStatus


def _payment() -> Payment:
    return Payment(idempotency_key="key-1", call_sid="CA1", confirmation_code="C1",
                   account_number="4401001234", amount_cents=1000, method="card",
                   paid_at=utcnow())


def test_statuses_are_stored_as_their_words_and_read_as_members(database_url: str) -> None:
    database = Database(database_url)
    database.upgrade()
    try:
        with database.session() as db:
            payment = _payment()
            db.add(payment)
            db.flush()
            # A bare word (as code not yet swept writes) and a member store the same way.
            db.add(OutboxEntry(payment_id=payment.id, status="pending"))
        with database.engine.connect() as conn:
            raw = conn.execute(text("SELECT p.posting_status, o.status FROM payments p "
                                    "JOIN outbox o ON o.payment_id = p.id")).one()
        assert tuple(raw) == ("queued", "pending")
        assert type(raw[0]) is str
        with database.session() as db:
            entry = db.scalars(select(OutboxEntry).where(
                OutboxEntry.status == OutboxStatus.PENDING)).one()
            assert entry.status is OutboxStatus.PENDING
            assert entry.payment.posting_status is PostingStatus.QUEUED
            # What `--json`, logs and pages show is the word itself.
            assert json.dumps({"status": entry.status}) == '{"status": "pending"}'
            assert f"{entry.status}" == str(entry.status) == "pending"
            entry.status = "posted"  # type: ignore[assignment]
        with pytest.raises(StatementError, match="'sent'"), database.session() as db:
            db.add(OutboxEntry(payment_id=db.scalars(select(Payment.id)).one(),
                               status="sent"))
            db.flush()
        with database.session() as db:
            assert db.scalars(select(OutboxEntry.status)).one() is OutboxStatus.POSTED
    finally:
        database.dispose()
