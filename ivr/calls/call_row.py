"""A call's rows for its webhooks: its ``call_sessions`` row (loaded locked, started,
written back) and the steps of its path in ``call_events``.

Every webhook reads its call and writes it back, so this is the line's hottest database
work. The row is written with one Core statement of the columns that changed, rather than
through the unit of work, whose flush of a single row cost more Python than the rest of the
webhook's database work together; on PostgreSQL the steps go in the same statement, a round
trip fewer (docs/scaling.md).
"""

from __future__ import annotations

import functools
import logging
from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    ColumnDefault,
    Insert,
    Table,
    Update,
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
from sqlalchemy.orm import Session, SessionTransaction, joinedload

from ivr.db import CALL_PROGRESS
from ivr.models import CallEvent, CallSession, utcnow

log = logging.getLogger(__name__)

# Built once: a webhook's first statement costs no statement building, and the call's
# account comes with it (ctx.account then needs no second round trip). On PostgreSQL the
# row lock is the call's only: FOR UPDATE OF call_sessions, never the account's row.
_CALL_BY_SID = (select(CallSession).where(CallSession.call_sid == bindparam("call_sid"))
                .options(joinedload(CallSession.account)))
_CALL_BY_SID_LOCKED = _CALL_BY_SID.with_for_update(of=CallSession)

_TABLE = cast(Table, CallSession.__table__)
_MAPPER = inspect(CallSession)
# The mapped attributes, and those that are plain columns (attribute name = column name).
_ATTRIBUTES = frozenset(_MAPPER.attrs.keys())
_COLUMNS = frozenset(attr.key for attr in _MAPPER.column_attrs)
assert set(_TABLE.c.keys()) >= _COLUMNS  # noqa: S101 - a model change must not slip past
_INSERT = insert(_TABLE)
# The SET list is the parameters given (the changed columns); `updated_at` is stamped by its
# column's onupdate.
_UPDATE = update(_TABLE).where(_TABLE.c.call_sid == bindparam("call_sid_"))

# The steps recorded in a session, written in one multi-row insert (an ORM object per step
# cost a flush each, a fifth of a webhook's time): by save_call, else when the session
# commits. Nothing reads a call's path back during the webhook that records it.
_PENDING = "ivr.call_events"
_EVENTS = cast(Table, CallEvent.__table__)
_INSERT_EVENTS = insert(_EVENTS)


def queue_event(db: Session, step: dict[str, object]) -> None:
    """Add one step of a call's path (a ``call_events`` row), written with the call."""
    db.info.setdefault(_PENDING, []).append(step)


def _take_events(db: Session) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = db.info.pop(_PENDING, None) or []
    if rows:
        from ivr.metrics import observe_call_event

        for row in rows:
            observe_call_event(row["state"], row["event"], row["detail"])
    return rows


@sa_event.listens_for(Session, "before_commit")
def _write_events(db: Session) -> None:
    rows = _take_events(db)
    if rows:
        # On the session's connection: nothing here needs the ORM's statement handling.
        db.connection().execute(_INSERT_EVENTS, rows)


@sa_event.listens_for(Session, "after_soft_rollback")
def _forget_events(db: Session, previous: SessionTransaction) -> None:
    if not previous.nested:  # the whole transaction, not a savepoint inside it
        db.info.pop(_PENDING, None)


# On PostgreSQL a webhook's steps arrive as one JSON parameter, read back into rows by
# jsonb_to_recordset: one statement for any number of steps, built and compiled once.
_STEP_COLUMNS = tuple(c for c in _EVENTS.c if not c.primary_key)
_STEPS = (func.jsonb_to_recordset(bindparam("steps_", type_=JSONB))
          .table_valued(*(column(c.key, c.type) for c in _STEP_COLUMNS))
          .render_derived(with_types=True))
_WITH_STEPS = (insert(_EVENTS)
               .from_select([c.key for c in _STEP_COLUMNS],
                            select(*(_STEPS.c[c.key] for c in _STEP_COLUMNS)))
               .cte("steps"))


@functools.lru_cache(maxsize=256)
def _update_with_steps(columns: tuple[str, ...]) -> Update:
    """The call's UPDATE of ``columns`` with its steps' INSERT as a WITH, built once per
    set of columns (a few dozen occur): built for each webhook, the statement cost more
    than the round trip it saves."""
    values: dict[str, Any] = {name: bindparam(f"{name}_") for name in (*columns, "updated_at")}
    return (update(_TABLE).where(_TABLE.c.call_sid == bindparam("call_sid_"))
            .values(values).add_cte(_WITH_STEPS)
            # Only the call's progress, which a webhook that writes nothing else commits
            # without waiting for the disk (ivr.db): said here, as it begins with WITH.
            .execution_options(**{CALL_PROGRESS: True}))


# The columns' Python-side defaults (a value, or a function such as utcnow).
_DEFAULTS: dict[str, ColumnDefault] = {
    c.key: c.default for c in _TABLE.c
    if c.key in _COLUMNS and isinstance(c.default, ColumnDefault)}


def _default(default: ColumnDefault) -> Any:
    """A column default's value now (SQLAlchemy calls a function default with a context)."""
    return default.arg(None) if default.is_callable else default.arg


@functools.lru_cache(maxsize=16)
def _insert_with_steps(columns: tuple[str, ...]) -> Insert:
    """A new call's INSERT of ``columns`` with its steps' INSERT as a WITH (the first
    webhook's two writes in one round trip); columns not given take their defaults."""
    values: dict[str, Any] = {name: bindparam(f"{name}_") for name in columns}
    return (insert(_TABLE).values(values).add_cte(_WITH_STEPS)
            .execution_options(**{CALL_PROGRESS: True}))


def load_call(db: Session, call_sid: str) -> CallSession | None:
    """The call with its account, held until the transaction ends: one webhook per call at a
    time, so a repeated <Pay> callback waits for its twin. SQLite has no FOR UPDATE; there
    BEGIN IMMEDIATE (ivr.db) serialises every webhook."""
    locked = db.get_bind().dialect.name == "postgresql"
    stmt = _CALL_BY_SID_LOCKED if locked else _CALL_BY_SID
    params = {"call_sid": call_sid}
    try:
        return db.scalar(stmt, params)
    except DBAPIError as exc:
        # The webhook's first statement met a connection the server or a proxy had dropped
        # (the pool no longer pings on checkout): nothing was done yet, so run it again on a
        # fresh connection; the pool has already discarded the dead one.
        if not exc.connection_invalidated:
            raise
        log.warning("database connection was dead; retrying on a new one")
        db.rollback()
        return db.scalar(stmt, params)


def new_call(db: Session, call_sid: str, form: dict[str, str], *, language: str,
             prompts_version: str, now: datetime) -> CallSession:
    """A call the line has not seen: its row is written with the first answer's state, by
    ``save_call`` (or by the first query that needs it): one INSERT, not an INSERT and then
    an UPDATE."""
    call = CallSession(
        call_sid=call_sid, from_number=(form.get("From") or "")[:40],
        to_number=(form.get("To") or "")[:40], language=language,
        state="language", prompts_version=prompts_version[:16], started_at=now,
    )
    db.add(call)
    return call


def save_call(db: Session, call: CallSession) -> None:
    """Write what the webhook changed in the call's row, and the steps it recorded, in the
    webhook's transaction.

    Afterwards the call is no longer tracked by ``db`` (its commit must not write it again):
    call this last, once nothing will change the call. A change the ORM must write itself
    (a relationship assigned, say) is left to its flush at commit.
    """
    state = inspect(call)
    if state.session is not db or state.deleted:
        return
    changed = _ATTRIBUTES - state.unmodified
    if not changed <= _COLUMNS:
        return
    values: dict[str, Any] = state.dict
    connection = db.connection()
    steps = _take_events(db)
    row = ({key: values[key] for key in _COLUMNS if key in values} if state.pending
           else {key: values[key] for key in changed})
    if connection.dialect.name == "postgresql" and steps and row:
        # One round trip: the steps' INSERT rides along as a data-modifying WITH, which
        # PostgreSQL always runs to completion.
        params: dict[str, Any] = {
            "steps_": [{**step, "at": step["at"].isoformat()} for step in steps]}
        params.update((f"{key}_", value) for key, value in row.items())
        if state.pending:
            # Nor any column default to an INSERT with a WITH: the defaults are given here.
            params.update((f"{key}_", _default(default)) for key, default in _DEFAULTS.items()
                          if key not in row)
            connection.execute(_insert_with_steps(tuple(sorted(row.keys() | _DEFAULTS))),
                               params)
        else:
            # SQLAlchemy applies no onupdate to an UPDATE with a WITH: the stamp is set here.
            params.update(call_sid_=call.call_sid, updated_at_=utcnow())
            connection.execute(_update_with_steps(tuple(sorted(row))), params)
    else:
        if state.pending:
            connection.execute(_INSERT, row)
        elif row:
            connection.execute(_UPDATE, {"call_sid_": call.call_sid, **row})
        if steps:
            connection.execute(_INSERT_EVENTS, steps)
    db.expunge(call)
