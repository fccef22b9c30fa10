"""The Line security page: what the card-testing and enumeration limits counted and refused,
per kind and per day, and the latest events, never with a full number."""

from __future__ import annotations

from datetime import timedelta
from html.parser import HTMLParser
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import select

from ivr.calls import guards
from ivr.models import Account, GuardEvent, VerificationFailure
from ivr.ops.line_security import KIND_LABELS
from ivr.web.app import get_database
from tests.conftest import OPEN_TIME
from tests.test_ops_helpers import assert_accessible, assert_no_secrets, ops_app, signed_in


@pytest.fixture
def app(database_url: str, tmp_path: Path) -> Flask:
    """The console with guard events today, yesterday and ten days ago."""
    app = ops_app(database_url, tmp_path)
    with get_database(app).session() as db:
        account = db.scalar(select(Account).where(Account.account_number == "4401001234"))
        assert account is not None

        def event(kind: str, days_ago: int, caller: str, account_id: int | None,
                  minute: int = 0) -> None:
            db.add(GuardEvent(kind=kind, at=OPEN_TIME - timedelta(days=days_ago, minutes=minute),
                              account_id=account_id, caller=caller, line="+15555550100",
                              call_sid=f"CA{kind}{days_ago}{minute}".ljust(34, "0")))

        for minute in range(3):
            event(guards.PAY_DECLINED, 0, "+15555550123", account.id, minute)
        event(guards.PAY_BLOCKED, 0, "+15555550123", account.id)
        event(guards.ACCOUNT_MISS, 1, "+15555550199", None)
        event(guards.ACCOUNT_MISS, 1, "anonymous", None, 1)
        event(guards.LOOKUP_BLOCKED, 10, "+15555550199", None)
        for minute in range(2):
            db.add(VerificationFailure(account_id=account.id, call_sid="CA" + "1" * 32,
                                       failed_at=OPEN_TIME - timedelta(minutes=minute),
                                       caller="+15555550123"))
        db.add(VerificationFailure(account_id=account.id, call_sid="CA" + "2" * 32,
                                   failed_at=OPEN_TIME - timedelta(days=30),
                                   caller="+15555550123"))
    return app


class _Tables(HTMLParser):
    """The page's tables by caption: rows of cell texts."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self._caption: str | None = None
        self._rows: list[list[str]] = []
        self._cell: list[str] | None = None
        self._in_caption = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self._caption, self._rows = "", []
        elif tag == "caption":
            self._in_caption = True
        elif tag == "tr":
            self._rows.append([])
        elif tag in {"td", "th"}:
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "caption":
            self._in_caption = False
        elif tag in {"td", "th"} and self._cell is not None:
            self._rows[-1].append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "table" and self._caption is not None:
            self.tables[self._caption] = self._rows

    def handle_data(self, data: str) -> None:
        if self._in_caption and self._caption is not None:
            self._caption += data.strip()
        elif self._cell is not None:
            self._cell.append(data)


def _tables(html: str) -> dict[str, list[list[str]]]:
    parser = _Tables()
    parser.feed(html)
    return parser.tables


def _counts(table: list[list[str]]) -> dict[str, str]:
    """First cell (the kind's label) to last cell (the count), header row skipped."""
    return {row[0]: row[-1] for row in table[1:]}


def test_line_security_shows_counts_and_masked_events(app: Flask) -> None:
    client = signed_in(app)
    home = client.get("/ops/")
    assert 'href="/ops/security"' in home.text  # in the navigation
    page = client.get("/ops/security")
    assert page.status_code == 200
    assert_no_secrets(page.text)
    assert "5555550199" not in page.text and "anonymous" not in page.text
    assert_accessible(page.text)
    tables = _tables(page.text)
    totals = _counts(tables["Events by kind, 2026-11-25 to 2026-12-01"])
    assert totals == {KIND_LABELS[guards.PAY_DECLINED]: "3", KIND_LABELS[guards.PAY_BLOCKED]: "1",
                      KIND_LABELS[guards.ACCOUNT_MISS]: "2",
                      KIND_LABELS[guards.LOOKUP_BLOCKED]: "0",
                      KIND_LABELS[guards.VERIFY_LOCKED]: "0",
                      "Wrong ZIP codes or PINs": "2"}
    per_day = tables["Events per day"]
    header, *days = per_day
    assert header[0] == "Day" and len(header) == len(guards.KINDS) + 2
    assert {row[0]: row[1:] for row in days} == {
        "2026-12-01": _row(header, {guards.PAY_DECLINED: "3", guards.PAY_BLOCKED: "1"}, "2"),
        "2026-11-30": _row(header, {guards.ACCOUNT_MISS: "2"}, "0")}
    latest = tables["Latest events (newest first)"]
    assert len(latest) == 1 + 6
    text = page.text
    assert "+1******0123" in text and "+1******0199" in text and "******1234" in text
    # Older events are there when the period covers them.
    wider = client.get("/ops/security?from=2026-11-20&to=2026-12-01")
    assert _counts(_tables(wider.text)["Events by kind, 2026-11-20 to 2026-12-01"])[
        KIND_LABELS[guards.LOOKUP_BLOCKED]] == "1"
    assert_no_secrets(wider.text)


def _row(header: list[str], counts: dict[str, str], failures: str) -> list[str]:
    """A per-day row in the order of the header's kind columns."""
    by_label = {KIND_LABELS[kind]: count for kind, count in counts.items()}
    return [by_label.get(label, "0") for label in header[1:-1]] + [failures]


def test_every_kind_has_a_label() -> None:
    assert set(KIND_LABELS) == guards.KINDS
