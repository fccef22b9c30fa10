"""Every prompt id the code speaks. `ivr prompts check` fails when a language lacks one.

A test scans the code for prompt ids so this list cannot drift from what is spoken.
"""

from __future__ import annotations

REQUIRED_PROMPT_IDS: tuple[str, ...] = (
    "greeting.welcome", "language.option",
    "common.tips", "common.no_input", "common.no_match", "common.more_time",
    "common.too_many_tries", "common.apology",
    "identify.found", "account.enter", "account.not_found",
    "verify.zip", "verify.pin", "verify.mismatch", "verify.failed_final", "verify.locked",
    "summary.balance_due_on", "summary.balance_due", "summary.zero_balance",
    "summary.credit_balance", "summary.past_due", "summary.disconnect_pending",
    "summary.disconnected", "summary.last_payment", "summary.usage_period", "summary.usage",
    "summary.no_phone_payments",
    "recent.intro", "recent.payment", "recent.none",
    "menu.main", "menu.main_no_pay",
    "amount.menu_full", "amount.menu_disconnect", "amount.menu_other", "amount.enter",
    "amount.invalid", "amount.below_minimum", "amount.above_maximum", "amount.confirm",
    "method.menu", "method.bank_type",
    "words.method_card", "words.method_ach", "words.checking", "words.savings",
    "words.today", "words.tomorrow",
    "fee.disclose", "fee.disclose_no_choice", "fee.declined", "ach.authorize", "confirm.card",
    "confirm.card_with_fee",
    "pay.intro_card", "pay.intro_ach", "pay.card_number", "pay.card_number_invalid",
    "pay.card_type_invalid", "pay.expiration", "pay.expiration_invalid", "pay.security_code",
    "pay.security_code_amex", "pay.security_code_invalid", "pay.postal_code",
    "pay.postal_code_invalid", "pay.routing_number", "pay.routing_number_invalid",
    "pay.bank_account", "pay.bank_account_again", "pay.bank_account_mismatch",
    "pay.bank_account_invalid", "pay.processing", "pay.success", "pay.success_pending",
    "pay.success_posted",
    "pay.cancelled", "pay.retry_menu", "pay.tries_exhausted",
    "pay.result.too_many_failed_attempts", "pay.result.declined", "pay.result.interrupted",
    "pay.result.validation_error", "pay.result.internal_error",
    "receipt.number", "receipt.menu", "receipt.menu_text", "receipt.text_sent",
    "receipt.text_failed", "receipt.text_body",
    "agent.connecting", "agent.no_answer", "agent.unavailable", "agent.closed",
    "agent.closed_opens",
    "goodbye.thanks", "goodbye.help_later",
)
