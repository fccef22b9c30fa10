"""A webhook's transaction (ivr.db_webhook): a connection, the ORM session only when asked
for, and nothing a state changes or commits lost either way, on both databases."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from ivr.accounts.cache import find_by_phone
from ivr.calls.call_row import load_call, new_call, save_call
from ivr.db import Database
from ivr.models import Account, AccountPhone, CallSession, VerificationFailure

PHONE = "+15555550123"


@pytest.fixture(autouse=True)
def _one_account(database: Database) -> None:
    """One account with one phone, in the migrated database (conftest)."""
    with database.session() as db:
        account = Account(account_number="5550001", customer_name="Ana", balance_due_cents=5000)
        db.add(account)
        db.flush()
        db.add(AccountPhone(account_id=account.id, phone=PHONE))


def _balance(database: Database) -> int:
    with database.session() as db:
        return db.scalars(select(Account.balance_due_cents)).one()


def test_a_change_to_a_row_read_without_a_session_is_written(database: Database) -> None:
    # A live balance read after verification changes the cached account: no state asked
    # for a session, and the change is written all the same.
    with database.webhook() as tx:
        [account] = find_by_phone(tx, PHONE)
        account.balance_due_cents = 4200
    assert _balance(database) == 4200


def test_a_session_asked_for_later_takes_the_rows_read_and_their_changes(
        database: Database) -> None:
    with database.webhook() as tx:
        [account] = find_by_phone(tx, PHONE)
        account.balance_due_cents = 3100
        session = tx.session
        # The same object, as if the session had loaded it; the change before it kept.
        assert session.get(Account, account.id) is account
        assert account in session.dirty
        account.customer_name = "Ana B"
    assert _balance(database) == 3100
    with database.session() as db:
        assert db.scalars(select(Account.customer_name)).one() == "Ana B"


def test_a_commit_in_the_middle_is_durable_and_the_call_still_saved(database: Database) -> None:
    # A payment is made durable before its real-time post: the session's commit must
    # commit the webhook's transaction, and the work goes on in a new one.
    with database.webhook() as tx:
        call = new_call(tx, "CA-mid", {"From": PHONE}, language="en-US",
                        prompts_version="v1", now=_now())
        [account] = find_by_phone(tx, PHONE)
        call.account_id = account.id
        tx.session.add(VerificationFailure(account_id=account.id, call_sid="CA-mid",
                                           failed_at=_now(), caller=PHONE))
        tx.session.commit()
        with database.session() as other:  # seen from another connection: committed
            assert other.scalars(select(VerificationFailure.call_sid)).all() == ["CA-mid"]
        call.state = "main_menu"
        save_call(tx, call)
    with database.webhook() as tx:
        again = load_call(tx, "CA-mid")
        assert again is not None
        assert (again.state, again.account_id) == ("main_menu", account.id)


def test_an_error_loses_the_whole_transaction(database: Database) -> None:
    with pytest.raises(RuntimeError), database.webhook() as tx:
        call = new_call(tx, "CA-err", {"From": PHONE}, language="en-US",
                        prompts_version="v1", now=_now())
        [account] = find_by_phone(tx, PHONE)
        account.balance_due_cents = 1
        save_call(tx, call)
        raise RuntimeError("the state failed")
    assert _balance(database) == 5000
    with database.session() as db:
        assert db.get(CallSession, "CA-err") is None


def _now():  # type: ignore[no-untyped-def]
    from ivr.models import utcnow

    return utcnow()

