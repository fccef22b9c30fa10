"""Who may have more time to pay: ``[arrangements]`` in settings.toml over account columns.

Pure: the rules, the account's columns, today and whether the account already has an active
arrangement go in; out comes None (eligible) or the one reason why not, which the caller
hears in one sentence. The account file's ``arrangement_eligible`` overrides the rules both
ways (Y: eligible whatever the rules say; N: never), but never lets an account with nothing
due, or with an arrangement already running, have another.
"""

from __future__ import annotations

import calendar
from datetime import date
from enum import StrEnum
from typing import Protocol

from ivr.prompts.settings.arrangements import ArrangementSettings


class Ineligible(StrEnum):
    """Why an account may not make an arrangement by phone (each has its own sentence)."""

    DISABLED = "disabled"  # [arrangements] enabled = false
    ACTIVE = "active"  # one is already running
    NOTHING_DUE = "nothing_due"
    BILLER = "biller"  # the account file says arrangement_eligible N
    STATUS = "status"  # the account's status is not one of [arrangements] statuses
    BALANCE_CAP = "balance_cap"  # the balance is over balance_cap
    TOO_NEW = "too_new"  # fewer than min_months_of_service months (or no start date)
    BROKEN = "broken"  # more than max_broken_arrangements in the last 12 months
    RETURNED = "returned"  # more than max_returned_payments in the last 12 months


class ArrangementFacts(Protocol):
    """The account columns the rules read (``ivr.models.Account`` has them all)."""

    @property
    def status(self) -> str: ...

    @property
    def balance_due_cents(self) -> int: ...

    @property
    def service_start_date(self) -> date | None: ...

    @property
    def broken_arrangements_12m(self) -> int: ...

    @property
    def returned_payments_12m(self) -> int: ...

    @property
    def arrangement_eligible(self) -> bool | None: ...


def add_months(start: date, months: int) -> date:
    """``start`` plus whole calendar months (the 31st becomes the month's last day)."""
    index = start.month - 1 + months
    year, month = start.year + index // 12, index % 12 + 1
    return date(year, month, min(start.day, calendar.monthrange(year, month)[1]))


def why_not(rules: ArrangementSettings, account: ArrangementFacts, today: date,
            has_active: bool) -> Ineligible | None:
    """None when the account may make an arrangement now, else the first reason it may not."""
    if not rules.enabled:
        return Ineligible.DISABLED
    if has_active:
        return Ineligible.ACTIVE
    if account.balance_due_cents <= 0:
        return Ineligible.NOTHING_DUE
    if account.arrangement_eligible is not None:
        return None if account.arrangement_eligible else Ineligible.BILLER
    if account.status not in rules.statuses:
        return Ineligible.STATUS
    if account.balance_due_cents > rules.balance_cap_cents:
        return Ineligible.BALANCE_CAP
    if rules.min_months_of_service and (
            account.service_start_date is None
            or add_months(account.service_start_date, rules.min_months_of_service) > today):
        return Ineligible.TOO_NEW
    if account.broken_arrangements_12m > rules.max_broken_arrangements:
        return Ineligible.BROKEN
    if account.returned_payments_12m > rules.max_returned_payments:
        return Ineligible.RETURNED
    return None
