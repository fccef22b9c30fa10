"""The ops blueprint and what every page shares: sign-in gate, CSRF, headers, helpers."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from flask import (
    Blueprint,
    Response,
    current_app,
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask.typing import ResponseReturnValue
from flask_wtf.csrf import CSRFError, CSRFProtect
from werkzeug.routing import IntegerConverter, Map

from ivr.db import Database
from ivr.models import utcnow
from ivr.money.reconcile import day_bounds, parse_day
from ivr.ops import auth, present
from ivr.ops.charts import percent
from ivr.ops.funnel import Period
from ivr.prompts.catalog import Catalog, PromptStore
from ivr.web.app import get_config, get_database

bp = Blueprint("ops", __name__, url_prefix="/ops", template_folder="templates",
               static_folder="static")
csrf = CSRFProtect()

SESSION_HOURS = 8
_PUBLIC = frozenset({"ops.login", "ops.static"})
NAV = (("ops.home", "Overview"), ("ops.prompts", "Prompts"), ("ops.calls", "Calls"),
       ("ops.payments", "Payments"), ("ops.arrangements", "Arrangements"),
       ("ops.returns", "Returns"), ("ops.reconcile", "Reconciliation"),
       ("ops.files", "File runs"), ("ops.security", "Line security"))


# Row ids are INTEGER columns (32-bit in PostgreSQL): a larger number in a URL cannot name a
# row, and would make the database refuse the query rather than find nothing.
MAX_ROW_ID = 2**31 - 1


class RowIdConverter(IntegerConverter):
    """``<row_id:name>`` in a route: a table row's id, 1 to MAX_ROW_ID; anything else does
    not match the route (404)."""

    def __init__(self, url_map: Map) -> None:
        super().__init__(url_map, min=1, max=MAX_ROW_ID)


def database() -> Database:
    """The app's database."""
    return get_database(current_app)


def now() -> datetime:
    """The app's clock (tests fix it), aware UTC."""
    clock: Callable[[], datetime] = current_app.extensions.get("ivr.clock", utcnow)
    return clock()


def store() -> PromptStore:
    """The prompt store the line reads from."""
    prompt_store: PromptStore = current_app.extensions["ivr.prompts.catalog"]
    return prompt_store


def prompts_dir() -> Path:
    """The prompts directory (IVR_PROMPTS_DIR)."""
    return Path(get_config(current_app).prompts_dir)


def instance_dir() -> Path:
    """The instance folder (edit lock, audio previews)."""
    return Path(current_app.instance_path)


def catalog() -> Catalog:
    """The catalog the line is using (the last good one)."""
    return store().get()


def line_zone() -> ZoneInfo:
    """The line's time zone (business hours), for days and times on the pages."""
    try:
        return catalog().settings.transfer.timezone
    except Exception:  # a broken catalog must not take the console down with it
        return ZoneInfo("UTC")


def today() -> date:
    """Today in the line's time zone."""
    return now().astimezone(line_zone()).date()


def username() -> str:
    """The signed-in user's name."""
    return str(g.ops_user)


def client_address() -> str:
    """The client's address for the sign-in limit: the peer's, which is the client's own
    unless trusted proxies are configured (IVR_TRUSTED_PROXIES; see ``init_ops``)."""
    return (request.remote_addr or "")[:64]


@bp.before_request
def _guard() -> ResponseReturnValue | None:
    csrf.protect()
    if request.endpoint in _PUBLIC:
        return None
    user = _session_user()
    if user is None:
        if "uid" in session:
            session.clear()  # an expired or revoked sign-in: forget it
        return redirect(url_for("ops.login", next=request.full_path.rstrip("?")))
    g.ops_user = user
    return None


def _session_user() -> str | None:
    login_at = session.get("login_at")
    if not isinstance(login_at, (int, float)):
        return None
    # The cookie's own expiry slides with use; a sign-in lasts SESSION_HOURS at most.
    if now().timestamp() - login_at > SESSION_HOURS * 3600:
        return None
    with database().session() as db:
        user = auth.active_user(db, session.get("uid"), session.get("generation"))
        return user.username if user else None


@bp.after_request
def _headers(response: Response) -> Response:
    # No scripts at all, no framing, nothing cached: pages carry operational data.
    response.headers.setdefault(
        "Content-Security-Policy",
        "default-src 'none'; style-src 'self'; img-src 'self' data:; media-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    if request.endpoint != "ops.static":
        response.headers["Cache-Control"] = "no-store"
    return response


@bp.errorhandler(CSRFError)
def _csrf_failed(error: CSRFError) -> tuple[str, int]:
    return render_template("ops/error.html", title="Form expired",
                           message="This form has expired or did not come from this console "
                                   "(CSRF check failed). Go back, reload the page and try "
                                   "again.", detail=error.description), 400


@bp.context_processor
def _helpers() -> dict[str, Any]:
    zone = line_zone()
    return {
        "dollars": present.dollars,
        "when": lambda value: present.local_time(value, zone),
        "when_iso": lambda text: present.local_time(datetime.fromisoformat(text), zone),
        "pct": percent,
        "scrub": present.scrub,
        "masked_account": present.account,
        "masked_caller": present.caller,
        "instrument": present.instrument,
        "secs": present.seconds_text,
        "zone_name": str(zone),
        "ops_user": g.get("ops_user"),
        "nav": NAV,
        # The folder on disk is broken and callers hear the last good version meanwhile.
        "prompt_problems": store().problems,
    }


@dataclass
class PeriodChoice:
    """The period a page shows, as chosen in its form, with any problems in the choice."""

    period: Period
    first: date
    last: date
    language: str
    errors: list[str]


def choose_period(args: Mapping[str, str], languages: tuple[str, ...],
                  default_days: int = 7) -> PeriodChoice:
    """Read ``from``, ``to`` (local dates, inclusive) and ``lang`` from a query string."""
    zone = line_zone()
    last = today()
    first = last - timedelta(days=default_days - 1)
    errors: list[str] = []
    first_text, last_text = args.get("from", "").strip(), args.get("to", "").strip()
    try:
        if first_text:
            first = parse_day(first_text)
    except ValueError as exc:
        errors.append(f"From date {exc}.")
    try:
        if last_text:
            last = parse_day(last_text)
    except ValueError as exc:
        errors.append(f"To date {exc}.")
    if first > last:
        errors.append("The from date is after the to date; showing the default period.")
    elif (last - first).days > 366:
        errors.append("Periods are limited to a year; showing the default period.")
    if errors:
        last = today()
        first = last - timedelta(days=default_days - 1)
    language = args.get("lang", "").strip()
    if language and language not in languages:
        errors.append(f"Unknown language {language[:20]!r}; showing all languages.")
        language = ""
    start, _ = day_bounds(first, zone)
    _, end = day_bounds(last, zone)
    return PeriodChoice(Period(start, end, language or None), first, last, language, errors)
