"""A webhook's write of its call updates the row in place on PostgreSQL (a HOT update).

Every webhook rewrites its call's row. When no index holds a column the write changes and
the page has room, PostgreSQL keeps the new version on the same page and adds no index
entries: a cheaper write on the line's hottest path (docs/scaling.md). An index on a
column that webhooks change (``state`` was one) turns every such write into a full update.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import inspect, text

from ivr.calls.call_row import load_call, save_call
from ivr.models import CallSession
from ivr.models.calls import CALL_FILLFACTOR
from ivr.web.app import get_database
from tests.conftest import Twilio, _truncate_postgres, make_app, new_sid

pytestmark = pytest.mark.slow

CALLER = "+15555550123"  # on file for account 4401001234


def test_a_webhooks_write_of_its_call_is_a_heap_only_update(
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
        # answers, and at the end its outcome.
        call.state, call.tries, call.silences = "main_menu", 1, 2
        call.verified, call.verify_failures, call.language = True, 1, "es-US"
        call.amount_cents, call.call_status = 12_345, "completed"
        call.ended_at = call.started_at
        save_call(db, call)
        updated, in_place = db.connection().execute(text(
            "SELECT pg_stat_get_xact_tuples_updated(c.oid),"
            " pg_stat_get_xact_tuples_hot_updated(c.oid)"
            " FROM pg_class c WHERE c.relname = 'call_sessions'")).one()
    assert (updated, in_place) == (1, 1)

    with get_database(app).session() as session:
        indexed = {column for index in inspect(session.connection()).get_indexes(
            CallSession.__tablename__) for column in index["column_names"]}
        options = session.scalar(text(
            "SELECT reloptions FROM pg_class WHERE relname = 'call_sessions'"))
    # Only what never changes after the call's first webhook (the key is the primary key's).
    assert indexed == {"started_at"}
    assert f"fillfactor={CALL_FILLFACTOR}" in (options or [])
