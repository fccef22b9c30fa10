"""Arrangements marked broken or kept after an account file is applied.

The biller's account file is the only word on what was paid. After an applied import made
on day D (the file's ``as_of`` in the biller's time zone), each ACTIVE arrangement with an
instalment due before D is checked against its account's ``past_due_cents`` as just
imported (with the payments the biller has not heard of yet already taken off again):

- the arrangement allows ``balance - down payment - the instalments due before D`` (at
  least 0) to stay past due; a new bill not yet due is not past due, so new charges never
  break an arrangement, while an instalment left unpaid stays past due;
- more than that past due: BROKEN ("instalment of $78.20 due 2026-12-20 unpaid", naming
  the earliest instalment the shortfall reaches);
- otherwise, once every instalment date has passed: KEPT.

Only ACTIVE arrangements are read (few, whatever the number of accounts), each with its
account in one query; an arrangement whose account is gone is left alone. A row is changed
only while it is still ACTIVE, so a second run (or a re-import) changes nothing more.
docs/files.md ("Payment arrangements after an import") is the operators' version.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, datetime, tzinfo

from sqlalchemy import select, update
from sqlalchemy.orm import Session, selectinload

from connectors.amounts import cents_to_text
from ivr.models import Account, Arrangement, ArrangementInstalment, utcnow
from ivr.statuses import ArrangementStatus

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    """What an arrangement became on day D, and why (None: still active)."""

    status: ArrangementStatus
    reason: str


@dataclass
class Settled:
    """How many active arrangements one import ended."""

    broken: int = 0
    kept: int = 0


def import_day(as_of: datetime, zone: tzinfo) -> date:
    """The biller's calendar day an account file was made on."""
    return as_of.astimezone(zone).date()


def judge(arrangement: Arrangement, past_due_cents: int, day: date) -> Outcome | None:
    """What ``arrangement`` becomes when its account shows ``past_due_cents`` on ``day``."""
    passed = [i for i in arrangement.instalments if i.due_date < day]
    if not passed:
        return None
    allowed = max(0, arrangement.balance_cents - arrangement.down_payment_cents
                  - sum(i.amount_cents for i in passed))
    shortfall = past_due_cents - allowed
    if shortfall > 0:
        unpaid = _earliest_unpaid(passed, shortfall)
        return Outcome(ArrangementStatus.BROKEN,
                       f"instalment of ${cents_to_text(unpaid.amount_cents)} due "
                       f"{unpaid.due_date.isoformat()} unpaid")
    if len(passed) == len(arrangement.instalments):
        last = passed[-1].due_date
        return Outcome(ArrangementStatus.KEPT, f"every instalment paid by {last.isoformat()}")
    return None


def _earliest_unpaid(passed: list[ArrangementInstalment],
                     shortfall: int) -> ArrangementInstalment:
    """The instalment the shortfall reaches back to, counting from the latest one due."""
    covered = 0
    for instalment in reversed(passed):
        covered += instalment.amount_cents
        if covered >= shortfall:
            return instalment
    return passed[0]


def settle_arrangements(db: Session, as_of: datetime, zone: tzinfo) -> Settled:
    """Mark the active arrangements broken or kept after an import made at ``as_of``."""
    day = import_day(as_of, zone)
    settled = Settled()
    stmt = (select(Arrangement, Account.past_due_cents)
            .join(Account, Account.id == Arrangement.account_id)
            .where(Arrangement.status == ArrangementStatus.ACTIVE)
            .options(selectinload(Arrangement.instalments))
            .order_by(Arrangement.id))
    ended_at = utcnow()
    for arrangement, past_due in db.execute(stmt).all():
        outcome = judge(arrangement, past_due, day)
        if outcome is None:
            continue
        result = db.execute(
            update(Arrangement)
            .where(Arrangement.id == arrangement.id,
                   Arrangement.status == ArrangementStatus.ACTIVE)
            .values(status=outcome.status, ended_at=ended_at, end_reason=outcome.reason)
            .execution_options(synchronize_session=False))
        if not getattr(result, "rowcount", 0):
            continue  # ended meanwhile by another run
        if outcome.status is ArrangementStatus.BROKEN:
            settled.broken += 1
        else:
            settled.kept += 1
        log.info("arrangement ended", extra={"fields": {
            "arrangement_id": arrangement.id, "status": outcome.status,
            "reason": outcome.reason}})
    return settled
