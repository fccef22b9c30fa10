"""The account summary and recent payments, as speech. Only spoken after verification."""

from __future__ import annotations

from sqlalchemy import select

from connectors.files.columns import AccountStatus
from ivr.arrangements.store import active_arrangement, next_instalment
from ivr.calls import account_rules
from ivr.calls.context import CallContext
from ivr.calls.steps import Speech
from ivr.models import Payment
from ivr.prompts import speech
from ivr.statuses import PaymentStatus


def summary_speech(ctx: CallContext, details: bool = False) -> tuple[Speech, ...]:
    """Amount due, due date, disconnection notice; with ``details`` (main menu 3), also the
    last payment and usage (said once verified, they only lengthen the way to paying)."""
    account = ctx.account
    if account is None:
        return ()
    items: list[Speech] = []
    balance = account.balance_due_cents
    if balance > 0 and account.due_date:
        items.append(Speech("summary.balance_due_on", {"amount": ctx.money(balance),
                                                       "date": ctx.date(account.due_date)}))
    elif balance > 0:
        items.append(Speech("summary.balance_due", {"amount": ctx.money(balance)}))
    elif balance == 0:
        items.append(Speech("summary.zero_balance"))
    else:
        items.append(Speech("summary.credit_balance", {"amount": ctx.money(balance)}))
    arrangement = arrangement_speech(ctx)
    if arrangement:
        # An active arrangement holds the service: it replaces the disconnection notice.
        items.extend(arrangement)
    elif account.status == AccountStatus.DISCONNECT_PENDING:
        needed = account.past_due_cents if account.past_due_cents > 0 else balance
        if account.disconnect_date and needed > 0:
            items.append(Speech("summary.disconnect_pending", {
                "date": ctx.date(account.disconnect_date), "amount": ctx.money(needed)}))
    elif account.status == AccountStatus.DISCONNECTED:
        items.append(_disconnected_speech(ctx))
    elif account.past_due_cents > 0 and balance > 0:
        items.append(Speech("summary.past_due", {"amount": ctx.money(account.past_due_cents)}))
    if details and account.last_payment_cents and account.last_payment_date:
        items.append(Speech("summary.last_payment", {
            "amount": ctx.money(account.last_payment_cents),
            "date": ctx.date(account.last_payment_date)}))
    if details and account.usage_amount is not None and account.usage_unit:
        unit_id = f"units.{account.usage_unit.lower()}"
        unit = (ctx.catalog.render(unit_id, ctx.lang).ssml
                if ctx.catalog.has(unit_id, ctx.lang) else account.usage_unit)
        quantity = speech.quantity(abs(account.usage_amount), ctx.lang)
        if account.usage_period_end:
            items.append(Speech("summary.usage_period", {
                "quantity": quantity, "unit": unit, "date": ctx.date(account.usage_period_end)}))
        else:
            items.append(Speech("summary.usage", {"quantity": quantity, "unit": unit}))
    if not account_rules.phone_payable(account, ctx.settings, ctx.today()):
        items.append(Speech("summary.no_phone_payments"))
    return tuple(items)


def _disconnected_speech(ctx: CallContext) -> Speech:
    """What restores the service, when it can be paid by phone; else a representative."""
    account = ctx.account
    assert account is not None  # noqa: S101
    needed = account_rules.reconnect_amount(account)
    if (account_rules.reconnecting(account, ctx.settings) and needed > 0
            and account_rules.phone_payable(account, ctx.settings, ctx.today())):
        return Speech("summary.reconnect", {"amount": ctx.money(needed)})
    return Speech("summary.disconnected")
def arrangement_speech(ctx: CallContext) -> tuple[Speech, ...]:
    """The account's active arrangement: until when it holds the service, the next instalment."""
    account = ctx.account
    found = active_arrangement(ctx.handle, account.id) if account is not None else None
    if found is None or not found.instalments:
        return ()
    upcoming = next_instalment(found, ctx.today())
    return (Speech("summary.arrangement", {
        "until": ctx.date(found.instalments[-1].due_date),
        "amount": ctx.money(upcoming.amount_cents), "date": ctx.date(upcoming.due_date)}),)


def recent_payments_speech(ctx: CallContext) -> tuple[Speech, ...]:
    """Payments made on this line (newest first, up to three; none the bank returned or
    that were refunded or voided), else the last one on file."""
    account = ctx.account
    if account is None:
        return ()
    payments = list(ctx.db.scalars(
        select(Payment).where(Payment.account_id == account.id,
                              Payment.status == PaymentStatus.PAID)
        .order_by(Payment.paid_at.desc()).limit(3)))
    tz = ctx.settings.transfer.timezone
    items: list[Speech] = [
        Speech("recent.payment", {"amount": ctx.money(p.amount_cents),
                                  "date": ctx.date(p.paid_at.astimezone(tz).date())})
        for p in payments
    ]
    if not items and account.last_payment_cents and account.last_payment_date:
        items.append(Speech("recent.payment", {"amount": ctx.money(account.last_payment_cents),
                                               "date": ctx.date(account.last_payment_date)}))
    if not items:
        return (Speech("recent.none"),)
    return (Speech("recent.intro"), *items)
