"""The tables of ``settings.toml`` other than ``[transfer]``, one model each.

A field's name is what the code reads; its alias, when it has one, is the key in the file
(``minimum`` is read as ``minimum_cents``). Defaults mirror the shipped prompts/settings.toml
except site-specific values (phone numbers), which have no meaningful default.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import timedelta
from types import MappingProxyType
from typing import Annotated, Any, Final, Literal, Self, get_args

from pydantic import AfterValidator, BeforeValidator, Field, model_validator

from connectors.amounts import cents_to_text
from connectors.toml_settings import Array, TomlTable, expect, must_be, refuse
from ivr.prompts.settings.values import Cents, NonEmpty, Phone, between, enabled_when_set, minutes

# Card types Twilio <Pay> accepts in validCardTypes and reports as PaymentCardType.
CARD_TYPES: Final = frozenset(
    {"visa", "mastercard", "amex", "maestro", "discover", "optima", "jcb", "diners-club", "enroute"}
)

# Line language -> <Pay language> unless [pay.language] says otherwise (<Pay> has no es-US).
DEFAULT_PAY_LANGUAGE: Final = MappingProxyType({"en-US": "en-US", "es-US": "es-MX"})

_CURRENCY: Final = re.compile(r"[a-z]{3}")
_WEEK_OF_MINUTES: Final = 7 * 24 * 60

VerificationMethod = Literal["zip", "pin", "none"]


def _method(value: object) -> object:
    choices = get_args(VerificationMethod)
    if value not in choices:
        raise refuse(f'must be "zip", "pin" or "none", got {value!r}')
    return value


class InputSettings(TomlTable):
    """Keypad input timing and retry limits."""

    timeout_seconds: Annotated[int, between(1, 60)] = 7
    extended_timeout_seconds: Annotated[int, between(1, 120)] = 20
    max_tries: Annotated[int, between(1, 10)] = 3

    @model_validator(mode="after")
    def _extended_is_longer(self) -> Self:
        if self.extended_timeout_seconds < self.timeout_seconds:
            raise refuse(f"must be at least timeout_seconds ({self.timeout_seconds}), "
                         f"got {self.extended_timeout_seconds}", key="extended_timeout_seconds")
        return self


class VerificationSettings(TomlTable):
    """How callers prove they may hear an account, and the lockout policy."""

    method: Annotated[VerificationMethod, BeforeValidator(_method)] = "zip"
    max_failures_per_call: Annotated[int, between()] = 3
    # Failures from one calling number on one account that lock that number out of it.
    lockout_failures: Annotated[int, between()] = 5
    # Failures from every number not on file for the account, together, that lock them all
    # out of it (the numbers on file are held only by their own failures).
    lockout_failures_all_callers: Annotated[int, between()] = 10
    lockout_window: Annotated[timedelta, minutes()] = Field(
        default=timedelta(minutes=30), alias="lockout_window_minutes")
    lockout_duration: Annotated[timedelta, minutes()] = Field(
        default=timedelta(minutes=30), alias="lockout_minutes")


def _a_cent_at_least(cents: int) -> int:
    if cents < 1:
        # A zero minimum would let a caller "pay" $0.00 and hear a confirmation number.
        raise refuse("must be at least 0.01")
    return cents


class AmountSettings(TomlTable):
    """Limits for one payment, in integer cents."""

    minimum_cents: Annotated[Cents, AfterValidator(_a_cent_at_least)] = Field(
        default=1_00, alias="minimum")
    maximum_cents: Cents = Field(default=5000_00, alias="maximum")

    @model_validator(mode="after")
    def _minimum_below_maximum(self) -> Self:
        if self.minimum_cents > self.maximum_cents:
            raise refuse(f"{cents_to_text(self.minimum_cents)} is more than maximum "
                         f"{cents_to_text(self.maximum_cents)}", key="minimum")
        return self


class FeeSettings(TomlTable):
    """Convenience fee per payment method, in integer cents (0 = no fee, no fee prompt)."""

    card_cents: Cents = Field(default=0, alias="card")
    ach_cents: Cents = Field(default=0, alias="ach")


def _card_types(types: tuple[str, ...]) -> tuple[str, ...]:
    problems = [] if types else ["must list at least one card type"]
    problems += [f"unknown card type {card!r} (known: {', '.join(sorted(CARD_TYPES))})"
                 for card in types if card not in CARD_TYPES]
    if problems:
        raise refuse(*problems)
    return types


def _currency(code: str) -> str:
    if not _CURRENCY.fullmatch(code):
        raise refuse(must_be('a lowercase ISO 4217 code like "usd"', code))
    if code != "usd":
        # Amounts are spoken as dollars and cents and stored as USD: another currency would
        # be charged in one unit and announced in another.
        raise refuse(f"only usd is supported today, got {code!r}")
    return code


def _with_default_pay_languages(languages: Mapping[str, str]) -> Mapping[str, str]:
    return MappingProxyType({**DEFAULT_PAY_LANGUAGE, **languages})


class PaySettings(TomlTable):
    """Options for Twilio ``<Pay>``. ``IVR_PAY_CONNECTOR`` overrides ``connector`` (AppConfig)."""

    connector: NonEmpty = "Default"
    max_attempts: Annotated[int, between(1, 3)] = 2
    timeout_seconds: Annotated[int, between(1, 600)] = 10
    security_code: bool = True
    postal_code: bool = True
    valid_card_types: Annotated[
        Array[str], expect("a list of card types", list), AfterValidator(_card_types)
    ] = ("visa", "mastercard", "amex", "discover")
    currency: Annotated[str, AfterValidator(_currency)] = "usd"
    max_tries_per_call: Annotated[int, between(1, 10)] = 3
    # line language -> <Pay language> (Twilio's built-in prompts lack some line languages).
    language: Annotated[Mapping[str, NonEmpty], AfterValidator(_with_default_pay_languages)] = (
        Field(default_factory=lambda: DEFAULT_PAY_LANGUAGE))


class AchSettings(TomlTable):
    """Bank-account (NACHA TEL) payments."""

    enabled: bool = False  # without the key: on when `office_phone` is set
    script_version: NonEmpty = "tel-2026-11-v1"
    # E.164; "" only when ACH is disabled (an enabled ACH without it is a SettingsError).
    office_phone: Phone = ""
    # Record the spoken authorization through Twilio (NACHA TEL: keep it two years).
    record_authorization: bool = True

    @model_validator(mode="before")
    @classmethod
    def _default_enabled(cls, data: Any) -> Any:
        return enabled_when_set(data, "office_phone")

    @model_validator(mode="after")
    def _phone_when_enabled(self) -> Self:
        if self.enabled and not self.office_phone:
            # The NACHA TEL authorization script must give the caller a number to revoke by.
            raise refuse("is required when ACH is enabled", key="office_phone")
        return self


class ReceiptSettings(TomlTable):
    """After a payment: whether to offer a text-message receipt to the calling number."""

    text: bool = False


class LimitSettings(TomlTable):
    """Abuse limits across calls (sliding windows kept in the database)."""

    pay_declines_per_account: Annotated[int, between()] = 3
    pay_declines_per_caller: Annotated[int, between()] = 3
    pay_decline_window: Annotated[timedelta, minutes(_WEEK_OF_MINUTES)] = Field(
        default=timedelta(days=1), alias="pay_decline_window_minutes")
    pay_declines_per_line: Annotated[int, between()] = 40
    account_misses_per_caller: Annotated[int, between()] = 6
    account_miss_window: Annotated[timedelta, minutes(_WEEK_OF_MINUTES)] = Field(
        default=timedelta(days=1), alias="account_miss_window_minutes")
    account_misses_per_line: Annotated[int, between()] = 100
    line_window: Annotated[timedelta, minutes(_WEEK_OF_MINUTES)] = Field(
        default=timedelta(hours=1), alias="line_window_minutes")
