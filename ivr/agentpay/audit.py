"""The agent audit trail: who verified, started, captured, completed or cancelled what, when.

Details are our own words (field names, results, amounts, masked accounts); never a digit a
caller keyed.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from ivr.models import AgentAudit, AgentPayment

# Who acts when no person does: Twilio's callbacks, and the sweep of idle sessions.
TWILIO = "twilio"
SYSTEM = "system"


def audit(db: Session, username: str, action: str, call_sid: str, now: datetime, *,
          session: AgentPayment | None = None, detail: str = "") -> None:
    """Add one audit row (the caller commits)."""
    db.add(AgentAudit(at=now, username=username[:80], action=action[:24], call_sid=call_sid,
                      agent_payment_id=session.id if session is not None else None,
                      payment_id=session.payment_id if session is not None else None,
                      detail=detail[:200]))


def audit_rows(db: Session, *, payment_id: int | None = None, limit: int = 300
               ) -> list[AgentAudit]:
    """Newest first; one payment's rows (through its agent session) when ``payment_id``."""
    stmt = select(AgentAudit).order_by(AgentAudit.at.desc(), AgentAudit.id.desc()).limit(limit)
    if payment_id is not None:
        sessions = select(AgentPayment.id).where(AgentPayment.payment_id == payment_id)
        stmt = stmt.where((AgentAudit.payment_id == payment_id)
                          | AgentAudit.agent_payment_id.in_(sessions))
    return list(db.scalars(stmt))
