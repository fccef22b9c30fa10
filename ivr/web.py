"""Unsigned operational endpoints: health and Prometheus metrics."""

from __future__ import annotations

import threading
import time

from flask import Blueprint, Response, current_app, jsonify
from sqlalchemy import text

from ivr import get_database, get_deadlines
from ivr.models import utcnow

bp = Blueprint("web", __name__)


@bp.get("/healthz")
def healthz() -> tuple[Response, int]:
    """200 when the database answers within the webhook deadline, 503 otherwise."""

    def ping(_abandoned: threading.Event) -> None:
        with get_database(current_app).session() as db:
            db.execute(text("SELECT 1"))

    # Under the deadline too: probes hitting a frozen database must not tie up every thread.
    try:
        get_deadlines(current_app).run(ping, started=time.monotonic(), label={"route": "healthz"})
    except Exception:
        return jsonify(status="error", database="unreachable"), 503
    return jsonify(status="ok", database="ok"), 200


@bp.get("/metrics")
def metrics() -> Response:
    """Prometheus text format; no personal data in any label (see ivr.metrics)."""
    from zoneinfo import ZoneInfo

    from ivr.metrics import generate

    try:
        zone = current_app.extensions["ivr.prompts"].get().settings.transfer.timezone
    except Exception:  # a broken catalog must not hide the metrics
        zone = ZoneInfo("UTC")
    clock = current_app.extensions.get("ivr.clock") or utcnow
    body, content_type = generate(get_database(current_app), zone, clock)
    return Response(body, status=200, content_type=content_type)
