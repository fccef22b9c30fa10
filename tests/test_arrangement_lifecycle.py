"""Payment arrangements marked broken or kept after an applied account import
(ivr/arrangements/lifecycle.py; the rule in docs/files.md), on SQLite and PostgreSQL."""

from __future__ import annotations

import io
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from flask import Flask
from sqlalchemy import select

from ivr.accounts.importer import import_accounts
from ivr.models import Arrangement
from ivr.statuses import ArrangementStatus
from ivr.web.app import get_database
from tests.arrangement_rows import add_arrangement

CHICAGO = ZoneInfo("America/Chicago")
JORDAN = "4401005678"
START = date(2026, 12, 1)
D1, D2, D3 = START + timedelta(days=10), START + timedelta(days=40), START + timedelta(days=70)
# Jordan's 312.80: 78.20 down, then three instalments of 78.20.
PLAN = [(D1, 7820), (D2, 7820), (D3, 7820)]


def _import(app: Flask, past_due: str, on: date, *, balance: str = "312.80",
            at: time = time(12)) -> tuple[int, int]:
    """An account file for Jordan made on ``on`` (Chicago time ``at``); (broken, kept)."""
    data = ("account_number,customer_name,balance_due,past_due_amount\r\n"
            f"{JORDAN},Jordan Lee,{balance},{past_due}\r\n").encode()
    made = datetime.combine(on, at, tzinfo=CHICAGO).astimezone(UTC)
    report = import_accounts(get_database(app), io.BytesIO(data), "biller",
                             pin_key="test-pin-key", as_of=made, zone=CHICAGO)
    assert report.applied, report.lines()
    return report.arrangements_broken, report.arrangements_kept


def _arrangement(app: Flask, arrangement_id: int) -> Arrangement:
    with get_database(app).session() as db:
        found = db.get(Arrangement, arrangement_id)
        assert found is not None
        return found


CASES = [
    # (what, plan, down, file's past due, import day, Chicago time, status, reason)
    ("on the due date nothing has passed yet", PLAN, 7820, "234.60", D1, time(12),
     ArrangementStatus.ACTIVE, ""),
    ("first instalment paid", PLAN, 7820, "156.40", D1 + timedelta(days=1), time(12),
     ArrangementStatus.ACTIVE, ""),
    ("first instalment unpaid", PLAN, 7820, "234.60", D1 + timedelta(days=1), time(12),
     ArrangementStatus.BROKEN, f"instalment of $78.20 due {D1} unpaid"),
    ("partly paid is still unpaid", PLAN, 7820, "160.00", D1 + timedelta(days=1), time(12),
     ArrangementStatus.BROKEN, f"instalment of $78.20 due {D1} unpaid"),
    ("second unpaid, first paid", PLAN, 7820, "156.40", D2 + timedelta(days=1), time(12),
     ArrangementStatus.BROKEN, f"instalment of $78.20 due {D2} unpaid"),
    ("neither paid: the first is named", PLAN, 7820, "234.60", D2 + timedelta(days=1),
     time(12), ArrangementStatus.BROKEN, f"instalment of $78.20 due {D1} unpaid"),
    ("every date passed, all paid", PLAN, 7820, "0.00", D3 + timedelta(days=1), time(12),
     ArrangementStatus.KEPT, f"every instalment paid by {D3}"),
    ("the day is the biller's: 21:00 in Chicago is still the due date", PLAN, 7820,
     "234.60", D1, time(21), ArrangementStatus.ACTIVE, ""),
    ("extension paid", [(D1, 31280)], 0, "0.00", D1 + timedelta(days=1), time(12),
     ArrangementStatus.KEPT, f"every instalment paid by {D1}"),
    ("extension unpaid", [(D1, 31280)], 0, "187.50", D1 + timedelta(days=1), time(12),
     ArrangementStatus.BROKEN, f"instalment of $312.80 due {D1} unpaid"),
]


@pytest.mark.parametrize(("what", "plan", "down", "past_due", "day", "at", "status", "reason"),
                         CASES, ids=[c[0] for c in CASES])
def test_an_import_judges_active_arrangements(
        app: Flask, what: str, plan: list[tuple[date, int]], down: int, past_due: str,
        day: date, at: time, status: ArrangementStatus, reason: str) -> None:
    made = add_arrangement(get_database(app), JORDAN, "ARR00001", balance=31280, down=down,
                           instalments=plan)
    broken, kept = _import(app, past_due, day, at=at)
    found = _arrangement(app, made)
    assert (found.status, found.end_reason) == (status, reason), what
    assert (broken, kept) == (int(status is ArrangementStatus.BROKEN),
                              int(status is ArrangementStatus.KEPT))
    assert (found.ended_at is None) == (status is ArrangementStatus.ACTIVE)


def test_new_charges_not_yet_due_do_not_break_an_arrangement(app: Flask) -> None:
    made = add_arrangement(get_database(app), JORDAN, "ARR00002", balance=31280, down=7820,
                           instalments=PLAN)
    # A new bill of 120.00 raised the balance; it is not past due, so nothing is broken.
    assert _import(app, "156.40", D1 + timedelta(days=3), balance="432.80") == (0, 0)
    assert _arrangement(app, made).status is ArrangementStatus.ACTIVE


def test_a_second_import_changes_nothing_more(app: Flask) -> None:
    made = add_arrangement(get_database(app), JORDAN, "ARR00003", balance=31280, down=7820,
                           instalments=PLAN)
    assert _import(app, "234.60", D1 + timedelta(days=1)) == (1, 0)
    first = _arrangement(app, made)
    # Paid since: the arrangement stays broken; the day it ended and why stay as they were.
    assert _import(app, "0.00", D3 + timedelta(days=1)) == (0, 0)
    again = _arrangement(app, made)
    assert (again.status, again.ended_at, again.end_reason) == (
        ArrangementStatus.BROKEN, first.ended_at, first.end_reason)


def test_an_arrangement_whose_account_is_gone_is_left_alone(app: Flask) -> None:
    made = add_arrangement(get_database(app), JORDAN, "ARR00004", balance=31280, down=7820,
                           instalments=PLAN, with_account=False)
    assert _import(app, "312.80", D3 + timedelta(days=1)) == (0, 0)
    assert _arrangement(app, made).status is ArrangementStatus.ACTIVE


def test_ended_arrangements_are_in_the_report(app: Flask) -> None:
    add_arrangement(get_database(app), JORDAN, "ARR00005", balance=31280, down=7820,
                    instalments=PLAN)
    data = (f"account_number,customer_name,balance_due,past_due_amount\r\n"
            f"{JORDAN},Jordan Lee,312.80,234.60\r\n").encode()
    report = import_accounts(get_database(app), io.BytesIO(data), "biller",
                             pin_key="test-pin-key",
                             as_of=datetime.combine(D2, time(18), tzinfo=UTC), zone=CHICAGO)
    assert "payment arrangements: 1 broken, 0 kept" in report.lines()
    with get_database(app).session() as db:
        statuses = list(db.scalars(select(Arrangement.status)))
    assert statuses == [ArrangementStatus.BROKEN]
