"""The arrangement confirmation file: the payment arrangements callers made, sent to the
biller beside the payment confirmation file, in a layout of its own (docs/layouts.md).

One row per instalment: an arrangement of a down payment and three instalments is three
rows, each repeating the arrangement's account, confirmation number, kind, covered balance
and down payment, then its own number, date and amount; an extension (the balance by one
date) is one row. ``{count}`` in a control record counts rows, ``{sum}`` adds up the
instalment amounts (what is still to be paid). The file holds only what was agreed, never
what became of it (broken or kept), so pushing an interval again writes the same bytes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import IO

from connectors.files.account_file import show_value
from connectors.files.layout_base import RecordLayout
from connectors.files.payment_layout import (
    _format_amount,
    _format_paid_at,
    amount_style_problems,
    record_head_problems,
    record_tail_problems,
)
from connectors.files.record_file import cell_getters, write_records

ARRANGEMENT_FIELDS = (
    "account_number",
    "confirmation_number",
    "kind",
    "created_at",
    "balance",
    "down_payment",
    "down_payment_confirmation",
    "instalment",
    "instalments",
    "due_date",
    "amount",
    "idempotency_key",
    "call_sid",
)
DEFAULT_ARRANGEMENT_COLUMNS: tuple[tuple[str, str], ...] = tuple(
    (name, name)
    for name in (
        "account_number",
        "confirmation_number",
        "kind",
        "created_at",
        "balance",
        "down_payment",
        "instalment",
        "instalments",
        "due_date",
        "amount",
    )
)
# Written as numbers; every other cell is text (connectors.files.cells).
_NUMBERS = frozenset({"balance", "down_payment", "amount", "instalment", "instalments"})
_UNMAPPED = _NUMBERS | {"created_at", "due_date"}
_SAMPLE_DAY = date(2026, 11, 26)


@dataclass(frozen=True)
class ArrangementRow:
    """One instalment of an arrangement as it goes into the file; money in integer cents."""

    account_number: str
    confirmation_number: str
    kind: str  # "extension" or "instalments"
    created_at: datetime
    balance_cents: int  # the balance the arrangement covers
    down_payment_cents: int
    instalment: int  # 1..instalments
    instalments: int
    due_date: date
    amount_cents: int
    down_payment_confirmation: str = ""  # the down payment's confirmation number, if any
    idempotency_key: str = ""
    call_sid: str = ""

    def __post_init__(self) -> None:
        if self.created_at.utcoffset() is None:
            raise ValueError("created_at must be an aware datetime")
        object.__setattr__(self, "created_at", self.created_at.astimezone(UTC))
        for name in ("balance_cents", "down_payment_cents", "amount_cents"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"{name} must be integer cents")
        for name in ("account_number", "confirmation_number", "kind"):
            if not getattr(self, name):
                raise ValueError(f"{name} must not be empty")
        if not 1 <= self.instalment <= self.instalments:
            raise ValueError("instalment must be between 1 and instalments")


@dataclass(frozen=True)
class ArrangementLayout(RecordLayout):
    """How the arrangement confirmation file is written; see docs/layouts.md.

    The keys mean what they mean in a ``PaymentLayout``; ``datetime_format`` and
    ``time_zone`` (so ``zone``) are for ``created_at``, ``date_format`` (strftime) for
    ``due_date``.
    """

    columns: tuple[tuple[str, str], ...] = DEFAULT_ARRANGEMENT_COLUMNS
    date_format: str = "%Y-%m-%d"

    def _problems(self) -> list[str]:
        return _layout_problems(self)


def _layout_problems(layout: ArrangementLayout) -> list[str]:
    problems, seen = record_head_problems(layout, ARRANGEMENT_FIELDS)
    if _date_back(layout.date_format) != _SAMPLE_DAY:
        problems.append(f"date_format: {layout.date_format!r} cannot write and read back a date")
    problems += amount_style_problems(layout)
    return problems + record_tail_problems(
        layout, seen, _UNMAPPED, "amounts, numbers, times and dates"
    )


def _date_back(date_format: str) -> date | None:
    try:
        written = _SAMPLE_DAY.strftime(date_format)
        return datetime.strptime(written, date_format).date()  # noqa: DTZ007 (a date)
    except ValueError:
        return None


DEFAULT_ARRANGEMENT_LAYOUT = ArrangementLayout(name="default")


def _getters(layout: ArrangementLayout) -> list[Callable[[ArrangementRow], str]]:
    """One function per column giving its cell text for a row, value maps applied."""
    style, zone, moment, day = (layout.amount_style, layout.zone, layout.datetime_format,
                                layout.date_format)
    getters: dict[str, Callable[[ArrangementRow], str]] = {
        "account_number": lambda r: r.account_number,
        "confirmation_number": lambda r: r.confirmation_number,
        "kind": lambda r: r.kind,
        "created_at": lambda r: _format_paid_at(r.created_at, moment, zone),
        "balance": lambda r: _format_amount(r.balance_cents, style),
        "down_payment": lambda r: _format_amount(r.down_payment_cents, style),
        "down_payment_confirmation": lambda r: r.down_payment_confirmation,
        "instalment": lambda r: str(r.instalment),
        "instalments": lambda r: str(r.instalments),
        "due_date": lambda r: r.due_date.strftime(day),
        "amount": lambda r: _format_amount(r.amount_cents, style),
        "idempotency_key": lambda r: r.idempotency_key,
        "call_sid": lambda r: r.call_sid,
    }
    return cell_getters(layout, getters)


def write_arrangement_file(rows: Iterable[ArrangementRow], out: IO[bytes],
                           layout: ArrangementLayout, *,
                           values: Mapping[str, str] | None = None) -> tuple[int, int]:
    """Write ``rows`` (instalments) in ``layout``; return (rows, sum of amounts in cents).

    Streams and is deterministic, as ``write_payment_file`` (connectors/files/
    payment_file.py), whose rules for ``values``, header records and errors it shares.
    """
    getters = _getters(layout)
    return write_records(
        rows, out, layout,
        cells=lambda row: [get(row) for get in getters],
        text_cells=[name not in _NUMBERS for _, name in layout.columns],
        summed=lambda row: row.amount_cents,
        describe=lambda n, row: f"arrangement row {n} ({show_value(row.confirmation_number)})",
        values=values,
    )
