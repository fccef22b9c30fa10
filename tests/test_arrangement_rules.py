"""Arrangement rules without a call: who is eligible (table-driven, every rule, the override
both ways, the boundaries), and the terms offered (exact cents, dates, what the JSON holds)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date, timedelta
from typing import Any

import pytest

from ivr.arrangements.eligibility import Ineligible, add_months, why_not
from ivr.arrangements.terms import (
    Instalment,
    Offer,
    down_payment,
    extension,
    instalment_plan,
    offers,
    split,
)
from ivr.prompts.settings.arrangements import ArrangementSettings
from ivr.statuses import ArrangementKind

TODAY = date(2026, 12, 1)
RULES = ArrangementSettings()  # the shipped defaults (prompts/settings.toml says the same)


@dataclass(frozen=True)
class Facts:
    """The account columns the rules read; by default Jordan's, eligible by default rules."""

    status: str = "disconnect_pending"
    balance_due_cents: int = 31280
    service_start_date: date | None = TODAY - timedelta(days=800)
    broken_arrangements_12m: int = 0
    returned_payments_12m: int = 0
    arrangement_eligible: bool | None = None


def rules(**changes: Any) -> ArrangementSettings:
    return RULES.model_copy(update=changes)


SIX_MONTHS_AGO = date(2026, 6, 1)
# (what differs from an eligible account, rules changed, expected reason)
CASES: list[tuple[str, dict[str, Any], dict[str, Any], Ineligible | None]] = [
    ("eligible by default", {}, {}, None),
    ("arrangements off", {}, {"enabled": False}, Ineligible.DISABLED),
    ("already has one", {"_active": True}, {}, Ineligible.ACTIVE),
    ("nothing due", {"balance_due_cents": 0}, {}, Ineligible.NOTHING_DUE),
    ("in credit", {"balance_due_cents": -2500}, {}, Ineligible.NOTHING_DUE),
    ("status active", {"status": "active"}, {}, Ineligible.STATUS),
    ("status disconnected", {"status": "disconnected"}, {}, Ineligible.STATUS),
    ("status listed", {"status": "active"}, {"statuses": ("active",)}, None),
    ("balance at the cap", {"balance_due_cents": 150000}, {}, None),
    ("balance a cent over", {"balance_due_cents": 150001}, {}, Ineligible.BALANCE_CAP),
    ("cap lowered", {}, {"balance_cap_cents": 31279}, Ineligible.BALANCE_CAP),
    ("six months to the day", {"service_start_date": SIX_MONTHS_AGO}, {}, None),
    ("a day short of six months", {"service_start_date": SIX_MONTHS_AGO + timedelta(days=1)},
     {}, Ineligible.TOO_NEW),
    ("start date unknown", {"service_start_date": None}, {}, Ineligible.TOO_NEW),
    ("start date unknown, no rule", {"service_start_date": None},
     {"min_months_of_service": 0}, None),
    ("started today, no rule", {"service_start_date": TODAY}, {"min_months_of_service": 0}, None),
    ("one broken", {"broken_arrangements_12m": 1}, {}, Ineligible.BROKEN),
    ("one broken allowed", {"broken_arrangements_12m": 1}, {"max_broken_arrangements": 1}, None),
    ("two broken, one allowed", {"broken_arrangements_12m": 2}, {"max_broken_arrangements": 1},
     Ineligible.BROKEN),
    ("one returned", {"returned_payments_12m": 1}, {}, Ineligible.RETURNED),
    ("one returned allowed", {"returned_payments_12m": 1}, {"max_returned_payments": 1}, None),
    # The override, both ways.
    ("biller says no", {"arrangement_eligible": False}, {}, Ineligible.BILLER),
    ("biller says yes to an active account", {"arrangement_eligible": True, "status": "active"},
     {}, None),
    ("biller says yes over the cap", {"arrangement_eligible": True,
                                      "balance_due_cents": 999999}, {}, None),
    ("biller says yes, too new", {"arrangement_eligible": True, "service_start_date": None},
     {}, None),
    ("biller says yes, broken and returned", {"arrangement_eligible": True,
                                              "broken_arrangements_12m": 3,
                                              "returned_payments_12m": 2}, {}, None),
    # Yes never lets an account have two at once, pay nothing, or use a line that has them off.
    ("biller says yes, already has one", {"arrangement_eligible": True, "_active": True}, {},
     Ineligible.ACTIVE),
    ("biller says yes, nothing due", {"arrangement_eligible": True, "balance_due_cents": 0},
     {}, Ineligible.NOTHING_DUE),
    ("biller says yes, arrangements off", {"arrangement_eligible": True}, {"enabled": False},
     Ineligible.DISABLED),
    # More than one rule fails: the first in the order above is the one said.
    ("status and cap", {"status": "active", "balance_due_cents": 150001}, {}, Ineligible.STATUS),
    ("cap and broken", {"balance_due_cents": 150001, "broken_arrangements_12m": 1}, {},
     Ineligible.BALANCE_CAP),
]


@pytest.mark.parametrize(("facts", "changed", "expected"),
                         [pytest.param(f, r, e, id=name) for name, f, r, e in CASES])
def test_eligibility(facts: dict[str, Any], changed: dict[str, Any],
                     expected: Ineligible | None) -> None:
    facts = dict(facts)
    active = facts.pop("_active", False)
    assert why_not(rules(**changed), replace(Facts(), **facts), TODAY, active) == expected


def test_eligibility_reads_the_real_account_model() -> None:
    from ivr.models import Account

    account = Account(account_number="4401005678", status="disconnect_pending",
                      balance_due_cents=31280, service_start_date=TODAY - timedelta(days=800),
                      broken_arrangements_12m=0, returned_payments_12m=0,
                      arrangement_eligible=None)
    assert why_not(RULES, account, TODAY, False) is None


@pytest.mark.parametrize(("start", "months", "expected"), [
    (date(2026, 1, 31), 1, date(2026, 2, 28)),
    (date(2028, 1, 31), 1, date(2028, 2, 29)),
    (date(2026, 6, 1), 6, date(2026, 12, 1)),
    (date(2026, 11, 15), 2, date(2027, 1, 15)),
    (date(2026, 3, 31), 0, date(2026, 3, 31)),
    (date(2024, 8, 31), 30, date(2027, 2, 28)),
])
def test_add_months(start: date, months: int, expected: date) -> None:
    assert add_months(start, months) == expected


# --- the terms --------------------------------------------------------------------------------

def test_extension_is_the_whole_balance_by_the_latest_date() -> None:
    offer = extension(RULES, 31280, TODAY)
    assert offer == Offer(ArrangementKind.EXTENSION, 31280, 0,
                          (Instalment(date(2026, 12, 15), 31280),))
    assert offer.last_date == TODAY + timedelta(days=14)


def test_jordans_plan() -> None:
    plan = instalment_plan(RULES, 31280, TODAY)
    assert plan is not None
    assert plan.down_cents == 7820
    assert [(i.due, i.cents) for i in plan.instalments] == [
        (date(2026, 12, 31), 7820), (date(2027, 1, 30), 7820), (date(2027, 3, 1), 7820)]


def test_down_payment_rounds_up_to_the_cent() -> None:
    assert down_payment(RULES, 31281) == 7821  # 7820.25
    assert down_payment(RULES, 100) == 25
    assert down_payment(RULES, 1) == 1
    assert down_payment(rules(down_payment_percent=0), 31281) == 0
    assert down_payment(rules(down_payment_percent=100), 31281) == 31281
    assert down_payment(rules(down_payment_percent=33), 1000) == 330


@pytest.mark.parametrize("count", [2, 3, 7, 12])
def test_cents_always_add_up(count: int) -> None:
    plan_rules = rules(max_instalments=12, instalment_interval_days=7)
    for balance in [*range(count + 40, count + 400, 7), 31280, 150000, 99999]:
        for percent in (0, 10, 25, 33, 99):
            plan = instalment_plan(plan_rules.model_copy(update={"down_payment_percent": percent}),
                                   balance, TODAY, count)
            if plan is None:
                continue
            amounts = [i.cents for i in plan.instalments]
            assert plan.down_cents + sum(amounts) == balance, (balance, percent)
            assert len(amounts) == count
            # Equal but for the cents that do not divide: those go on the first.
            assert len(set(amounts[1:])) <= 1 and 0 <= amounts[0] - amounts[-1] < count
            assert [i.due for i in plan.instalments] == [
                TODAY + timedelta(days=7 * n) for n in range(1, count + 1)]


def test_split_remainder_on_the_first() -> None:
    assert split(23461, 3) == [7821, 7820, 7820]
    assert split(6, 3) == [2, 2, 2]
    assert sum(split(1000001, 7)) == 1000001


def test_plans_the_rules_do_not_allow() -> None:
    assert instalment_plan(rules(max_instalments=1), 31280, TODAY) is None
    assert instalment_plan(RULES, 31280, TODAY, count=4) is None  # more than allowed
    assert instalment_plan(RULES, 31280, TODAY, count=1) is None
    assert instalment_plan(RULES, 3, TODAY) is None  # 2 cents left for three instalments
    two = instalment_plan(RULES, 31280, TODAY, count=2)
    assert two is not None and len(two.instalments) == 2


def test_offers_follow_the_rules_and_the_payment_limits() -> None:
    assert [o.kind for o in offers(RULES, 31280, TODAY)] == ["extension", "instalments"]
    assert [o.kind for o in offers(rules(max_instalments=1), 31280, TODAY)] == ["extension"]
    assert offers(RULES, 0, TODAY) == () and offers(RULES, -500, TODAY) == ()
    # A down payment of 2.00 on 8.00 is under a 5.00 minimum payment: no plan.
    assert [o.kind for o in offers(RULES, 800, TODAY, smallest_cents=500)] == ["extension"]
    # A down payment over the largest payment by phone: no plan.
    assert [o.kind for o in offers(RULES, 31280, TODAY, largest_cents=5000)] == ["extension"]
    no_down = offers(rules(down_payment_percent=0), 900, TODAY, smallest_cents=100)
    assert [(o.kind, o.down_cents) for o in no_down] == [("extension", 0), ("instalments", 0)]


def test_offer_json_round_trip_and_refusals() -> None:
    plan = instalment_plan(RULES, 31281, TODAY)
    assert plan is not None
    kept = plan.to_json()
    assert kept == {"kind": "instalments", "balance_cents": 31281, "down_cents": 7821,
                    "instalments": [["2026-12-31", 7820], ["2027-01-30", 7820],
                                    ["2027-03-01", 7820]]}
    assert Offer.from_json(kept) == plan
    for bad in ({**kept, "down_cents": 7822},  # no longer adds up
                {**kept, "down_cents": True}, {**kept, "down_cents": 78.21},
                {**kept, "kind": "gift"}, {**kept, "instalments": []},
                {**kept, "instalments": [["someday", 31281]]},
                {"kind": "extension"}):
        with pytest.raises(ValueError):
            Offer.from_json(bad)
