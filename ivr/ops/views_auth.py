"""Signing in and out, and the overview page."""

from __future__ import annotations

from flask import flash, redirect, render_template, request, session, url_for
from flask.typing import ResponseReturnValue
from sqlalchemy import func, select

from ivr.models import OutboxEntry, SyncRun
from ivr.ops import auth, funnel
from ivr.ops.base import bp, choose_period, client_address, database, now, store, today


def _safe_next(target: str | None) -> str:
    """Only pages of this console: never an outside address (open redirect)."""
    if target and target.startswith("/ops") and not target.startswith("/ops/login") \
            and "//" not in target and "\\" not in target:
        return target
    return url_for("ops.home")


@bp.route("/login", methods=["GET", "POST"])
def login() -> ResponseReturnValue:
    """The sign-in form; rate-limited per username and client address, and per address."""
    error = ""
    username = ""
    status = 200
    if request.method == "POST":
        username = request.form.get("username", "")[:80]
        password = request.form.get("password", "")[:auth.MAX_PASSWORD_LENGTH]
        if not username.strip() or not password:
            error = "Enter your username and password."
            status = 400
        else:
            moment = now()
            with database().session() as db:
                result = auth.attempt_login(db, username, password, client_address(), moment)
                if result.user is not None:
                    # A new session (a fresh cookie, no values from before sign-in).
                    session.clear()
                    session.permanent = True
                    session["uid"] = result.user.id
                    session["generation"] = result.user.session_generation
                    session["login_at"] = moment.timestamp()
                    return redirect(_safe_next(request.args.get("next")))
            if result.refused_until is not None:
                minutes = max(1, int((result.refused_until - moment).total_seconds() // 60) + 1)
                error = (f"Too many failed sign-in attempts. Sign-in is paused for about "
                         f"{minutes} minute{'s' if minutes != 1 else ''}; try again later.")
                status = 429
            else:
                error = "That username and password do not match an active user."
                status = 401
    return render_template("ops/login.html", error=error, username=username), status


@bp.post("/logout")
def logout() -> ResponseReturnValue:
    """End the session, and every other session of this user (a copied cookie too)."""
    user_id = session.get("uid")
    if isinstance(user_id, int):
        with database().session() as db:
            auth.end_sessions(db, user_id)
    session.clear()
    flash("You are signed out.", "info")
    return redirect(url_for("ops.login"))


@bp.get("/")
def home() -> str:
    """Today at a glance: calls, conversion, postings, file runs."""
    languages = store().get().settings.languages
    choice = choose_period({"from": today().isoformat()}, languages, default_days=1)
    with database().session() as db:
        conversion = funnel.conversion(db, choice.period)
        outcomes = funnel.outcomes(db, choice.period)
        outbox = {str(status): int(count) for status, count in db.execute(
            select(OutboxEntry.status, func.count()).group_by(OutboxEntry.status))}
        runs = list(db.scalars(select(SyncRun).order_by(SyncRun.started_at.desc()).limit(5)))
        failures = auth.recent_failures(db, now())
    return render_template("ops/home.html", title="Overview", conversion=conversion,
                           outcomes=outcomes, outbox=outbox, runs=runs, day=choice.first,
                           failures=failures)
