"""Reaching a representative: business hours, the transfer, and the polite way out."""

from __future__ import annotations

from ivr.calls.context import CallContext
from ivr.calls.steps import Hangup, Speech, Step, Transfer
from ivr.prompts import speech
from ivr.statuses import CallOutcome


def transfer_open(ctx: CallContext) -> bool:
    """Whether a representative can be reached now."""
    transfer = ctx.settings.transfer
    return bool(transfer.enabled and transfer.number and transfer.is_open(ctx.now))


def closed_speech(ctx: CallContext) -> tuple[Speech, ...]:
    """What to say when representatives cannot be reached: when the office opens next."""
    transfer = ctx.settings.transfer
    if not transfer.enabled or not transfer.number:
        return (Speech("agent.unavailable"),)
    opens = transfer.next_opening(ctx.now)
    if opens is None:
        return (Speech("agent.closed"),)
    local = opens.astimezone(transfer.timezone)
    today = ctx.now.astimezone(transfer.timezone).date()
    if local.date() == today:
        day = ctx.catalog.render("words.today", ctx.lang).ssml
    elif (local.date() - today).days == 1:
        day = ctx.catalog.render("words.tomorrow", ctx.lang).ssml
    else:
        day = speech.weekday_name(local.date(), ctx.lang)
    return (Speech("agent.closed_opens", {"day": day,
                                          "time": speech.time_words(local.time(), ctx.lang)}),)


def transfer_step(ctx: CallContext, before: tuple[Speech, ...] = ()) -> Transfer:
    """Connect the caller to the configured representative number."""
    ctx.call.outcome = CallOutcome.TRANSFERRED
    number = ctx.settings.transfer.number or ""
    return Transfer((*before, Speech("agent.connecting")), number)


def escalate(ctx: CallContext, before: tuple[Speech, ...]) -> Step:
    """After too many failures: a representative when one is available, else a kind goodbye."""
    if transfer_open(ctx):
        return transfer_step(ctx, before)
    ctx.call.outcome = ctx.call.outcome or CallOutcome.GAVE_UP
    return Hangup((*before, *closed_speech(ctx), Speech("goodbye.help_later")))
