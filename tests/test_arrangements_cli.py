"""`ivr arrangements list`, and `ivr accounts import` ending arrangements, on a SQLite file."""

from __future__ import annotations

import json
import os
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from ivr.cli import main
from ivr.statuses import PostingStatus
from ivr.web.app import create_app, get_database
from tests.arrangement_rows import add_arrangement
from tests.test_cli import cli_database, with_demo_accounts


@pytest.fixture
def runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("IVR_DATABASE_URL", cli_database(tmp_path))
    monkeypatch.setenv("IVR_PIN_KEY", "test-pin-key")
    monkeypatch.setenv("IVR_LOG_LEVEL", "WARNING")
    monkeypatch.delenv("IVR_TWILIO_AUTH_TOKEN", raising=False)
    monkeypatch.delenv("IVR_PROMPTS_DIR", raising=False)
    return CliRunner()


def _seed(tmp_path: Path) -> None:
    app = create_app({"database_url": cli_database(tmp_path)})
    database = get_database(app)
    add_arrangement(database, "4401005678", "ARRJORD1", balance=31280, down=7820,
                    instalments=[(date(2026, 12, 11), 7820), (date(2027, 1, 10), 7820),
                                 (date(2027, 2, 9), 7820)],
                    created_at=datetime(2026, 12, 1, 15, 30, tzinfo=UTC))
    add_arrangement(database, "4401007890", "ARRCASE1", balance=26540,
                    instalments=[(date(2026, 12, 14), 26540)],
                    created_at=datetime(2026, 12, 2, 16, 0, tzinfo=UTC),
                    posting=PostingStatus.POSTED)
    database.dispose()


def test_list_shows_account_terms_status_and_confirmation(runner: CliRunner,
                                                          tmp_path: Path) -> None:
    with_demo_accounts(runner, tmp_path)
    _seed(tmp_path)
    result = runner.invoke(main, ["arrangements", "list", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert [r["confirmation"] for r in rows] == ["ARRCASE1", "ARRJORD1"]  # newest first
    jordan = rows[1]
    assert jordan["account"] == "******5678" and "4401005678" not in result.output
    assert (jordan["kind"], jordan["status"], jordan["posting"]) == (
        "instalments", "active", "queued")
    assert (jordan["balance"], jordan["down_payment"]) == ("312.80", "78.20")
    assert jordan["instalments"] == [
        {"seq": 1, "due_date": "2026-12-11", "amount": "78.20"},
        {"seq": 2, "due_date": "2027-01-10", "amount": "78.20"},
        {"seq": 3, "due_date": "2027-02-09", "amount": "78.20"}]
    assert jordan["created_at"].startswith("2026-12-01T15:30:00")
    assert (rows[0]["kind"], rows[0]["posting"]) == ("extension", "posted")

    text = runner.invoke(main, ["arrangements", "list"])
    assert text.exit_code == 0
    assert "ARRJORD1" in text.output and "$78.20 now, $78.20 by 2026-12-11" in text.output
    assert "4401005678" not in text.output


def test_import_marks_broken_and_status_filters(runner: CliRunner, tmp_path: Path) -> None:
    with_demo_accounts(runner, tmp_path)
    _seed(tmp_path)
    # The biller's file of 2026-12-16: Jordan's first instalment still past due; Casey paid.
    accounts = tmp_path / "later.csv"
    accounts.write_text("account_number,customer_name,balance_due,past_due_amount\r\n"
                        "4401005678,Jordan Lee,312.80,234.60\r\n"
                        "4401007890,Casey Brooks,0.00,0.00\r\n")
    made = datetime(2026, 12, 16, 18, 0, tzinfo=UTC).timestamp()
    os.utime(accounts, (made, made))
    result = runner.invoke(main, ["accounts", "import", str(accounts)])
    assert result.exit_code == 0, result.output
    assert "payment arrangements: 1 broken, 1 kept" in result.output
    broken = json.loads(runner.invoke(main, ["arrangements", "list", "--json",
                                             "--status", "broken"]).output)
    assert [(r["confirmation"], r["end_reason"]) for r in broken] == [
        ("ARRJORD1", "instalment of $78.20 due 2026-12-11 unpaid")]
    kept = json.loads(runner.invoke(main, ["arrangements", "list", "--json",
                                           "--status", "kept"]).output)
    assert [r["confirmation"] for r in kept] == ["ARRCASE1"] and kept[0]["ended_at"]
    refused = runner.invoke(main, ["arrangements", "list", "--status", "lost"])
    assert refused.exit_code != 0
