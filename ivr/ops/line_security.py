"""What the line's abuse limits counted and refused (card testing, account enumeration,
verification lockouts), per kind and per day, for the Line security page."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from ivr.calls import guards
from ivr.models import Account, GuardEvent, VerificationFailure
from ivr.ops.funnel import Period

# How each kind the call flow records (ivr.calls.guards.KINDS) reads on the page.
KIND_LABELS: dict[str, str] = {
    guards.PAY_DECLINED: "Declined card or bank payments",
    guards.PAY_BLOCKED: "Payments refused by the card-testing limit",
    guards.ACCOUNT_MISS: "Account numbers not found",
    guards.LOOKUP_BLOCKED: "Lookups refused by the enumeration limit",
    guards.VERIFY_LOCKED: "Calls refused: verification locked",
}
# Kinds in the order of the page (those without a label last, so none is ever hidden).
KINDS: tuple[str, ...] = (*KIND_LABELS, *sorted(guards.KINDS - KIND_LABELS.keys()))
LATEST = 50


@dataclass
class Day:
    """One local day's counts per kind, and its wrong ZIP codes or PINs."""

    day: date
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    verification_failures: int = 0


@dataclass(frozen=True)
class Event:
    """One recorded event, with the raw numbers the page masks."""

    at: datetime
    kind: str
    caller: str
    line: str
    account_number: str | None
    call_sid: str


@dataclass
class Summary:
    """The page's numbers for a period."""

    totals: dict[str, int]
    verification_failures: int
    days: list[Day]
    latest: list[Event]


def summary(db: Session, period: Period, zone: ZoneInfo) -> Summary:
    """Counts per kind and per local day, wrong ZIP codes or PINs, and the latest events."""
    days: dict[date, Day] = {}

    def day_of(moment: datetime) -> Day:
        local = moment.astimezone(zone).date()
        return days.setdefault(local, Day(local))

    totals = dict.fromkeys(KINDS, 0)
    # Only the kind and time of each event: grouping by local day is done here, the same
    # way on every database.
    for kind, at in db.execute(select(GuardEvent.kind, GuardEvent.at).where(
            GuardEvent.at >= period.start, GuardEvent.at < period.end)):
        if kind in totals:
            totals[kind] += 1
            day_of(at).counts[kind] += 1
    failures = 0
    for (at,) in db.execute(select(VerificationFailure.failed_at).where(
            VerificationFailure.failed_at >= period.start,
            VerificationFailure.failed_at < period.end)):
        failures += 1
        day_of(at).verification_failures += 1
    latest = [Event(event.at, event.kind, event.caller, event.line, number, event.call_sid)
              for event, number in db.execute(
                  select(GuardEvent, Account.account_number)
                  .outerjoin(Account, Account.id == GuardEvent.account_id)
                  .where(GuardEvent.at >= period.start, GuardEvent.at < period.end)
                  .order_by(GuardEvent.at.desc(), GuardEvent.id.desc()).limit(LATEST))]
    return Summary(totals, failures, sorted(days.values(), key=lambda d: d.day, reverse=True),
                   latest)
