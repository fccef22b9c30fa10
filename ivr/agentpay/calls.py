"""What an agent sees of calls in progress, and verifying a caller the line did not verify."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from ivr.accounts import cache as accounts
from ivr.agentpay.audit import audit
from ivr.calls import account_rules, guards
from ivr.calls.account_switch import switch_account
from ivr.calls.context import CallContext
from ivr.calls.parsing import clean_number
from ivr.calls.states import verify
from ivr.calls.states.amount import amount_choices
from ivr.models import AgentPayment, CallSession
from ivr.statuses import AgentPaymentStatus, CallOutcome

# A call still open after this long lost its final status callback: it is not live.
LIVE_FOR = timedelta(hours=4)


@dataclass(frozen=True)
class LiveCall:
    """One call in progress, as the agent's list shows it (caller masked by the page)."""

    call_sid: str
    from_number: str
    started_at: datetime
    transferred: bool
    account_number: str | None
    verified: bool
    taking_payment: bool


def calls_in_progress(db: Session, now: datetime, limit: int = 100) -> list[LiveCall]:
    """Calls without a final status, newest first; those the line transferred are marked."""
    calls = db.scalars(select(CallSession).where(
        CallSession.ended_at.is_(None), CallSession.started_at > now - LIVE_FOR)
        .order_by(CallSession.started_at.desc()).limit(limit))
    found = list(calls)
    busy = set(db.scalars(select(AgentPayment.call_sid).where(
        AgentPayment.call_sid.in_([c.call_sid for c in found]),
        AgentPayment.status.in_([s for s in AgentPaymentStatus if s.active]))))
    return [LiveCall(c.call_sid, c.from_number, c.started_at,
                     c.outcome == CallOutcome.TRANSFERRED,
                     c.account.account_number if c.account else None, c.verified,
                     c.call_sid in busy) for c in found]


def load_call(db: Session, call_sid: str) -> CallSession | None:
    """The call, locked until the transaction ends (one change to a call at a time, as for
    its webhooks; SQLite's write lock does the same)."""
    return db.scalar(select(CallSession).where(CallSession.call_sid == call_sid)
                     .with_for_update(of=CallSession))


def with_agent(call: CallSession) -> bool:
    """Whether the line handed the caller to a representative (they pressed 0, or the line
    offered one): only then may an agent verify them or take a payment. A caller still at
    the line's menus is the line's."""
    return call.outcome == CallOutcome.TRANSFERRED


def is_live(call: CallSession, now: datetime) -> bool:
    """Whether the call is still going on (the agent may act on it)."""
    return call.ended_at is None and call.started_at > now - LIVE_FOR


@dataclass(frozen=True)
class AccountView:
    """What a verified call's account shows the agent: the balance and its payment rules."""

    account_number: str
    customer_name: str
    balance_cents: int
    past_due_cents: int
    due_date: date | None
    status: str
    disconnect_date: date | None
    last_payment_cents: int | None
    last_payment_date: date | None
    payable: bool
    methods: tuple[str, ...]
    full_only: bool
    account_minimum_cents: int | None
    line_minimum_cents: int
    line_maximum_cents: int
    fees: dict[str, int]
    choices: dict[str, int]


def account_view(ctx: CallContext) -> AccountView | None:
    """The account detail of a verified call (None before verification passes)."""
    account = ctx.account
    if account is None or not ctx.call.verified:
        return None
    settings, today = ctx.settings, ctx.today()
    payable = account_rules.phone_payable(account, settings, today)
    return AccountView(
        account.account_number, account.customer_name, account.balance_due_cents,
        account.past_due_cents, account.due_date, account.status, account.disconnect_date,
        account.last_payment_cents, account.last_payment_date, payable,
        account_rules.methods(account, settings, today).allowed, account_rules.full_only(account),
        account_rules.account_minimum(account), settings.amount.minimum_cents,
        settings.amount.maximum_cents,
        {"card": settings.fee.card_cents, "ach": settings.fee.ach_cents},
        amount_choices(ctx) if payable else {})


# What an agent's verification came to (verify.check_entry's words, and these).
NOT_FOUND, LOOKUP_LIMIT, ON_THE_LINE = "not_found", "lookup_limit", "on_the_line"


def agent_verify(ctx: CallContext, username: str, account_number: str, entry: str) -> str:
    """The caller's ZIP or PIN, typed by the agent as the caller says it: the line's own
    check, counted in the same per-call limit and lockout. On a call that has no account
    yet, ``account_number`` names it first (with the line's lookup limits)."""
    call = ctx.call
    if not with_agent(call):
        return ON_THE_LINE
    if call.account_id is None:
        guards.lock_caller(ctx.handle, guards.caller_key(call.from_number))
        if guards.lookup_limit(ctx.db, call, ctx.now, ctx.settings.limits) is not None:
            guards.record(ctx.db, guards.LOOKUP_BLOCKED, call, ctx.now)
            audit(ctx.db, username, "verify", call.call_sid, ctx.now, detail=LOOKUP_LIMIT)
            return LOOKUP_LIMIT
        number = clean_number(account_number.replace(" ", "").replace("-", ""))
        account = accounts.find_by_number(ctx.db, number) if number else None
        if account is None:
            call.identify_failures += 1
            guards.record(ctx.db, guards.ACCOUNT_MISS, call, ctx.now)
            audit(ctx.db, username, "verify", call.call_sid, ctx.now, detail=NOT_FOUND)
            return NOT_FOUND
        switch_account(call, account.id)
    if ctx.settings.verification.method == "none":
        check = verify.PASSED
    else:
        check = verify.check_entry(ctx, entry)
    if check == verify.PASSED:
        call.verified = True
        verify.refresh_live_balance(ctx)
    elif check == verify.LOCKED:
        guards.record(ctx.db, guards.VERIFY_LOCKED, call, ctx.now, call.account_id)
    audit(ctx.db, username, "verify", call.call_sid, ctx.now, detail=check)
    return check
