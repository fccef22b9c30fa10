"""The Line security page: card testing and account enumeration, as the limits saw them."""

from __future__ import annotations

from flask import render_template, request

from ivr.ops import line_security
from ivr.ops.base import bp, choose_period, database, line_zone


@bp.get("/security")
def security() -> tuple[str, int]:
    """Counts per kind and per day for a period, and the latest events (numbers masked)."""
    choice = choose_period(request.args, ())
    with database().session() as db:
        found = line_security.summary(db, choice.period, line_zone())
    return render_template("ops/security.html", title="Line security", choice=choice,
                           languages=(), summary=found, kinds=line_security.KINDS,
                           labels=line_security.KIND_LABELS,
                           latest_count=line_security.LATEST), 400 if choice.errors else 200
