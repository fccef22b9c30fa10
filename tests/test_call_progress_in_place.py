"""A webhook's write of its call updates the row in place on PostgreSQL (a HOT update).

Every webhook rewrites its call's row. When no index holds a column the write changes and
the page has room, PostgreSQL keeps the new version on the same page and adds no index
entries: a cheaper write on the line's hottest path (docs/performance-log.md). An index on a
column that webhooks change (``state`` was one) turns every such write into a full update.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import inspect, text

from ivr.calls.call_row import load_call, save_call
from ivr.calls.guards import waiting_in_pay
from ivr.db_webhook import WebhookTransaction
from ivr.models import CallSession, utcnow
from ivr.models.calls import CALL_FILLFACTOR
from ivr.web.app import get_database
from tests.conftest import Twilio, _truncate_postgres, make_app, new_sid

pytestmark = pytest.mark.slow

CALLER = "+15555550123"  # on file for account 4401001234


def _updated_by(db: WebhookTransaction, write: Callable[[], None]) -> tuple[int, int]:
    """(rows of call_sessions updated by ``write``, of which in place). PostgreSQL's
    counters are this connection's since its statistics were last reported: a difference."""
    def counts() -> tuple[int, int]:
        row = db.connection().execute(text(
            "SELECT pg_stat_get_xact_tuples_updated(c.oid),"
            " pg_stat_get_xact_tuples_hot_updated(c.oid)"
            " FROM pg_class c WHERE c.relname = 'call_sessions'")).one()
        return int(row[0]), int(row[1])

    before = counts()
    write()
    after = counts()
    return after[0] - before[0], after[1] - before[1]


def test_a_webhooks_write_of_its_call_is_a_heap_only_update_until_it_ends(
        postgres_url: str, prompts_dir: Path) -> None:
    _truncate_postgres(postgres_url)
    app = make_app(postgres_url, prompts_dir, serve_threads=2)
    sid = new_sid()
    Twilio(app).post("/voice/incoming", CallSid=sid, From=CALLER, To="+13125550100",
                     CallStatus="in-progress")

    with get_database(app).webhook() as db:
        call = load_call(db, sid)
        assert call is not None
        # What webhooks change as a call goes on: where it is, its counters, the caller's
        # answers, the amount and the <Pay> attempt.
        call.state, call.tries, call.silences = "paying", 1, 2
        call.verified, call.verify_failures, call.language = True, 1, "es-US"
        call.amount_cents, call.method, call.pay_tries = 12_345, "card", 1
        assert _updated_by(db, lambda: save_call(db, call)) == (1, 1)
    with get_database(app).webhook() as db:
        call = load_call(db, sid)
        assert call is not None
        # The call's end takes it out of the live calls' index: that write alone is not.
        call.call_status, call.ended_at = "completed", call.started_at
        assert _updated_by(db, lambda: save_call(db, call)) == (1, 0)

    with get_database(app).session() as session:
        indexes = inspect(session.connection()).get_indexes(CallSession.__tablename__)
        options = session.scalar(text(
            "SELECT reloptions FROM pg_class WHERE relname = 'call_sessions'"))
    # Only what never changes after the call's first webhook (the key is the primary key's).
    assert {c for index in indexes for c in index["column_names"]} == {"started_at"}
    assert f"fillfactor={CALL_FILLFACTOR}" in (options or [])


def test_the_calls_waiting_in_pay_are_read_from_the_live_calls_alone(
        postgres_url: str, prompts_dir: Path) -> None:
    # The card-testing limits ask for the calls in <Pay> at every attempt: with a day of
    # ended calls in the table, that read must not walk them.
    _truncate_postgres(postgres_url)
    app = make_app(postgres_url, prompts_dir, serve_threads=2)
    database = get_database(app)
    now = utcnow()
    with database.session() as db:
        db.execute(text(
            "INSERT INTO call_sessions (call_sid, from_number, to_number, language, state,"
            " tries, silences, extended_time, awaiting_more_time, verified,"
            " identify_failures, verify_failures, fee_cents, pay_tries, text_receipt_sent,"
            " paid_today_confirmed, prompts_version, started_at, updated_at, ended_at)"
            " SELECT 'CA' || i, '+15555550100', '+13125550100', 'en-US', 'ended', 0, 0,"
            " false, false, false, 0, 0, 0, 0, false, false, 'v', :now - i * interval '1 s',"
            " :now, :now FROM generate_series(1, 20000) i"), {"now": now})
        db.execute(text("ANALYZE call_sessions"))
    with database.session() as db:
        db.add_all([CallSession(call_sid="CA-me", state="paying", from_number=CALLER,
                                started_at=now),
                    CallSession(call_sid="CA-other", state="paying",
                                from_number="+15555550999", started_at=now)])
        db.flush()
        query = waiting_in_pay("CA-me", now)
        sql = str(query.compile(db.get_bind(), compile_kwargs={"literal_binds": True}))
        plan = "\n".join(db.scalars(text("EXPLAIN " + sql)))
        waiting = db.execute(query).all()
    assert "ix_call_sessions_live" in plan, plan
    assert waiting == [(None, "+15555550999")]
