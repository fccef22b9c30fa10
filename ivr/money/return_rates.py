"""NACHA return rates over the preceding 60 days, against the three thresholds.

Each rate is bank returns of a category, by return date in the window, over the bank debits
the line took in the same window (test payments left out). A rate at or past its threshold
is "over"; one at ``[returns] warn_at_percent`` of it or more is "near".
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from connectors.return_codes import THRESHOLDS_PERCENT, category
from ivr.models import Payment, Reversal
from ivr.statuses import PostingStatus, ReversalKind

WINDOW_DAYS = 60
_HUNDREDTH = Decimal("0.01")


@dataclass(frozen=True)
class Rate:
    """One category's returns against the debits of the window."""

    name: str  # unauthorized, administrative, overall
    returns: int
    debits: int
    percent: Decimal
    threshold_percent: Decimal
    state: str  # ok, near, over


def return_rates(db: Session, today: date, zone: ZoneInfo,
                 warn_at_percent: int) -> tuple[date, list[Rate]]:
    """The window's first day and each category's rate (see the module doc)."""
    first = today - timedelta(days=WINDOW_DAYS - 1)
    start = datetime.combine(first, time(0), tzinfo=zone)
    debits = int(db.scalar(select(func.count()).select_from(Payment).where(
        Payment.method == "ach", Payment.paid_at >= start,
        Payment.posting_status != PostingStatus.TEST)) or 0)
    codes = list(db.scalars(select(Reversal.code).where(
        Reversal.kind == ReversalKind.RETURN, Reversal.effective_date >= first,
        Reversal.effective_date <= today)))
    counts = {"overall": len(codes)}
    for code in codes:
        kind = category(code or "")
        counts[kind] = counts.get(kind, 0) + 1
    rates = []
    for name, threshold in THRESHOLDS_PERCENT.items():
        returns = counts.get(name, 0)
        percent = (Decimal(returns * 100) / debits).quantize(_HUNDREDTH) if debits else \
            Decimal(0).quantize(_HUNDREDTH)
        limit = Decimal(str(threshold))
        state = ("over" if percent >= limit and returns else
                 "near" if percent * 100 >= limit * warn_at_percent and returns else "ok")
        rates.append(Rate(name, returns, debits, percent, limit, state))
    return first, rates
