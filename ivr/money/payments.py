"""Recording what <Pay> returns: one payment per call and confirmation code, masked data only."""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from connectors.files.columns import AccountStatus
from ivr.calls import guards
from ivr.calls.account_rules import RECONNECT
from ivr.calls.agent import escalate
from ivr.calls.context import CallContext
from ivr.calls.machine import enter, finish, record
from ivr.calls.menu import Event
from ivr.calls.states import ENDED, PAYING, pay_limited, refuse_payment
from ivr.calls.states.arrange import (
    after_down_payment,
    after_payment_state,
    failed_payment_state,
)
from ivr.calls.states.arrange import post_now as post_arrangement_now
from ivr.calls.steps import Silent, Speech, Step
from ivr.models import Account, AchAuthorization, OutboxEntry, Payment
from ivr.prompts.settings import CARD_TYPES
from ivr.security import mask_account
from ivr.statuses import CallOutcome, OutboxStatus, PostingStatus

log = logging.getLogger(__name__)

# Twilio's documented <Pay> results, each with what the caller hears.
FAILURE_PROMPTS = {
    "too-many-failed-attempts": "pay.result.too_many_failed_attempts",
    "payment-connector-error": "pay.result.declined",
    "caller-interrupted-with-star": "pay.result.interrupted",
    "validation-error": "pay.result.validation_error",
    "internal-error": "pay.result.internal_error",
}
# Results that tried a card or bank account and failed: what card testing produces, so the
# limits in ivr.calls.guards count them. Hang-ups, "*" and Twilio's own errors test nothing.
DECLINES = frozenset({"too-many-failed-attempts", "payment-connector-error",
                      "validation-error"})
_KEY_NAMESPACE = uuid.UUID("6f1c1d2e-8a4b-4c59-9b1e-2d0f5a7e9c31")
CONFIRMATION_CODE = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")
# The bank account types <Pay> documents (bankAccountType); we ask for the consumer ones.
BANK_ACCOUNT_TYPES = frozenset({"consumer-checking", "consumer-savings", "commercial-checking"})
# ASCII only: \d also matches Arabic-Indic and other digits, which no file reader takes.
_EXPIRATION = re.compile(r"(?:0[1-9]|1[0-2])[0-9]{2}")  # MMYY


def idempotency_key(call_sid: str, confirmation_code: str) -> str:
    """A key fixed at birth from the call and Twilio's confirmation code (never the clock)."""
    return str(uuid.uuid5(_KEY_NAMESPACE, f"{call_sid}:{confirmation_code}"))


def _last_digits(masked: str | None, keep: int) -> str | None:
    digits = re.sub(r"[^0-9]", "", masked or "")
    return digits[-keep:] if digits else None


def _one_of(raw: str | None, known: frozenset[str]) -> str | None:
    """The value if it is one of ``known`` (any case, outer spaces ignored), else None.

    A processor's or attacker's text never reaches the database, receipts or the biller's
    confirmation file: an unknown value is stored as unknown (None), which every reader of
    these fields already handles (bank payments have no card brand).
    """
    value = (raw or "").strip().lower()
    return value if value in known else None


@dataclass(frozen=True)
class PayResult:
    """The fields of a <Pay> action callback we use; everything else is ignored.

    Each field holds only what Twilio documents for it, or None: a card brand and bank
    account type from Twilio's lists, ASCII digits of masked numbers, an MMYY expiry.
    """

    result: str
    confirmation_code: str
    card_brand: str | None
    card_last4: str | None
    card_exp: str | None
    bank_last: str | None
    bank_account_type: str | None
    error: str

    @classmethod
    def from_form(cls, form: Mapping[str, str]) -> PayResult:
        """Read a callback defensively: presence of each field varies by result and connector."""
        exp = (form.get("ExpirationDate") or "").strip()
        brand = _one_of(form.get("PaymentCardType"), CARD_TYPES)
        if brand is None and form.get("PaymentCardType"):
            # Recorded as unknown; logged (cut short) in case Twilio adds a card type.
            log.warning("unknown card type from <Pay>", extra={"fields": {
                "card_type": repr(form.get("PaymentCardType", "")[:24])}})
        return cls(
            result=(form.get("Result") or "").strip(),
            confirmation_code=(form.get("PaymentConfirmationCode") or "").strip(),
            card_brand=brand,
            card_last4=_last_digits(form.get("PaymentCardNumber"), 4),
            card_exp=exp if _EXPIRATION.fullmatch(exp) else None,
            bank_last=_last_digits(form.get("BankAccountNumber"), 2),
            bank_account_type=_one_of(form.get("BankAccountType"), BANK_ACCOUNT_TYPES),
            error=(form.get("PaymentError") or "")[:120],
        )


# Payment.channel: taken by the caller alone at <Pay>, or by an agent in the ops console.
IVR_CHANNEL = "ivr"
AGENT_CHANNEL = "agent"


def record_payment(db: Session, ctx: CallContext, result: PayResult, *,
                   channel: str = IVR_CHANNEL, agent: str | None = None) -> tuple[Payment, bool]:
    """Store the payment, update the cache and queue the post, all in one transaction.

    What is paid (amount, fee, method, purpose) is the one the call set up, from
    server-side data. Returns (payment, created). A repeated callback finds the existing
    payment instead.
    """
    call = ctx.call
    existing = db.scalar(select(Payment).where(
        Payment.call_sid == call.call_sid, Payment.confirmation_code == result.confirmation_code))
    if existing is not None:
        return existing, False
    account = db.get(Account, call.account_id) if call.account_id else None
    if account is None:
        raise LookupError("payment for a call without an account")
    method = call.method or "card"
    payment = Payment(
        idempotency_key=idempotency_key(call.call_sid, result.confirmation_code),
        call_sid=call.call_sid, confirmation_code=result.confirmation_code,
        account_id=account.id, account_number=account.account_number,
        amount_cents=call.amount_cents or 0, fee_cents=call.fee_cents, currency="USD",
        method=method,
        card_brand=result.card_brand if method == "card" else None,
        card_last4=result.card_last4 if method == "card" else None,
        card_exp=result.card_exp if method == "card" else None,
        bank_account_type=(call.bank_account_type or result.bank_account_type)
        if method == "ach" else None,
        bank_last=result.bank_last if method == "ach" else None,
        language=ctx.lang, purpose=call.payment_purpose,
        posting_status=PostingStatus.TEST if ctx.config.simulated else PostingStatus.QUEUED,
        paid_at=ctx.now, channel=channel, agent_username=agent,
    )
    savepoint = db.begin_nested()
    try:
        db.add(payment)
        db.flush()
    except IntegrityError:
        # A concurrent twin won the race; use its row so both answers speak the same code.
        savepoint.rollback()
        twin = db.scalar(select(Payment).where(
            Payment.call_sid == call.call_sid,
            Payment.confirmation_code == result.confirmation_code))
        if twin is None:
            raise
        return twin, False
    savepoint.commit()
    if not ctx.config.simulated:
        # A test payment must not change what real callers hear about the account.
        apply_to_cache(account, payment, ctx)
    # A simulated call's payment keeps its outbox row (the invariant holds) marked "test":
    # no worker picks it up.
    db.add(OutboxEntry(payment_id=payment.id, next_attempt_at=ctx.now,
                       status=OutboxStatus.TEST if ctx.config.simulated
                       else OutboxStatus.PENDING))
    if method == "ach":
        auth = db.scalar(select(AchAuthorization).where(
            AchAuthorization.call_sid == call.call_sid, AchAuthorization.payment_id.is_(None))
            .order_by(AchAuthorization.id.desc()).limit(1))
        if auth is not None:
            auth.payment_id = payment.id
    db.flush()
    return payment, True


def post_in_real_time(ctx: CallContext, payment: Payment, created: bool) -> bool:
    """Make a new payment (and its outbox row) durable, then post it within the budget, so
    the caller hears whether the biller has it. Whether it was tried."""
    if not created or ctx.accounting is None or ctx.config.simulated:
        return False
    ctx.db.commit()
    if ctx.accounting.post_now(payment.id):
        payment.posting_status = PostingStatus.POSTED
    return True


def log_recorded(ctx: CallContext, payment: Payment, created: bool) -> None:
    """One log line for a recorded payment (masked)."""
    log.info("payment recorded", extra={"fields": {
        "call_sid": ctx.call.call_sid, "account": mask_account(payment.account_number),
        "amount_cents": payment.amount_cents, "method": payment.method,
        "last4": payment.card_last4 or payment.bank_last, "created": created,
        "channel": payment.channel}})


def apply_to_cache(account: Account, payment: Payment, ctx: CallContext) -> None:
    """Reflect a payment in the cached account at once, so the next call hears it."""
    account.balance_due_cents -= payment.amount_cents
    account.past_due_cents = max(0, account.past_due_cents - payment.amount_cents)
    account.last_payment_cents = payment.amount_cents
    account.last_payment_date = ctx.today()
    if account.status == AccountStatus.DISCONNECT_PENDING and account.past_due_cents == 0:
        # The amount needed to avoid disconnection is paid; the biller confirms on posting.
        account.status = AccountStatus.ACTIVE
        account.disconnect_date = None
    if account.status == AccountStatus.DISCONNECTED and payment.purpose == RECONNECT:
        # The reconnection is paid: the next call hears no reconnection amount again (the
        # biller restores the service, and its next account file says so).
        account.status = AccountStatus.ACTIVE
        account.reconnect_cents = None


def handle_pay_result(ctx: CallContext, form: Mapping[str, str]) -> Step:
    """Answer <Pay>'s action callback: record success once, or explain and offer a retry."""
    call = ctx.call
    result = PayResult.from_form(form)
    if call.payment_id is not None:
        # Already recorded (a repeated callback): speak the same confirmation again.
        payment = ctx.db.get(Payment, call.payment_id)
        if payment is not None and (not result.confirmation_code
                                    or payment.confirmation_code == result.confirmation_code):
            record(ctx, Event.PAY_REPEAT, state=PAYING)
            return enter(ctx, after_payment_state(ctx, payment), _success_speech(ctx, payment))
    if call.state != PAYING:
        record(ctx, Event.PAY_UNEXPECTED, result.result[:40], state=call.state)
        if call.state == ENDED:
            return Silent()
        return enter(ctx, "main_menu" if call.verified else "account_entry")
    call.pay_tries += 1
    if result.result == "success" and CONFIRMATION_CODE.match(result.confirmation_code):
        payment, created = record_payment(ctx.db, ctx, result)
        call.payment_id = payment.id
        call.outcome = CallOutcome.PAID
        record(ctx, Event.PAY_RESULT, "success", state=PAYING)
        # A down payment: the arrangement agreed to is recorded in the same transaction.
        arranged = after_down_payment(ctx, payment) if created else ()
        # The payment, its outbox row and the call's new state are durable before we
        # spend the posting budget.
        if (post_in_real_time(ctx, payment, created) and arranged
                and call.arrangement_id is not None):
            post_arrangement_now(ctx, call.arrangement_id)
        log_recorded(ctx, payment, created)
        return enter(ctx, after_payment_state(ctx, payment),
                     (*_success_speech(ctx, payment), *arranged))
    if result.result == "caller-hung-up":
        record(ctx, Event.PAY_RESULT, "caller-hung-up", state=PAYING)
        call.state = ENDED
        call.outcome = call.outcome or CallOutcome.HUNG_UP_IN_PAY
        return Silent()
    kind = result.result if result.result in FAILURE_PROMPTS else "internal-error"
    if result.result == "success":
        kind = "internal-error"  # success without a usable confirmation code: not recorded
    record(ctx, Event.PAY_RESULT, kind, state=PAYING)
    message = (Speech(FAILURE_PROMPTS[kind]),)
    if kind in DECLINES:
        guards.record(ctx.db, guards.PAY_DECLINED, call, ctx.now, call.account_id)
        if call.account_id is not None and pay_limited(ctx):
            # Say so now rather than offer a retry that would be refused.
            return finish(ctx, refuse_payment(ctx, message).step)
    if call.pay_tries >= ctx.settings.pay.max_tries_per_call:
        return finish(ctx, escalate(ctx, (*message, Speech("pay.tries_exhausted"))))
    return enter(ctx, failed_payment_state(ctx), message)


def _success_speech(ctx: CallContext, payment: Payment) -> tuple[Speech, ...]:
    """Truthful: "posted" only when the accounting system acknowledged the payment."""
    total = ctx.money(payment.amount_cents + payment.fee_cents)
    posted = payment.posting_status == PostingStatus.POSTED
    said = (Speech("pay.success", {"amount": total}),
            Speech("pay.success_posted" if posted else "pay.success_pending"))
    if payment.purpose == RECONNECT:
        # What happens next: the service is restored by the biller, not by this call.
        return (*said, Speech("pay.reconnect_next"))
    return said


def payments_for_listing(db: Session, limit: int = 100) -> list[Payment]:
    """Newest payments first, for `ivr payments list`."""
    return list(db.scalars(select(Payment).order_by(Payment.paid_at.desc(), Payment.id.desc())
                           .limit(limit)))
