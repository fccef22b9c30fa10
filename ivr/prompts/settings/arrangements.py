"""``[reconnect]``, ``[arrangements]`` and ``[returns]``: what a disconnected account may pay,
who may have more time to pay, and what a bank return switches off. Every rule is data the
ops team (and ``ivr prompts check``) can read.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, Field

from connectors.files.columns import STATUSES
from connectors.return_codes import is_return
from connectors.toml_settings import Array, TomlTable, expect, refuse
from ivr.prompts.settings.values import Cents, between

Method = Literal["card", "ach"]


def _methods(methods: tuple[str, ...]) -> tuple[str, ...]:
    problems = [] if methods else ["must list at least one of \"card\", \"ach\""]
    problems += [f'unknown method {m!r} (known: "card", "ach")' for m in methods
                 if m not in ("card", "ach")]
    if problems:
        raise refuse(*problems)
    return methods


def _statuses(statuses: tuple[str, ...]) -> tuple[str, ...]:
    unknown = [s for s in statuses if s not in STATUSES]
    if unknown:
        raise refuse(*(f"unknown account status {s!r} (known: "
                       f"{', '.join(sorted(STATUSES))})" for s in unknown))
    return statuses


class ReconnectSettings(TomlTable):
    """Paying to restore a disconnected account's service by phone."""

    enabled: bool = True
    # Card only by default: a bank debit can come back days after service was restored.
    methods: Annotated[Array[str], expect("a list of methods", list),
                       AfterValidator(_methods)] = ("card",)


class ArrangementSettings(TomlTable):
    """Payment arrangements and extensions: who qualifies, and what may be offered."""

    enabled: bool = True
    # Account statuses that qualify (a disconnection notice, by default).
    statuses: Annotated[Array[str], expect("a list of account statuses", list),
                        AfterValidator(_statuses)] = ("disconnect_pending",)
    # The balance an arrangement may cover, at most.
    balance_cap_cents: Cents = Field(default=1500_00, alias="balance_cap")
    # Months since `service_start_date` (0: no requirement; an unknown date fails any other).
    min_months_of_service: Annotated[int, between(0, 600)] = 6
    # At most this many broken arrangements / returned payments in the last 12 months
    # (the account file's `broken_arrangements_12m` and `returned_payments_12m`).
    max_broken_arrangements: Annotated[int, between(0, 100)] = 0
    max_returned_payments: Annotated[int, between(0, 100)] = 0
    # Extension: the whole balance by a date at most this many days away.
    longest_extension_days: Annotated[int, between(1, 90)] = 14
    # Instalments: a share now, the rest in up to this many (1: no instalment plans).
    max_instalments: Annotated[int, between(1, 12)] = 3
    instalment_interval_days: Annotated[int, between(7, 62)] = 30
    # The share of the balance paid now, through <Pay>, before an instalment plan is recorded.
    down_payment_percent: Annotated[int, between(0, 100)] = 25


def _return_codes(codes: tuple[str, ...]) -> tuple[str, ...]:
    bad = [c for c in codes if not is_return(c)]
    if bad:
        raise refuse(*(f"{c!r} is not a return code R01-R99" for c in bad))
    return codes


class ReturnsSettings(TomlTable):
    """What a bank return does to an account, and when the return rates page warns."""

    # Returns that mean the account cannot be debited: bank payments off for a while.
    bank_off_codes: Annotated[Array[str], expect("a list of return codes", list),
                              AfterValidator(_return_codes)] = (
        "R01", "R02", "R03", "R04", "R05", "R07", "R09", "R10", "R29")
    bank_off_days: Annotated[int, between(1, 3650)] = 60
    # The rates page warns once a rate reaches this percent of its NACHA threshold.
    warn_at_percent: Annotated[int, between(1, 100)] = 80
