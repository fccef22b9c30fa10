"""A webhook's round trips to PostgreSQL, counted in libpq's trace of what the line sends:
each is a wake-up of the database's process, the larger part of a webhook's time there."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from psycopg import pq
from sqlalchemy import select

from ivr.accounts import cache as accounts
from ivr.arrangements import store
from ivr.calls import guards
from ivr.calls.call_row import load_call, new_call, queue_event, save_call
from ivr.db import Database
from ivr.db_webhook import WebhookTransaction
from ivr.models import Account, CallEvent, CallSession, utcnow
from ivr.prompts.settings import VerificationSettings
from tests.arrangement_rows import add_arrangement
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


@contextmanager
def _traced(tx: WebhookTransaction, log: Path) -> Iterator[Any]:
    """libpq's trace of the transaction's connection, written to ``log``; its pgconn."""
    pgconn = tx.connection().connection.dbapi_connection.pgconn  # type: ignore[union-attr]
    with log.open("w") as out:
        pgconn.trace(out.fileno())
        pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS)
        try:
            yield pgconn
        finally:
            pgconn.untrace()


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
        with database.webhook() as tx, _traced(tx, log) as pgconn:
            call = load_call(tx, "CA-trips")
            assert call is not None and call.tries == tries - 1
            call.tries = tries
            queue_event(tx, {"call_sid": "CA-trips", "at": utcnow(), "state": "main_menu",
                             "event": "enter", "detail": "", "language": "en-US"})
            save_call(tx, call, commit=True)
            # Committed: nothing left open on the connection.
            assert pgconn.transaction_status == pq.TransactionStatus.IDLE
    assert _messages_sent(log.read_text()) == ["Query", "Query"]
    with database.session() as db:
        saved = db.get(CallSession, "CA-trips")
        assert saved is not None and saved.tries == 2
        steps = db.scalars(select(CallEvent.state).where(CallEvent.call_sid == "CA-trips"))
        assert list(steps) == ["main_menu", "main_menu"]


def _parsed(trace: str) -> list[str]:
    """The first line of each statement a libpq trace shows the client parsing."""
    return [line.split("\t", 3)[3] for line in trace.splitlines()
            if line.startswith("F\t") and line.split("\t")[2] == "Parse"]


def _call_on_account(database: Database, number: str, call_sid: str, caller: str) -> int:
    """An account and a call about it from ``caller``; the account's id."""
    with database.session() as db:
        account = Account(account_number=number, customer_name="Ana", balance_due_cents=5000)
        db.add(account)
        db.flush()
        db.add(CallSession(call_sid=call_sid, from_number=caller, to_number="+15555550100",
                           language="en-US", state="verify", account_id=account.id,
                           started_at=utcnow()))
        return account.id


def test_the_reads_a_state_asks_go_with_the_load_and_answer_once(
        database: Database, tmp_path: Path) -> None:
    # The ZIP's webhook: the account's lock, its recent failures under it and the active
    # arrangement go with BEGIN and the call's load; each answers the read it stands for
    # once, as that read would have (the failures lock this caller out), and a second read
    # goes to the database, as after a failure recorded meanwhile.
    now = utcnow()
    policy = VerificationSettings()
    caller = "+15555550199"
    account_id = _call_on_account(database, "5550001", "CA-ahead", caller)
    with database.session() as db:
        for minutes in range(policy.lockout_failures):
            accounts.record_verification_failure(db, account_id, "CA-earlier",
                                                 now - timedelta(minutes=minutes), caller)
    for attempt in (1, 2):  # the first prepares the statements on the connection
        log = tmp_path / f"trace-{attempt}.txt"
        with database.webhook() as tx, _traced(tx, log):
            ahead = (guards.account_lock_ahead("CA-ahead"),
                     accounts.lockout_ahead("CA-ahead", now, policy),
                     store.arrangement_ahead("CA-ahead"))
            call = load_call(tx, "CA-ahead", ahead)
            assert call is not None and call.account_id == account_id
            guards.lock_account(tx, account_id)
            assert accounts.locked_until(tx, account_id, now, caller, policy) is not None
            assert store.active_arrangement(tx, account_id) is None
            ahead_trace = log.read_text()
            assert accounts.locked_until(tx, account_id, now, caller, policy) is not None
    # One query for all four; then only the phones on file, which a lock needs.
    assert _messages_sent(ahead_trace).count("Query") == 1
    assert [sql for sql in _parsed(ahead_trace) if "account_phones" not in sql] == []
    again = [sql for sql in _parsed(log.read_text()) if "account_phones" not in sql]
    assert len(again) == 1 and "verification_failures" in again[0]


def test_rows_read_ahead_do_not_outlive_their_transaction(database: Database) -> None:
    # A payment is made durable mid-webhook: what was read (and locked) before that commit
    # holds no more, so the read after it goes to the database.
    account_id = _call_on_account(database, "5550002", "CA-commit", PHONE)
    with database.webhook() as tx:
        call = load_call(tx, "CA-commit", (store.arrangement_ahead("CA-commit"),))
        assert call is not None
        tx.session.commit()
        add_arrangement(database, "5550002", "AHEAD1", balance=100,
                        instalments=[(date(2026, 12, 31), 100)])
        assert store.active_arrangement(tx, account_id) is not None
