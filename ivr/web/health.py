"""Unsigned operational endpoints: health and Prometheus metrics."""

from __future__ import annotations

import threading
import time

from flask import Blueprint, Response, current_app, jsonify
from sqlalchemy import text

from ivr.models import utcnow
from ivr.web.app import get_config, get_database, get_deadlines

bp = Blueprint("web", __name__)


@bp.get("/healthz")
def healthz() -> tuple[Response, int]:
    """200 when the database answers within the webhook deadline and the line has wording,
    503 otherwise; "degraded" while the prompts folder is broken, and a warning when webhooks
    go unchecked."""
    extra: dict[str, object] = {}
    if get_config(current_app).allow_unsigned:
        extra = {"unsigned_webhooks": True,
                 "warning": "IVR_ALLOW_UNSIGNED=1: webhook signatures are not checked"}
    extra.update(_prompts_health())

    def ping(_abandoned: threading.Event) -> None:
        with get_database(current_app).session() as db:
            db.execute(text("SELECT 1"))

    # Under the deadline too: probes hitting a frozen database must not tie up every thread.
    try:
        get_deadlines(current_app).run(ping, started=time.monotonic(), label={"route": "healthz"})
    except Exception:
        return jsonify(status="error", database="unreachable", **extra), 503
    if extra["prompts"] == "unavailable":  # callers would hear only the last-resort apology
        return jsonify(status="error", database="ok", **extra), 503
    return jsonify(status="ok" if extra["prompts"] == "ok" else "degraded", database="ok",
                   **extra), 200


def _prompts_health() -> dict[str, object]:
    """The wording callers hear: the folder's, or the last good one while it is broken."""
    store = current_app.extensions["ivr.prompts.catalog"]
    try:
        version = store.get().version
    except Exception:
        return {"prompts": "unavailable", "prompts_problems": list(store.problems)[:10]}
    if store.problems:
        return {"prompts": "broken, speaking the last good version",
                "prompts_version": version, "prompts_problems": list(store.problems)[:10]}
    return {"prompts": "ok", "prompts_version": version}


@bp.get("/metrics")
def metrics() -> Response:
    """Prometheus text format; no personal data in any label (see ivr.metrics)."""
    from zoneinfo import ZoneInfo

    from ivr.metrics import generate

    try:
        zone = current_app.extensions["ivr.prompts.catalog"].get().settings.transfer.timezone
    except Exception:  # a broken catalog must not hide the metrics
        zone = ZoneInfo("UTC")
    clock = current_app.extensions.get("ivr.clock") or utcnow
    body, content_type = generate(get_database(current_app), zone, clock,
                                  unsigned=get_config(current_app).allow_unsigned)
    return Response(body, status=200, content_type=content_type)
