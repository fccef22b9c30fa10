"""Posting payments (and arrangements) to the accounting system: at once within a budget,
then by the worker.

Every payment is born with an outbox row in the same transaction; so is every payment
arrangement, which travels the same road (claims, retries, dead letters) but is recorded by
the connector's ``post_arrangement``, as a note that never changes a balance. The real-time
path tries to post it while the caller waits (bounded by IVR_POST_BUDGET_MS); whatever is
not acknowledged stays in the outbox, which `ivr worker` drains with exponential backoff and
jitter, dead-lettering refusals and payments out of attempts. Posters claim rows for a while
(claimed_by/claimed_until), so several workers can run at once; a crashed worker's claim
expires and another takes over. Connectors are idempotent by the payment's key, so a repeat
after a crash finds the earlier posting instead of making a second one.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from connectors.accounting.base import (
    AccountingConnector,
    ArrangementPost,
    ConnectorError,
    PaymentPost,
    PermanentError,
    PostResult,
    RetryableError,
)
from connectors.amounts import cents_to_decimal
from ivr.config import AppConfig
from ivr.db import Database
from ivr.metrics import observe_posting
from ivr.models import Arrangement, OutboxEntry, Payment, PostingAttempt, utcnow
from ivr.statuses import ArrangementKind, OutboxStatus, PostingOutcome, PostingStatus

log = logging.getLogger(__name__)

REALTIME = "realtime"

# What one outbox row asks a connector to record.
Post = PaymentPost | ArrangementPost


def payment_post(payment: Payment) -> PaymentPost:
    """What we tell the accounting system about a payment (masked data only)."""
    return PaymentPost(
        idempotency_key=payment.idempotency_key,
        account_number=payment.account_number,
        amount=cents_to_decimal(payment.amount_cents),
        fee=cents_to_decimal(payment.fee_cents),
        currency=payment.currency,
        paid_at=payment.paid_at,
        confirmation_number=payment.confirmation_code,
        method=payment.method,
        last4=payment.card_last4 or payment.bank_last,
        card_brand=payment.card_brand,
    )


def arrangement_post(db: Session, arrangement: Arrangement) -> ArrangementPost:
    """What we tell the accounting system about an arrangement: its terms, no card data."""
    down = db.get(Payment, arrangement.down_payment_id) if arrangement.down_payment_id else None
    return ArrangementPost(
        idempotency_key=arrangement.idempotency_key,
        account_number=arrangement.account_number,
        confirmation_number=arrangement.confirmation_code,
        kind=("extension" if arrangement.kind == ArrangementKind.EXTENSION else "instalments"),
        balance=cents_to_decimal(arrangement.balance_cents),
        down_payment=cents_to_decimal(arrangement.down_payment_cents),
        down_payment_confirmation=down.confirmation_code if down is not None else None,
        instalments=tuple((i.due_date, cents_to_decimal(i.amount_cents))
                          for i in arrangement.instalments),
        created_at=arrangement.created_at,
        status=str(arrangement.status),
        currency=down.currency if down is not None else "USD",
    )


def _post_for(db: Session, entry: OutboxEntry) -> Post | None:
    """What to post for a row: its payment or its arrangement."""
    if entry.payment is not None:
        return payment_post(entry.payment)
    if entry.arrangement is not None:
        return arrangement_post(db, entry.arrangement)
    return None


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


def record_outcome(db: Session, entry: OutboxEntry, subject: Payment | Arrangement, *,
                   poster: str, system: str, now: datetime, duration_ms: int,
                   config: AppConfig, result: PostResult | None = None,
                   error: ConnectorError | None = None,
                   rng: Callable[[], float] = random.random) -> PostingOutcome:
    """Store what one attempt achieved: posted, retry or dead.

    ``subject`` is the row's payment or arrangement: its posting_status follows the row.
    """
    entry.attempts += 1
    entry.system = system
    entry.claimed_by = None
    entry.claimed_until = None
    if result is not None:
        outcome = PostingOutcome.POSTED
        entry.status = OutboxStatus.POSTED
        entry.receipt_id = result.receipt_id[:200]
        entry.posted_at = now
        entry.last_error = None
        subject.posting_status = PostingStatus.POSTED
    elif isinstance(error, RetryableError) and entry.attempts < config.outbox_max_attempts:
        outcome = PostingOutcome.RETRY
        entry.last_error = str(error)[:2000]
        entry.next_attempt_at = now + timedelta(
            seconds=backoff_seconds(entry.attempts, config, error.retry_after, rng))
    else:
        outcome = PostingOutcome.DEAD
        entry.status = OutboxStatus.DEAD
        entry.last_error = str(error)[:2000] if error else "unknown error"
        subject.posting_status = PostingStatus.DEAD
    db.add(PostingAttempt(outbox_id=entry.id, at=now, poster=poster, system=system,
                          outcome=outcome,
                          error=entry.last_error if outcome != PostingOutcome.POSTED else None,
                          duration_ms=duration_ms))
    return outcome


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


def claim_rows(db: Session, ids: list[int], poster: str, now: datetime,
               seconds: float) -> dict[int, Post]:
    """Claim the given rows that nobody holds; return what to post for each one claimed."""
    if not ids:
        return {}
    until = now + timedelta(seconds=seconds)
    db.execute(
        update(OutboxEntry)
        .where(OutboxEntry.id.in_(ids), OutboxEntry.status == OutboxStatus.PENDING,
               or_(OutboxEntry.claimed_until.is_(None), OutboxEntry.claimed_until < now))
        .values(claimed_by=poster, claimed_until=until)
        .execution_options(synchronize_session=False)
    )
    claimed = db.scalars(select(OutboxEntry).where(
        OutboxEntry.id.in_(ids), OutboxEntry.claimed_by == poster,
        OutboxEntry.claimed_until == until).execution_options(populate_existing=True))
    posts = {entry.id: _post_for(db, entry) for entry in claimed}
    return {entry_id: post for entry_id, post in posts.items() if post is not None}


def _send(connector: AccountingConnector, post: Post, budget: float | None) -> PostResult:
    """One call to the connector: a payment or an arrangement."""
    if isinstance(post, PaymentPost):
        return connector.post_payment(post, timeout=budget)
    send = getattr(connector, "post_arrangement", None)
    if send is None:
        # A connector written before arrangements existed: a person must look at it.
        raise PermanentError(connector.name, "this connector cannot record arrangements")
    result: PostResult = send(post, timeout=budget)
    return result


def post_claimed(database: Database, connector: AccountingConnector, entry_id: int,
                 post: Post, *, poster: str, config: AppConfig,
                 budget: float | None = None, clock: Callable[[], datetime] = utcnow
                 ) -> PostingOutcome:
    """Post a row this poster holds and record the outcome."""
    # The claim is committed; no database lock is held while we wait on the network.
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
    duration_ms = int((time.monotonic() - started) * 1000)
    with database.session() as db:
        entry = db.get(OutboxEntry, entry_id)
        assert entry is not None  # noqa: S101
        if entry.status != OutboxStatus.PENDING or entry.claimed_by != poster:
            # Our claim expired and another poster finished first; the connector's
            # idempotency made our duplicate harmless. Record nothing more.
            return PostingOutcome.SKIPPED
        subject = entry.payment or entry.arrangement
        assert subject is not None  # noqa: S101 - the check constraint: exactly one is set
        outcome = record_outcome(db, entry, subject, poster=poster, system=connector.name,
                                 now=clock(), duration_ms=duration_ms, config=config,
                                 result=result, error=error)
    observe_posting(connector.name, outcome, duration_ms / 1000)
    log.info("posting attempt", extra={"fields": {
        "outbox_id": entry_id, "poster": poster, "system": connector.name, "outcome": outcome,
        "ms": duration_ms, "error": str(error)[:200] if error else None}})
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


def due_entries(db: Session, now: datetime, limit: int) -> list[int]:
    """Ids of pending rows whose time has come and that nobody holds."""
    stmt = (select(OutboxEntry.id)
            .where(OutboxEntry.status == OutboxStatus.PENDING, OutboxEntry.next_attempt_at <= now,
                   or_(OutboxEntry.claimed_until.is_(None), OutboxEntry.claimed_until < now))
            .order_by(OutboxEntry.next_attempt_at, OutboxEntry.id)
            .limit(limit))
    if db.get_bind().dialect.name == "postgresql":
        # Workers skip rows another worker is claiming right now instead of queueing on them.
        stmt = stmt.with_for_update(skip_locked=True)
    return list(db.scalars(stmt))


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


def drain_once(database: Database, connector: AccountingConnector, config: AppConfig, *,
               poster: str, clock: Callable[[], datetime] = utcnow) -> DrainStats:
    """Post every due row once, claiming a few rows per transaction.

    A claim covers as many rows as can surely be posted before it expires, so a live worker
    never loses rows to another; claiming them together saves a commit per payment.
    """
    batch = max(1, int(config.outbox_claim_seconds // POST_WORST_CASE_SECONDS))
    stats = DrainStats()
    while True:
        with database.session() as db:
            now = clock()
            posts = claim_rows(db, due_entries(db, now, batch), poster, now,
                               float(config.outbox_claim_seconds))
        if not posts:
            # Nothing due, or every due row was taken by another worker meanwhile.
            with database.session() as db:
                if not due_entries(db, clock(), 1):
                    return stats
            stats.skipped += 1
            return stats
        for entry_id, post in posts.items():
            stats.add(post_claimed(database, connector, entry_id, post, poster=poster,
                                   config=config, clock=clock))


def run_worker(database: Database, connector: AccountingConnector, config: AppConfig, *,
               once: bool = False, idle_sleep: float = 1.0,
               should_stop: Callable[[], bool] = lambda: False) -> DrainStats:
    """Drain the outbox until stopped (or one pass with ``once``)."""
    poster = worker_id()
    total = DrainStats()
    log.info("worker started", extra={"fields": {"poster": poster, "system": connector.name}})
    while not should_stop():
        stats = drain_once(database, connector, config, poster=poster)
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
    subject = entry.payment or entry.arrangement
    if subject is not None:
        subject.posting_status = PostingStatus.QUEUED
    return True
