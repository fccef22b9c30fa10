"""Prometheus metrics for /metrics: counters kept by each process, gauges read from the database.

Counters and histograms live in this process (or, when ``PROMETHEUS_MULTIPROC_DIR`` is set
before the app starts, in files there that every gunicorn worker writes and any worker sums
at scrape time). The gauges are queried from the database at each scrape, so they agree
whichever worker answers. No label ever carries a phone number, account or CallSid: labels
come from small fixed sets, and anything else is counted as "other".
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
)
from prometheus_client import generate_latest as _generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from sqlalchemy import event, func, select
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Mapper

from connectors.accounting.registry import SYSTEMS
from ivr.calls import guards
from ivr.calls.menu import ENDED, PAYING, Event
from ivr.calls.states import STATES
from ivr.db import Database
from ivr.models import (
    CallEvent,
    CallSession,
    GuardEvent,
    ImportRun,
    OutboxEntry,
    Payment,
    SyncRun,
)
from ivr.money.reconcile import day_bounds
from ivr.statuses import (
    CallOutcome,
    ImportStatus,
    OutboxStatus,
    PostingOutcome,
    SyncKind,
    SyncRunStatus,
)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

# The *_created series double the output and no dashboard here reads them.
disable_created_metrics()  # type: ignore[no-untyped-call]

PROCESS = CollectorRegistry(auto_describe=True)

WEBHOOKS = Counter("ivr_webhook_requests", "Twilio webhooks answered, by route and outcome.",
                   ["route", "outcome"], registry=PROCESS)
WEBHOOK_SECONDS = Histogram(
    "ivr_webhook_duration_seconds", "Time to answer a Twilio webhook (Twilio waits 15 s).",
    ["route"], registry=PROCESS,
    buckets=(0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 15.0))
CALL_EVENTS = Counter(
    "ivr_call_events", "Steps of calls by state and event: enter = the state was reached; "
    "ok, noinput, nomatch, repeat, agent, max_tries... = how a question was answered.",
    ["state", "event"], registry=PROCESS)
PAYMENT_RESULTS = Counter("ivr_payment_results", "<Pay> results by Twilio's Result.",
                          ["result"], registry=PROCESS)
GUARD_EVENTS = Counter(
    "ivr_guard_events", "What the abuse limits count and refuse: pay_declined (a failed <Pay> "
    "session), pay_blocked, account_miss, lookup_blocked, verify_locked.",
    ["kind"], registry=PROCESS)
POSTING_ATTEMPTS = Counter(
    "ivr_posting_attempts", "Tries at posting a payment to the accounting system.",
    ["system", "outcome"], registry=PROCESS)
CONNECTOR_SECONDS = Histogram(
    "ivr_connector_request_duration_seconds", "Time the accounting system took to answer.",
    ["system", "operation"], registry=PROCESS,
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 30.0))

_ROUTES = frozenset({"incoming", "step", "pay_result", "pay_fallback", "dial_done", "status"})
_WEBHOOK_OUTCOMES = frozenset({"ok", "error", "no_call_sid", "unknown_call", "deadline"})
# From the state registry and the machine's events: a new state or event is labelled at once.
_STATES = frozenset({*STATES, PAYING, ENDED})
_EVENTS = frozenset(str(e) for e in Event)
_PAY_RESULTS = frozenset({
    "success", "caller-hung-up", "too-many-failed-attempts", "payment-connector-error",
    "caller-interrupted-with-star", "validation-error", "internal-error"})
_POSTING_OUTCOMES = frozenset(PostingOutcome)
_SYSTEMS = frozenset(system.name for system in SYSTEMS)


def _known(value: str, allowed: frozenset[str]) -> str:
    return value if value in allowed else "other"


@functools.cache
def _child(metric: Any, *labels: str) -> Any:
    """``metric.labels(*labels)``, looked up once: every webhook counts a few, and the
    labels' check and lock cost more than the count. Label values come from the fixed
    sets above, so there are few."""
    return metric.labels(*labels)


def observe_webhook(route: str, outcome: str, seconds: float) -> None:
    """Count one answered webhook (``route`` like "step:verify" counts as "step")."""
    name = _known(route.split(":", 1)[0], _ROUTES)
    _child(WEBHOOKS, name, _known(outcome, _WEBHOOK_OUTCOMES)).inc()
    _child(WEBHOOK_SECONDS, name).observe(max(seconds, 0.0))


def observe_posting(system: str, outcome: str, seconds: float) -> None:
    """Count one posting attempt and how long the accounting system took."""
    name = _known(system, _SYSTEMS)
    _child(POSTING_ATTEMPTS, name, _known(outcome, _POSTING_OUTCOMES)).inc()
    _child(CONNECTOR_SECONDS, name, "post").observe(max(seconds, 0.0))


def observe_call_event(state: str, name: str, detail: str) -> None:
    """Count one recorded step of a call (and a payment result)."""
    _child(CALL_EVENTS, _known(state, _STATES), _known(name, _EVENTS)).inc()
    if name == Event.PAY_RESULT:
        PAYMENT_RESULTS.labels(_known(detail, _PAY_RESULTS)).inc()


@event.listens_for(CallEvent, "after_insert")
def _call_event_inserted(_mapper: Mapper[Any], _connection: Connection,
                         target: CallEvent) -> None:
    # Every step the machine records passes here, so the flow code needs no metric calls.
    observe_call_event(target.state, target.event, target.detail or "")


@event.listens_for(GuardEvent, "after_insert")
def _guard_event_inserted(_mapper: Mapper[Any], _connection: Connection,
                          target: GuardEvent) -> None:
    GUARD_EVENTS.labels(_known(target.kind, guards.KINDS)).inc()


class DatabaseCollector:
    """Gauges computed from the database at scrape time (the same answer from any worker)."""

    def __init__(self, database: Database, zone: ZoneInfo, now: datetime) -> None:
        self.database = database
        self.zone = zone
        self.now = now

    def collect(self) -> Iterator[Metric]:
        """Yield every gauge; a database that does not answer yields up = 0 only."""
        up = GaugeMetricFamily("ivr_metrics_database_up",
                               "1 when the database answered this scrape.")
        try:
            families = list(self._families())
        except Exception:
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families

    def _families(self) -> Iterator[Metric]:
        day_start, _ = day_bounds(self.now.astimezone(self.zone).date(), self.zone)
        with self.database.session() as db:
            outbox = GaugeMetricFamily("ivr_outbox_entries",
                                       "Payments in the outbox by status (dead = dead letters).",
                                       labels=["status"])
            counts = dict.fromkeys(
                (OutboxStatus.PENDING, OutboxStatus.POSTED, OutboxStatus.DEAD), 0)
            for entry_status, count in db.execute(
                    select(OutboxEntry.status, func.count()).group_by(OutboxEntry.status)):
                counts[entry_status] = int(count)
            for entry_status, count in sorted(counts.items()):
                outbox.add_metric([str(entry_status)], count)
            yield outbox

            oldest = db.scalar(select(func.min(Payment.paid_at))
                               .join(OutboxEntry, OutboxEntry.payment_id == Payment.id)
                               .where(OutboxEntry.status == OutboxStatus.PENDING))
            age = GaugeMetricFamily(
                "ivr_outbox_oldest_pending_age_seconds",
                "Seconds since the oldest payment still waiting to be posted was taken (0: none).")
            age.add_metric([], _age(oldest, self.now))
            yield age

            calls = GaugeMetricFamily(
                "ivr_calls_today", "Calls started today (line time zone) by outcome.",
                labels=["outcome"])
            for outcome, ended, count in db.execute(
                    select(CallSession.outcome, CallSession.ended_at.is_(None), func.count())
                    .where(CallSession.started_at >= day_start)
                    .group_by(CallSession.outcome, CallSession.ended_at.is_(None))):
                label = outcome or ("in_progress" if ended else "ended")
                calls.add_metric([_known(label, _CALL_OUTCOMES)], int(count))
            yield calls

            paid = GaugeMetricFamily("ivr_payments_today",
                                     "Payments taken today (line time zone) by method.",
                                     labels=["method"])
            cents = GaugeMetricFamily("ivr_payments_today_cents",
                                      "Sum of today's payments in cents, by method.",
                                      labels=["method"])
            for method, count, total in db.execute(
                    select(Payment.method, func.count(), func.sum(Payment.amount_cents))
                    .where(Payment.paid_at >= day_start).group_by(Payment.method)):
                label = _known(str(method), frozenset({"card", "ach"}))
                paid.add_metric([label], int(count))
                cents.add_metric([label], int(total or 0))
            yield paid
            yield cents

            runs = GaugeMetricFamily(
                "ivr_sync_last_run_timestamp_seconds",
                "Start of the latest file sync run by kind (pull, push) and status.",
                labels=["kind", "status"])
            for kind, status, started in db.execute(
                    select(SyncRun.kind, SyncRun.status, func.max(SyncRun.started_at))
                    .group_by(SyncRun.kind, SyncRun.status)):
                if started is not None:
                    runs.add_metric([_known(str(kind), frozenset(SyncKind)),
                                     _known(str(status), _RUN_STATUSES)],
                                    _aware(started).timestamp())
            yield runs

            recent = GaugeMetricFamily(
                "ivr_guard_events_last_hour",
                "Abuse-limit events in the last hour, by kind, from the database (all nodes).",
                labels=["kind"])
            for guard_kind, count in guards.counts_since(db, self.now - timedelta(hours=1)).items():
                recent.add_metric([guard_kind], count)
            yield recent

            imports = GaugeMetricFamily("ivr_import_runs_today",
                                        "Account file imports today by status.",
                                        labels=["status"])
            for import_status, count in db.execute(
                    select(ImportRun.status, func.count())
                    .where(ImportRun.started_at >= day_start).group_by(ImportRun.status)):
                imports.add_metric([_known(str(import_status), _RUN_STATUSES)], int(count))
            yield imports


# Calls without an outcome yet are counted as in progress, or ended when their state says so.
_CALL_OUTCOMES = frozenset({*CallOutcome, "in_progress", "ended"})
_RUN_STATUSES = frozenset({*SyncRunStatus, *ImportStatus})


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _age(then: datetime | None, now: datetime) -> float:
    if then is None:
        return 0.0
    return max((now - _aware(then)) / timedelta(seconds=1), 0.0)


class _ProcessCollector:
    """This process's counters, for a single-process server (no multiprocess directory)."""

    def collect(self) -> Iterator[Metric]:
        yield from PROCESS.collect()


class _UnsignedCollector:
    """Whether this node accepts webhooks without checking Twilio's signature."""

    def __init__(self, unsigned: bool) -> None:
        self.unsigned = unsigned

    def collect(self) -> Iterator[Metric]:
        gauge = GaugeMetricFamily(
            "ivr_unsigned_webhooks_accepted",
            "1 when IVR_ALLOW_UNSIGNED=1: this node accepts forged webhooks (demos only).")
        gauge.add_metric([], 1 if self.unsigned else 0)
        yield gauge


def generate(database: Database, zone: ZoneInfo, clock: Callable[[], datetime],
             unsigned: bool = False) -> tuple[bytes, str]:
    """The /metrics body and its content type."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_UnsignedCollector(unsigned))
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess

        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        registry.register(_ProcessCollector())
    registry.register(DatabaseCollector(database, zone, clock()))
    return _generate_latest(registry), CONTENT_TYPE_LATEST


def mark_worker_dead(pid: int) -> None:
    """gunicorn ``child_exit``: let the multiprocess files of a dead worker be merged."""
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


def clear_multiproc_dir() -> None:
    """gunicorn ``on_starting``: counters restart with the server, so old files go."""
    directory = os.environ.get(MULTIPROC_ENV)
    if not directory or not os.path.isdir(directory):
        return
    for name in os.listdir(directory):
        if name.endswith(".db"):
            os.remove(os.path.join(directory, name))
