"""Posting payments (and arrangements and reversals) to the accounting system: at once
within a budget, then by the worker.

Every payment is born with an outbox row in the same transaction; so is every payment
arrangement, which travels the same road (claims, retries, dead letters) but is recorded by
the connector's ``post_arrangement``, as a note that never changes a balance. The real-time
path tries to post it while the caller waits (bounded by IVR_POST_BUDGET_MS); whatever is
not acknowledged stays in the outbox, which `ivr worker` drains with exponential backoff and
jitter, dead-lettering refusals and payments out of attempts. Posters claim rows for a while
(claimed_by/claimed_until), so several workers can run at once; a crashed worker's claim
expires and another takes over. Connectors are idempotent by the payment's key, so a repeat
after a crash finds the earlier posting instead of making a second one; a row's first attempt
tells the connector so (``may_exist=False``), and it need not look for an earlier copy.

A worker process posts up to IVR_WORKER_CONCURRENCY rows at once (a thread pool, fewer where
the connector says it takes fewer), claiming rows and recording outcomes a batch per
transaction, and never holding a transaction open while it waits on the network.

A reversal (a bank return, a refund or a void: ivr/money/reversals.py) travels the same road
with its own key and the connector's ``post_reversal``; it becomes due only once its
payment's row is no longer pending, so no system hears of a reversal before its payment.
"""

from __future__ import annotations

import functools
import logging
import os
import queue
import random
import socket
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import (
    BindParameter,
    Select,
    Table,
    and_,
    bindparam,
    exists,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.orm import Session, aliased, joinedload

from connectors.accounting.base import (
    AccountingConnector,
    ConnectorError,
    PaymentPost,
    PermanentError,
    PostResult,
    RetryableError,
    ReversalPost,
)
from ivr.config import AppConfig
from ivr.db import Database
from ivr.db_driver import DriverStatement
from ivr.db_webhook import DbHandle, session_of
from ivr.metrics import observe_posting
from ivr.models import Arrangement, OutboxEntry, Payment, PostingAttempt, Reversal, utcnow
from ivr.money.posts import PAYMENT_FIELDS, Post, payment_post, post_for, subject_of
from ivr.statuses import (
    OutboxStatus,
    PostingOutcome,
    PostingStatus,
)

log = logging.getLogger(__name__)

REALTIME = "realtime"


def backoff_seconds(attempts: int, config: AppConfig, retry_after: float | None = None,
                    rng: Callable[[], float] = random.random) -> float:
    """Exponential backoff with full jitter, at least the system's Retry-After."""
    doublings = min(max(attempts - 1, 0), 30)
    ceiling = min(config.outbox_backoff_max_seconds,
                  config.outbox_backoff_seconds * (1 << doublings))
    # Half fixed, half random: spreads retries out without ever retrying at once.
    delay = ceiling / 2 + rng() * ceiling / 2
    if retry_after is not None:
        delay = max(delay, retry_after)
    return delay


@dataclass(frozen=True)
class Outcome:
    """What one attempt makes of its outbox row: the outcome, the row's new values and the
    posting status its payment, arrangement or reversal takes (None: unchanged)."""

    outcome: PostingOutcome
    values: dict[str, object]
    subject_status: PostingStatus | None


def decide(attempts: int, *, system: str, now: datetime, config: AppConfig,
           result: PostResult | None = None, error: ConnectorError | None = None,
           rng: Callable[[], float] = random.random) -> Outcome:
    """Posted, retry or dead, for a row tried ``attempts`` times before this attempt."""
    attempts += 1
    # The claim ends with every attempt.
    values: dict[str, object] = {"attempts": attempts, "system": system, "claimed_by": None,
                                 "claimed_until": None, "updated_at": now}
    if result is not None:
        values.update(status=OutboxStatus.POSTED, receipt_id=result.receipt_id[:200],
                      posted_at=now, last_error=None)
        return Outcome(PostingOutcome.POSTED, values, PostingStatus.POSTED)
    last_error = str(error)[:2000] if error else "unknown error"
    if isinstance(error, RetryableError) and attempts < config.outbox_max_attempts:
        values.update(last_error=last_error, next_attempt_at=now + timedelta(
            seconds=backoff_seconds(attempts, config, error.retry_after, rng)))
        return Outcome(PostingOutcome.RETRY, values, None)
    values.update(status=OutboxStatus.DEAD, last_error=last_error)
    return Outcome(PostingOutcome.DEAD, values, PostingStatus.DEAD)


def attempt(database: Database, connector: AccountingConnector, entry_id: int, *, poster: str,
            config: AppConfig, budget: float | None = None,
            clock: Callable[[], datetime] = utcnow) -> PostingOutcome:
    """Claim, post and record one outbox row. Returns the outcome (skipped: not claimed)."""
    claim_seconds = max(float(config.outbox_claim_seconds), (budget or 0) + 5)
    with database.session() as db:
        posts = claim_rows(db, [entry_id], poster, clock(), claim_seconds)
    if not posts:
        return PostingOutcome.SKIPPED
    return post_claimed(database, connector, entry_id, posts[entry_id], poster=poster,
                        config=config, budget=budget, clock=clock)


# Built once, with bound parameters: a worker claims and records a batch every few posts,
# and building these statements cost more than running them.
_IDS: BindParameter[int] = bindparam("ids", expanding=True)
_NOW: BindParameter[datetime] = bindparam("now")
# Every statement of a claim finds its rows by id alone: with the status test in SQL as
# well, SQLite searched the due index (status, ...) for a batch of ids and so read every
# pending row on each claim, a cost that grew with the backlog. Which rows are free is
# decided from the locked read instead.
_BEFORE_CLAIM = (select(OutboxEntry.id, OutboxEntry.status, OutboxEntry.attempts,
                        OutboxEntry.claimed_until).where(OutboxEntry.id.in_(_IDS)))
_TRIED = select(PostingAttempt.outbox_id).distinct().where(PostingAttempt.outbox_id.in_(_IDS))
_CLAIM = (update(OutboxEntry).where(OutboxEntry.id.in_(_IDS))
          .values(claimed_by=bindparam("poster"), claimed_until=bindparam("until"))
          .execution_options(synchronize_session=False))
_MINE = (OutboxEntry.id.in_(_IDS), OutboxEntry.claimed_by == bindparam("poster"),
         OutboxEntry.claimed_until == bindparam("until"))
# Most rows carry a payment: its post's fields come with the claimed row, by Core (loading
# each row and its payment as objects, and the joins of the two other kinds, was most of a
# claim's cost).
_CLAIMED = (select(OutboxEntry.id, OutboxEntry.payment_id, *PAYMENT_FIELDS)
            .outerjoin(Payment, Payment.id == OutboxEntry.payment_id).where(*_MINE))
# A row carrying an arrangement or a reversal (few) is loaded as objects, its subject in the
# same query.
_OTHER_SUBJECTS = (joinedload(OutboxEntry.arrangement),
                   joinedload(OutboxEntry.reversal).joinedload(Reversal.payment))
_CLAIMED_OTHERS = (select(OutboxEntry).where(OutboxEntry.id.in_(_IDS))
                   .options(*_OTHER_SUBJECTS).execution_options(populate_existing=True))


def claim_rows(db: DbHandle, ids: list[int], poster: str, now: datetime,
               seconds: float) -> dict[int, Post]:
    """Claim the given rows that nobody holds; return what to post for each one claimed.

    Each post says whether an earlier attempt may have reached the system: the row was
    tried before, or someone's claim on it expired (a poster died or stalled mid-post).
    """
    if not ids:
        return {}
    # Read before the claim overwrites it. Locked (PostgreSQL; SQLite's BEGIN IMMEDIATE
    # holds the database), so no other poster can claim or record these rows between this
    # read and the claim. Core statements on the transaction's connection: the ORM's
    # statement handling cost more than running them, and nothing here is pending a flush.
    connection = db.connection()
    before = (_BEFORE_CLAIM.with_for_update() if connection.dialect.name == "postgresql"
              else _BEFORE_CLAIM)
    free: list[int] = []
    fresh: set[int] = set()  # never tried, never claimed
    for row in connection.execute(before, {"ids": ids}):
        if row.status != OutboxStatus.PENDING:
            continue
        if row.claimed_until is None:
            free.append(row.id)
            if row.attempts == 0:
                fresh.add(row.id)
        elif row.claimed_until < now:  # its poster died or stalled mid-post
            free.append(row.id)
    if not free:
        return {}
    if fresh:
        # `ivr outbox retry` starts a dead row's count again; its attempts are on record.
        fresh -= set(connection.scalars(_TRIED, {"ids": list(fresh)}))
    until = now + timedelta(seconds=seconds)
    connection.execute(_CLAIM, {"ids": free, "poster": poster, "until": until})
    posts: dict[int, Post | None] = {}
    others: list[int] = []
    for row in connection.execute(_CLAIMED, {"ids": free, "poster": poster, "until": until}):
        if row.payment_id is None:
            others.append(row.id)
        else:
            posts[row.id] = replace(payment_post(row), may_exist=row.id not in fresh)
    if others:
        session = session_of(db)
        for entry in session.scalars(_CLAIMED_OTHERS, {"ids": others}):
            posts[entry.id] = post_for(session, entry, may_exist=entry.id not in fresh)
    return {entry_id: post for entry_id, post in posts.items() if post is not None}


def _send(connector: AccountingConnector, post: Post, budget: float | None) -> PostResult:
    """One call to the connector: a payment, an arrangement or a reversal."""
    if isinstance(post, PaymentPost):
        return connector.post_payment(post, timeout=budget)
    what = "reversal" if isinstance(post, ReversalPost) else "arrangement"
    send = getattr(connector, f"post_{what}", None)
    if send is None:
        # A connector written before these existed: a person must look at it.
        raise PermanentError(connector.name, f"this connector cannot record {what}s")
    result: PostResult = send(post, timeout=budget)
    return result


@dataclass(frozen=True)
class Sent:
    """What one call to the connector came back with, not yet recorded."""

    entry_id: int
    result: PostResult | None
    error: ConnectorError | None
    duration_ms: int


def send_post(connector: AccountingConnector, entry_id: int, post: Post,
              budget: float | None = None) -> Sent:
    """Post one claimed row; never raises (a connector bug is a retryable error)."""
    started = time.monotonic()
    result: PostResult | None = None
    error: ConnectorError | None = None
    try:
        result = _send(connector, post, budget)
    except ConnectorError as exc:
        error = exc
    except Exception as exc:  # a connector bug must not lose the payment: retry later
        log.exception("connector failed unexpectedly")
        error = RetryableError(connector.name, f"unexpected {type(exc).__name__}: {exc}")
    return Sent(entry_id, result, error, int((time.monotonic() - started) * 1000))


# The outbox row's subject columns, and the table each names.
_SUBJECT_TABLES: dict[str, Table] = {
    "payment_id": cast(Table, Payment.__table__),
    "arrangement_id": cast(Table, Arrangement.__table__),
    "reversal_id": cast(Table, Reversal.__table__),
}
_OUTBOX = cast(Table, OutboxEntry.__table__)
_TO_RECORD = select(_OUTBOX.c.id, _OUTBOX.c.status, _OUTBOX.c.claimed_by, _OUTBOX.c.attempts,
                    *(_OUTBOX.c[key] for key in _SUBJECT_TABLES)).where(_OUTBOX.c.id.in_(_IDS))
# Run on the driver, once per row (executemany): SQLAlchemy's execution of each cost more
# than the statement (docs/connectors.md, "Posting rate").
_SUBJECT_STATUS = {key: DriverStatement(update(table).where(table.c.id == bindparam("id_"))
                                        .values(posting_status=bindparam("status_")))
                   for key, table in _SUBJECT_TABLES.items()}
_ATTEMPTS = cast(Table, PostingAttempt.__table__)
_ADD_ATTEMPTS = DriverStatement(insert(_ATTEMPTS).values(
    {c.key: bindparam(c.key, type_=c.type) for c in _ATTEMPTS.c if not c.primary_key})
    .inline())


@functools.lru_cache(maxsize=16)
def _record_row(columns: tuple[str, ...]) -> DriverStatement:
    """An outbox row's UPDATE of ``columns`` (run for many rows at once); parameters are
    named after the columns with a trailing underscore (SQLAlchemy keeps the plain names)."""
    return DriverStatement(update(_OUTBOX).where(_OUTBOX.c.id == bindparam("id_"))
                           .values({name: bindparam(f"{name}_", type_=_OUTBOX.c[name].type)
                                    for name in columns}))


def record_sent(db: DbHandle, sent: list[Sent], *, poster: str, system: str, now: datetime,
                config: AppConfig) -> dict[int, PostingOutcome]:
    """Record several attempts in one transaction; rows no longer ours are SKIPPED.

    A few set-based statements for the whole batch (the rows' new values, their subjects'
    posting status, the attempts' log), not an ORM flush of each row: recording was most
    of a worker's own time per post (docs/connectors.md, "Posting rate").
    """
    if not sent:
        return {}
    ids = [s.entry_id for s in sent]
    connection = db.connection()
    rows = {row.id: row for row in connection.execute(_TO_RECORD, {"ids": ids})}
    outcomes: dict[int, PostingOutcome] = {}
    # Rows grouped by the columns they change, subjects by table (one executemany each).
    changes: dict[tuple[str, ...], list[dict[str, object]]] = {}
    subjects: dict[str, list[dict[str, object]]] = {}
    attempts: list[dict[str, object]] = []
    for one in sent:
        row = rows.get(one.entry_id)
        if row is None or row.status != OutboxStatus.PENDING or row.claimed_by != poster:
            # Our claim expired and another poster finished first; the connector's
            # idempotency made our duplicate harmless. Record nothing more.
            outcomes[one.entry_id] = PostingOutcome.SKIPPED
            continue
        decided = decide(row.attempts, system=system, now=now, config=config,
                         result=one.result, error=one.error)
        outcomes[one.entry_id] = decided.outcome
        changes.setdefault(tuple(sorted(decided.values)), []).append(
            {"id_": one.entry_id, **{f"{k}_": v for k, v in decided.values.items()}})
        if decided.subject_status is not None:
            key = next(key for key in _SUBJECT_TABLES if row._mapping[key] is not None)
            subjects.setdefault(key, []).append(
                {"id_": row._mapping[key], "status_": decided.subject_status})
        attempts.append({"outbox_id": one.entry_id, "at": now, "poster": poster,
                         "system": system, "outcome": decided.outcome,
                         "error": decided.values["last_error"],  # None when posted
                         "duration_ms": one.duration_ms})
    for columns, params in changes.items():
        _record_row(columns).executemany(connection, params)
    for key, params in subjects.items():
        _SUBJECT_STATUS[key].executemany(connection, params)
    _ADD_ATTEMPTS.executemany(connection, attempts)
    return outcomes


def _report(sent: Sent, outcome: PostingOutcome, poster: str, system: str) -> None:
    """Metrics and the log line for one recorded attempt (after its commit)."""
    if outcome == PostingOutcome.SKIPPED:
        return
    observe_posting(system, outcome, sent.duration_ms / 1000)
    log.info("posting attempt", extra={"fields": {
        "outbox_id": sent.entry_id, "poster": poster, "system": system, "outcome": outcome,
        "ms": sent.duration_ms, "error": str(sent.error)[:200] if sent.error else None}})


def post_claimed(database: Database, connector: AccountingConnector, entry_id: int,
                 post: Post, *, poster: str, config: AppConfig,
                 budget: float | None = None, clock: Callable[[], datetime] = utcnow
                 ) -> PostingOutcome:
    """Post a row this poster holds and record the outcome."""
    # The claim is committed; no database lock is held while we wait on the network.
    sent = send_post(connector, entry_id, post, budget)
    with database.session() as db:
        outcome = record_sent(db, [sent], poster=poster, system=connector.name, now=clock(),
                              config=config)[entry_id]
    _report(sent, outcome, poster, connector.name)
    return outcome


def post_now(database: Database, connector: AccountingConnector | None, payment_id: int,
             config: AppConfig, clock: Callable[[], datetime] = utcnow, *,
             arrangement: bool = False) -> bool:
    """The real-time try while the caller waits. True when the system acknowledged it.

    ``payment_id`` names a payment, or with ``arrangement`` an arrangement.
    """
    if connector is None:
        return False
    column = OutboxEntry.arrangement_id if arrangement else OutboxEntry.payment_id
    with database.session() as db:
        entry_id = db.scalar(select(OutboxEntry.id).where(column == payment_id))
    if entry_id is None:
        return False
    budget = config.post_budget_ms / 1000
    outcome = attempt(database, connector, entry_id, poster=REALTIME, config=config,
                      budget=budget, clock=clock)
    return outcome == PostingOutcome.POSTED


def _due() -> Select[Any]:
    payment_row = aliased(OutboxEntry)
    payment_pending = exists().where(
        Reversal.id == OutboxEntry.reversal_id,
        and_(payment_row.payment_id == Reversal.payment_id,
             payment_row.status == OutboxStatus.PENDING))
    return (select(OutboxEntry.id)
            .where(OutboxEntry.status == OutboxStatus.PENDING, OutboxEntry.next_attempt_at <= _NOW,
                   or_(OutboxEntry.claimed_until.is_(None), OutboxEntry.claimed_until < _NOW),
                   or_(OutboxEntry.reversal_id.is_(None), ~payment_pending))
            .order_by(OutboxEntry.next_attempt_at, OutboxEntry.id)
            .limit(bindparam("limit")))


_DUE = _due()
# On PostgreSQL workers skip rows another worker is claiming right now instead of queueing.
_DUE_SKIP_LOCKED = _DUE.with_for_update(skip_locked=True)


def due_entries(db: DbHandle, now: datetime, limit: int) -> list[int]:
    """Ids of pending rows whose time has come and that nobody holds (a reversal's only
    once its payment's row is no longer pending)."""
    connection = db.connection()
    stmt = _DUE_SKIP_LOCKED if connection.dialect.name == "postgresql" else _DUE
    return list(connection.scalars(stmt, {"now": now, "limit": limit}))


@dataclass
class DrainStats:
    """What one drain pass did."""

    posted: int = 0
    retried: int = 0
    dead: int = 0
    skipped: int = 0

    def add(self, outcome: PostingOutcome) -> None:
        """Count one outcome."""
        if outcome == PostingOutcome.POSTED:
            self.posted += 1
        elif outcome == PostingOutcome.RETRY:
            self.retried += 1
        elif outcome == PostingOutcome.DEAD:
            self.dead += 1
        else:
            self.skipped += 1


def worker_id() -> str:
    """A name for this worker process in claims and attempt records."""
    return f"worker:{socket.gethostname()}:{os.getpid()}"


# Worst case for one post: the connectors' connect plus read timeouts, with room to spare.
POST_WORST_CASE_SECONDS = 12.0


def pool_size(connector: AccountingConnector, config: AppConfig) -> int:
    """Posts in flight at once: IVR_WORKER_CONCURRENCY, or fewer if the connector says so."""
    limit = getattr(connector, "max_concurrency", None)
    size = max(1, config.worker_concurrency)
    return min(size, limit) if isinstance(limit, int) and limit >= 1 else size


def drain_once(database: Database, connector: AccountingConnector, config: AppConfig, *,
               poster: str, clock: Callable[[], datetime] = utcnow,
               should_stop: Callable[[], bool] = lambda: False) -> DrainStats:
    """Post every due row once, a pool of posts in flight, claims and outcomes in batches.

    A worker holds no more rows than its pool can surely post before their claims expire
    (each thread one worst-case post after another), so a live worker never loses rows to
    another; one transaction records the posts that came back and claims the next rows.
    """
    threads = pool_size(connector, config)
    per_thread = max(1, int(config.outbox_claim_seconds // POST_WORST_CASE_SECONDS))
    capacity = threads * per_thread
    stats = DrainStats()
    # Posts come back through a queue: one hand-over per post, where waiting on the set of
    # futures in flight registered a waiter with every one of them for each post.
    finished: queue.SimpleQueue[Future[Sent]] = queue.SimpleQueue()
    in_flight = 0
    back: list[Sent] = []
    exhausted = False

    def collect(block: bool) -> bool:
        nonlocal in_flight
        try:
            future = finished.get(block=block)
        except queue.Empty:
            return False
        in_flight -= 1
        back.append(future.result())
        return True

    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="ivr-post") as pool:
        while True:
            exhausted = exhausted or should_stop()
            # Claim more once the pool is about to run dry (no rows queued behind the posts
            # in flight).
            need = 0 if exhausted or in_flight > threads else capacity - in_flight
            if back or need:
                # A connection's transaction; an ORM session only for a row that needs one
                # (an arrangement's or a reversal's): the session's own bookkeeping cost as
                # much as a claim's statements.
                with database.webhook() as db:
                    now = clock()
                    outcomes = record_sent(db, back, poster=poster, system=connector.name,
                                           now=now, config=config) if back else {}
                    posts = claim_rows(db, due_entries(db, now, need), poster, now,
                                       float(config.outbox_claim_seconds)) if need else {}
                    if need and not posts:
                        exhausted = True
                        # Due rows left that another worker took meanwhile: say so.
                        if not in_flight and due_entries(db, now, 1):
                            stats.skipped += 1
                for one in back:
                    stats.add(outcomes[one.entry_id])
                    _report(one, outcomes[one.entry_id], poster, connector.name)
                back = []
                for entry_id, post in posts.items():
                    pool.submit(send_post, connector, entry_id, post).add_done_callback(
                        finished.put)
                    in_flight += 1
            if not in_flight:
                return stats
            collect(block=True)
            # Record in batches: while the pool is busy and has rows queued, wait for two
            # posts per thread (each transaction's own cost is most of a worker's work per
            # post when posts come back one at a time).
            while in_flight > threads and len(back) < 2 * threads:
                collect(block=True)
            while collect(block=False):
                pass


def run_worker(database: Database, connector: AccountingConnector, config: AppConfig, *,
               once: bool = False, idle_sleep: float = 1.0,
               should_stop: Callable[[], bool] = lambda: False) -> DrainStats:
    """Drain the outbox until stopped (or one pass with ``once``)."""
    poster = worker_id()
    total = DrainStats()
    log.info("worker started", extra={"fields": {"poster": poster, "system": connector.name}})
    while not should_stop():
        stats = drain_once(database, connector, config, poster=poster,
                           should_stop=should_stop)
        for name in ("posted", "retried", "dead", "skipped"):
            setattr(total, name, getattr(total, name) + getattr(stats, name))
        if once:
            break
        if stats.posted + stats.retried + stats.dead == 0:
            time.sleep(idle_sleep)
    return total


def retry_dead(db: Session, outbox_id: int, now: datetime) -> bool:
    """Put a dead-lettered row (payment or arrangement) back in the queue, after a person
    fixed the cause."""
    entry = db.get(OutboxEntry, outbox_id)
    if entry is None or entry.status != OutboxStatus.DEAD:
        return False
    entry.status = OutboxStatus.PENDING
    entry.attempts = 0
    entry.next_attempt_at = now
    entry.claimed_by = None
    entry.claimed_until = None
    subject = subject_of(entry)
    if subject is not None:
        subject.posting_status = PostingStatus.QUEUED
    return True
