"""The call machine: starts calls, routes keys to states, and does what every state shares.

Shared behaviour (docs/call-flow.md): ``9`` repeats, ``0`` asks for a representative, silence
re-prompts and then offers more time, invalid keys re-prompt with help, and after the
configured number of failed tries the caller is offered a representative or a goodbye.
"""

from __future__ import annotations

import logging
from datetime import datetime

from ivr.calls.agent import closed_speech, escalate, transfer_open, transfer_step
from ivr.calls.call_row import queue_event
from ivr.calls.context import CallContext
from ivr.calls.menu import AGENT_KEY, ENDED, PAYING, REPEAT_KEY, Event, State
from ivr.calls.states import STATES, identify, language_on_file, locked
from ivr.calls.steps import (
    Ask,
    Finish,
    Go,
    Hangup,
    Outcome,
    PayCapture,
    Retry,
    Speech,
    Step,
    Transfer,
)
from ivr.db_driver import ReadAhead
from ivr.prompts.settings import LineSettings
from ivr.statuses import CallOutcome

log = logging.getLogger(__name__)


def record(ctx: CallContext, event: Event, detail: str = "",
           state: str | None = None) -> None:
    """Add one step to the call's path (never keys typed), written at commit."""
    queue_event(ctx.handle, {"call_sid": ctx.call.call_sid, "at": ctx.now,
                         "state": state or ctx.call.state, "event": str(event),
                         "detail": detail[:120], "language": ctx.lang})


def start(ctx: CallContext) -> Step:
    """The first answer to a new call: the language menu, or identification with one language
    or a language on file."""
    if len(ctx.settings.languages) == 1:
        ctx.call.language = ctx.settings.languages[0]
    else:
        # A caller whose account has its language on file is greeted in it, with the other
        # language offered in one line at the account confirmation: no language menu.
        known = language_on_file(ctx)
        if known is None:
            return enter(ctx, "language")
        ctx.call.language = known
    outcome = identify(ctx)
    return apply(ctx, outcome, greeting=(Speech("greeting.welcome"), Speech("common.tips")))


def _timeout(ctx: CallContext) -> int:
    inp = ctx.settings.input
    return inp.extended_timeout_seconds if ctx.call.extended_time else inp.timeout_seconds


def ask(ctx: CallContext, state: State, speech: tuple[Speech, ...]) -> Ask:
    """Speak, then gather keys for ``state``."""
    return Ask(state=state.name, speech=speech, num_digits=state.num_digits(ctx),
               timeout=_timeout(ctx))


def enter(ctx: CallContext, name: str, before: tuple[Speech, ...] = ()) -> Step:
    """Move to a state: reset its tries and ask its question."""
    state = STATES[name]
    ctx.call.state = name
    ctx.call.tries = 0
    ctx.call.silences = 0
    ctx.call.awaiting_more_time = False
    record(ctx, Event.ENTER, state=name)
    return ask(ctx, state, (*before, *state.prompt(ctx)))


def apply(ctx: CallContext, outcome: Outcome, greeting: tuple[Speech, ...] = ()) -> Step:
    """Turn a state's outcome into the next step."""
    if isinstance(outcome, Go):
        return enter(ctx, outcome.state, (*greeting, *outcome.before))
    if isinstance(outcome, Finish):
        step = outcome.step
        if greeting and isinstance(step, Hangup | Transfer | PayCapture):
            step = _prepend(step, greeting)
        return finish(ctx, step, outcome.state)
    return fail(ctx, STATES[ctx.call.state], Event.NOMATCH, outcome.help, counts=outcome.counts)


def _prepend(step: Step, speech: tuple[Speech, ...]) -> Step:
    if isinstance(step, Hangup):
        return Hangup((*speech, *step.speech))
    if isinstance(step, Transfer):
        return Transfer((*speech, *step.speech), step.number)
    if isinstance(step, PayCapture):
        return PayCapture((*speech, *step.speech), step.charge_cents, step.method,
                          step.bank_account_type, step.description)
    return step


def finish(ctx: CallContext, step: Step, state: str | None = None) -> Step:
    """Leave the menus: a hang-up ends the session, <Pay> waits for its result."""
    if isinstance(step, Hangup):
        ctx.call.state = ENDED
        record(ctx, Event.GOODBYE, state=ENDED)
    elif isinstance(step, Transfer):
        record(ctx, Event.TRANSFER)
    elif isinstance(step, PayCapture):
        ctx.call.state = state or PAYING
        record(ctx, Event.PAY_START, step.method)
    return step


def fail(ctx: CallContext, state: State, kind: Event, help_: tuple[Speech, ...] = (),
         counts: bool = True) -> Step:
    """Count a failed try; re-prompt with help, offer more time, or escalate at the limit."""
    max_tries = ctx.settings.input.max_tries
    if counts:
        ctx.call.tries += 1
    record(ctx, kind)
    if ctx.call.tries >= max_tries:
        record(ctx, Event.MAX_TRIES)
        return finish(ctx, escalate(ctx, (Speech("common.too_many_tries"),)))
    prompts = state.prompt(ctx)
    if kind == Event.NOINPUT:
        ctx.call.silences += 1
        last_chance = ctx.call.tries == max_tries - 1
        if (ctx.call.silences >= 2 or last_chance) and not ctx.call.extended_time:
            # Relay-service and TTY callers often need longer: offer it before giving up.
            ctx.call.awaiting_more_time = True
            return Ask(state=state.name, speech=(Speech("common.more_time"),), num_digits=1,
                       finish_on_key="", timeout=ctx.settings.input.extended_timeout_seconds)
        lead = _variant(ctx, prompts, "noinput") or (Speech("common.no_input"),)
    else:
        ctx.call.silences = 0
        lead = help_ or _variant(ctx, prompts, "nomatch") or (Speech("common.no_match"),)
    reprompt = tuple(Speech(s.prompt_id, s.params, "reprompt", s.lang) for s in prompts)
    return ask(ctx, state, (*lead, *reprompt))


def _variant(ctx: CallContext, prompts: tuple[Speech, ...], variant: str) -> tuple[Speech, ...]:
    """The state's own no-input/no-match wording when ops wrote one for its first prompt."""
    if not prompts:
        return ()
    first = prompts[0]
    if ctx.catalog.has(first.prompt_id, first.lang or ctx.lang, variant):
        return (Speech(first.prompt_id, first.params, variant, first.lang),)
    return ()


def representative(ctx: CallContext, state: State) -> Step:
    """Key 0: connect in business hours; otherwise say when the office opens and ask again."""
    record(ctx, Event.AGENT)
    if transfer_open(ctx):
        return finish(ctx, transfer_step(ctx))
    return ask(ctx, state, (*closed_speech(ctx), *state.prompt(ctx)))


def reads_ahead(url_state: str, call_sid: str, settings: LineSettings,
                now: datetime) -> tuple[ReadAhead, ...]:
    """The reads the answer to keys posted for ``url_state`` will ask (``State.ahead``)."""
    state = STATES.get(url_state)
    if state is None or state.ahead is None:
        return ()
    return state.ahead(call_sid, settings, now)


def advance(ctx: CallContext, url_state: str, digits: str | None) -> Step:
    """Handle the keys posted for ``url_state`` and return the next step."""
    call = ctx.call
    if call.state == ENDED or call.ended_at is not None:
        return Hangup((Speech("goodbye.thanks"),))
    if call.state == PAYING:
        # A <Gather> answer cannot arrive while <Pay> runs; resume at the pay result instead.
        return Hangup((Speech("goodbye.thanks"),))
    state = STATES.get(call.state)
    if state is None:
        return enter(ctx, "main_menu" if call.verified else "account_entry")
    if url_state != call.state:
        # A stale or replayed request (Twilio retry, double submit): ask the current question.
        record(ctx, Event.STALE)
        return ask(ctx, state, state.prompt(ctx))
    keys = (digits or "").strip()
    if call.awaiting_more_time:
        call.awaiting_more_time = False
        if keys == "#":
            # The caller is there and asked for time: a fresh start in this state.
            call.extended_time = True
            call.silences = 0
            call.tries = 0
            record(ctx, Event.MORE_TIME)
            return ask(ctx, state, state.prompt(ctx))
        if keys and keys != AGENT_KEY:
            # Any other key answers "need more time?", not the question asked before it
            # (a 1 there must never confirm a payment the caller last heard a minute ago):
            # the caller is there, so the question again, as they had asked to hear it.
            record(ctx, Event.REPEAT)
            return ask(ctx, state, state.prompt(ctx))
    if not keys:
        if state.on_silence is not None:
            record(ctx, Event.DEFAULT)
            return apply(ctx, state.on_silence(ctx))
        return fail(ctx, state, Event.NOINPUT)
    call.silences = 0
    if keys == REPEAT_KEY:
        record(ctx, Event.REPEAT)
        return ask(ctx, state, state.prompt(ctx))
    if keys == AGENT_KEY:
        return representative(ctx, state)
    outcome = state.answer(ctx, keys)
    if not isinstance(outcome, Retry):
        record(ctx, Event.OK)
    return apply(ctx, outcome)


def resume_after_transfer(ctx: CallContext) -> Step:
    """A transfer that did not connect: back to the question, unless the caller had run out
    of tries there (then a polite goodbye, never another go at a failed verification)."""
    call = ctx.call
    verification = ctx.settings.verification
    exhausted = (call.tries >= ctx.settings.input.max_tries
                 or (not call.verified and call.verify_failures
                     >= verification.max_failures_per_call)
                 or (call.state == "verify" and locked(ctx)))
    if exhausted or call.state not in STATES:
        call.state = ENDED
        call.outcome = CallOutcome.GAVE_UP
        record(ctx, Event.GOODBYE, state=ENDED)
        return Hangup((Speech("agent.no_answer"), Speech("goodbye.help_later")))
    state = STATES[call.state]
    return ask(ctx, state, (Speech("agent.no_answer"), *state.prompt(ctx)))


def resume(ctx: CallContext) -> Step:
    """Ask the current state's question again (after a transfer that did not connect)."""
    state = STATES.get(ctx.call.state)
    if state is None:
        if ctx.call.state == ENDED:
            return Hangup((Speech("goodbye.thanks"),))
        return enter(ctx, "main_menu" if ctx.call.verified else "account_entry")
    return ask(ctx, state, state.prompt(ctx))
