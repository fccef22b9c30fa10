"""Payment arrangements as the operator sees them: `ivr arrangements list` and the console.

Account numbers are masked (last 4 only); money is text dollars ("78.20") in rows.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, selectinload

from connectors.amounts import cents_to_text
from ivr.models import Arrangement
from ivr.security import mask_account
from ivr.statuses import ArrangementStatus

LIMIT = 200


def arrangements_for_listing(db: Session, *, status: ArrangementStatus | None = None,
                             limit: int = LIMIT) -> list[Arrangement]:
    """Arrangements, newest first, with their instalments loaded; ``status`` filters."""
    stmt = (select(Arrangement).options(selectinload(Arrangement.instalments))
            .order_by(Arrangement.created_at.desc(), Arrangement.id.desc()).limit(limit))
    if status is not None:
        stmt = stmt.where(Arrangement.status == status)
    return list(db.scalars(stmt))


def status_counts(db: Session) -> dict[str, int]:
    """How many arrangements have each status."""
    return {str(status): int(count) for status, count in db.execute(
        select(Arrangement.status, func.count()).group_by(Arrangement.status))}


def terms_text(arrangement: Arrangement) -> str:
    """The terms in one line: "78.20 now, then 78.20 on 2026-12-11, 78.20 on 2027-01-10"."""
    parts = [f"${cents_to_text(i.amount_cents)} by {i.due_date.isoformat()}"
             for i in arrangement.instalments]
    if arrangement.down_payment_cents:
        parts.insert(0, f"${cents_to_text(arrangement.down_payment_cents)} now")
    return ", ".join(parts)


def listing_row(arrangement: Arrangement) -> dict[str, Any]:
    """One arrangement as a JSON-ready row (account masked)."""
    return {
        "id": arrangement.id,
        "created_at": arrangement.created_at.isoformat(),
        "account": mask_account(arrangement.account_number),
        "kind": str(arrangement.kind),
        "status": str(arrangement.status),
        "confirmation": arrangement.confirmation_code,
        "balance": cents_to_text(arrangement.balance_cents),
        "down_payment": cents_to_text(arrangement.down_payment_cents),
        "instalments": [{"seq": i.seq, "due_date": i.due_date.isoformat(),
                         "amount": cents_to_text(i.amount_cents)}
                        for i in arrangement.instalments],
        "posting": str(arrangement.posting_status),
        "ended_at": arrangement.ended_at.isoformat() if arrangement.ended_at else None,
        "end_reason": arrangement.end_reason,
    }
