"""The console's arrangements page: signed-in only, masked, filtered by status."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

from flask import Flask
from sqlalchemy import update

from ivr.models import Arrangement
from ivr.statuses import ArrangementStatus
from ivr.web.app import get_database
from tests.arrangement_rows import add_arrangement
from tests.test_ops_helpers import assert_accessible, assert_no_secrets, ops_app, signed_in


def _app(database_url: str, tmp_path: Path) -> Flask:
    app = ops_app(database_url, tmp_path)
    database = get_database(app)
    add_arrangement(database, "4401005678", "ARRJORD1", balance=31280, down=7820,
                    instalments=[(date(2026, 12, 11), 11730), (date(2027, 1, 10), 11730)],
                    created_at=datetime(2026, 11, 30, 18, 0, tzinfo=UTC))
    broken = add_arrangement(database, "4401007890", "ARRCASE1", balance=26540,
                             instalments=[(date(2026, 11, 20), 26540)],
                             created_at=datetime(2026, 11, 10, 18, 0, tzinfo=UTC))
    with database.session() as db:
        db.execute(update(Arrangement).where(Arrangement.id == broken).values(
            status=ArrangementStatus.BROKEN, ended_at=datetime(2026, 11, 22, tzinfo=UTC),
            end_reason="instalment of $265.40 due 2026-11-20 unpaid"))
    return app


def test_the_page_lists_arrangements_masked(database_url: str, tmp_path: Path) -> None:
    app = _app(database_url, tmp_path)
    assert app.test_client().get("/ops/arrangements").status_code == 302  # sign in first
    client = signed_in(app)
    page = client.get("/ops/arrangements")
    assert page.status_code == 200
    text = page.text
    assert 'href="/ops/arrangements" aria-current="page"' in text  # in the navigation
    assert "Active 1, broken 1, kept 0." in text
    assert "ARRJORD1" in text and "ARRCASE1" in text
    assert "******5678" in text and "4401005678" not in text
    assert "$78.20 now, $117.30 by 2026-12-11, $117.30 by 2027-01-10" in text
    assert "instalment of $265.40 due 2026-11-20 unpaid" in text
    assert_no_secrets(text)
    assert_accessible(text)

    broken = client.get("/ops/arrangements?status=broken").text
    assert "ARRCASE1" in broken and "ARRJORD1" not in broken
    assert "1 arrangement," in broken
    refused = client.get("/ops/arrangements?status=lost")
    assert refused.status_code == 400 and "Unknown status" in refused.text
    assert "ARRJORD1" in refused.text  # shows every arrangement instead
