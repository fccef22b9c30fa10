"""Language, then who is calling: a caller-ID match to confirm, or an account number typed."""

from __future__ import annotations

from functools import partial

from ivr.accounts import cache as accounts
from ivr.calls import guards
from ivr.calls.agent import escalate
from ivr.calls.context import CallContext
from ivr.calls.menu import Choice, SpeechList, State, say, until_pound
from ivr.calls.parsing import clean_number
from ivr.calls.states.pick_account import pick_or_enter
from ivr.calls.states.verify import lockout_ahead, start_verification
from ivr.calls.steps import Finish, Go, Outcome, Retry, Speech
from ivr.prompts import speech
from ivr.prompts.settings import LineSettings

# --- language -------------------------------------------------------------------------------


def _choose_language(lang: str, ctx: CallContext) -> Outcome:
    """The caller's language, then identification."""
    ctx.call.language = lang
    return _after_language(ctx)


def _language_choices(settings: LineSettings) -> tuple[Choice, ...]:
    """One key per configured language, in `languages` order, each announced in its own voice."""
    return tuple(
        Choice(str(i + 1), lang, partial(_choose_language, lang), prompt="language.option")
        for i, lang in enumerate(settings.languages))


def _language_prompt(ctx: CallContext) -> SpeechList:
    options = tuple(Speech("language.option", {"key": choice.key}, lang=choice.name)
                    for choice in _language_choices(ctx.settings))
    return (Speech("greeting.welcome", lang=ctx.settings.default_language), *options)


def _language_silence(ctx: CallContext) -> Outcome:
    """The default language (a caller with a language on file never hears this menu)."""
    ctx.call.language = ctx.settings.default_language
    return _after_language(ctx)


def language_on_file(ctx: CallContext) -> str | None:
    """The configured language of the one account the calling number is on, if it has one."""
    matches = ctx.phone_matches()
    if len(matches) != 1:
        return None
    return _configured(ctx.settings, matches[0].language)


def _configured(settings: LineSettings, wanted: str | None) -> str | None:
    """The configured language tag for an account's language ("es" -> "es-US"), if any."""
    return next((lang for lang in settings.languages
                 if wanted and lang.split("-")[0] == wanted.split("-")[0]), None)


def _after_language(ctx: CallContext) -> Outcome:
    outcome = identify(ctx)
    return Go(outcome.state, (Speech("common.tips"), *outcome.before))


LANGUAGE = State("language", asks=("language.option",), choices_for=_language_choices,
                 question=_language_prompt, on_silence=_language_silence)


# --- identify -------------------------------------------------------------------------------

def identify(ctx: CallContext) -> Go:
    """Caller-ID match when exactly one account lists the calling number; the pick list when
    2 to 8 do; else account entry."""
    matches = ctx.phone_matches()
    if len(matches) == 1:
        ctx.call.account_id = matches[0].id
        return Go("confirm_account")
    return pick_or_enter(ctx)


def _switchable(ctx: CallContext) -> bool:
    """The language menu was skipped for the account's language on file, and the line has
    another language to offer."""
    account = ctx.account
    return (len(ctx.settings.languages) > 1 and account is not None
            and _configured(ctx.settings, account.language) is not None)


def _next_language(ctx: CallContext) -> str:
    languages = ctx.settings.languages
    current = languages.index(ctx.lang) if ctx.lang in languages else -1
    return languages[(current + 1) % len(languages)]


def _confirm_prompt(ctx: CallContext) -> SpeechList:
    account = ctx.account
    last4 = account.account_number[-4:] if account else ""
    offer = ((Speech("language.option", {"key": SWITCH_LANGUAGE_KEY}, lang=_next_language(ctx)),)
             if _switchable(ctx) else ())
    return (say("identify.found", last4=speech.digits(last4)), *offer)


def _switch_language(ctx: CallContext) -> Outcome:
    """The next configured language, then the same question in it."""
    ctx.call.language = _next_language(ctx)
    return Go("confirm_account")


def _other_account(ctx: CallContext) -> Outcome:
    """Forget the caller-ID match and ask for the account number."""
    ctx.call.account_id = None
    return Go("account_entry")


# The other language, offered in one line where the language menu was skipped.
SWITCH_LANGUAGE_KEY = "3"
CONFIRM_ACCOUNT = State("confirm_account", asks=("identify.found", "language.option"),
                        question=_confirm_prompt, ahead=lockout_ahead,
                        choices=(Choice("1", "yes", start_verification),
                                 Choice("2", "other", _other_account),
                                 Choice(SWITCH_LANGUAGE_KEY, "language", _switch_language,
                                        when=_switchable)))


def _account_entry_handle(ctx: CallContext, digits: str) -> Outcome:
    """Digits then `#`: verification, or "not found" (lookups limited per phone and line)."""
    # Bounded per calling number and per line across calls: otherwise anyone can learn
    # which account numbers exist by typing them, call after call.
    guards.lock_caller(ctx.handle, guards.caller_key(ctx.call.from_number))
    if guards.lookup_limit(ctx.db, ctx.call, ctx.now, ctx.settings.limits) is not None:
        guards.record(ctx.db, guards.LOOKUP_BLOCKED, ctx.call, ctx.now)
        return Finish(escalate(ctx, (say("account.lookup_limit"),)))
    number = clean_number(digits.replace("*", ""))
    account = accounts.find_by_number(ctx.db, number) if number else None
    if account is None:
        ctx.call.identify_failures += 1
        guards.record(ctx.db, guards.ACCOUNT_MISS, ctx.call, ctx.now)
        return Retry((say("account.not_found"),))
    ctx.call.account_id = account.id
    return start_verification(ctx)


ACCOUNT_ENTRY = State("account_entry", asks=("account.enter",), handle=_account_entry_handle,
                      num_digits=until_pound, sensitive=True)
