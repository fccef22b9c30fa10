"""After <Pay>: the confirmation number and receipt menu, or the menu after a failed payment."""

from __future__ import annotations

import html

from connectors.amounts import cents_to_text
from connectors.phones import normalize_e164
from ivr.calls.account_switch import switch_account
from ivr.calls.context import CallContext
from ivr.calls.menu import Choice, SpeechList, State, say
from ivr.calls.states.amount import start_payment
from ivr.calls.states.checkout import method_words
from ivr.calls.states.pick_account import pick_or_enter
from ivr.calls.steps import Finish, Go, Hangup, Outcome
from ivr.models import Payment
from ivr.prompts import speech


def _payment(ctx: CallContext) -> Payment | None:
    if ctx.call.payment_id is None:
        return None
    return ctx.db.get(Payment, ctx.call.payment_id)


def _receipt_prompt(ctx: CallContext) -> SpeechList:
    payment = _payment(ctx)
    code = speech.spell(payment.confirmation_code) if payment else ""
    menu = "receipt.menu_text" if can_text(ctx) else "receipt.menu"
    return (say("receipt.number", code=code), say("receipt.another"), say(menu))


def can_text(ctx: CallContext) -> bool:
    """A text receipt is enabled, can be sent to the caller's number, and was not sent yet."""
    from ivr.calls.receipts import can_send

    return (ctx.settings.receipt.text and can_send(ctx.config)
            and normalize_e164(ctx.call.from_number) is not None
            and not ctx.call.text_receipt_sent)


def send_text_receipt(ctx: CallContext) -> Outcome:
    """Text the receipt to the calling number, then the receipt menu again."""
    from ivr.calls.receipts import ReceiptError, send_text
    from ivr.security import mask_account

    payment = _payment(ctx)
    phone = normalize_e164(ctx.call.from_number)
    if payment is None or phone is None:
        return Go("receipt", (say("receipt.text_failed"),))
    total = payment.amount_cents + payment.fee_cents
    body = ctx.catalog.render(
        "receipt.text_body", ctx.lang, amount=cents_to_text(total),
        account_last4=mask_account(payment.account_number)[-4:],
        method=method_words(ctx), payment_last4=payment.card_last4 or payment.bank_last or "",
        code=payment.confirmation_code).ssml
    try:
        # Prompt text without escaping, for a text message (our templates carry no tags).
        send_text(ctx.config, phone, html.unescape(body))
    except ReceiptError:
        return Go("receipt", (say("receipt.text_failed"),))
    ctx.call.text_receipt_sent = True
    return Go("receipt", (say("receipt.text_sent", last4=speech.digits(phone[-4:])),))


def _pay_another(ctx: CallContext) -> Outcome:
    """Another account, verified afresh: the pick list, or account entry when there is none.

    The pick list (the calling number on 2 to 8 accounts) still lists the account just paid.
    """
    switch_account(ctx.call, None)
    return pick_or_enter(ctx)


def _receipt_silence(ctx: CallContext) -> Outcome:
    """A goodbye: the caller has what they called for."""
    return Finish(Hangup((say("goodbye.thanks"),)))


RECEIPT = State("receipt", asks=("receipt.menu", "receipt.menu_text", "receipt.another"),
                question=_receipt_prompt, on_silence=_receipt_silence, choices=(
                    Choice("1", "again", "receipt"),
                    Choice("2", "menu", "main_menu"),
                    Choice("3", "text", send_text_receipt, when=can_text),
                    Choice("4", "another", _pay_another),
                ))


PAY_FAILED = State("pay_failed", asks=("pay.retry_menu",), choices=(
    Choice("1", "retry", start_payment),
    Choice("2", "menu", "main_menu"),
))
