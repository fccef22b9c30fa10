"""Unsigned operational endpoints: health and Prometheus metrics."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify
from sqlalchemy import text

from ivr import get_config, get_database
from ivr.models import utcnow

bp = Blueprint("web", __name__)


@bp.get("/healthz")
def healthz() -> tuple[Response, int]:
    """200 when the database answers, 503 otherwise; says so when webhooks go unchecked."""
    extra: dict[str, object] = {}
    if get_config(current_app).allow_unsigned:
        extra = {"unsigned_webhooks": True,
                 "warning": "IVR_ALLOW_UNSIGNED=1: webhook signatures are not checked"}
    try:
        with get_database(current_app).session() as db:
            db.execute(text("SELECT 1"))
    except Exception:
        return jsonify(status="error", database="unreachable", **extra), 503
    return jsonify(status="ok", database="ok", **extra), 200


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
    body, content_type = generate(get_database(current_app), zone, clock,
                                  unsigned=get_config(current_app).allow_unsigned)
    return Response(body, status=200, content_type=content_type)
