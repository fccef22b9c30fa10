"""The agent's pages: calls in progress, one call (verify, take a payment), its live
progress as JSON, and the audit trail. Thin over ivr.agentpay (docs/agent-payments.md)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from flask import abort, current_app, flash, jsonify, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from sqlalchemy.orm import Session

from ivr.agentpay import calls as live
from ivr.agentpay import session as agentpay
from ivr.agentpay.audit import audit as audit_action
from ivr.agentpay.audit import audit_rows
from ivr.calls.context import CallContext
from ivr.calls.states import verify
from ivr.calls.states.after_pay import can_text, send_text_receipt
from ivr.calls.twilio_api import TwilioApiError
from ivr.models import AgentPayment, Payment
from ivr.ops.base import bp, catalog, database, now, username
from ivr.prompts.catalog import Catalog
from ivr.statuses import AgentPaymentStatus
from ivr.web.app import get_config

_SID = re.compile(r"CA[A-Za-z0-9]{1,62}")
# What the agent is told after a verification attempt (never what was typed).
_VERIFY_SAID = {
    verify.PASSED: ("Verified.", "info"),
    verify.MISMATCH: ("That does not match. Ask the caller again.", "error"),
    verify.LOCKED: ("This caller is locked out of the account after repeated failures.",
                    "error"),
    verify.SPENT: ("Too many failed attempts on this call.", "error"),
    live.NOT_FOUND: ("No account with that number.", "error"),
    live.LOOKUP_LIMIT: ("Too many account numbers not found from this caller or line.",
                        "error"),
    live.ON_THE_LINE: ("The caller is at the line's menus, not with a representative.",
                       "error"),
}


def _context(db: Session, call_sid: str, lines: Catalog) -> CallContext:
    """The call (locked) in the context the line's own code takes; 404 when not live."""
    call = live.load_call(db, call_sid)
    moment = now()
    if call is None or not live.is_live(call, moment):
        abort(404)
    return CallContext(handle=db, call=call, catalog=lines, config=get_config(current_app),
                       now=moment, accounting=current_app.extensions.get("ivr.money.accounting"))


@contextmanager
def _call(call_sid: str) -> Iterator[CallContext]:
    if not _SID.fullmatch(call_sid):
        abort(404)
    # The catalog first: it may read the database on a connection of its own, which must
    # not wait behind this request's transaction.
    lines = catalog()
    with database().session() as db:
        ctx = _context(db, call_sid, lines)
        _sweep(ctx)
        yield ctx


def _sweep(ctx: CallContext) -> None:
    """Abandon sessions whose page went away (this call's only: others have their own lock)."""
    for session in agentpay.idle_sessions(ctx.db, ctx.now):
        if session.call_sid == ctx.call.call_sid:
            agentpay.expire(ctx, session)


def _callback(session: AgentPayment) -> str:
    """Where Twilio posts this session's progress (absolute, as Twilio signs it)."""
    base = get_config(current_app).base_url or request.host_url
    return f"{base.rstrip('/')}/voice/agent-pay/status?session={session.id}"


def _act(call_sid: str, step: Callable[[CallContext], None]) -> ResponseReturnValue:
    """Run one step on the call; a refusal is shown on the call's page."""
    with _call(call_sid) as ctx:
        try:
            step(ctx)
        except agentpay.AgentPaymentError as exc:
            flash(str(exc), "error")
        except TwilioApiError:
            flash("Twilio did not answer; try again.", "error")
    return redirect(url_for("ops.agent_call", call_sid=call_sid))


def _session(ctx: CallContext) -> AgentPayment:
    found = agentpay.active_session(ctx.db, ctx.call.call_sid)
    if found is None:
        raise agentpay.AgentPaymentError("No payment is in progress on this call.")
    return found


@bp.get("/agent")
def agent_calls() -> str:
    """Calls in progress, newest first; those the line transferred marked."""
    with database().session() as db:
        rows = live.calls_in_progress(db, now())
    return render_template("ops/agent_calls.html", title="Take a payment", rows=rows)


@bp.get("/agent/calls/<call_sid>")
def agent_call(call_sid: str) -> ResponseReturnValue:
    """One live call: verification, the account and its rules, the payment and its progress."""
    with _call(call_sid) as ctx:
        view = live.account_view(ctx)
        session = (agentpay.active_session(ctx.db, call_sid)
                   or agentpay.latest_session(ctx.db, call_sid))
        progress = agentpay.progress_view(session, ctx)
        script = (agentpay.authorization_text(ctx) if session is not None
                  and session.status == "prepared" and session.method == "ach" else "")
        payment = ctx.db.get(Payment, session.payment_id) if session and session.payment_id \
            else None
        values = {"call": ctx.call, "view": view, "session": session, "progress": progress,
                  "script": script, "payment": payment,
                  "method": ctx.settings.verification.method,
                  "has_account": ctx.call.account_id is not None,
                  "with_agent": live.with_agent(ctx.call),
                  "can_text": payment is not None and can_text(ctx)}
    # Rendered after the transaction: the page's helpers may read the prompts' state on a
    # connection of their own, which must not wait behind this request's lock.
    page = render_template("ops/agent_call.html", title=f"Call {call_sid}", **values)
    response = current_app.make_response(page)
    # This page alone runs a script (ours, same origin) that asks for progress.
    response.headers["Content-Security-Policy"] = (
        "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'self'; "
        "img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
    return response


@bp.post("/agent/calls/<call_sid>/verify")
def agent_verify(call_sid: str) -> ResponseReturnValue:
    """The ZIP or PIN (and the account number when the line had none) as the caller says it."""
    def step(ctx: CallContext) -> None:
        if ctx.call.verified:
            return
        check = live.agent_verify(ctx, username(), request.form.get("account", "")[:40],
                                  request.form.get("entry", "")[:20])
        flash(*_VERIFY_SAID[check])

    return _act(call_sid, step)


@bp.post("/agent/calls/<call_sid>/prepare")
def agent_prepare(call_sid: str) -> ResponseReturnValue:
    """The amount (one offered, or another within the rules) and the way to pay."""
    form = request.form

    def step(ctx: CallContext) -> None:
        agentpay.prepare(ctx, username(), form.get("amount", "")[:20],
                         form.get("other", "")[:20], form.get("method", "")[:8],
                         form.get("bank_account_type", "")[:32])

    return _act(call_sid, step)


@bp.post("/agent/calls/<call_sid>/start")
def agent_start(call_sid: str) -> ResponseReturnValue:
    """Start Twilio's secure capture (after the bank authorization, for a bank debit)."""
    return _act(call_sid, lambda ctx: agentpay.start(
        ctx, _session(ctx), username(), _callback(_session(ctx))))


@bp.post("/agent/calls/<call_sid>/capture")
def agent_capture(call_sid: str) -> ResponseReturnValue:
    """Ask the caller to key one field."""
    field = request.form.get("field", "")[:40]
    return _act(call_sid, lambda ctx: agentpay.capture(
        ctx, _session(ctx), username(), field, _callback(_session(ctx))))


@bp.post("/agent/calls/<call_sid>/complete")
def agent_complete(call_sid: str) -> ResponseReturnValue:
    """Charge: every field is in."""
    def step(ctx: CallContext) -> None:
        session = agentpay.active_session(ctx.db, call_sid)
        if session is not None:  # else already done: a second click changes nothing
            agentpay.complete(ctx, session, username(), _callback(session))

    return _act(call_sid, step)


@bp.post("/agent/calls/<call_sid>/cancel")
def agent_cancel(call_sid: str) -> ResponseReturnValue:
    """Cancel the payment in progress: nothing is recorded."""
    def step(ctx: CallContext) -> None:
        session = agentpay.active_session(ctx.db, call_sid)
        if session is not None:
            agentpay.end(ctx, session, username(), AgentPaymentStatus.CANCELLED, "by the agent")
            flash("Payment cancelled. Nothing was charged.", "info")

    return _act(call_sid, step)


@bp.post("/agent/calls/<call_sid>/receipt")
def agent_receipt(call_sid: str) -> ResponseReturnValue:
    """Text the line's receipt (masked) to the calling number, as the caller could on the
    line after paying."""
    def step(ctx: CallContext) -> None:
        if ctx.call.payment_id is None or not can_text(ctx):
            raise agentpay.AgentPaymentError("No text receipt can be sent on this call.")
        send_text_receipt(ctx)
        if not ctx.call.text_receipt_sent:
            raise agentpay.AgentPaymentError("The text receipt could not be sent.")
        audit_action(ctx.db, username(), "receipt", call_sid, ctx.now,
                     session=agentpay.latest_session(ctx.db, call_sid))
        flash("Receipt texted to the caller's number.", "info")

    return _act(call_sid, step)


@bp.get("/agent/calls/<call_sid>/progress.json")
def agent_progress(call_sid: str) -> ResponseReturnValue:
    """The session's progress for the page's script; asking keeps the session alive."""
    with _call(call_sid) as ctx:
        session = (agentpay.active_session(ctx.db, call_sid)
                   or agentpay.latest_session(ctx.db, call_sid))
        if session is not None and session.status.active:
            session.seen_at = ctx.now
        body = agentpay.progress_view(session, ctx)
        if session is not None and session.payment_id:
            payment = ctx.db.get(Payment, session.payment_id)
            body["confirmation"] = payment.confirmation_code if payment else ""
    return jsonify(body)


@bp.get("/audit")
def audit() -> str:
    """Who did what on calls from the console, newest first."""
    with database().session() as db:
        rows = audit_rows(db)
    return render_template("ops/audit.html", title="Audit", rows=rows)
