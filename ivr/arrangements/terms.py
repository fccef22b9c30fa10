"""What an eligible caller may be offered: an extension, an instalment plan, in exact cents.

Pure. An extension is the whole balance by today + ``longest_extension_days`` (one
instalment). An instalment plan is a down payment of ``down_payment_percent`` of the balance
(rounded up to the cent), paid now through <Pay>, then the rest in ``max_instalments`` equal
amounts every ``instalment_interval_days`` from today; the cents that do not divide evenly
go on the first instalment, so the amounts always add up to the balance exactly.

An ``Offer`` is what the caller hears and what is recorded: it is kept on the call as JSON
(``CallSession.arrangement_offer``) between the read-back and the caller's 1, never rebuilt
from keys.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from ivr.prompts.settings.arrangements import ArrangementSettings
from ivr.statuses import ArrangementKind


@dataclass(frozen=True)
class Instalment:
    """One amount promised by a date."""

    due: date
    cents: int


@dataclass(frozen=True)
class Offer:
    """Terms read to the caller: the balance covered, the share paid now, the instalments."""

    kind: ArrangementKind
    balance_cents: int
    down_cents: int
    instalments: tuple[Instalment, ...]

    @property
    def last_date(self) -> date:
        """The date of the last instalment: how long the arrangement holds the service."""
        return self.instalments[-1].due

    def to_json(self) -> dict[str, Any]:
        """The form kept on the call (``CallSession.arrangement_offer``)."""
        return {"kind": str(self.kind), "balance_cents": self.balance_cents,
                "down_cents": self.down_cents,
                "instalments": [[i.due.isoformat(), i.cents] for i in self.instalments]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Offer:
        """The offer kept on the call; ValueError when it is not one this module wrote."""
        try:
            instalments = tuple(Instalment(date.fromisoformat(str(d)), _cents(c))
                                for d, c in data["instalments"])
            offer = cls(ArrangementKind(data["kind"]), _cents(data["balance_cents"]),
                        _cents(data["down_cents"]), instalments)
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not an arrangement offer: {exc}") from None
        if not instalments or offer.down_cents + sum(i.cents for i in instalments) != (
                offer.balance_cents):
            raise ValueError("an arrangement offer's amounts must add up to its balance")
        return offer


def _cents(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"not an amount in cents: {value!r}")
    return value


def extension(rules: ArrangementSettings, balance_cents: int, today: date) -> Offer:
    """The whole balance by the latest date the rules allow."""
    due = today + timedelta(days=rules.longest_extension_days)
    return Offer(ArrangementKind.EXTENSION, balance_cents, 0, (Instalment(due, balance_cents),))


def down_payment(rules: ArrangementSettings, balance_cents: int) -> int:
    """``down_payment_percent`` of the balance, rounded up to the cent."""
    return -(-balance_cents * rules.down_payment_percent // 100)


def split(cents: int, parts: int) -> list[int]:
    """``cents`` in ``parts`` amounts that add up exactly; the remainder on the first."""
    each, rest = divmod(cents, parts)
    return [each + rest, *([each] * (parts - 1))]


def instalment_plan(rules: ArrangementSettings, balance_cents: int, today: date,
                    count: int | None = None) -> Offer | None:
    """A share now and the rest in ``count`` (default: the most allowed) instalments; None
    when the rules allow no plan (``max_instalments`` 1) or the balance is too small to split."""
    count = rules.max_instalments if count is None else count
    if not 2 <= count <= rules.max_instalments:
        return None
    down = down_payment(rules, balance_cents)
    rest = balance_cents - down
    if rest < count:
        return None
    step = timedelta(days=rules.instalment_interval_days)
    instalments = tuple(Instalment(today + step * (n + 1), cents)
                        for n, cents in enumerate(split(rest, count)))
    return Offer(ArrangementKind.INSTALMENTS, balance_cents, down, instalments)


def offers(rules: ArrangementSettings, balance_cents: int, today: date,
           smallest_cents: int = 1, largest_cents: int | None = None) -> tuple[Offer, ...]:
    """Every offer the rules allow for a balance (nothing for nothing due).

    An instalment plan is left out when a payment in it (the down payment, an instalment)
    is below ``smallest_cents``, or its down payment is above ``largest_cents``: the line's
    limits on one payment by phone.
    """
    if balance_cents <= 0:
        return ()
    found = [extension(rules, balance_cents, today)]
    plan = instalment_plan(rules, balance_cents, today)
    if plan is not None and _payable(plan, smallest_cents, largest_cents):
        found.append(plan)
    return tuple(found)


def _payable(plan: Offer, smallest: int, largest: int | None) -> bool:
    if plan.down_cents and (plan.down_cents < smallest
                            or (largest is not None and plan.down_cents > largest)):
        return False
    return all(i.cents >= smallest for i in plan.instalments)
