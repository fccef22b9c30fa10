"""The channel a payment was taken on reaches confirmation files only where a layout names
it, and reconciliation counts agents' payments."""

from __future__ import annotations

import io
from datetime import UTC, datetime

from connectors.files.layout_base import DEFAULT_PAYMENT_COLUMNS
from connectors.files.payment_file import read_payment_file, write_payment_file
from connectors.files.payment_layout import DEFAULT_PAYMENT_LAYOUT, PaymentLayout, PaymentRow
from ivr.db import Database
from ivr.models import OutboxEntry, Payment
from ivr.money.reconcile import reconcile

PAID = datetime(2026, 12, 1, 16, 0, tzinfo=UTC)


def _row(channel: str = "ivr") -> PaymentRow:
    return PaymentRow("4401001234", 12345, 0, PAID, "ch_1", "card", "visa", "1111",
                      channel=channel)


def test_the_default_layout_is_unchanged_and_a_channel_column_is_written() -> None:
    default = DEFAULT_PAYMENT_LAYOUT
    line, agent = io.BytesIO(), io.BytesIO()
    write_payment_file([_row("ivr")], line, default)
    write_payment_file([_row("agent")], agent, default)
    # Byte for byte the file existing billers receive: no channel in the default layout.
    assert line.getvalue() == agent.getvalue()
    assert b"channel" not in line.getvalue() and b"agent" not in line.getvalue()
    with_channel = PaymentLayout(name="with-channel",
                                 columns=(*DEFAULT_PAYMENT_COLUMNS, ("channel", "channel")))
    out = io.BytesIO()
    write_payment_file([_row("ivr"), _row("agent")], out, with_channel)
    text = out.getvalue().decode()
    assert text.splitlines()[0].endswith("channel")
    assert [r.channel for r in read_payment_file(io.BytesIO(out.getvalue()), with_channel)] \
        == ["ivr", "agent"]


def test_reconciliation_shows_who_took_each_payment(sqlite_url: str) -> None:
    from zoneinfo import ZoneInfo

    database = Database(sqlite_url)
    database.upgrade()
    try:
        with database.session() as db:
            for n, channel in enumerate(("ivr", "agent", "agent")):
                payment = Payment(idempotency_key=f"k{n}", call_sid=f"CA{n}",
                                  confirmation_code=f"c{n}", account_number="4401001234",
                                  amount_cents=100, method="card", paid_at=PAID,
                                  channel=channel, agent_username="bob" if n else None)
                db.add(payment)
                db.flush()
                db.add(OutboxEntry(payment_id=payment.id, status="pending"))
        with database.session() as db:
            report = reconcile(db, PAID.date(), ZoneInfo("UTC"))
        assert report.captured_by_channel == {"ivr": 1, "agent": 2}
        assert [line.channel for line in report.differences] == ["ivr", "agent", "agent"]
        assert report.as_dict()["captured_by_channel"]["agent"] == 2
    finally:
        database.dispose()
