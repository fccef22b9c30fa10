"""The call's row on the driver (ivr.db_driver, ivr.calls.call_row): what it reads and writes
is what SQLAlchemy itself reads and writes, on both databases."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import select

from ivr.calls.call_row import load_call, new_call, queue_event, save_call
from ivr.db import Database
from ivr.models import Account, CallEvent, CallSession
from ivr.statuses import CallOutcome

STARTED = datetime(2026, 11, 30, 14, 5, 6, 123456, tzinfo=UTC)


def _columns(obj: object, model: type) -> dict[str, object]:
    return {attr.key: getattr(obj, attr.key)
            for attr in model.__mapper__.column_attrs}  # type: ignore[attr-defined]


def test_a_call_and_its_account_read_as_the_orm_reads_them(database: Database) -> None:
    with database.session() as db:
        account = Account(account_number="5550001", customer_name="Ana Núñez",
                          balance_due_cents=12345, due_date=date(2026, 12, 15),
                          usage_amount=Decimal("412.125"), usage_unit="kWh",
                          ach_off_until=date(2027, 1, 2), arrangement_eligible=None)
        db.add(account)
        db.flush()
        db.add(CallSession(call_sid="CA-read", state="main_menu", account_id=account.id,
                           verified=True, outcome=CallOutcome.TRANSFERRED, started_at=STARTED,
                           arrangement_offer={"kind": "split", "instalments": [
                               ["2026-12-20", 6000]]}, amount_cents=None))
    with database.session() as db:
        by_orm = db.get(CallSession, "CA-read")
        account_by_orm = db.get(Account, by_orm.account_id)  # type: ignore[union-attr]
        expected, expected_account = (_columns(by_orm, CallSession),
                                      _columns(account_by_orm, Account))
    with database.session() as db:
        call = load_call(db, "CA-read")
        assert call is not None
        got = _columns(call, CallSession)
        # The account is the session's own, as if the ORM had loaded it: no second read.
        mine = db.get(Account, call.account_id)
        assert mine is not None and mine in db
        got_account = _columns(mine, Account)
        save_call(db, call)
    assert got == expected
    assert got_account == expected_account
    assert isinstance(got["outcome"], CallOutcome) and got["started_at"] == STARTED
    assert isinstance(got_account["usage_amount"], Decimal)


def test_what_a_webhook_changes_is_written_and_nothing_else(database: Database) -> None:
    with database.session() as db:
        db.add(CallSession(call_sid="CA-write", state="verify", started_at=STARTED,
                           from_number="+15555550123", prompts_version="v1"))
    with database.session() as db:
        before = db.get(CallSession, "CA-write")
        assert before is not None
        stamp = before.updated_at
    ended = STARTED + timedelta(minutes=3)
    with database.session() as db:
        call = load_call(db, "CA-write")
        assert call is not None
        call.state = "ended"
        call.outcome = CallOutcome.GAVE_UP
        call.ended_at = ended
        call.tries += 2
        call.arrangement_offer = {"kind": "extension", "down_cents": 0}
        queue_event(db, {"call_sid": "CA-write", "at": ended, "state": "verify",
                         "event": "goodbye", "detail": "", "language": "en-US"})
        save_call(db, call)
    with database.session() as db:
        after = db.get(CallSession, "CA-write")
        steps = db.scalars(select(CallEvent.event).where(CallEvent.call_sid == "CA-write")).all()
    assert after is not None
    assert (after.state, after.outcome, after.ended_at, after.tries) == (
        "ended", CallOutcome.GAVE_UP, ended, 2)
    assert after.arrangement_offer == {"kind": "extension", "down_cents": 0}
    assert (after.from_number, after.prompts_version, after.started_at) == (
        "+15555550123", "v1", STARTED)
    assert after.updated_at > stamp
    assert steps == ["goodbye"]


def test_a_new_call_takes_every_column_default(database: Database) -> None:
    with database.session() as db:
        call = new_call(db, "CA-new", {"From": "+15555550123"}, language="es-US",
                        prompts_version="abc", now=STARTED)
        call.state = "confirm_account"
        save_call(db, call)
    with database.session() as db:
        row = db.get(CallSession, "CA-new")
    assert row is not None
    assert (row.state, row.language, row.from_number, row.to_number) == (
        "confirm_account", "es-US", "+15555550123", "")
    assert (row.tries, row.fee_cents, row.verified, row.outcome) == (0, 0, False, None)
    assert row.started_at == STARTED and row.updated_at >= STARTED


def test_a_relationship_set_on_the_call_is_refused_not_lost(database: Database) -> None:
    with database.session() as db:
        account = Account(account_number="5550002")
        db.add(account)
        db.add(CallSession(call_sid="CA-rel", state="verify", started_at=STARTED))
    with pytest.raises(ValueError, match="relationships"), database.session() as db:
        call = load_call(db, "CA-rel")
        assert call is not None
        call.account = db.scalar(select(Account))
        save_call(db, call)


def test_a_commit_before_the_webhook_ends_writes_the_call_too(database: Database) -> None:
    """A payment is made durable (committed) before its real-time post: the call's row as it
    stands goes with it, and what changes after is written at the end."""
    with database.session() as db:
        db.add(CallSession(call_sid="CA-mid", state="paying", started_at=STARTED))
    with database.session() as db:
        call = load_call(db, "CA-mid")
        assert call is not None
        call.state = "after_pay"
        call.pay_tries = 1
        db.commit()  # as post_in_real_time does
        with database.session() as other:
            seen = other.get(CallSession, "CA-mid")
            assert seen is not None and (seen.state, seen.pay_tries) == ("after_pay", 1)
        call.state = "main_menu"
        save_call(db, call)
    with database.session() as db:
        final = db.get(CallSession, "CA-mid")
    assert final is not None and (final.state, final.pay_tries) == ("main_menu", 1)


def test_json_in_a_webhooks_last_round_trip_reads_back_as_written(database: Database) -> None:
    # On PostgreSQL the write and COMMIT go as one query, parameters written as literals:
    # quotes, backslashes and non-ASCII text must come back as they went in.
    awkward = "O'Brien \\ \"Núñez\" ☎"
    offer = {"kind": "split", "note": awkward, "instalments": [["2026-12-20", 6000]]}
    with database.session() as db:
        db.add(CallSession(call_sid="CA-json", state="verify", started_at=STARTED))
    with database.webhook() as db:
        call = load_call(db, "CA-json")
        assert call is not None
        call.arrangement_offer = offer
        queue_event(db, {"call_sid": "CA-json", "at": STARTED, "state": "verify",
                         "event": "enter", "detail": awkward, "language": "es-US"})
        save_call(db, call, commit=True)
    with database.session() as db:
        row = db.get(CallSession, "CA-json")
        details = db.scalars(select(CallEvent.detail).where(CallEvent.call_sid == "CA-json")).all()
    assert row is not None and row.arrangement_offer == offer
    assert details == [awkward]


def test_a_database_error_names_the_statement_not_the_callers_values(
        database: Database) -> None:
    """What a failed statement raises is logged with its traceback: the caller's number
    and account must not be in it."""
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

    with database.session() as db, pytest.raises(DBAPIError) as failed:
        db.execute(text("SELECT * FROM no_such_table WHERE phone = :phone AND acct = :acct"),
                   {"phone": "+15555550123", "acct": "4401001234"})
    assert "no_such_table" in str(failed.value)
    assert "+15555550123" not in str(failed.value) and "4401001234" not in str(failed.value)
