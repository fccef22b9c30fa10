"""A webhook's round trips to PostgreSQL, counted in libpq's trace of what the line sends:
each is a wake-up of the database's process, the larger part of a webhook's time there."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from psycopg import pq
from sqlalchemy import select

from ivr.calls.call_row import load_call, new_call, queue_event, save_call
from ivr.db import Database
from ivr.models import CallEvent, CallSession, utcnow
from tests.conftest import _truncate_postgres

pytestmark = pytest.mark.slow
PHONE = "+15555550123"


@pytest.fixture
def database(postgres_url: str) -> Iterator[Database]:
    """The tests' PostgreSQL, migrated and empty."""
    _truncate_postgres(postgres_url)
    database = Database(postgres_url)
    database.upgrade()
    yield database
    database.dispose()


def _messages_sent(trace: str) -> list[str]:
    """The kinds of the protocol messages a libpq trace shows the client sending."""
    return [line.split()[2] for line in trace.splitlines() if line.split()[:1] == ["F"]]


def test_a_webhook_takes_two_round_trips(database: Database, tmp_path: Path) -> None:
    # BEGIN goes with the call's locked load and COMMIT with the write of the call and its
    # steps: a round trip each is all a webhook pays besides its state's own reads (psycopg
    # alone sends BEGIN and COMMIT as round trips of their own).
    with database.webhook() as tx:
        call = new_call(tx, "CA-trips", {"From": PHONE}, language="en-US",
                        prompts_version="v1", now=utcnow())
        save_call(tx, call, commit=True)
    for tries in (1, 2):  # the first prepares the statements on the connection
        log = tmp_path / f"trace-{tries}.txt"
        with database.webhook() as tx, log.open("w") as out:
            pgconn = tx.connection().connection.dbapi_connection.pgconn  # type: ignore[union-attr]
            pgconn.trace(out.fileno())
            pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS)
            call = load_call(tx, "CA-trips")
            assert call is not None and call.tries == tries - 1
            call.tries = tries
            queue_event(tx, {"call_sid": "CA-trips", "at": utcnow(), "state": "main_menu",
                             "event": "enter", "detail": "", "language": "en-US"})
            save_call(tx, call, commit=True)
            pgconn.untrace()
            # Committed: nothing left open on the connection.
            assert pgconn.transaction_status == pq.TransactionStatus.IDLE
    assert _messages_sent(log.read_text()) == ["Query", "Query"]
    with database.session() as db:
        saved = db.get(CallSession, "CA-trips")
        assert saved is not None and saved.tries == 2
        steps = db.scalars(select(CallEvent.state).where(CallEvent.call_sid == "CA-trips"))
        assert list(steps) == ["main_menu", "main_menu"]
