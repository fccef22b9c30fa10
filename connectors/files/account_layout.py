"""An account file layout: which cell holds what, and how amounts, dates and codes are spelt."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from types import MappingProxyType
from typing import get_args

from connectors.files.columns import BY_NAME, COLUMN_NAMES, REQUIRED_COLUMNS
from connectors.files.layout_base import (
    ACCOUNT_FIELDS,
    CREDIT_MARKS,
    AmountStyle,
    LayoutError,
    MissingColumns,
    Quoting,
    _freeze_maps,
    file_problems,
)

# --- account layouts -----------------------------------------------------------------------


@dataclass(frozen=True)
class AmountFormat:
    """How amounts are written: ``plain`` ``1234.56``, ``money`` ``$1,234.56``, or ``cents``
    ``123456`` (implied decimal point), with the credit marks in ``credit`` meaning negative.

    ``currency_symbol`` and ``thousands_separator`` apply to ``money`` only (defaults ``$``
    and ``,``; ``""`` for none); both are optional in each cell.
    """

    style: AmountStyle = "plain"
    currency_symbol: str | None = None
    thousands_separator: str | None = None
    credit: tuple[str, ...] = ("leading_minus",)

    def __post_init__(self) -> None:
        object.__setattr__(self, "credit", tuple(self.credit))
        problems: list[str] = []
        if self.style not in get_args(AmountStyle):
            problems.append(f"style: {self.style!r} is not one of plain, money, cents")
        if self.style != "money":
            for name in ("currency_symbol", "thousands_separator"):
                if getattr(self, name) is not None:
                    problems.append(f'{name}: only applies to style = "money"')
        symbol, separator = self.symbol, self.separator
        if any(c.isdigit() or c in ".-()" for c in symbol) or len(symbol) > 3:
            problems.append(f"currency_symbol: {symbol!r} must be up to 3 non-digit characters")
        if separator and (len(separator) > 1 or separator.isdigit() or separator in ".-()"):
            problems.append(f"thousands_separator: {separator!r} must be one non-digit character")
        unknown = [mark for mark in self.credit if mark not in CREDIT_MARKS]
        if unknown:
            problems.append(
                f"credit: {', '.join(map(repr, unknown))} not among {', '.join(CREDIT_MARKS)}"
            )
        if len(set(self.credit)) != len(self.credit):
            problems.append("credit: names a mark twice")
        if problems:
            raise LayoutError(problems)

    @property
    def symbol(self) -> str:
        """The currency symbol in effect ("" for none)."""
        if self.style != "money":
            return ""
        return "$" if self.currency_symbol is None else self.currency_symbol

    @property
    def separator(self) -> str:
        """The thousands separator in effect ("" for none)."""
        if self.style != "money":
            return ""
        return "," if self.thousands_separator is None else self.thousands_separator


@dataclass(frozen=True)
class ControlRecord:
    """A header or trailer record: the row whose cell ``tag_position`` is exactly ``tag``.

    It may carry the record count and the control total (the sum of balance_due) in the
    given 1-based positions; the file is refused when they do not match its data rows.
    """

    tag: str
    tag_position: int = 1
    count_position: int | None = None
    total_position: int | None = None
    required: bool = True

    def __post_init__(self) -> None:
        problems: list[str] = []
        if not self.tag or self.tag != self.tag.strip():
            problems.append(f"tag: {self.tag!r} must be non-empty, without outer spaces")
        positions = [("tag_position", self.tag_position)]
        positions += [
            (name, value)
            for name, value in (
                ("count_position", self.count_position),
                ("total_position", self.total_position),
            )
            if value is not None
        ]
        for name, value in positions:
            if not _is_position(value):
                problems.append(f"{name}: {value!r} must be a whole number from 1")
        used = [value for _, value in positions]
        if len(set(used)) != len(used):
            problems.append("tag, count and total must be in different positions")
        if problems:
            raise LayoutError(problems)

    @property
    def width(self) -> int:
        """The fewest cells the record can have."""
        return max(p for p in (self.tag_position, self.count_position, self.total_position) if p)

    def matches(self, row: list[str]) -> bool:
        """True if ``row`` is this record."""
        return len(row) >= self.tag_position and row[self.tag_position - 1].strip() == self.tag


def _is_position(value: object) -> bool:
    # bool is an int subclass; "true" is not a column number.
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


@dataclass(frozen=True)
class AccountLayout:
    """How one biller's account file is laid out; see docs/layouts.md for every field.

    ``columns`` maps our column names (``ACCOUNT_FIELDS``) to the file's column names when
    ``header`` is true, or to 1-based positions when it is false. ``value_maps`` maps a
    column to {file value: our value}, e.g. ``{"status": {"DP": "disconnect_pending"}}``.
    ``missing_columns`` says whether a mapped optional column absent from the header reads
    as blank or refuses the file; ``width`` fixes the cell count of header-less rows (else
    a row needs at least the highest mapped position). Rows whose cell ``detail_tag_position``
    is not ``detail_tag`` are rejected when a detail tag is set.
    """

    name: str
    columns: Mapping[str, str | int]
    encoding: str = "utf-8"
    delimiter: str = ","
    quoting: Quoting = "minimal"
    quotechar: str = '"'
    header: bool = True
    date_format: str = "%Y-%m-%d"
    amounts: AmountFormat = AmountFormat()
    value_maps: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    phone_separator: str = ";"
    header_record: ControlRecord | None = None
    trailer_record: ControlRecord | None = None
    detail_tag: str | None = None
    detail_tag_position: int = 1
    width: int | None = None
    missing_columns: MissingColumns = "error"

    def __post_init__(self) -> None:
        object.__setattr__(self, "columns", MappingProxyType(dict(self.columns)))
        object.__setattr__(self, "value_maps", _freeze_maps(self.value_maps))
        problems = _account_layout_problems(self)
        if problems:
            raise LayoutError(problems)


def _account_layout_problems(layout: AccountLayout) -> list[str]:
    problems = file_problems(layout.name, layout.encoding, layout.delimiter, layout.quoting,
                             layout.quotechar)
    problems += _column_problems(layout)
    problems += _date_format_problems(layout.date_format)
    problems += _value_map_problems(layout)
    separator = layout.phone_separator
    if not separator or any(c.isdigit() or c == "+" for c in separator):
        problems.append(f"phone_separator: {separator!r} must be non-empty, without digits or +")
    if layout.detail_tag is not None and not layout.detail_tag.strip():
        problems.append("detail_tag: must not be blank")
    if not _is_position(layout.detail_tag_position):
        problems.append(f"detail_tag_position: {layout.detail_tag_position!r} must be from 1")
    if layout.missing_columns not in get_args(MissingColumns):
        problems.append(f"missing_columns: {layout.missing_columns!r} is not one of blank, error")
    return problems


def _column_problems(layout: AccountLayout) -> list[str]:
    problems: list[str] = []
    columns = layout.columns
    unknown = [name for name in columns if name not in ACCOUNT_FIELDS]
    if unknown:
        problems.append(f"columns: unknown column(s) {', '.join(map(repr, unknown))}")
    missing = [name for name in REQUIRED_COLUMNS if name not in columns]
    if missing:
        problems.append(f"columns: {', '.join(missing)} must be mapped")
    seen: dict[str | int, str] = {}
    for name, where in columns.items():
        if layout.header:
            if not isinstance(where, str) or not where.strip():
                problems.append(f"columns.{name}: {where!r} must be a column name (header = true)")
                continue
            key: str | int = where.strip().casefold()
        else:
            if not _is_position(where):
                problems.append(f"columns.{name}: {where!r} must be a position from 1")
                continue
            key = where
        if key in seen:
            problems.append(f"columns.{name}: {where!r} is already mapped to {seen[key]}")
        seen[key] = name
    if layout.width is not None:
        if layout.header:
            problems.append("width: only applies to header = false")
        elif not _is_position(layout.width):
            problems.append(f"width: {layout.width!r} must be a whole number from 1")
        else:
            highest = max((w for w in columns.values() if _is_position(w)), default=0)
            if isinstance(highest, int) and layout.width < highest:
                problems.append(f"width: {layout.width} is less than position {highest}")
    return problems


def _date_format_problems(date_format: str) -> list[str]:
    if date_format == "%Y-%m-%d":
        return []
    sample = date(2026, 11, 26)
    try:
        text = sample.strftime(date_format)
        parsed = time.strptime(text, date_format)
        ok = (parsed.tm_year, parsed.tm_mon, parsed.tm_mday) == (2026, 11, 26)
    except ValueError:
        ok = False
    if not ok:
        return [f"date_format: {date_format!r} cannot write and read back a date"]
    return []


def _value_map_problems(layout: AccountLayout) -> list[str]:
    problems: list[str] = []
    for name, mapping in layout.value_maps.items():
        if name not in layout.columns:
            problems.append(f"value_maps.{name}: {name!r} is not in columns")
            continue
        folded: dict[str, str] = {}
        for key, value in mapping.items():
            if not isinstance(key, str) or not isinstance(value, str):
                problems.append(f"value_maps.{name}: {key!r} = {value!r} must map text to text")
                continue
            if key.strip().casefold() in folded:
                other = folded[key.strip().casefold()]
                problems.append(f"value_maps.{name}: {key!r} and {other!r} differ only in case")
            folded[key.strip().casefold()] = key
            column = BY_NAME.get(name)
            targets = column.choices if column is not None else None
            if targets is not None and value and value not in targets:
                problems.append(
                    f"value_maps.{name}.{key}: {value!r} is not one of "
                    + ", ".join(sorted(targets))
                )
    return problems


DEFAULT_ACCOUNT_LAYOUT = AccountLayout(
    name="default",
    columns={name: name for name in COLUMN_NAMES},
    encoding="utf-8-sig",
    trailer_record=ControlRecord(
        tag="TRAILER", tag_position=1, count_position=2, total_position=3, required=False
    ),
    missing_columns="blank",
)
