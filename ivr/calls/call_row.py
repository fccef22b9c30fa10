"""A call's rows for its webhooks: its ``call_sessions`` row (loaded locked, started,
written back) and the steps of its path in ``call_events``.

Every webhook reads its call and writes it back, so this is the line's hottest database
work, and it runs straight on the driver (ivr.db_driver): one statement loads the call with
its account, one writes the columns that changed (on PostgreSQL with the steps), SQLAlchemy's
types applied to both. The call is a plain stand-in for its ``CallSession`` that no session
tracks: this module alone writes it, comparing it with what was loaded, rather than the unit
of work, whose load and flush of one row cost more Python than the rest of the webhook's
database work together (docs/performance-log.md). Its account becomes the session's as if the ORM
had loaded it (once the webhook has a session: ivr.db_webhook), so ``ctx.account``,
``db.get(Account, ...)`` and a payment's changes to it work as always.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    ColumnDefault,
    Table,
    bindparam,
    column,
    func,
    insert,
    inspect,
    select,
    update,
)
from sqlalchemy import event as sa_event
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, SessionTransaction

from ivr.accounts.cache import ACCOUNT_ROW
from ivr.db import CALL_PROGRESS, commit_sql, progress_only
from ivr.db_driver import DriverStatement, ReadAhead, begin_with, keep_ahead
from ivr.db_rows import MappedRow
from ivr.db_webhook import DbHandle, WebhookTransaction
from ivr.models import Account, CallEvent, CallSession, utcnow

log = logging.getLogger(__name__)


_TABLE = cast(Table, CallSession.__table__)
_CALL = MappedRow(CallSession)
_COLUMNS = frozenset(_CALL.keys)
_RELATIONSHIPS = frozenset(inspect(CallSession).relationships.keys())
_ACCOUNTS = cast(Table, Account.__table__)
_ACCOUNT_ID = len(_CALL.keys) + ACCOUNT_ROW.keys.index("id")  # in the loaded row

# Built once: a webhook's first statement is the call with its account (ctx.account then
# needs no second round trip). On PostgreSQL the row lock is the call's only: FOR UPDATE OF
# call_sessions, never the account's row.
_CALL_BY_SID = (select(*_CALL.columns, *ACCOUNT_ROW.columns)
                .select_from(_TABLE.outerjoin(_ACCOUNTS, _ACCOUNTS.c.id == _TABLE.c.account_id))
                .where(_TABLE.c.call_sid == bindparam("call_sid")))
_LOAD = DriverStatement(_CALL_BY_SID)
_LOAD_LOCKED = DriverStatement(_CALL_BY_SID.with_for_update(of=_TABLE))

# The call, as loaded (None: a new call), and its account, by the session that loaded it:
# save_call writes what differs. Held here as well because the session's identity map holds
# its objects only weakly: the account stays the session's for the webhook.
_LOADED = "ivr.call_loaded"

# The steps recorded in a session, written in one multi-row insert (an ORM object per step
# cost a flush each, a fifth of a webhook's time): by save_call, else when the session
# commits. Nothing reads a call's path back during the webhook that records it.
_PENDING = "ivr.call_events"
_EVENTS = cast(Table, CallEvent.__table__)
_INSERT_EVENTS = insert(_EVENTS)
_STEP_COLUMNS = tuple(c for c in _EVENTS.c if not c.primary_key)
# Inline: no RETURNING of the new ids, which nothing reads.
_ADD_STEPS = DriverStatement(insert(_EVENTS).values(
    {c.key: bindparam(c.key, type_=c.type) for c in _STEP_COLUMNS}).inline())


def queue_event(db: DbHandle, step: dict[str, object]) -> None:
    """Add one step of a call's path (a ``call_events`` row), written with the call."""
    db.info.setdefault(_PENDING, []).append(step)


def _take_events(db: DbHandle) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = db.info.pop(_PENDING, None) or []
    if rows:
        from ivr.metrics import observe_call_event

        for row in rows:
            observe_call_event(row["state"], row["event"], row["detail"])
    return rows


@sa_event.listens_for(Session, "before_commit")
def _write_events(db: DbHandle) -> None:
    if _LOADED in db.info:
        # A commit before the webhook's end (a payment made durable before its real-time
        # post): the call's row goes with it, as the unit of work wrote a tracked object.
        _write_call(db, db.info[_LOADED])
        return
    rows = _take_events(db)
    if rows:
        # On the session's connection: nothing here needs the ORM's statement handling.
        db.connection().execute(_INSERT_EVENTS, rows)


WebhookTransaction.before_commit.append(_write_events)


@sa_event.listens_for(Session, "after_soft_rollback")
def _forget_events(db: Session, previous: SessionTransaction) -> None:
    if not previous.nested:  # the whole transaction, not a savepoint inside it
        db.info.pop(_PENDING, None)
        db.info.pop(_LOADED, None)


# On PostgreSQL a webhook's steps arrive as one JSON parameter, read back into rows by
# jsonb_to_recordset: one statement for any number of steps, built and compiled once.
_STEPS = (func.jsonb_to_recordset(bindparam("steps_", type_=JSONB))
          .table_valued(*(column(c.key, c.type) for c in _STEP_COLUMNS))
          .render_derived(with_types=True))
_WITH_STEPS = (insert(_EVENTS)
               .from_select([c.key for c in _STEP_COLUMNS],
                            select(*(_STEPS.c[c.key] for c in _STEP_COLUMNS)))
               .cte("steps"))


def _values(columns: tuple[str, ...]) -> dict[str, Any]:
    # Parameters named after their columns with a trailing underscore (SQLAlchemy keeps the
    # plain names for itself), typed as their columns for the driver statement's conversions.
    return {name: bindparam(f"{name}_", type_=_TABLE.c[name].type) for name in columns}


@functools.lru_cache(maxsize=256)
def _update(columns: tuple[str, ...], steps: bool) -> DriverStatement:
    """The call's UPDATE of ``columns`` (``updated_at`` included), with its steps' INSERT as
    a WITH when ``steps``: built once per set of columns (a few dozen occur)."""
    stmt = (update(_TABLE).where(_TABLE.c.call_sid == bindparam("call_sid_"))
            .values(_values(columns)))
    if steps:
        # Only the call's progress, which a webhook that writes nothing else commits without
        # waiting for the disk (ivr.db): said here, as it begins with WITH.
        stmt = stmt.add_cte(_WITH_STEPS).execution_options(**{CALL_PROGRESS: True})
    return DriverStatement(stmt)


@functools.lru_cache(maxsize=16)
def _insert(columns: tuple[str, ...], steps: bool) -> DriverStatement:
    """A new call's INSERT of ``columns``, with its steps' INSERT as a WITH when ``steps``
    (the first webhook's two writes in one round trip)."""
    stmt = insert(_TABLE).values(_values(columns)).inline()
    if steps:
        stmt = stmt.add_cte(_WITH_STEPS).execution_options(**{CALL_PROGRESS: True})
    return DriverStatement(stmt)


# The columns' Python-side defaults (a value, or a function such as utcnow): the driver
# statements apply none of their own.
_DEFAULTS: dict[str, ColumnDefault] = {
    c.key: c.default for c in _TABLE.c
    if c.key in _COLUMNS and isinstance(c.default, ColumnDefault)}


def _default(default: ColumnDefault) -> Any:
    """A column default's value now (SQLAlchemy calls a function default with a context)."""
    return default.arg(None) if default.is_callable else default.arg


class _Call:
    """A call's columns as plain attributes, standing in for its ``CallSession``. A webhook
    reads and sets them dozens of times and no session tracks them (``save_call`` compares
    with what was loaded), so they skip the ORM's instrumented attributes."""


def _plain(values: dict[str, Any]) -> CallSession:
    call = _Call()
    call.__dict__.update(values)
    return cast(CallSession, call)


def load_call(db: DbHandle, call_sid: str,
              ahead: Sequence[ReadAhead] = ()) -> CallSession | None:
    """The call with its account, held until the transaction ends: one webhook per call at a
    time, so a repeated <Pay> callback waits for its twin. SQLite has no FOR UPDATE; there
    BEGIN IMMEDIATE (ivr.db) serialises every webhook.

    The call is not tracked by ``db``: ``save_call`` writes it. Its account is ``db``'s
    (its session's, on a webhook's transaction: ivr.db_webhook). ``ahead``: the reads the
    webhook's state will ask, sent with the load where that saves round trips (PostgreSQL,
    as the transaction's first statements, after the call's lock).
    """
    connection = db.connection()
    load = _LOAD_LOCKED if connection.dialect.name == "postgresql" else _LOAD
    params = {"call_sid": call_sid}
    read: list[list[tuple[Any, ...]]] | None = None
    try:
        # Usually the transaction's first statement: on PostgreSQL its BEGIN goes with it,
        # and the reads ahead after it.
        read = begin_with(connection, [(load, params), *((a.statement, a.params) for a in ahead)])
        row = load.first(connection, params) if read is None else next(iter(read[0]), None)
    except DBAPIError as exc:
        # The webhook's first statement met a connection the server or a proxy had dropped
        # (the pool no longer pings on checkout): nothing was done yet, so run it again on a
        # fresh connection; the pool has already discarded the dead one.
        if not exc.connection_invalidated:
            raise
        log.warning("database connection was dead; retrying on a new one")
        db.rollback()
        row = load.first(db.connection(), params)
    fields = len(_CALL.keys)
    loaded = None if row is None else dict(zip(_CALL.keys, row[:fields], strict=True))
    for one, rows in zip(ahead, read[1:] if read is not None else (), strict=False):
        keep_ahead(db, one, loaded, rows)
    if row is None or loaded is None:
        return None
    call = _plain(loaded)
    # The account's id is NULL when the call names none (a foreign key: never a stale one).
    account = ACCOUNT_ROW.held(db, row[fields:]) if row[_ACCOUNT_ID] is not None else None
    db.info[_LOADED] = (call, loaded, account)
    return call


def new_call(db: DbHandle, call_sid: str, form: dict[str, str], *, language: str,
             prompts_version: str, now: datetime) -> CallSession:
    """A call the line has not seen: its row is written with the first answer's state, by
    ``save_call``: one INSERT, not an INSERT and then an UPDATE."""
    values = dict.fromkeys(_CALL.keys)
    values.update((key, _default(default)) for key, default in _DEFAULTS.items())
    values.update(call_sid=call_sid, from_number=(form.get("From") or "")[:40],
                  to_number=(form.get("To") or "")[:40], language=language,
                  state="language", prompts_version=prompts_version[:16], started_at=now)
    call = _plain(values)
    db.info[_LOADED] = (call, None, None)
    return call


def save_call(db: DbHandle, call: CallSession, *, commit: bool = False,
              answer_first: bool = False) -> None:
    """Write what the webhook changed in the call's row, and the steps it recorded, in the
    webhook's transaction: a call from ``load_call`` or ``new_call`` of this session, once
    nothing will change it any more (a commit before then writes it too). With ``commit``,
    commit the transaction too: on PostgreSQL, when the write is all that is left (no ORM
    session to flush), the write and ``COMMIT`` go in one round trip. With ``answer_first``
    too, and a transaction that wrote nothing but the call's progress, that round trip's
    answer is left for the webhook's transaction to read once the caller has been answered
    (``WebhookTransaction.finish_commit``; docs/performance-log.md)."""
    loaded = db.info.pop(_LOADED, None)
    if loaded is None or loaded[0] is not call:
        raise ValueError("save_call: not the call this session loaded or started")
    _write_call(db, loaded, commit=commit, answer_first=answer_first)
    if commit:
        db.commit()  # after a COMMIT sent with the write, only the bookkeeping is left


def _write_call(db: DbHandle, loaded: tuple[CallSession, dict[str, Any] | None, Any],
                commit: bool = False, answer_first: bool = False) -> None:
    """Write the call's changes since ``loaded`` and the steps queued, in one statement on
    PostgreSQL; what is written becomes the call as loaded, for a later write. With
    ``commit``, the transaction's ``COMMIT`` goes with that statement on PostgreSQL when
    nothing else is left to write (the caller commits all the same)."""
    call, before, account = loaded
    values = call.__dict__
    if _RELATIONSHIPS & values.keys():
        # Only columns are written here: a relationship set on the call would be lost.
        raise ValueError("save_call: set the call's id columns, not its relationships")
    connection = db.connection()
    steps = _take_events(db)
    postgres = connection.dialect.name == "postgresql"
    if before is None:
        row = {key: values[key] for key in _CALL.keys}
    else:
        row = {key: values[key] for key in _CALL.keys if values[key] != before[key]}
        if row:
            values["updated_at"] = row["updated_at"] = utcnow()
    if _LOADED in db.info:
        db.info[_LOADED] = (call, {key: values.get(key) for key in _CALL.keys}, account)
    if not row:
        if steps:
            _ADD_STEPS.executemany(connection, steps)
        return
    write = (_insert if before is None else _update)(tuple(sorted(row)), postgres and bool(steps))
    params: dict[str, Any] = {f"{key}_": value for key, value in row.items()}
    params["call_sid_"] = call.call_sid
    if postgres and steps:
        # One round trip: the steps' INSERT rides along as a data-modifying WITH, which
        # PostgreSQL always runs to completion.
        params["steps_"] = [{**step, "at": step["at"].isoformat()} for step in steps]
    if postgres and commit and isinstance(db, WebhookTransaction) and db.alone:
        # And the COMMIT with it: a webhook's last round trip.
        unread = write.execute_committing(
            connection, params, commit_sql,
            read_later=answer_first and progress_only(connection))
        if unread is not None:
            db.read_commit_later(unread)
        return
    write.execute(connection, params)
    if steps and not postgres:
        _ADD_STEPS.executemany(connection, steps)
