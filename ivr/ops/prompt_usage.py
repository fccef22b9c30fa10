"""Which states speak each prompt (and, from ivr.prompts.ids, which values it is given).

The prompts that ask a state's question or announce its choices come from the state
declarations (``ivr.calls.states``). The rest (feedback, summary, <Pay>, the representative)
are written by reading ivr/calls/, ivr/money/payments.py and ivr/calls/twiml.py; a test checks
the whole map against every prompt the code speaks and the state names, so it cannot drift silently.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ivr.calls.states import STATES
from ivr.prompts.ids import PROMPT_PARAMS

# Prompts the machine may speak in whatever state the caller is in.
ANY_STATE = "any-state"


@dataclass(frozen=True)
class Usage:
    """Where a prompt is spoken and the values the code fills in."""

    states: tuple[str, ...]
    placeholders: frozenset[str] = frozenset()
    where: str = ""


def _u(states: str, where: str = "") -> Usage:
    # "" for a prompt whose states all come from the declarations.
    return Usage(tuple(states.split()), where=where)


_SUMMARY = "verify main_menu"
_SUMMARY_WHERE = "account summary, after verification and on main menu key 3"

# Where prompts are spoken besides the questions the states declare (merged below).
_SPOKEN: dict[str, Usage] = {
    "greeting.welcome": _u("language", where="first words of every call"),
    "language.option": _u("", where="one line per offered language"),
    "common.tips": _u("language", where="after the language choice, before identification"),
    "common.no_input": _u(ANY_STATE, where="after silence, before the question again"),
    "common.no_match": _u(ANY_STATE, where="after an invalid key, before the question again"),
    "common.more_time": _u(ANY_STATE, where="after repeated silence"),
    "common.too_many_tries": _u(ANY_STATE, where="after the last failed try in a state"),
    "common.apology": _u(ANY_STATE, where="when something failed on our side"),
    "account.not_found": _u("account_entry", where="unknown account number"),
    "account.lookup_limit": _u("account_entry",
                               where="too many unknown account numbers from one phone or line"),
    "verify.zip": _u("", where="verification method zip"),
    "verify.pin": _u("", where="verification method pin"),
    "verify.mismatch": _u("verify"),
    "verify.failed_final": _u("verify"),
    "verify.locked": _u("confirm_account account_entry verify",
                        where="account locked after repeated failures"),
    "summary.balance_due_on": _u(_SUMMARY, where=_SUMMARY_WHERE),
    "summary.balance_due": _u(_SUMMARY, where=_SUMMARY_WHERE),
    "summary.zero_balance": _u(_SUMMARY, where=_SUMMARY_WHERE),
    "summary.credit_balance": _u(_SUMMARY, where=_SUMMARY_WHERE),
    "summary.past_due": _u(_SUMMARY, where=_SUMMARY_WHERE),
    "summary.disconnect_pending": _u(_SUMMARY, where=_SUMMARY_WHERE),
    "summary.disconnected": _u(_SUMMARY, where=_SUMMARY_WHERE),
    "summary.last_payment": _u(_SUMMARY, where=_SUMMARY_WHERE),
    "summary.usage_period": _u(_SUMMARY, where=_SUMMARY_WHERE),
    "summary.usage": _u(_SUMMARY, where=_SUMMARY_WHERE),
    "summary.no_phone_payments": _u(_SUMMARY, where=_SUMMARY_WHERE),
    "recent.intro": _u("main_menu", where="main menu key 2"),
    "recent.payment": _u("main_menu", where="main menu key 2"),
    "recent.none": _u("main_menu", where="main menu key 2"),
    "menu.main_no_pay": _u("", where="accounts that cannot pay by phone"),
    "amount.menu_disconnect": _u("", where="disconnection pending"),
    "amount.invalid": _u("amount_entry"),
    "amount.below_minimum": _u("amount_menu amount_entry"),
    "amount.above_maximum": _u("amount_menu amount_entry"),
    "words.method_card": _u("fee_accept receipt", where="the {method} value"),
    "words.method_ach": _u("fee_accept receipt", where="the {method} value"),
    "words.checking": _u("ach_authorize", where="the {account_type} value"),
    "words.savings": _u("ach_authorize", where="the {account_type} value"),
    "words.today": _u(ANY_STATE, where="the {day} value of agent.closed_opens"),
    "words.tomorrow": _u(ANY_STATE, where="the {day} value of agent.closed_opens"),
    "fee.disclose_no_choice": _u("", where="bank payments disabled"),
    "fee.declined": _u("fee_accept method"),
    "ach.authorize": _u("",
                        where="NACHA TEL script: change [ach] script_version with it"),
    "confirm.card_with_fee": _u("", where="card fee configured"),
    "pay.intro_card": _u("final_confirm paying"),
    "pay.intro_ach": _u("ach_authorize paying"),
    "pay.card_number": _u("paying", where="<Pay> card capture"),
    "pay.card_number_invalid": _u("paying", where="<Pay> card capture"),
    "pay.card_type_invalid": _u("paying", where="<Pay> card capture"),
    "pay.expiration": _u("paying", where="<Pay> card capture"),
    "pay.expiration_invalid": _u("paying", where="<Pay> card capture"),
    "pay.security_code": _u("paying", where="<Pay> card capture"),
    "pay.security_code_amex": _u("paying", where="<Pay> card capture"),
    "pay.security_code_invalid": _u("paying", where="<Pay> card capture"),
    "pay.postal_code": _u("paying", where="<Pay> card capture"),
    "pay.postal_code_invalid": _u("paying", where="<Pay> card capture"),
    "pay.routing_number": _u("paying", where="<Pay> bank capture"),
    "pay.routing_number_invalid": _u("paying", where="<Pay> bank capture"),
    "pay.bank_account": _u("paying", where="<Pay> bank capture"),
    "pay.bank_account_again": _u("paying", where="<Pay> bank capture"),
    "pay.bank_account_mismatch": _u("paying", where="<Pay> bank capture"),
    "pay.bank_account_invalid": _u("paying", where="<Pay> bank capture"),
    "pay.processing": _u("paying", where="<Pay> card and bank capture"),
    "pay.success": _u("paying receipt"),
    "pay.success_pending": _u("paying receipt", where="not yet acknowledged by accounting"),
    "pay.success_posted": _u("paying receipt", where="acknowledged by accounting"),
    "pay.cancelled": _u("fee_accept ach_authorize final_confirm main_menu"),
    "pay.tries_exhausted": _u("main_menu pay_failed paying"),
    "pay.limit_reached": _u("main_menu amount_confirm ach_authorize final_confirm pay_failed "
                            "paying", where="card-testing limit: too many declined payments"),
    "pay.result.too_many_failed_attempts": _u("paying pay_failed"),
    "pay.result.declined": _u("paying pay_failed"),
    "pay.result.interrupted": _u("paying pay_failed"),
    "pay.result.validation_error": _u("paying pay_failed"),
    "pay.result.internal_error": _u("paying pay_failed"),
    "receipt.number": _u("receipt"),
    "receipt.menu_text": _u("", where="text receipts enabled"),
    "receipt.text_sent": _u("receipt"),
    "receipt.text_failed": _u("receipt"),
    "receipt.text_body": _u("receipt",
                            where="the text message itself, never spoken"),
    "agent.connecting": _u(ANY_STATE, where="transfer to a representative"),
    "agent.no_answer": _u(ANY_STATE, where="transfer did not connect"),
    "agent.unavailable": _u(ANY_STATE, where="no transfer configured"),
    "agent.closed": _u(ANY_STATE, where="outside business hours"),
    "agent.closed_opens": _u(ANY_STATE, where="outside business hours"),
    "goodbye.thanks": _u("receipt paying ended", where="end of a call, after a transfer"),
    "goodbye.help_later": _u(ANY_STATE, where="goodbye after too many tries"),
    # Per-account payment rules and reconnection, besides what their states declare.
    "summary.reconnect": _u(_SUMMARY, where="a disconnected account that can pay to reconnect"),
    "amount.below_account_minimum": _u("amount_menu amount_entry",
                                       where="below the account's minimum_payment"),
    "amount.full_only": _u("amount_confirm amount_entry",
                           where="full_payment_required: the balance only"),
    "method.card_only": _u("amount_confirm", where="the account takes cards only"),
    "method.bank_only": _u("amount_confirm", where="the account takes bank payments only"),
    "method.card_only_returned": _u("amount_confirm",
                                    where="bank payments off after a bank return"),
    "method.reconnect_card_only": _u("amount_confirm", where="[reconnect] methods: card"),
    "method.reconnect_bank_only": _u("amount_confirm", where="[reconnect] methods: bank"),
    "pay.reconnect_next": _u("paying receipt", where="after a reconnection payment"),
    "words.yesterday": _u("paid_today", where="the {day} value of paid_today.notice"),
    # Payment arrangements (main menu 4), besides what their states declare.
    "summary.arrangement": _u(_SUMMARY, where="an active arrangement, instead of the "
                              "disconnection notice"),
    "amount.menu_instalment": _u("", where="an active arrangement"),
    "arrange.recorded": _u("paying", where="the arrangement recorded"),
    "arrange.exists": _u("paying", where="the account has an arrangement already"),
}

# Optional prompts the code looks up by a computed id (``units.<usage_unit>``).
_PREFIX_USAGE: dict[str, Usage] = {
    "units.": _u(_SUMMARY, where="the {unit} value of the usage summary (optional)"),
}

# The question each menu state asks: where its no-input and no-match rates belong.
STATE_QUESTIONS: dict[str, tuple[str, ...]] = {
    name: state.question_prompts for name, state in STATES.items()}


def _with_declared(hand: dict[str, Usage]) -> dict[str, Usage]:
    """The hand-written map plus, for each prompt, the states whose question speaks it or
    whose choices say they speak it."""
    declared: dict[str, list[str]] = {}
    for name, prompts in STATE_QUESTIONS.items():
        for prompt_id in prompts:
            declared.setdefault(prompt_id, []).append(name)
    for name, state in STATES.items():
        for choice in state.choices:
            for prompt_id in choice.says:
                declared.setdefault(prompt_id, []).append(name)
    merged = dict(hand)
    for prompt_id, names in declared.items():
        usage = hand.get(prompt_id, Usage(()))
        merged[prompt_id] = replace(usage, states=tuple(dict.fromkeys((*names, *usage.states))))
    return merged


PROMPT_USAGE = _with_declared(_SPOKEN)

_NOT_SPOKEN = Usage((), frozenset(), "not spoken by the current code")


def usage_for(prompt_id: str) -> Usage:
    """Where ``prompt_id`` is used; an unknown id is not spoken (and takes no values)."""
    usage = PROMPT_USAGE.get(prompt_id)
    if usage is not None:
        # The values each prompt is given are kept in one place, beside the required ids.
        return replace(usage, placeholders=frozenset(PROMPT_PARAMS.get(prompt_id, ())))
    for prefix, prefixed in _PREFIX_USAGE.items():
        if prompt_id.startswith(prefix):
            return prefixed
    return _NOT_SPOKEN
