"""Call pages: funnel per state, conversion, time to pay, stuck questions, one call's path."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import select

from ivr.models import CallSession, Payment
from ivr.ops import funnel
from ivr.ops.funnel import Period
from ivr.web.app import get_database
from tests.conftest import OPEN_TIME, call
from tests.test_ops_helpers import assert_accessible, assert_no_secrets, ops_app, signed_in

# A paid call; a wrong ZIP then a hang-up; silence at the main menu then a hang-up; a Spanish
# caller who hangs up at the main menu.
CALLS = (("1 60614 1 1", "+15555550123"), ("1 99999 hangup", "+15555550123"),
         ("1 60614 - hangup", "+15555550123"), ("1 60617 hangup", "+15555550125"))


@pytest.fixture
def app(database_url: str, tmp_path: Path) -> Flask:
    app = ops_app(database_url, tmp_path)
    for presses, caller in CALLS:
        call(app, presses, from_number=caller)
    return app


def _period(language: str | None = None) -> Period:
    return Period(OPEN_TIME - timedelta(hours=1), OPEN_TIME + timedelta(hours=1), language)


def _row(rows: list[funnel.StateRow], state: str) -> funnel.StateRow:
    return next(r for r in rows if r.state == state)


@pytest.mark.slow
def test_funnel_counts(app: Flask) -> None:
    with get_database(app).session() as db:
        rows = funnel.state_funnel(db, _period())
        conversion = funnel.conversion(db, _period())
        spanish = funnel.conversion(db, _period("es-US"))
    verify, menu = _row(rows, "verify"), _row(rows, "main_menu")
    assert (verify.reached, verify.passed, verify.nomatch, verify.hung_up) == (4, 3, 1, 1)
    assert (menu.reached, menu.passed, menu.noinput, menu.hung_up) == (3, 1, 1, 2)
    paying = _row(rows, "paying")
    assert (paying.reached, paying.passed) == (1, 1)
    # Every caller here has a language on file: no language menu, the account at once.
    assert _row(rows, "language").reached == 0
    assert _row(rows, "confirm_account").reached == 4
    assert [r.state for r in rows][:5] == ["language", "confirm_account", "pick_account",
                                           "account_entry", "verify"]
    assert [r.state for r in rows].index("paying") == [r.state for r in rows].index("receipt") - 1
    assert conversion == funnel.Conversion(calls=4, identified=4, verified=3, reached_pay=1,
                                           paid=1)
    assert spanish.calls == 1 and spanish.paid == 0
    stuck = funnel.stuck_questions(rows)
    assert [s.state for s in funnel.worst(stuck, "nomatch_rate")] == ["verify"]
    assert [s.state for s in funnel.worst(stuck, "noinput_rate")] == ["main_menu"]
    assert funnel.worst(stuck, "noinput_rate")[0].noinput_rate == 0.5


def test_calls_page(app: Flask) -> None:
    client = signed_in(app)
    page = client.get("/ops/calls")
    assert page.status_code == 200
    html = page.text
    assert "2026-11-25 to 2026-12-01" in html  # the last 7 days, in the line's time zone
    funnel_table = html[html.index('<table class="funnel">'):]
    funnel_table = funnel_table[:funnel_table.index("</table>")]
    verify = re.search(r"<th scope=\"row\">verify</th>(.*?)</tr>", funnel_table, re.S)
    assert verify
    cells = re.findall(r'<td class="num">(\d+)', verify.group(1))
    assert cells == ["4", "3", "0", "1", "1", "0"]
    # Charts: server-made SVG with a title and description, no scripts.
    assert html.count('<svg class="chart"') == 3
    assert '<title id="funnel-title">' in html and '<desc id="conversion-desc">' in html
    assert "<script" not in html
    # The stuck questions link to their prompts' editors.
    assert 'href="/ops/prompts/verify.zip"' in html and 'href="/ops/prompts/menu.main"' in html
    # Every call is listed and linked to its path.
    with get_database(app).session() as db:
        sids = list(db.scalars(select(CallSession.call_sid)))
    for sid in sids:
        assert f'href="/ops/calls/{sid}"' in html
    assert "paid 1" in html and "hung_up 3" in html
    assert_accessible(html)
    assert_no_secrets(html)


def test_calls_page_filters(app: Flask) -> None:
    client = signed_in(app)
    spanish = client.get("/ops/calls?lang=es-US")
    assert spanish.status_code == 200
    assert spanish.text.count('href="/ops/calls/CA') == 1
    paid = client.get("/ops/calls?outcome=paid")
    assert paid.text.count('href="/ops/calls/CA') == 1
    earlier = client.get("/ops/calls?from=2026-11-01&to=2026-11-20")
    assert "No calls in this period." in earlier.text


@pytest.mark.slow
@pytest.mark.parametrize(("query", "message"), [
    ("from=2026-13-01", "is not a date like 2026-12-01"),
    ("to=yesterday", "is not a date like 2026-12-01"),
    ("from=2026-12-05&to=2026-12-01", "from date is after the to date"),
    ("from=2020-01-01&to=2026-12-01", "limited to a year"),
    ("lang=fr-FR", "Unknown language"),
    ("outcome=bogus", "Unknown outcome"),
])
def test_calls_page_validation(sqlite_url: str, tmp_path: Path, query: str,
                               message: str) -> None:
    client = signed_in(ops_app(sqlite_url, tmp_path))
    page = client.get(f"/ops/calls?{query}")
    assert page.status_code == 400
    assert message in page.text and 'role="alert"' in page.text


def test_one_call_path_shows_states_never_digits(app: Flask) -> None:
    client = signed_in(app)
    with get_database(app).session() as db:
        sids = {c.verify_failures: c.call_sid for c in db.scalars(select(CallSession))}
        paid = db.scalars(select(CallSession).where(CallSession.payment_id.is_not(None))).one()
    wrong_zip = client.get(f"/ops/calls/{sids[1]}")
    assert wrong_zip.status_code == 200
    html = wrong_zip.text
    rows = re.findall(r"<tr>\s*<td>[^<]*</td>\s*<td>(.*?)</td>\s*<td>(\w+)</td>", html, re.S)
    states = [(re.sub(r"<[^>]+>", "", s).replace("sensitive", "").strip(), e) for s, e in rows]
    assert states == [("confirm_account", "enter"), ("confirm_account", "ok"),
                      ("verify", "enter"), ("verify", "nomatch"), ("verify", "call_end")]
    assert "99999" not in html and "sensitive" in html
    assert "+1******0123" in html and "******1234" in html
    assert_accessible(html)
    assert_no_secrets(html)
    page = client.get(f"/ops/calls/{paid.call_sid}")
    assert "pay_result" in page.text and f'href="/ops/payments/{paid.payment_id}"' in page.text
    assert "4111" not in page.text
    assert_no_secrets(page.text)
    assert client.get("/ops/calls/CAnope").status_code == 404
    assert client.get("/ops/calls/bad%20sid").status_code == 404


def test_time_to_pay(sqlite_url: str, tmp_path: Path) -> None:
    app = ops_app(sqlite_url, tmp_path)
    call(app, "1 60614 1 1")
    with get_database(app).session() as db:
        template = db.scalars(select(Payment)).one()
        session = db.scalars(select(CallSession)).one()
        session.started_at = OPEN_TIME - timedelta(seconds=100)
        for i, seconds in enumerate((30, 150, 200, 700)):
            sid = f"CAsynthetic{i}"
            payment = Payment(idempotency_key=f"k{i}", call_sid=sid, confirmation_code=f"C{i}",
                              account_number=template.account_number, amount_cents=100,
                              method="card", paid_at=OPEN_TIME)
            db.add(payment)
            db.flush()
            db.add(CallSession(call_sid=sid, state="ended", started_at=OPEN_TIME
                               - timedelta(seconds=seconds), payment_id=payment.id))
    with get_database(app).session() as db:
        result = funnel.time_to_pay(db, _period())
    assert result.count == 5
    assert dict(result.buckets) == {"under 1 min": 1, "1-2 min": 1, "2-3 min": 1,
                                    "3-5 min": 1, "5-10 min": 0, "10 min or more": 1}
    assert result.median_seconds == 150
    assert result.p90_seconds == pytest.approx(200 + 0.6 * 500)
    page = signed_in(app).get("/ops/calls")
    assert "median 2 min 30 s" in page.text
    assert '<title id="time-to-pay-title">' in page.text


def test_empty_period(sqlite_url: str, tmp_path: Path) -> None:
    client = signed_in(ops_app(sqlite_url, tmp_path))
    page = client.get("/ops/calls")
    assert page.status_code == 200
    assert "No calls in this period." in page.text and "None in this period." in page.text
