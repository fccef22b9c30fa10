"""Every prompt id the code speaks, with the placeholder values it supplies.

`ivr prompts check` (and every reload) fails when a language lacks one of these ids, or when
a template uses a placeholder the code does not supply: that prompt would fail on every call
that reaches it. A test scans the code for prompt ids so this list cannot drift.

The prompts a menu choice speaks are declared with the choice (``Choice.says`` in
ivr/calls/states/) rather than listed here; ``PROMPT_PARAMS`` includes them.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

_NONE: tuple[str, ...] = ()

_LISTED: dict[str, tuple[str, ...]] = {
    "greeting.welcome": _NONE, "language.option": ("key",),
    "common.tips": _NONE, "common.no_input": _NONE, "common.no_match": _NONE,
    "common.more_time": _NONE, "common.too_many_tries": _NONE, "common.apology": _NONE,
    "identify.found": ("last4",), "account.enter": _NONE, "account.not_found": _NONE,
    "account.lookup_limit": _NONE,
    "pick.option": ("key", "last4"),
    "verify.zip": _NONE, "verify.pin": _NONE, "verify.mismatch": _NONE,
    "verify.failed_final": _NONE, "verify.locked": _NONE,
    "summary.balance_due_on": ("amount", "date"), "summary.balance_due": ("amount",),
    "summary.zero_balance": _NONE, "summary.credit_balance": ("amount",),
    "summary.past_due": ("amount",), "summary.disconnect_pending": ("date", "amount"),
    "summary.disconnected": _NONE, "summary.last_payment": ("amount", "date"),
    "summary.usage_period": ("quantity", "unit", "date"), "summary.usage": ("quantity", "unit"),
    "summary.no_phone_payments": _NONE,
    "recent.intro": _NONE, "recent.payment": ("amount", "date"), "recent.none": _NONE,
    "menu.main": _NONE, "menu.main_no_pay": _NONE, "menu.pay_full": _NONE,
    "method.menu_pay": ("amount", "last4"),
    "amount.menu_full": ("amount",), "amount.menu_disconnect": ("amount",),
    "amount.menu_other": _NONE, "amount.enter": _NONE, "amount.invalid": _NONE,
    "amount.below_minimum": ("minimum",), "amount.above_maximum": ("maximum",),
    "amount.confirm": ("amount",),
    "method.menu": _NONE, "method.bank_type": _NONE,
    "words.method_card": _NONE, "words.method_ach": _NONE, "words.checking": _NONE,
    "words.savings": _NONE, "words.today": _NONE, "words.tomorrow": _NONE,
    "fee.disclose": ("fee", "method", "total"),
    "fee.disclose_no_choice": ("fee", "method", "total"),
    "fee.declined": _NONE,
    "ach.authorize": ("name", "amount", "date", "account_type", "last4", "phone"),
    "confirm.card": ("amount", "last4"),
    "confirm.card_with_fee": ("amount", "fee", "total", "last4"),
    "pay.intro_card": _NONE, "pay.intro_ach": _NONE, "pay.card_number": _NONE,
    "pay.card_number_invalid": _NONE, "pay.card_type_invalid": _NONE, "pay.expiration": _NONE,
    "pay.expiration_invalid": _NONE, "pay.security_code": _NONE,
    "pay.security_code_amex": _NONE, "pay.security_code_invalid": _NONE,
    "pay.postal_code": _NONE, "pay.postal_code_invalid": _NONE, "pay.routing_number": _NONE,
    "pay.routing_number_invalid": _NONE, "pay.bank_account": _NONE,
    "pay.bank_account_again": _NONE, "pay.bank_account_mismatch": _NONE,
    "pay.bank_account_invalid": _NONE, "pay.processing": _NONE, "pay.success": ("amount",),
    "pay.success_pending": _NONE, "pay.success_posted": _NONE, "pay.cancelled": _NONE,
    "pay.retry_menu": _NONE, "pay.tries_exhausted": _NONE,
    "pay.limit_reached": _NONE,
    "pay.result.too_many_failed_attempts": _NONE, "pay.result.declined": _NONE,
    "pay.result.interrupted": _NONE, "pay.result.validation_error": _NONE,
    "pay.result.internal_error": _NONE,
    "receipt.number": ("code",), "receipt.menu": _NONE, "receipt.menu_text": _NONE,
    "receipt.text_sent": ("last4",), "receipt.text_failed": _NONE,
    "receipt.text_body": ("amount", "account_last4", "method", "payment_last4", "code"),
    "agent.connecting": _NONE, "agent.no_answer": _NONE, "agent.unavailable": _NONE,
    "agent.closed": _NONE, "agent.closed_opens": ("day", "time"),
    "goodbye.thanks": _NONE, "goodbye.help_later": _NONE,
    # Per-account payment rules, reconnection payments, "you already paid today".
    "summary.reconnect": ("amount",), "amount.menu_reconnect": ("amount",),
    "amount.full_only": ("amount",), "amount.below_account_minimum": ("minimum",),
    "method.card_only": _NONE, "method.bank_only": _NONE, "method.card_only_returned": _NONE,
    "method.reconnect_card_only": _NONE, "method.reconnect_bank_only": _NONE,
    "paid_today.notice": ("amount", "day", "time", "code"), "paid_today.menu": _NONE,
    "words.yesterday": _NONE, "pay.reconnect_next": _NONE,
}

# Payment arrangements (ivr/calls/states/arrange.py): the questions that take values, the
# amount menu's instalment and the summary's arrangement line.
_LISTED.update({
    "amount.menu_instalment": ("amount",),
    "summary.arrangement": ("until", "amount", "date"),
    "arrange.menu_extension": ("amount", "date"),
    "arrange.menu_instalments": ("down", "count", "amount"),
    "arrange.menu_instalments_no_down": ("down", "count", "amount"),
    "arrange.confirm_extension": ("amount", "date"), "arrange.confirm_down": ("amount",),
    "arrange.confirm_plan": ("amount",), "arrange.confirm_instalment": ("amount", "date"),
    "arrange.number": ("code",), "arrange.payment_number": ("code",),
})



class _CodePrompts(Mapping[str, tuple[str, ...]]):
    """The ids listed above plus those the menus' choices declare, read on first use:
    ivr.calls imports this package, so it cannot be imported from here at import time."""

    def __init__(self, listed: Mapping[str, tuple[str, ...]]) -> None:
        self._listed = listed
        self._all: dict[str, tuple[str, ...]] | None = None

    def _resolved(self) -> dict[str, tuple[str, ...]]:
        if self._all is None:
            from ivr.calls.wording import declared_prompts

            # The list here wins where both name a prompt.
            self._all = {**declared_prompts(), **self._listed}
        return self._all

    def __getitem__(self, prompt_id: str) -> tuple[str, ...]:
        return self._resolved()[prompt_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self._resolved())

    def __len__(self) -> int:
        return len(self._resolved())


PROMPT_PARAMS: Mapping[str, tuple[str, ...]] = _CodePrompts(_LISTED)
REQUIRED_PROMPT_IDS = PROMPT_PARAMS.keys()
