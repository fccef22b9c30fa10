"""A payment confirmation file layout: columns, amounts, times and control records."""

from __future__ import annotations

import string
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from connectors.amounts import cents_to_text
from connectors.files.account_file import (
    FieldError,
    show_value,
)
from connectors.files.layout_base import (
    _CENTS_RE,
    _CURRENCY_RE,
    _LAST4_RE,
    _LINE_TERMINATORS,
    _PLAIN_AMOUNT_RE,
    DEFAULT_PAYMENT_COLUMNS,
    PAYMENT_FIELDS,
    PaymentAmountStyle,
    RecordLayout,
    SumField,
    file_problems,
)

# --- payment files --------------------------------------------------------------------------

# The placeholders a reversal record may use, and the default record: a row of its own
# after the payments, recognised by its first cell (docs/layouts.md#reversal-records).
REVERSAL_PLACEHOLDERS = frozenset({"account_number", "amount", "effective_date", "recorded_at",
                                   "confirmation_number", "kind", "return_code", "method"})
DEFAULT_REVERSAL_RECORD = ("REVERSAL", "{account_number}", "{amount}", "{effective_date}",
                           "{confirmation_number}", "{kind}", "{return_code}")


@dataclass(frozen=True)
class ReversalRow:
    """Money of an earlier payment taken back (a bank return, a refund, a void), as a
    confirmation file carries it: the payment's confirmation number and the amount."""

    account_number: str
    amount_cents: int
    effective_date: date
    recorded_at: datetime
    confirmation_number: str
    kind: str  # return, refund, void
    method: str
    return_code: str | None = None


@dataclass(frozen=True)
class PaymentRow:
    """One payment as it goes into a confirmation file; money in integer cents.

    ``last4`` is the last digits (at most 4) of the card or bank account number, the only
    part of either number this module ever handles. ``card_brand`` and ``last4`` may be
    None (an empty string reads as None). ``paid_at`` must be aware; it is kept in UTC.
    """

    account_number: str
    amount_cents: int
    fee_cents: int
    paid_at: datetime
    confirmation_number: str
    method: str
    card_brand: str | None = None
    last4: str | None = None
    currency: str = "USD"
    idempotency_key: str = ""
    call_sid: str = ""

    def __post_init__(self) -> None:
        if self.paid_at.utcoffset() is None:
            raise ValueError("paid_at must be an aware datetime")
        object.__setattr__(self, "paid_at", self.paid_at.astimezone(UTC))
        for name in ("amount_cents", "fee_cents"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"{name} must be integer cents")
        # Refuse rather than trim: a longer value here may be a whole card or bank number.
        if self.last4 is not None and self.last4 != "" and not _LAST4_RE.fullmatch(self.last4):
            raise ValueError("last4 must be 1 to 4 digits (value not shown)")
        for name in ("account_number", "confirmation_number", "method"):
            if not getattr(self, name):
                raise ValueError(f"{name} must not be empty")
        # The file cannot tell "" from None, so both are None and a round trip is exact.
        for name in ("card_brand", "last4"):
            if getattr(self, name) == "":
                object.__setattr__(self, name, None)
        if not _CURRENCY_RE.fullmatch(self.currency):
            raise ValueError(f"currency {self.currency!r} must be 3 capital letters")

    @property
    def total_cents(self) -> int:
        """Amount plus fee: what the payer was charged."""
        return self.amount_cents + self.fee_cents


@dataclass(frozen=True)
class PaymentLayout(RecordLayout):
    """How the outbound payment confirmation file is written; see docs/layouts.md.

    ``columns`` is an ordered list of (header name, field) with fields from
    ``PAYMENT_FIELDS``, or ``"=text"`` for a column that always holds ``text``.
    ``header_record`` and ``trailer_record`` are rows of cells that may hold
    ``{count}``, ``{sum}`` (of ``sum_field``, in the amount style) or names supplied to
    ``write_payment_file``; empty means none. ``value_maps`` maps a field to
    {our value: file value}, e.g. ``{"method": {"card": "CC"}}``. ``zone`` is the time zone
    paid_at is written in.
    """

    columns: tuple[tuple[str, str], ...] = DEFAULT_PAYMENT_COLUMNS
    sum_field: SumField = "amount"
    # The record written for each reversal after the payments (never counted in {count}
    # or {sum}); a file without reversals is exactly as before.
    reversal_record: tuple[str, ...] = DEFAULT_REVERSAL_RECORD

    def _problems(self) -> list[str]:
        return _payment_layout_problems(self)


def columns_problems(columns: tuple[tuple[str, str], ...],
                     fields: tuple[str, ...]) -> tuple[list[str], set[str]]:
    """A confirmation layout's ``columns`` checked against its ``fields``; and the fields
    it names."""
    problems: list[str] = []
    if not columns:
        problems.append("columns: at least one column is needed")
    seen: set[str] = set()
    for i, column in enumerate(columns, start=1):
        if len(column) != 2 or not all(isinstance(part, str) for part in column):
            problems.append(f"columns[{i}]: {column!r} must be [header name, field]")
            continue
        _, name = column
        if name.startswith("="):
            continue
        if name not in fields:
            problems.append(f"columns[{i}]: {name!r} is not one of {', '.join(fields)}")
        elif name in seen:
            problems.append(f"columns[{i}]: {name!r} appears twice")
        seen.add(name)
    return problems, seen


def record_head_problems(layout: RecordLayout,
                         fields: tuple[str, ...]) -> tuple[list[str], set[str]]:
    """What a confirmation layout checks first: its name and dialect, its ``columns``
    against ``fields``, its time zone and datetime format; and the fields it names."""
    problems = file_problems(layout.name, layout.encoding, layout.delimiter, layout.quoting,
                             layout.quotechar)
    column_problems, seen = columns_problems(layout.columns, fields)
    problems += column_problems
    try:
        zone: ZoneInfo | None = ZoneInfo(layout.time_zone)
    except (ZoneInfoNotFoundError, ValueError):
        zone = None
        problems.append(f"time_zone: {layout.time_zone!r} is not an IANA time zone")
    if zone is not None:
        problems += _datetime_format_problems(layout.datetime_format, zone)
    return problems, seen


def amount_style_problems(layout: RecordLayout) -> list[str]:
    """A confirmation layout's ``amount_style`` checked."""
    if layout.amount_style not in get_args(PaymentAmountStyle):
        return [f"amount_style: {layout.amount_style!r} is not one of plain, cents"]
    return []


def record_tail_problems(layout: RecordLayout, seen: set[str], unmapped: frozenset[str],
                         unmapped_kinds: str) -> list[str]:
    """What a confirmation layout checks last: its line terminator, its ``value_maps``
    (of fields in ``seen``, none in ``unmapped``, which are ``unmapped_kinds``) and its
    control records."""
    problems: list[str] = []
    if layout.line_terminator not in _LINE_TERMINATORS:
        problems.append(f"line_terminator: {layout.line_terminator!r} must be CRLF, LF or CR")
    for name, mapping in layout.value_maps.items():
        if name not in seen:
            problems.append(f"value_maps.{name}: {name!r} is not in columns")
        elif name in unmapped:
            problems.append(f"value_maps.{name}: {unmapped_kinds} cannot be mapped")
        elif len(set(mapping.values())) != len(mapping):
            # Reading a file back inverts the map, so two values cannot share one spelling.
            problems.append(f"value_maps.{name}: two values map to the same text")
    for label in ("header_record", "trailer_record"):
        problems += [f"{label}: {p}" for p in _template_problems(getattr(layout, label))]
    return problems


def _payment_layout_problems(layout: PaymentLayout) -> list[str]:
    problems, seen = record_head_problems(layout, PAYMENT_FIELDS)
    problems += amount_style_problems(layout)
    if layout.sum_field not in get_args(SumField):
        problems.append(f"sum_field: {layout.sum_field!r} is not one of amount, fee, total")
    object.__setattr__(layout, "reversal_record", tuple(layout.reversal_record))
    problems += [f"reversal_record: {p}" for p in _template_problems(layout.reversal_record)]
    if not layout.reversal_record:
        problems.append("reversal_record: needs at least one cell (reversals must reach "
                        "the biller)")
    else:
        unknown = {name for cell in layout.reversal_record if isinstance(cell, str)
                   for _, name, _, _ in _safe_fields(cell)
                   if name and name not in REVERSAL_PLACEHOLDERS}
        if unknown:
            problems.append(f"reversal_record: unknown placeholder(s) {', '.join(sorted(unknown))}"
                            f" (known: {', '.join(sorted(REVERSAL_PLACEHOLDERS))})")
    return problems + record_tail_problems(
        layout, seen, frozenset({"amount", "fee", "total", "paid_at"}), "amounts and times"
    )


def _datetime_format_problems(datetime_format: str, zone: ZoneInfo) -> list[str]:
    if datetime_format == "iso":
        return []
    sample = datetime(2026, 11, 26, 15, 4, tzinfo=UTC)
    try:
        back = _parse_paid_at(_format_paid_at(sample, datetime_format, zone), datetime_format, zone)
    except ValueError:
        back = None
    if back != sample:
        return [f"datetime_format: {datetime_format!r} cannot write and read back a time"]
    return []


def _template_fields(cell: str) -> list[tuple[str, str | None, str | None, str | None]]:
    return list(string.Formatter().parse(cell))


def _safe_fields(cell: str) -> list[tuple[str, str | None, str | None, str | None]]:
    try:
        return _template_fields(cell)
    except ValueError:
        return []  # reported by _template_problems


def _template_problems(template: tuple[str, ...]) -> list[str]:
    if not template:
        return []
    problems: list[str] = []
    literal_cells = 0
    for cell in template:
        if not isinstance(cell, str):
            problems.append(f"{cell!r} is not text")
            continue
        try:
            parts = _template_fields(cell)
        except ValueError as exc:
            problems.append(f"{cell!r}: {exc}")
            continue
        names = [name for _, name, _, _ in parts if name is not None]
        if not names:
            literal_cells += 1
        for _, name, spec, conversion in parts:
            if name is None:
                continue
            if not name.isidentifier() or conversion is not None or "{" in (spec or ""):
                problems.append(f"{cell!r}: placeholders are {{name}} or {{name:spec}}")
            elif spec:
                try:
                    format("0", spec)
                except ValueError:
                    problems.append(f"{cell!r}: {spec!r} is not a format for text")
    if not literal_cells:
        problems.append("needs at least one cell of plain text, so readers can recognise it")
    return problems


def _format_paid_at(paid_at: datetime, datetime_format: str, zone: ZoneInfo) -> str:
    local = paid_at.astimezone(zone)
    if datetime_format == "iso":
        return local.isoformat(timespec="seconds")
    return local.strftime(datetime_format)


def _parse_paid_at(raw: str, datetime_format: str, zone: ZoneInfo) -> datetime:
    if datetime_format == "iso":
        parsed = datetime.fromisoformat(raw)
    else:
        # Naive only when the format has no zone; the layout's zone is applied just below.
        parsed = datetime.strptime(raw, datetime_format)  # noqa: DTZ007
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=zone)
    return parsed.astimezone(UTC)


def _format_amount(cents: int, style: str) -> str:
    return str(cents) if style == "cents" else cents_to_text(cents)


def _parse_amount(column: str, raw: str, style: str) -> int:
    if style == "cents":
        if not _CENTS_RE.fullmatch(raw):
            raise FieldError(f"{column}: {show_value(raw)} is not an amount in cents")
        return int(raw)
    if not _PLAIN_AMOUNT_RE.fullmatch(raw):
        raise FieldError(f"{column}: {show_value(raw)} is not an amount (like 123.45)")
    return int(raw.replace(".", ""))




DEFAULT_PAYMENT_LAYOUT = PaymentLayout(name="default")
