"""Payment arrangements callers made: terms, status (active, broken, kept) and posting."""

from __future__ import annotations

from flask import render_template, request

from ivr.arrangements.listing import LIMIT, arrangements_for_listing, status_counts, terms_text
from ivr.ops.base import bp, database
from ivr.statuses import ArrangementStatus

# The filters offered: every arrangement, or one status.
STATUSES = ("", *(s.value for s in ArrangementStatus))


@bp.get("/arrangements")
def arrangements() -> tuple[str, int]:
    """Arrangements, newest first, with their terms and why one ended (accounts masked)."""
    status = request.args.get("status", "")
    errors = []
    if status not in STATUSES:
        errors.append(f"Unknown status {status[:20]!r}; showing every arrangement.")
        status = ""
    with database().session() as db:
        rows = arrangements_for_listing(
            db, status=ArrangementStatus(status) if status else None)
        terms = {a.id: terms_text(a) for a in rows}
        counts = status_counts(db)
    return render_template("ops/arrangements.html", title="Arrangements", rows=rows,
                           terms=terms, status=status, statuses=STATUSES, counts=counts,
                           limit=LIMIT, errors=errors), 400 if errors else 200
