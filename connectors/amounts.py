"""Money between integer cents and text or Decimal: the one conversion every module uses."""

from __future__ import annotations

from decimal import Decimal

_CENTS_PER_UNIT = 100


def cents_to_text(cents: int) -> str:
    """Cents as a plain amount with two places: ``-123450`` gives ``-1234.50``."""
    sign = "-" if cents < 0 else ""
    whole, part = divmod(abs(cents), _CENTS_PER_UNIT)
    return f"{sign}{whole}.{part:02d}"


def cents_to_decimal(cents: int) -> Decimal:
    """Cents as an exact Decimal amount: ``1250`` gives ``Decimal("12.50")``."""
    return Decimal(cents).scaleb(-2)


def decimal_to_cents(amount: Decimal) -> int:
    """A Decimal amount as cents, rounded to the nearest cent (half to even)."""
    return int((amount * _CENTS_PER_UNIT).to_integral_value())
