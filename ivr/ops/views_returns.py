"""Money after the call: recording a refund or void, bank returns and notices of change,
and the NACHA return rates against their thresholds (docs/returns.md)."""

from __future__ import annotations

import logging

from flask import abort, flash, g, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from sqlalchemy import select

from connectors.files.parsers import FieldError, parse_amount_cents
from connectors.return_codes import meaning
from ivr.models import ChangeNotice, Payment, Reversal
from ivr.money.return_rates import WINDOW_DAYS, return_rates
from ivr.money.reversals import ReversalError, Reverse, record_reversal, remaining_cents
from ivr.ops.base import bp, catalog, database, line_zone, now, today, username
from ivr.ops.present import dollars, scrub
from ivr.security import mask_account
from ivr.statuses import ReversalKind

log = logging.getLogger(__name__)

# What ops may record from the console (a return comes from the bank's file only).
OPS_KINDS = (ReversalKind.REFUND, ReversalKind.VOID)
MAX_REASON = 500


def may_record_reversals() -> bool:
    """Whether the signed-in user may record refunds and voids.

    The one place this permission is decided: every signed-in user for now; map it to the
    admin role once console roles exist.
    """
    return g.get("ops_user") is not None


@bp.post("/payments/<row_id:payment_id>/reverse")
def reverse_payment(payment_id: int) -> ResponseReturnValue:
    """Record that a payment was refunded (whole or part) or voided at the processor."""
    if not may_record_reversals():
        abort(403)
    back = redirect(url_for("ops.payment", payment_id=payment_id))
    kind_text = request.form.get("kind", "")
    reason = request.form.get("reason", "").strip()
    if kind_text not in OPS_KINDS:
        flash("Choose refund or void.", "error")
        return back
    if not reason:
        flash("Say why: the reason is kept with the record.", "error")
        return back
    kind = ReversalKind(kind_text)
    with database().session() as db:
        payment = db.get(Payment, payment_id)
        if payment is None:
            abort(404)
        left = remaining_cents(db, payment)
        try:
            cents = (left if kind == ReversalKind.VOID
                     else parse_amount_cents("Amount", request.form.get("amount", "").strip()))
            reversal = record_reversal(db, payment, Reverse(
                kind=kind, amount_cents=cents, effective_date=today(),
                recorded_by=username(), reason=reason[:MAX_REASON]),
                catalog().settings.returns, now())
        except (FieldError, ReversalError) as exc:
            db.rollback()
            flash(f"Nothing recorded: {exc}.", "error")
            return back
        log.info("reversal recorded", extra={"fields": {
            "payment_id": payment_id, "kind": kind, "amount_cents": cents,
            "account": mask_account(payment.account_number), "by": username(),
            "reversal_id": reversal.id}})
    flash(f"{kind.value.title()} of {dollars(cents)} recorded; the worker posts it to the "
          "accounting system.", "success")
    return back


@bp.get("/returns")
def returns() -> str:
    """Return rates against the NACHA thresholds, recent reversals and notices of change."""
    settings = catalog().settings.returns
    with database().session() as db:
        first, rates = return_rates(db, today(), line_zone(), settings.warn_at_percent)
        reversals = list(db.scalars(select(Reversal).order_by(Reversal.created_at.desc(),
                                                              Reversal.id.desc()).limit(100)))
        notices = list(db.scalars(select(ChangeNotice).order_by(
            ChangeNotice.created_at.desc(), ChangeNotice.id.desc()).limit(100)))
        payments = {p.id: p for p in db.scalars(select(Payment).where(Payment.id.in_(
            [r.payment_id for r in reversals] + [n.payment_id for n in notices])))}
    return render_template("ops/returns.html", title="Returns", rates=rates, first=first,
                           window=WINDOW_DAYS, warn_at=settings.warn_at_percent,
                           reversals=reversals, notices=notices, payments=payments,
                           meaning=meaning, scrub=scrub)
