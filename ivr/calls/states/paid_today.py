""""You already paid today": an account paid in the last 24 hours hears that payment (amount,
time, confirmation number) before choosing an amount, and must press 1 to pay again."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from ivr.calls.context import CallContext
from ivr.calls.menu import Choice, SpeechList, State, say
from ivr.calls.steps import Outcome
from ivr.models import Payment
from ivr.prompts import speech
from ivr.statuses import PaymentStatus

# How far back a payment counts as "already paid today".
PAID_WINDOW = timedelta(hours=24)


def payment_today(ctx: CallContext) -> Payment | None:
    """The account's newest payment on this line in the last 24 hours, if any (one the bank
    returned, or that was refunded or voided, took no money: it does not count)."""
    if ctx.call.account_id is None:
        return None
    return ctx.db.scalar(
        select(Payment).where(Payment.account_id == ctx.call.account_id,
                              Payment.paid_at >= ctx.now - PAID_WINDOW,
                              Payment.status == PaymentStatus.PAID)
        .order_by(Payment.paid_at.desc(), Payment.id.desc()).limit(1))


def _notice(ctx: CallContext) -> SpeechList:
    payment = payment_today(ctx)
    if payment is None:  # gone meanwhile (never in practice): only the choice
        return (say("paid_today.menu"),)
    local = payment.paid_at.astimezone(ctx.settings.transfer.timezone)
    day = "words.today" if local.date() == ctx.today() else "words.yesterday"
    return (say("paid_today.notice",
                amount=ctx.money(payment.amount_cents + payment.fee_cents),
                day=ctx.catalog.render(day, ctx.lang).ssml,
                time=speech.time_words(local.time(), ctx.lang),
                code=speech.spell(payment.confirmation_code)),
            say("paid_today.menu"))


def _pay_again(ctx: CallContext) -> Outcome:
    """The caller means it: on to the amount (not asked again on this call)."""
    from ivr.calls.states.amount import choose_amount

    ctx.call.paid_today_confirmed = True
    return choose_amount(ctx)


PAID_TODAY = State("paid_today", asks=("paid_today.notice", "paid_today.menu"),
                   question=_notice, choices=(
                       Choice("1", "again", _pay_again),
                       Choice("2", "menu", "main_menu"),
                   ))
