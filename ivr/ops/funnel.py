"""Where callers get stuck: queries over call sessions and their recorded steps.

Every function takes a session and a Period (calls that started in [start, end), optionally
in one language) and returns plain data for the pages. Only states, events and outcomes are
read: call events never hold the keys a caller typed.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Select, distinct, func, select
from sqlalchemy.orm import Session

from ivr.calls.menu import Event
from ivr.calls.states import PAYING, STATES
from ivr.models import CallEvent, CallSession, Payment
from ivr.ops.prompt_usage import STATE_QUESTIONS
from ivr.statuses import CallOutcome

# Menu states in the order a paying caller meets them, with <Pay> before the receipt.
FUNNEL_STATES: tuple[str, ...] = tuple(
    name for state in STATES for name in ((PAYING, state) if state == "receipt" else (state,)))
# Every way a question can be answered (each one is a "response" to it).
RESPONSES = frozenset({Event.OK, Event.DEFAULT, Event.NOINPUT, Event.NOMATCH, Event.REPEAT,
                       Event.AGENT, Event.MORE_TIME})
HUNG_UP = frozenset({CallOutcome.HUNG_UP, CallOutcome.HUNG_UP_IN_PAY})
TIME_TO_PAY_BUCKETS: tuple[tuple[str, int | None], ...] = (
    ("under 1 min", 60), ("1-2 min", 120), ("2-3 min", 180), ("3-5 min", 300),
    ("5-10 min", 600), ("10 min or more", None))


@dataclass(frozen=True)
class Period:
    """Calls that started in [start, end), in ``language`` when set."""

    start: datetime
    end: datetime
    language: str | None = None


def _calls(period: Period) -> Select[Any]:
    stmt = select(CallSession.call_sid).where(CallSession.started_at >= period.start,
                                              CallSession.started_at < period.end)
    if period.language:
        stmt = stmt.where(CallSession.language == period.language)
    return stmt


@dataclass
class StateRow:
    """One state's line in the funnel: distinct calls, except noinput/nomatch (events)."""

    state: str
    reached: int = 0
    passed: int = 0
    noinput: int = 0
    nomatch: int = 0
    hung_up: int = 0
    transferred: int = 0
    responses: int = 0

    def rate(self, count: int) -> float:
        """``count`` as a share of the calls that reached the state."""
        return count / self.reached if self.reached else 0.0


def state_funnel(db: Session, period: Period) -> list[StateRow]:
    """Per state: calls that reached it, answered it, fell silent, typed a wrong key, hung up
    there, or were transferred from it."""
    rows = {name: StateRow(name) for name in FUNNEL_STATES}
    calls = _calls(period).subquery()
    counted = db.execute(
        select(CallEvent.state, CallEvent.event, func.count(),
               func.count(distinct(CallEvent.call_sid)))
        .where(CallEvent.call_sid.in_(select(calls.c.call_sid)))
        .group_by(CallEvent.state, CallEvent.event))
    for state, event, events, distinct_calls in counted:
        row = rows.get(state)
        if row is None:
            continue
        if event in (Event.ENTER, Event.PAY_START):
            row.reached = int(distinct_calls)
        elif event in (Event.OK, Event.DEFAULT):
            row.passed += int(distinct_calls)
        elif event == Event.NOINPUT:
            row.noinput = int(events)
        elif event == Event.NOMATCH:
            row.nomatch = int(events)
        elif event == Event.TRANSFER:
            row.transferred = int(distinct_calls)
        if event in RESPONSES:
            row.responses += int(events)
    # Passing a state: a valid answer (ok/default; counted once per call though both occur
    # in the language state rarely) or, for <Pay>, a successful payment.
    ends = db.execute(
        select(CallEvent.state, CallEvent.event, CallEvent.detail, func.count())
        .where(CallEvent.call_sid.in_(select(calls.c.call_sid)),
               CallEvent.event.in_((Event.CALL_END, Event.PAY_RESULT)))
        .group_by(CallEvent.state, CallEvent.event, CallEvent.detail))
    for state, event, detail, count in ends:
        row = rows.get(state)
        if row is None:
            continue
        if event == Event.CALL_END and str(detail).partition(":")[2] in HUNG_UP:
            row.hung_up += int(count)
        elif event == Event.PAY_RESULT and detail == "success":
            row.passed += int(count)
        elif event == Event.PAY_RESULT and detail == "caller-hung-up":
            row.hung_up += int(count)
    for row in rows.values():
        row.passed = min(row.passed, row.reached) if row.reached else row.passed
    return list(rows.values())


@dataclass(frozen=True)
class Conversion:
    """From call to identified to verified to paid (distinct calls)."""

    calls: int
    identified: int
    verified: int
    reached_pay: int
    paid: int

    def steps(self) -> list[tuple[str, int]]:
        """Label and count of each step, in order."""
        return [("Calls", self.calls), ("Account identified", self.identified),
                ("Verified", self.verified), ("Reached secure payment", self.reached_pay),
                ("Paid", self.paid)]


def conversion(db: Session, period: Period) -> Conversion:
    """How many calls got how far."""
    calls = _calls(period).subquery()
    base = select(func.count()).select_from(CallSession).where(
        CallSession.call_sid.in_(select(calls.c.call_sid)))
    total = db.scalar(base) or 0
    identified = db.scalar(base.where(CallSession.account_id.is_not(None))) or 0
    verified = db.scalar(base.where(CallSession.verified.is_(True))) or 0
    paid = db.scalar(base.where(CallSession.payment_id.is_not(None))) or 0
    reached_pay = db.scalar(
        select(func.count(distinct(CallEvent.call_sid)))
        .where(CallEvent.call_sid.in_(select(calls.c.call_sid)),
               CallEvent.event == Event.PAY_START)) or 0
    # A caller identified by a later lookup may pay; keep the steps monotonic for the chart.
    identified = max(identified, verified)
    return Conversion(calls=int(total), identified=int(identified), verified=int(verified),
                      reached_pay=int(reached_pay), paid=int(paid))


@dataclass
class TimeToPay:
    """Seconds from the start of a call to its payment, for paid calls."""

    count: int = 0
    median_seconds: float | None = None
    p90_seconds: float | None = None
    buckets: list[tuple[str, int]] = field(default_factory=list)


def time_to_pay(db: Session, period: Period) -> TimeToPay:
    """Median, 90th percentile and a histogram of the time it took callers to pay."""
    calls = _calls(period).subquery()
    pairs = db.execute(
        select(CallSession.started_at, Payment.paid_at)
        .join(Payment, Payment.id == CallSession.payment_id)
        .where(CallSession.call_sid.in_(select(calls.c.call_sid)))).all()
    seconds = sorted(max((paid - started).total_seconds(), 0.0) for started, paid in pairs)
    result = TimeToPay(count=len(seconds))
    counts = [0] * len(TIME_TO_PAY_BUCKETS)
    for value in seconds:
        for i, (_, limit) in enumerate(TIME_TO_PAY_BUCKETS):
            if limit is None or value < limit:
                counts[i] += 1
                break
    result.buckets = [(label, n) for (label, _), n in zip(TIME_TO_PAY_BUCKETS, counts,
                                                          strict=True)]
    if seconds:
        result.median_seconds = _percentile(seconds, 0.5)
        result.p90_seconds = _percentile(seconds, 0.9)
    return result


def _percentile(values: list[float], share: float) -> float:
    """Linear interpolation between the closest ranks (values sorted)."""
    position = (len(values) - 1) * share
    low = int(position)
    high = min(low + 1, len(values) - 1)
    return values[low] + (values[high] - values[low]) * (position - low)


@dataclass(frozen=True)
class StuckRow:
    """A question and how often callers fell silent or pressed a wrong key at it."""

    state: str
    prompt_ids: tuple[str, ...]
    responses: int
    noinput: int
    nomatch: int

    @property
    def noinput_rate(self) -> float:
        """Silences per response to the question."""
        return self.noinput / self.responses if self.responses else 0.0

    @property
    def nomatch_rate(self) -> float:
        """Invalid keys per response to the question."""
        return self.nomatch / self.responses if self.responses else 0.0


def stuck_questions(rows: list[StateRow], minimum_responses: int = 1) -> list[StuckRow]:
    """The menu questions with their no-input and no-match rates (from a state funnel)."""
    out = [StuckRow(row.state, STATE_QUESTIONS.get(row.state, ()), row.responses,
                    row.noinput, row.nomatch)
           for row in rows
           if row.state in STATE_QUESTIONS and row.responses >= minimum_responses]
    return out


def worst(rows: list[StuckRow], attribute: str, limit: int = 5) -> list[StuckRow]:
    """The rows with the highest ``attribute`` rate that have any such failure."""
    chosen = [r for r in rows if getattr(r, attribute) > 0]
    return sorted(chosen, key=lambda r: (-getattr(r, attribute), r.state))[:limit]


@dataclass(frozen=True)
class CallRow:
    """A call in the list: what happened, never who called or what they typed."""

    call_sid: str
    started_at: datetime
    language: str
    state: str
    outcome: str
    verified: bool
    paid: bool
    steps: int


def recent_calls(db: Session, period: Period, limit: int = 50,
                 outcome: str | None = None) -> list[CallRow]:
    """The newest calls of the period."""
    steps = (select(CallEvent.call_sid, func.count().label("n"))
             .group_by(CallEvent.call_sid).subquery())
    stmt = (select(CallSession, steps.c.n)
            .outerjoin(steps, steps.c.call_sid == CallSession.call_sid)
            .where(CallSession.call_sid.in_(_calls(period)))
            .order_by(CallSession.started_at.desc(), CallSession.call_sid).limit(limit))
    if outcome == "in_progress":
        stmt = stmt.where(CallSession.outcome.is_(None), CallSession.ended_at.is_(None))
    elif outcome:
        stmt = stmt.where(CallSession.outcome == outcome)
    return [CallRow(call.call_sid, call.started_at, call.language, call.state,
                    call.outcome or ("in progress" if call.ended_at is None else "ended"),
                    call.verified, call.payment_id is not None, int(n or 0))
            for call, n in db.execute(stmt)]


def outcomes(db: Session, period: Period) -> dict[str, int]:
    """Calls of the period by outcome."""
    found: dict[str, int] = defaultdict(int)
    for outcome, ended, count in db.execute(
            select(CallSession.outcome, CallSession.ended_at.is_(None), func.count())
            .where(CallSession.call_sid.in_(_calls(period)))
            .group_by(CallSession.outcome, CallSession.ended_at.is_(None))):
        found[outcome or ("in progress" if ended else "ended")] += int(count)
    return dict(sorted(found.items()))


@dataclass(frozen=True)
class Step:
    """One step of a call's path."""

    at: datetime
    state: str
    event: str
    detail: str
    sensitive: bool


def call_path(db: Session, call_sid: str) -> tuple[CallSession | None, list[Step]]:
    """A call and its steps in order. Details of sensitive states are never shown."""
    call = db.get(CallSession, call_sid)
    if call is None:
        return None, []
    events = db.scalars(select(CallEvent).where(CallEvent.call_sid == call_sid)
                        .order_by(CallEvent.at, CallEvent.id))
    steps = []
    for e in events:
        state = STATES.get(e.state)
        sensitive = bool(state and state.sensitive)
        # Details are results and statuses, never keys; in sensitive states we show nothing
        # but the event all the same, should that ever change.
        detail = "" if sensitive else e.detail
        steps.append(Step(e.at, e.state, e.event, detail, sensitive))
    return call, steps
