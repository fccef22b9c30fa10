"""One secure capture on a live call: set up, started on Twilio, fields captured, completed
or cancelled; Twilio's status callbacks move it along, and its success becomes a payment
through the same code as <Pay> (ivr.money.payments).

Each step is idempotent: a double click or a repeated callback changes nothing twice.
"""

from __future__ import annotations

import contextlib
import html
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, literal, select
from sqlalchemy.orm import Session

from connectors.amounts import cents_to_text
from ivr.agentpay.audit import SYSTEM, TWILIO, audit
from ivr.agentpay.calls import with_agent
from ivr.calls import account_rules, guards
from ivr.calls import twilio_api as api
from ivr.calls.context import CallContext
from ivr.calls.parsing import parse_amount
from ivr.calls.states.amount import amount_choices, set_amount
from ivr.calls.states.checkout import (
    ach_params,
    after_method,
    pay_limited,
    record_authorization,
    start_authorization_recording,
    stop_authorization_recording,
)
from ivr.db_driver import DriverStatement, ReadAhead
from ivr.db_webhook import DbHandle, session_of
from ivr.models import Account, AgentPayment
from ivr.money.payments import (
    AGENT_CHANNEL,
    BANK_ACCOUNT_TYPES,
    CONFIRMATION_CODE,
    DECLINES,
    PayResult,
    log_recorded,
    post_in_real_time,
    record_payment,
)
from ivr.statuses import AgentPaymentStatus as Status

CARD_FIELDS = ("payment-card-number", "expiration-date", "security-code", "postal-code")
BANK_FIELDS = ("bank-routing-number", "bank-account-number")
# A session whose page stopped asking for progress this long ago is abandoned (the agent's
# browser closed); Twilio ends its own session after its timeout too.
IDLE = timedelta(seconds=90)
_WORD = re.compile(r"[a-z][a-z-]{0,39}")
# What the agent's page calls each field and each state (the page's script shows these).
FIELD_LABELS = {
    "payment-card-number": "Card number", "expiration-date": "Expiration date",
    "security-code": "Security code", "postal-code": "Billing ZIP code",
    "bank-routing-number": "Routing number", "bank-account-number": "Bank account number",
}
STATE_TEXT = {
    "waiting": "Not asked yet", "requested": "Asked: waiting for the caller to key it",
    "keying": "The caller is keying it", "entered": "Entered: being checked",
    "valid": "Entered and valid", "error": "Invalid",
}


class AgentPaymentError(Exception):
    """The step cannot be taken now; the message says why (shown to the agent)."""


def fields(method: str, ctx: CallContext) -> tuple[str, ...]:
    """The fields Twilio asks the caller for, as the line's <Pay> settings say."""
    if method == "ach":
        return BANK_FIELDS
    pay = ctx.settings.pay
    return tuple(f for f in CARD_FIELDS
                 if (f != "security-code" or pay.security_code)
                 and (f != "postal-code" or pay.postal_code))


# Built once and run on the driver (ivr.db_driver): every call's status callback asks it.
_ACTIVE_SESSION = DriverStatement(
    select(AgentPayment.id)
    .where(AgentPayment.call_sid == bindparam("call_sid"),
           # Literal statuses: the driver statement takes no expanding IN.
           AgentPayment.status.in_([literal(s.value) for s in Status if s.active]))
    .order_by(AgentPayment.id.desc()).limit(1))


def active_session(db: DbHandle, call_sid: str) -> AgentPayment | None:
    """The call's session still holding it, if any."""
    # Its id on the session's connection first: nearly every call has none, and an id costs
    # a third of an ORM load. Nothing the caller's webhook changed is read: no flush.
    found = _ACTIVE_SESSION.scalar_in(db, {"call_sid": call_sid})
    return None if found is None else session_of(db).get(AgentPayment, found)


def session_ahead(call_sid: str) -> ReadAhead:
    """The call's session still holding it, read ahead (the status callback asks)."""
    return ReadAhead.same(_ACTIVE_SESSION, {"call_sid": call_sid})


def latest_session(db: Session, call_sid: str) -> AgentPayment | None:
    """The call's most recent session, whatever became of it."""
    return db.scalar(select(AgentPayment).where(AgentPayment.call_sid == call_sid)
                     .order_by(AgentPayment.id.desc()).limit(1))


def _amount(ctx: CallContext, choice: str, other: str) -> int:
    """The amount chosen: one the amount menu offers, or another checked like amount entry."""
    offered = amount_choices(ctx)
    if choice in offered:
        cents = offered[choice]
    elif choice == "other" and not account_rules.full_only(_account(ctx)):
        text = other.strip().lstrip("$").replace(",", "")
        parsed = parse_amount(text.replace(".", "*")) if re.fullmatch(
            r"[0-9]{1,7}(\.[0-9]{1,2})?", text) else None
        if parsed is None:
            raise AgentPaymentError("Type the amount as dollars and cents, e.g. 45.10.")
        cents = parsed
    else:
        raise AgentPaymentError("Choose one of the amounts offered.")
    refusal = set_amount(ctx, cents)
    if refusal is not None:
        raise AgentPaymentError(
            f"That amount is not allowed: {refusal.prompt_id.split('.')[-1].replace('_', ' ')}"
            f" ({refusal.name} {cents_to_text(refusal.cents)}).")
    return cents


def _account(ctx: CallContext) -> Account:
    account = ctx.account
    if account is None or not ctx.call.verified:
        raise AgentPaymentError("Verify the caller first.")
    return account


def prepare(ctx: CallContext, username: str, choice: str, other: str, method: str,
            bank_account_type: str = "") -> AgentPayment:
    """Set up a payment on the call (amount, method, fee) from the account's rules; for a
    bank debit, start recording the authorization the agent reads next."""
    account = _account(ctx)
    if not with_agent(ctx.call):
        raise AgentPaymentError("The caller is at the line's menus, not with a representative.")
    if active_session(ctx.handle, ctx.call.call_sid) is not None:
        raise AgentPaymentError("A payment is already in progress on this call.")
    if not account_rules.phone_payable(account, ctx.settings, ctx.today()):
        raise AgentPaymentError("This account cannot take payments by phone.")
    if method not in account_rules.methods(account, ctx.settings, ctx.today()).allowed:
        raise AgentPaymentError("This account cannot pay that way.")
    if method == "ach" and bank_account_type not in BANK_ACCOUNT_TYPES:
        raise AgentPaymentError("Choose checking or savings.")
    cents = _amount(ctx, choice, other)
    call = ctx.call
    call.method = method
    call.bank_account_type = bank_account_type if method == "ach" else None
    after_method(ctx)  # the line's fee for the method
    if method == "ach":
        start_authorization_recording(ctx)
    session = AgentPayment(call_sid=call.call_sid, agent_username=username,
                           account_id=account.id, amount_cents=cents, fee_cents=call.fee_cents,
                           method=method, bank_account_type=call.bank_account_type,
                           status=Status.PREPARED, progress={}, required=[],
                           created_at=ctx.now, seen_at=ctx.now)
    ctx.db.add(session)
    ctx.db.flush()
    audit(ctx.db, username, "prepared", call.call_sid, ctx.now, session=session,
          detail=f"{method} {cents_to_text(cents + session.fee_cents)}")
    return session


def authorization_text(ctx: CallContext) -> str:
    """The bank debit authorization the agent reads to the caller (the line's own script,
    in the caller's language), as plain text."""
    ssml = ctx.catalog.render("ach.authorize", ctx.lang, **ach_params(ctx)).ssml
    root = ET.fromstring(f"<speak>{ssml}</speak>")  # noqa: S314 - our own catalog's output
    return html.unescape(" ".join("".join(root.itertext()).split()))


def _restore_call(ctx: CallContext, session: AgentPayment) -> None:
    """The call's payment set-up is the session's (what record_payment reads)."""
    call = ctx.call
    call.amount_cents = session.amount_cents
    call.fee_cents = session.fee_cents
    call.method = session.method
    call.bank_account_type = session.bank_account_type
    account = ctx.account
    if account is not None:
        call.payment_purpose = account_rules.purpose(account, ctx.settings, session.amount_cents)


def start(ctx: CallContext, session: AgentPayment, username: str, callback: str) -> None:
    """Start Twilio's secure session on the call (once; a second click changes nothing)."""
    if session.status != Status.PREPARED:
        return
    account = _account(ctx)
    _restore_call(ctx, session)
    if pay_limited(ctx):
        end(ctx, session, username, Status.CANCELLED, "card-testing limit")
        raise AgentPaymentError("The card-testing limit for this account or caller is reached.")
    if session.method == "ach":
        record_authorization(ctx)
    pay = ctx.settings.pay
    options: dict[str, str | bool] = {
        "charge_amount": cents_to_text(session.amount_cents + session.fee_cents),
        "currency": pay.currency, "payment_connector": ctx.config.pay_connector,
        "payment_method": "ach-debit" if session.method == "ach" else "credit-card",
        "description": f"Account {account.account_number} call {ctx.call.call_sid}",
        "timeout": str(pay.timeout_seconds)}
    if session.method == "ach":
        options["bank_account_type"] = session.bank_account_type or "consumer-checking"
    else:
        options.update(postal_code=pay.postal_code, security_code=pay.security_code,
                       valid_card_types=" ".join(pay.valid_card_types))
    try:
        sid = api.start_payment(ctx.config, ctx.call.call_sid, f"agent-{session.id}-start",
                                callback, **options)
    except api.TwilioApiError as exc:
        end(ctx, session, username, Status.FAILED, "could not start")
        raise AgentPaymentError("Twilio did not start the secure session; try again.") from exc
    session.payment_sid = sid
    session.status = Status.OPEN
    session.required = list(fields(session.method, ctx))
    session.seen_at = ctx.now
    audit(ctx.db, username, "started", ctx.call.call_sid, ctx.now, session=session,
          detail=f"{session.method} {cents_to_text(session.amount_cents + session.fee_cents)}")


def capture(ctx: CallContext, session: AgentPayment, username: str, field: str,
            callback: str) -> None:
    """Ask the caller to key one field (again, after an error)."""
    if session.status != Status.OPEN or session.payment_sid is None:
        raise AgentPaymentError("No secure session is open on this call.")
    if field not in fields(session.method, ctx):
        raise AgentPaymentError("Unknown field.")
    progress = dict(session.progress or {})
    asks = int(progress.get(field, {}).get("asks", 0)) + 1
    api.update_payment(ctx.config, ctx.call.call_sid, session.payment_sid,
                       f"agent-{session.id}-{field}-{asks}", callback, capture=field)
    progress[field] = {"state": "requested", "asks": asks}
    session.progress = progress
    session.capturing = field
    audit(ctx.db, username, "capture", ctx.call.call_sid, ctx.now, session=session, detail=field)


def complete(ctx: CallContext, session: AgentPayment, username: str, callback: str) -> None:
    """Ask Twilio to charge, once every field is in (a second click changes nothing)."""
    if session.status == Status.COMPLETING:
        return
    if session.status != Status.OPEN or session.payment_sid is None:
        raise AgentPaymentError("No secure session is open on this call.")
    if session.required:
        raise AgentPaymentError("The caller has not entered every field yet.")
    api.update_payment(ctx.config, ctx.call.call_sid, session.payment_sid,
                       f"agent-{session.id}-complete", callback, status="complete")
    session.status = Status.COMPLETING
    audit(ctx.db, username, "complete", ctx.call.call_sid, ctx.now, session=session)


def end(ctx: CallContext, session: AgentPayment, username: str, status: Status,
        why: str = "") -> None:
    """Cancel or abandon: Twilio's session is cancelled, nothing is recorded, the call is
    free for another payment."""
    if not session.status.active:
        return
    if session.payment_sid and session.status in (Status.OPEN, Status.COMPLETING):
        with contextlib.suppress(api.TwilioApiError):
            api.update_payment(ctx.config, ctx.call.call_sid, session.payment_sid,
                               f"agent-{session.id}-cancel", "", status="cancel")
    stop_authorization_recording(ctx)
    session.status = status
    session.ended_at = ctx.now
    audit(ctx.db, username, str(status), ctx.call.call_sid, ctx.now, session=session,
          detail=why)


def _word(value: str | None) -> str:
    """A word of Twilio's (a field name, an error type), or "" for anything else."""
    text = (value or "").strip().lower()
    return text if _WORD.fullmatch(text) else ""


def handle_callback(ctx: CallContext, session: AgentPayment, form: Mapping[str, str]) -> None:
    """A Payments status callback: a field's progress, or the final result. Only words and
    Twilio's masked values are read; a success becomes a payment, once."""
    if form.get("Result"):
        _final(ctx, session, form)
        return
    if not session.status.active:
        return
    known = fields(session.method, ctx)
    field = _word(form.get("Capture"))
    if "Required" in form:
        session.required = [f for f in (_word(x) for x in form["Required"].split(","))
                            if f in known]
    if field in known:
        progress = dict(session.progress or {})
        entry = dict(progress.get(field, {}))
        error = _word(form.get("ErrorType"))
        if error:
            entry.update(state="error", error=error)
        elif (form.get("PartialResult") or "").strip().lower() == "true":
            entry.update(state="keying", error="")
        else:
            entry.update(state="entered", error="")
        progress[field] = entry
        session.progress = progress
    session.capturing = field or session.capturing


def _final(ctx: CallContext, session: AgentPayment, form: Mapping[str, str]) -> None:
    result = PayResult.from_form(form)
    if session.payment_id is not None:
        return  # a repeated final callback
    if result.result == "success" and CONFIRMATION_CODE.match(result.confirmation_code):
        # Money moved: recorded even if the page had meanwhile cancelled or gone away.
        _restore_call(ctx, session)
        payment, created = record_payment(ctx.db, ctx, result, channel=AGENT_CHANNEL,
                                          agent=session.agent_username)
        ctx.call.payment_id = payment.id
        session.payment_id = payment.id
        session.status = Status.COMPLETED
        session.result = "success"
        session.ended_at = ctx.now
        audit(ctx.db, TWILIO, "charged", ctx.call.call_sid, ctx.now, session=session,
              detail=f"confirmation {payment.confirmation_code}")
        post_in_real_time(ctx, payment, created)
        log_recorded(ctx, payment, created)
        return
    if not session.status.active:
        return
    session.result = _word(result.result) or "internal-error"
    session.error = re.sub(r"[0-9]", "#", result.error)[:120]
    if session.result in DECLINES and session.account_id is not None:
        guards.record(ctx.db, guards.PAY_DECLINED, ctx.call, ctx.now, session.account_id)
    session.status = Status.FAILED
    session.ended_at = ctx.now
    audit(ctx.db, TWILIO, "failed", ctx.call.call_sid, ctx.now, session=session,
          detail=session.result)


def idle_sessions(db: Session, now: datetime) -> list[AgentPayment]:
    """Active sessions whose page stopped asking for progress (the browser closed)."""
    return list(db.scalars(select(AgentPayment).where(
        AgentPayment.status.in_([s for s in Status if s.active]),
        AgentPayment.seen_at < now - IDLE)))


def progress_view(session: AgentPayment | None, ctx: CallContext) -> dict[str, Any]:
    """What the agent's page shows of a session: words only, never a digit."""
    if session is None:
        return {"status": "none"}
    rows = []
    for field in fields(session.method, ctx):
        entry = (session.progress or {}).get(field, {})
        state = entry.get("state", "waiting")
        if state == "entered" and field not in session.required:
            state = "valid"
        error = entry.get("error", "")
        text = STATE_TEXT.get(state, state) + (f" ({error})" if error else "")
        rows.append({"field": field, "label": FIELD_LABELS[field], "state": state,
                     "error": error, "text": text, "required": field in session.required})
    return {"status": str(session.status), "id": session.id, "fields": rows,
            "required": list(session.required), "capturing": session.capturing or "",
            "result": session.result or "", "payment_id": session.payment_id,
            "can_complete": session.status == Status.OPEN and not session.required}


def expire(ctx: CallContext, session: AgentPayment) -> None:
    """End an idle session as abandoned (see ``idle_sessions``)."""
    end(ctx, session, SYSTEM, Status.ABANDONED, "the agent's page went away")
