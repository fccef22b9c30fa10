"""Delimited-file layouts: billers' account files in, payment confirmation files out.

An ``AccountLayout`` says how a biller's account file spells the columns of the default
layout (docs/files.md): which cell holds what, delimiter, quoting, encoding, dates, amounts such
as ``$1,234.56`` or ``12.00CR``, code values, and header/trailer control records.
``iter_layout_file`` streams such a file through the validators of
``connectors.files.account_file``, so every layout accepts and rejects values by the same rules.

A ``PaymentLayout`` says how to write the payment confirmation file sent back to a biller;
``write_payment_file`` streams ``PaymentRow`` values into it and ``read_payment_file`` reads
one back. ``load_layouts`` reads both kinds from a TOML file. See docs/layouts.md.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
import string
import time
import tomllib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from pathlib import Path
from types import MappingProxyType
from typing import IO, Any, Literal, TypeVar, cast, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from connectors.amounts import cents_to_text
from connectors.files.account_file import (
    LANGUAGES,
    OPTIONAL_COLUMNS,
    REQUIRED_COLUMNS,
    STATUSES,
    AccountFileError,
    AccountRecord,
    FieldError,
    FileSummary,
    Rejection,
    RowRules,
    RowValidator,
    check_control_totals,
    has_undecodable,
    is_blank_row,
    iter_account_file,
    parse_amount_cents,
    parse_count,
    parse_iso_date,
    show_value,
)
from connectors.files.cells import neutralise, restore

__all__ = [
    "ACCOUNT_FIELDS",
    "CREDIT_MARKS",
    "DEFAULT_ACCOUNT_LAYOUT",
    "DEFAULT_PAYMENT_COLUMNS",
    "DEFAULT_PAYMENT_LAYOUT",
    "PAYMENT_FIELDS",
    "AccountLayout",
    "AmountFormat",
    "ControlRecord",
    "LayoutError",
    "PaymentFileError",
    "PaymentLayout",
    "PaymentRow",
    "iter_layout_file",
    "load_layouts",
    "read_payment_file",
    "write_payment_file",
]

ACCOUNT_FIELDS = REQUIRED_COLUMNS + OPTIONAL_COLUMNS
PAYMENT_FIELDS = (
    "account_number",
    "amount",
    "fee",
    "total",
    "currency",
    "paid_at",
    "confirmation_number",
    "method",
    "card_brand",
    "last4",
    "idempotency_key",
    "call_sid",
)
CREDIT_MARKS = ("leading_minus", "trailing_minus", "parentheses", "leading_cr", "trailing_cr")
DEFAULT_PAYMENT_COLUMNS: tuple[tuple[str, str], ...] = tuple(
    (name, name)
    for name in (
        "account_number",
        "amount",
        "fee",
        "paid_at",
        "confirmation_number",
        "method",
        "card_brand",
        "last4",
    )
)

Quoting = Literal["minimal", "none"]
AmountStyle = Literal["plain", "money", "cents"]
MissingColumns = Literal["blank", "error"]
PaymentAmountStyle = Literal["plain", "cents"]
SumField = Literal["amount", "fee", "total"]
_B = TypeVar("_B")

_NAME_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
_CENTS_RE = re.compile(r"-?[0-9]+")
# What write_payment_file writes; sums of many payments may pass account_file's 12 digits.
_PLAIN_AMOUNT_RE = re.compile(r"-?[0-9]+\.[0-9]{2}")
# <Pay> reports 4 digits of a card number but only 2 of a bank account number.
_LAST4_RE = re.compile(r"[0-9]{1,4}")
_CURRENCY_RE = re.compile(r"[A-Z]{3}")
# Same bound as account_file: cents stay inside a signed 64-bit column with room to sum.
_MAX_AMOUNT_INT_DIGITS = 12
_LINE_TERMINATORS = ("\r\n", "\n", "\r")
_FLAG_VALUES = frozenset({"Y", "N"})
# Control-record placeholders we fill ourselves; any other name comes from the caller.
_BUILTIN_PLACEHOLDERS = frozenset({"count", "sum"})
# Payment fields our own code writes as numbers; every other cell is text (connectors.files.cells).
_NUMBER_FIELDS = frozenset({"amount", "fee", "total"})
# Payment fields a PaymentRow cannot be rebuilt without.
_PAYMENT_READ_NEEDS = ("account_number", "paid_at", "confirmation_number", "method")
# Write in chunks of about this many bytes: one write per row is one syscall per row on an
# unbuffered stream, while holding the whole file would break "memory stays flat".
_WRITE_CHUNK = 64 * 1024


class LayoutError(ValueError):
    """A layout declaration is unusable; ``problems`` lists every reason, one per item."""

    def __init__(self, problems: Iterable[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class PaymentFileError(ValueError):
    """A payment file cannot be written or read back as its layout says."""


# --- shared checks --------------------------------------------------------------------------


def _encoding_problem(encoding: str) -> str | None:
    try:
        info = codecs.lookup(encoding)
    except LookupError:
        return f"encoding: {encoding!r} is not an encoding Python knows"
    # codecs also holds bytes-to-bytes and str-to-str transforms (base64, rot13).
    if not getattr(info, "_is_text_encoding", True):
        return f"encoding: {encoding!r} is not a text encoding"
    return None


def _dialect_problems(delimiter: str, quoting: str, quotechar: str) -> list[str]:
    problems: list[str] = []
    if len(delimiter) != 1 or delimiter in "\r\n" or delimiter.isalnum():
        problems.append(f"delimiter: {delimiter!r} must be one character, not a letter or digit")
    if quoting not in get_args(Quoting):
        problems.append(f"quoting: {quoting!r} is not one of minimal, none")
    if len(quotechar) != 1 or quotechar in "\r\n" or quotechar == delimiter:
        problems.append(f"quotechar: {quotechar!r} must be one character other than the delimiter")
    return problems


def _freeze_maps(maps: Mapping[str, Mapping[str, str]]) -> Mapping[str, Mapping[str, str]]:
    # Read-only views, so a frozen layout really cannot change under a running import.
    return MappingProxyType({k: MappingProxyType(dict(v)) for k, v in maps.items()})


def _text_encoding(encoding: str) -> str:
    # Spreadsheets put a BOM on "UTF-8" files; reading as utf-8-sig drops it if present.
    return "utf-8-sig" if codecs.lookup(encoding).name == "utf-8" else encoding


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
    problems: list[str] = []
    if not _NAME_RE.fullmatch(layout.name):
        problems.append(f"name: {layout.name!r} must be 1-64 letters, digits, _ or -")
    encoding_problem = _encoding_problem(layout.encoding)
    if encoding_problem:
        problems.append(encoding_problem)
    problems += _dialect_problems(layout.delimiter, layout.quoting, layout.quotechar)
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
    allowed: dict[str, frozenset[str]] = {
        "status": STATUSES,
        "language": LANGUAGES,
        "payment_allowed": _FLAG_VALUES,
    }
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
            targets = allowed.get(name)
            if targets is not None and value and value not in targets:
                problems.append(
                    f"value_maps.{name}.{key}: {value!r} is not one of "
                    + ", ".join(sorted(targets))
                )
    return problems


DEFAULT_ACCOUNT_LAYOUT = AccountLayout(
    name="default",
    columns={name: name for name in ACCOUNT_FIELDS},
    encoding="utf-8-sig",
    trailer_record=ControlRecord(
        tag="TRAILER", tag_position=1, count_position=2, total_position=3, required=False
    ),
    missing_columns="blank",
)


# --- account files: amounts and dates -------------------------------------------------------


def _amount_parser(fmt: AmountFormat) -> Callable[[str, str], int]:
    """Compile ``fmt`` into a parser of one cell into cents, raising ``FieldError``."""
    if fmt.style == "plain" and fmt.credit == ("leading_minus",):
        # Exactly the default layout's rule (and its messages).
        return parse_amount_cents
    if fmt.style == "cents":
        number = "[0-9]+"
    else:
        separator = re.escape(fmt.separator)
        whole = f"[0-9]{{1,3}}(?:{separator}[0-9]{{3}})+|[0-9]+" if separator else "[0-9]+"
        number = rf"(?:{whole})(?:\.[0-9]{{1,2}})?"
    symbol = f"(?:{re.escape(fmt.symbol)} ?)?" if fmt.symbol else ""
    # Each alternative captures the digits in its own group; the group's name says the sign.
    shapes = {
        "leading_minus": [f"-{symbol}(?P<n{{}}>{number})", f"{symbol}-(?P<n{{}}>{number})"],
        "trailing_minus": [f"{symbol}(?P<n{{}}>{number})-"],
        "parentheses": [rf"\({symbol}(?P<n{{}}>{number})\)", rf"{symbol}\((?P<n{{}}>{number})\)"],
        "leading_cr": [f"(?i:CR) ?{symbol}(?P<n{{}}>{number})"],
        "trailing_cr": [f"{symbol}(?P<n{{}}>{number}) ?(?i:CR)"],
    }
    alternatives = [f"{symbol}(?P<p>{number})"]
    for mark in fmt.credit:
        for shape in shapes[mark]:
            alternatives.append(shape.replace("{}", str(len(alternatives))))
    pattern = re.compile("|".join(f"(?:{alt})" for alt in alternatives))
    separator_text = fmt.separator
    implied = fmt.style == "cents"

    def parse(column: str, raw: str) -> int:
        match = pattern.fullmatch(raw.strip())
        if match is None or match.lastgroup is None:
            raise FieldError(f"{column}: {show_value(raw)} is not an amount")
        digits = match.group(match.lastgroup)
        if separator_text:
            digits = digits.replace(separator_text, "")
        if implied:
            whole, cents = digits[:-2], int(digits)
        else:
            whole, _, frac = digits.partition(".")
            cents = int(whole) * 100 + int(frac.ljust(2, "0") or "0")
        if len(whole.lstrip("0")) > _MAX_AMOUNT_INT_DIGITS:
            raise FieldError(f"{column}: {show_value(raw)} is too large")
        return -cents if match.lastgroup != "p" else cents

    return parse


_DATE_PARTS = {"%Y": "YYYY", "%y": "YY", "%m": "MM", "%d": "DD", "%b": "Mon", "%j": "DDD"}


def _date_parser(date_format: str) -> Callable[[str, str], date | None]:
    """Compile a strftime date format into a cell parser, raising ``FieldError``."""
    if date_format == "%Y-%m-%d":
        # Exactly the default layout's rule: strptime would also take "2025-1-5".
        return parse_iso_date
    shown = date_format
    for directive, text in _DATE_PARTS.items():
        shown = shown.replace(directive, text)

    def parse(column: str, raw: str) -> date | None:
        if not raw:
            return None
        # strptime's \d takes Arabic-Indic and other digits; the files' dates are ASCII.
        if not raw.isascii():
            raise FieldError(f"{column}: {show_value(raw)} is not a date ({shown})")
        try:
            parsed = time.strptime(raw, date_format)
        except ValueError as exc:
            if str(exc).startswith(("time data", "unconverted data")):
                raise FieldError(f"{column}: {show_value(raw)} is not a date ({shown})") from None
            raise FieldError(f"{column}: {show_value(raw)} is not a real date") from None
        return date(parsed.tm_year, parsed.tm_mon, parsed.tm_mday)

    return parse


# --- account files: reading -----------------------------------------------------------------


class _LineEnds:
    """Remembers whether the last physical line read had no line break (a cut file)."""

    __slots__ = ("unterminated",)

    def __init__(self) -> None:
        self.unterminated = False


def _physical_lines(text: IO[str], ends: _LineEnds) -> Iterator[str]:
    for line in text:
        # Only the file's last line can lack a break, so this flags exactly that line.
        if not line.endswith(("\n", "\r")):
            ends.unterminated = True
        yield line


def _csv_reader(lines: Iterable[str], delimiter: str, quoting: str, quotechar: str) -> Any:
    return csv.reader(
        lines,
        delimiter=delimiter,
        quotechar=quotechar,
        quoting=csv.QUOTE_NONE if quoting == "none" else csv.QUOTE_MINIMAL,
        doublequote=True,
        # strict: RFC 4180 errors (text after a closing quote, a quote left open at the end
        # of the file) are reported instead of silently guessed at.
        strict=True,
    )


def _undecodable_message(line: int, encoding: str) -> str:
    if codecs.lookup(encoding).name.startswith("utf-8"):
        return (
            f"line {line}: file is not valid UTF-8 "
            '(if it is Windows-1252, declare encoding = "cp1252")'
        )
    return f"line {line}: file has bytes that are not valid {encoding}"


class _AccountReader:
    """The state of one pass over an account file in a declared layout."""

    def __init__(self, layout: AccountLayout, totals: FileSummary) -> None:
        self.layout = layout
        self.totals = totals
        self.parse_amount = _amount_parser(layout.amounts)
        self.rules = RowRules(
            parse_amount=self.parse_amount,
            parse_date=_date_parser(layout.date_format),
            phone_separator=layout.phone_separator,
            value_maps=layout.value_maps,
        )
        self.validator: RowValidator | None = None
        if not layout.header:
            positions = {name: cast(int, where) - 1 for name, where in layout.columns.items()}
            self.validator = RowValidator(
                positions,
                layout.width or max(positions.values()) + 1,
                rules=self.rules,
                exact_width=layout.width is not None,
                width_source="the layout",
            )
            totals.columns = self.validator.columns
        # (label, count, total) of control records read, checked once every row is in.
        self.controls: list[tuple[str, int | None, int | None]] = []

    def read_header(self, row: list[str], line: int) -> None:
        """Build the validator from the header row's column names."""
        layout = self.layout
        names = [cell.strip().casefold() for cell in row]
        if names:
            names[0] = names[0].lstrip("\ufeff").strip()
        where: dict[str, list[int]] = {}
        for i, name in enumerate(names):
            where.setdefault(name, []).append(i)
        index: dict[str, int] = {}
        missing: list[str] = []
        for column, header_name in layout.columns.items():
            found = where.get(str(header_name).strip().casefold())
            if not found:
                if column in REQUIRED_COLUMNS or layout.missing_columns == "error":
                    missing.append(str(header_name))
                continue
            if len(found) > 1:
                raise AccountFileError(f"line {line}: header names column {header_name!r} twice")
            index[column] = found[0]
        if missing:
            raise AccountFileError(
                f"line {line}: header is missing column(s): {', '.join(map(repr, missing))}"
            )
        self.validator = RowValidator(index, len(row), rules=self.rules)
        self.totals.columns = self.validator.columns

    def read_control(self, record: ControlRecord, label: str, row: list[str], line: int) -> None:
        """Take the count and total a control record carries."""
        if len(row) < record.width:
            raise AccountFileError(
                f"{label}: line {line} has {len(row)} cells but needs at least {record.width}"
            )
        try:
            count = parse_count(row[record.count_position - 1]) if record.count_position else None
            total = (
                self.parse_amount("control total", row[record.total_position - 1].strip())
                if record.total_position
                else None
            )
        except FieldError as exc:
            raise AccountFileError(f"{label}: line {line}: {exc}") from None
        self.controls.append((label, count, total))
        if count is not None and total is not None:
            self.totals.trailer = (count, total)

    def check_controls(self) -> None:
        for label, count, total in self.controls:
            check_control_totals(label, count, total, self.totals)


def iter_layout_file(
    stream: IO[bytes], layout: AccountLayout, summary: FileSummary | None = None
) -> Iterator[AccountRecord | Rejection]:
    """Yield one ``AccountRecord`` or ``Rejection`` per data row of a file in ``layout``.

    Streams: memory does not grow with the file beyond account_file's duplicate table.
    Rows are validated exactly as ``iter_account_file`` does (same reasons, physical line
    numbers). File-level problems raise ``AccountFileError``: bytes the encoding cannot
    decode (naming the line), malformed quoting, a missing header, a missing required header
    or trailer record, a last record cut short, and (after every row has been yielded)
    control counts or totals that do not match. ``summary`` is reset, then kept up to date.
    The caller's stream is left open. The default layout is read by ``iter_account_file``.
    """
    if replace(layout, name=DEFAULT_ACCOUNT_LAYOUT.name) == DEFAULT_ACCOUNT_LAYOUT:
        yield from iter_account_file(stream, summary)
        return
    totals = summary if summary is not None else FileSummary()
    # The control records are checked against these counters: they must describe this file.
    totals.records = totals.rejected = totals.balance_sum_cents = 0
    totals.trailer = None
    totals.columns = frozenset()
    # surrogateescape, not strict: a bad byte then shows up in the row it belongs to, so the
    # error names the line rather than the start of an 8 KB decode chunk.
    text = io.TextIOWrapper(
        stream, encoding=_text_encoding(layout.encoding), errors="surrogateescape", newline=""
    )
    try:
        yield from _iter_layout_rows(text, _AccountReader(layout, totals))
    finally:
        # Otherwise the wrapper closes the caller's stream when it is garbage collected.
        text.detach()


def _iter_layout_rows(text: IO[str], state: _AccountReader) -> Iterator[AccountRecord | Rejection]:
    layout, totals = state.layout, state.totals
    ends = _LineEnds()
    reader = _csv_reader(
        _physical_lines(text, ends), layout.delimiter, layout.quoting, layout.quotechar
    )
    header_record, trailer_record = layout.header_record, layout.trailer_record
    detail_tag, detail_at = layout.detail_tag, layout.detail_tag_position - 1
    before_data = True  # no data row, header row or trailer read yet
    header_record_line: int | None = None
    trailer_line: int | None = None
    while True:
        # csv.reader counts physical lines consumed, so the next record starts one past it,
        # even when a quoted field spans several lines.
        line = reader.line_num + 1
        try:
            row: list[str] = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            hint = " (file cut short?)" if ends.unterminated else ""
            raise AccountFileError(f"line {line}: malformed CSV: {exc}{hint}") from None
        if has_undecodable(row):
            raise AccountFileError(_undecodable_message(line, layout.encoding))
        if is_blank_row(row):
            continue
        if trailer_line is not None:
            raise AccountFileError(f"line {line}: rows after the trailer on line {trailer_line}")
        if header_record is not None and header_record.matches(row):
            if not before_data or header_record_line is not None:
                raise AccountFileError(f"line {line}: header record is not the first row")
            state.read_control(header_record, "header record", row, line)
            header_record_line = line
            continue
        if (
            before_data
            and header_record is not None
            and header_record.required
            and header_record_line is None
        ):
            raise AccountFileError(
                f"line {line}: expected the header record ({header_record.tag!r} in "
                f"column {header_record.tag_position}) first"
            )
        before_data = False
        if state.validator is None:
            state.read_header(row, line)
            continue
        if trailer_record is not None and trailer_record.matches(row):
            state.read_control(trailer_record, "trailer", row, line)
            trailer_line = line
            continue
        width_problem = state.validator.width_problem(len(row))
        if ends.unterminated and width_problem is not None:
            # The file's last line, without a line break and short of cells: a cut transfer.
            raise AccountFileError(
                f"line {line}: the last record is cut short ({width_problem}); file truncated?"
            )
        result: AccountRecord | Rejection
        if detail_tag is not None and (
            len(row) <= detail_at or row[detail_at].strip() != detail_tag
        ):
            tag = row[detail_at].strip() if len(row) > detail_at else ""
            result = Rejection(line, None, f"record type {show_value(tag)} is not {detail_tag!r}")
        else:
            result = state.validator.parse(row, line, totals)
        if isinstance(result, Rejection):
            totals.rejected += 1
        else:
            totals.records += 1
        yield result

    if header_record is not None and header_record.required and header_record_line is None:
        raise AccountFileError(f"file has no header record ({header_record.tag!r})")
    if state.validator is None:
        raise AccountFileError("file has no header row")
    if trailer_record is not None and trailer_record.required and trailer_line is None:
        raise AccountFileError(
            f"file ends without its trailer record ({trailer_record.tag!r}): truncated?"
        )
    state.check_controls()


# --- payment files --------------------------------------------------------------------------


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
class PaymentLayout:
    """How the outbound payment confirmation file is written; see docs/layouts.md.

    ``columns`` is an ordered list of (header name, field) with fields from
    ``PAYMENT_FIELDS``, or ``"=text"`` for a column that always holds ``text``.
    ``header_record`` and ``trailer_record`` are rows of cells that may hold
    ``{count}``, ``{sum}`` (of ``sum_field``, in the amount style) or names supplied to
    ``write_payment_file``; empty means none. ``value_maps`` maps a field to
    {our value: file value}, e.g. ``{"method": {"card": "CC"}}``.
    """

    name: str
    columns: tuple[tuple[str, str], ...] = DEFAULT_PAYMENT_COLUMNS
    encoding: str = "utf-8"
    delimiter: str = ","
    quoting: Quoting = "minimal"
    quotechar: str = '"'
    header: bool = True
    datetime_format: str = "iso"
    time_zone: str = "UTC"
    amount_style: PaymentAmountStyle = "plain"
    value_maps: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    header_record: tuple[str, ...] = ()
    trailer_record: tuple[str, ...] = ("TRAILER", "{count}", "{sum}")
    sum_field: SumField = "amount"
    line_terminator: str = "\r\n"

    def __post_init__(self) -> None:
        object.__setattr__(self, "columns", tuple(tuple(c) for c in self.columns))
        object.__setattr__(self, "header_record", tuple(self.header_record))
        object.__setattr__(self, "trailer_record", tuple(self.trailer_record))
        object.__setattr__(self, "value_maps", _freeze_maps(self.value_maps))
        problems = _payment_layout_problems(self)
        if problems:
            raise LayoutError(problems)

    @property
    def zone(self) -> ZoneInfo:
        """The time zone paid_at is written in."""
        return ZoneInfo(self.time_zone)


def _payment_layout_problems(layout: PaymentLayout) -> list[str]:
    problems: list[str] = []
    if not _NAME_RE.fullmatch(layout.name):
        problems.append(f"name: {layout.name!r} must be 1-64 letters, digits, _ or -")
    encoding_problem = _encoding_problem(layout.encoding)
    if encoding_problem:
        problems.append(encoding_problem)
    problems += _dialect_problems(layout.delimiter, layout.quoting, layout.quotechar)
    if not layout.columns:
        problems.append("columns: at least one column is needed")
    seen: set[str] = set()
    for i, column in enumerate(layout.columns, start=1):
        if len(column) != 2 or not all(isinstance(part, str) for part in column):
            problems.append(f"columns[{i}]: {column!r} must be [header name, field]")
            continue
        _, name = column
        if name.startswith("="):
            continue
        if name not in PAYMENT_FIELDS:
            problems.append(f"columns[{i}]: {name!r} is not one of {', '.join(PAYMENT_FIELDS)}")
        elif name in seen:
            problems.append(f"columns[{i}]: {name!r} appears twice")
        seen.add(name)
    try:
        zone: ZoneInfo | None = ZoneInfo(layout.time_zone)
    except (ZoneInfoNotFoundError, ValueError):
        zone = None
        problems.append(f"time_zone: {layout.time_zone!r} is not an IANA time zone")
    if zone is not None:
        problems += _datetime_format_problems(layout.datetime_format, zone)
    if layout.amount_style not in get_args(PaymentAmountStyle):
        problems.append(f"amount_style: {layout.amount_style!r} is not one of plain, cents")
    if layout.sum_field not in get_args(SumField):
        problems.append(f"sum_field: {layout.sum_field!r} is not one of amount, fee, total")
    if layout.line_terminator not in _LINE_TERMINATORS:
        problems.append(f"line_terminator: {layout.line_terminator!r} must be CRLF, LF or CR")
    for name, mapping in layout.value_maps.items():
        if name not in seen:
            problems.append(f"value_maps.{name}: {name!r} is not in columns")
        elif name in ("amount", "fee", "total", "paid_at"):
            problems.append(f"value_maps.{name}: amounts and times cannot be mapped")
        elif len(set(mapping.values())) != len(mapping):
            # Reading a file back inverts the map, so two values cannot share one spelling.
            problems.append(f"value_maps.{name}: two values map to the same text")
    for label in ("header_record", "trailer_record"):
        problems += [f"{label}: {p}" for p in _template_problems(getattr(layout, label))]
    return problems


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


def _payment_getters(layout: PaymentLayout) -> list[Callable[[PaymentRow], str]]:
    """One function per column giving its cell text for a row, value maps applied."""
    style, zone, datetime_format = layout.amount_style, layout.zone, layout.datetime_format
    getters: dict[str, Callable[[PaymentRow], str]] = {
        "account_number": lambda r: r.account_number,
        "amount": lambda r: _format_amount(r.amount_cents, style),
        "fee": lambda r: _format_amount(r.fee_cents, style),
        "total": lambda r: _format_amount(r.total_cents, style),
        "currency": lambda r: r.currency,
        "paid_at": lambda r: _format_paid_at(r.paid_at, datetime_format, zone),
        "confirmation_number": lambda r: r.confirmation_number,
        "method": lambda r: r.method,
        "card_brand": lambda r: r.card_brand or "",
        "last4": lambda r: r.last4 or "",
        "idempotency_key": lambda r: r.idempotency_key,
        "call_sid": lambda r: r.call_sid,
    }
    result: list[Callable[[PaymentRow], str]] = []
    for _, name in layout.columns:
        if name.startswith("="):
            result.append(_constant(name[1:]))
            continue
        getter = getters[name]
        mapping = layout.value_maps.get(name)
        result.append(_mapped(getter, mapping) if mapping else getter)
    return result


def _constant(text: str) -> Callable[[PaymentRow], str]:
    return lambda _row: text


def _mapped(
    getter: Callable[[PaymentRow], str], mapping: Mapping[str, str]
) -> Callable[[PaymentRow], str]:
    def get(row: PaymentRow) -> str:
        value = getter(row)
        return mapping.get(value, value)

    return get


def _summed(row: PaymentRow, sum_field: str) -> int:
    if sum_field == "fee":
        return row.fee_cents
    if sum_field == "total":
        return row.total_cents
    return row.amount_cents


class _CellWriter:
    """Turns cells into one delimited line, quoting as RFC 4180 says.

    csv.writer is not used because it leaves a lone CR unquoted when the line terminator is
    LF, which a reader then splits into two records.
    """

    def __init__(self, layout: PaymentLayout) -> None:
        self._delimiter = layout.delimiter
        self._quote = layout.quotechar
        self._terminator = layout.line_terminator
        self._quoting = layout.quoting
        special = {layout.delimiter, "\r", "\n"}
        if layout.quoting == "minimal":
            special.add(layout.quotechar)
        self._special = re.compile("|".join(re.escape(c) for c in sorted(special)))

    def line(self, cells: list[str]) -> str:
        quote = self._quote
        out: list[str] = []
        for cell in cells:
            if self._special.search(cell) is None:
                out.append(cell)
            elif self._quoting == "none":
                raise PaymentFileError(
                    f"{show_value(cell)} holds the delimiter or a line break, "
                    'which quoting = "none" cannot write'
                )
            else:
                out.append(quote + cell.replace(quote, quote + quote) + quote)
        if len(out) == 1 and not out[0] and self._quoting == "minimal":
            # A lone empty cell would be a blank line, which readers skip.
            out[0] = quote + quote
        return self._delimiter.join(out) + self._terminator


def _render_template(template: tuple[str, ...], context: Mapping[str, str]) -> list[str]:
    """The record's cells; a cell of only {count} and {sum} is a number, the rest is text."""
    cells: list[str] = []
    for cell in template:
        parts = _template_fields(cell)
        number = all(not literal and name in _BUILTIN_PLACEHOLDERS
                     for literal, name, _, _ in parts)
        rendered = cell.format_map(context)
        cells.append(rendered if number else neutralise(rendered))
    return cells


def _template_names(template: tuple[str, ...]) -> set[str]:
    return {name for cell in template for _, name, _, _ in _template_fields(cell) if name}


def write_payment_file(
    rows: Iterable[PaymentRow],
    out: IO[bytes],
    layout: PaymentLayout,
    *,
    values: Mapping[str, str] | None = None,
) -> tuple[int, int]:
    """Write ``rows`` as a confirmation file in ``layout``; return (count, sum in cents).

    Streams and is deterministic: the same rows, layout and ``values`` give the same bytes.
    ``values`` fills control-record placeholders other than ``{count}`` and ``{sum}`` (say
    ``{biller_id}``); pass times there derived from the interval, never the clock. A header
    record that carries ``{count}`` or ``{sum}`` needs ``rows`` that can be iterated twice
    (a list or a re-runnable query). Text cells that a spreadsheet would run as a formula
    get a leading ``'`` (``connectors.files.cells``); amounts and counts are written as they are.
    Raises ``PaymentFileError`` for a value the layout cannot write (text its encoding
    lacks, a delimiter with quoting = "none"); the output is then incomplete, so write to a
    temporary name and rename on success.
    """
    context = dict(values or {})
    needed = _template_names(layout.header_record) | _template_names(layout.trailer_record)
    missing = sorted(needed - _BUILTIN_PLACEHOLDERS - set(context))
    if missing:
        raise ValueError(f"layout {layout.name} needs values for: {', '.join(missing)}")
    style, sum_field = layout.amount_style, layout.sum_field
    first_pass: tuple[int, int] | None = None
    if _template_names(layout.header_record) & _BUILTIN_PLACEHOLDERS:
        if iter(rows) is rows:
            raise ValueError("a header record with {count} or {sum} needs rows it can read twice")
        first_pass = (0, 0)
        for row in rows:
            first_pass = (first_pass[0] + 1, first_pass[1] + _summed(row, sum_field))
        context |= {"count": str(first_pass[0]), "sum": _format_amount(first_pass[1], style)}

    cells = _CellWriter(layout)
    encoder = codecs.getincrementalencoder(layout.encoding)("strict")
    getters = _payment_getters(layout)
    text_cells = [name not in _NUMBER_FIELDS for _, name in layout.columns]
    # A data row that a reader would take for the trailer (same width, same plain cells).
    lookalike = (
        _ControlReader(layout.trailer_record, "trailer", style)
        if len(layout.trailer_record) == len(layout.columns)
        else None
    )
    chunk: list[bytes] = []
    size = 0

    def emit(cell_values: list[str]) -> None:
        nonlocal size
        try:
            data = encoder.encode(cells.line(cell_values))
        except UnicodeEncodeError:
            raise PaymentFileError(
                f"holds characters that {layout.encoding} cannot write"
            ) from None
        chunk.append(data)
        size += len(data)
        if size >= _WRITE_CHUNK:
            out.write(b"".join(chunk))
            chunk.clear()
            size = 0

    def emit_as(what: str, cell_values: list[str]) -> None:
        try:
            emit(cell_values)
        except PaymentFileError as exc:
            raise PaymentFileError(f"{what}: {exc}") from None

    if layout.header_record:
        emit_as("header record", _render_template(layout.header_record, context))
    if layout.header:
        emit_as("header row", [neutralise(header) for header, _ in layout.columns])
    written, summed = 0, 0
    for row in rows:
        written += 1
        summed += _summed(row, sum_field)
        cell_values = [get(row) for get in getters]
        try:
            if lookalike is not None and lookalike.matches(cell_values):
                raise PaymentFileError("would read as the trailer record")
            emit([neutralise(v) if text else v
                  for v, text in zip(cell_values, text_cells, strict=True)])
        except PaymentFileError as exc:
            what = f"payment {written} ({show_value(row.confirmation_number)})"
            raise PaymentFileError(f"{what}: {exc}") from None
    if first_pass is not None and first_pass != (written, summed):
        raise PaymentFileError("rows changed between the two passes over them")
    context |= {"count": str(written), "sum": _format_amount(summed, style)}
    if layout.trailer_record:
        emit_as("trailer record", _render_template(layout.trailer_record, context))
    chunk.append(encoder.encode("", final=True))
    out.write(b"".join(chunk))
    out.flush()
    return written, summed


def _template_pattern(cell: str) -> tuple[re.Pattern[str], list[str]]:
    """A regex matching what ``cell`` renders to, with the placeholders' names in order."""
    pattern = ""
    names: list[str] = []
    for literal, name, _, _ in _template_fields(cell):
        pattern += re.escape(literal)
        if name is not None:
            pattern += f"(?P<g{len(names)}>.*?)"
            names.append(name)
    return re.compile(pattern, re.DOTALL), names


class _ControlReader:
    """Recognises a control record by its plain-text cells and reads count and sum."""

    def __init__(self, template: tuple[str, ...], label: str, amount_style: str) -> None:
        self.label = label
        self.width = len(template)
        self._style = amount_style
        self._literals = [
            (i, cell) for i, cell in enumerate(template) if not _template_names((cell,))
        ]
        self._patterns = [
            (i, *_template_pattern(cell))
            for i, cell in enumerate(template)
            if _template_names((cell,))
        ]

    def matches(self, row: list[str]) -> bool:
        return len(row) == self.width and all(row[i] == text for i, text in self._literals)

    def read(self, row: list[str], line: int) -> dict[str, str]:
        found: dict[str, str] = {}
        for i, pattern, names in self._patterns:
            match = pattern.fullmatch(row[i])
            if match is None:
                raise PaymentFileError(f"line {line}: {self.label} cell {i + 1} is malformed")
            for n, name in enumerate(names):
                found[name] = match.group(f"g{n}")
        return found

    def check(self, found: dict[str, str], count: int, total: int, line: int) -> None:
        problems: list[str] = []
        try:
            if "count" in found and parse_count(found["count"]) != count:
                problems.append(f"record count {found['count']} does not match {count} rows")
            raw_sum = found.get("sum")
            if raw_sum is not None and _parse_amount("sum", raw_sum.strip(), self._style) != total:
                problems.append(
                    f"sum {raw_sum} does not match {_format_amount(total, self._style)}"
                )
        except FieldError as exc:
            problems.append(str(exc))
        if problems:
            raise PaymentFileError(f"line {line}: {self.label}: " + "; ".join(problems))


def read_payment_file(stream: IO[bytes], layout: PaymentLayout) -> Iterator[PaymentRow]:
    """Yield the rows of a confirmation file in ``layout``, checking its control records.

    For round-trip tests and billers' own checks: any problem raises ``PaymentFileError``
    naming the line. Fields the layout does not carry take ``PaymentRow``'s defaults (fee
    is total minus amount when only those are present). The caller's stream is left open.
    """
    fields_present = {name for _, name in layout.columns}
    lacking = [name for name in _PAYMENT_READ_NEEDS if name not in fields_present]
    if len(fields_present & {"amount", "fee", "total"}) < 2 and "amount" not in fields_present:
        lacking.append("amount")
    if lacking:
        raise ValueError(f"layout {layout.name} has no column for: {', '.join(lacking)}")
    text = io.TextIOWrapper(stream, encoding=_text_encoding(layout.encoding), newline="")
    try:
        yield from _iter_payment_rows(text, layout)
    finally:
        text.detach()


def _iter_payment_rows(text: IO[str], layout: PaymentLayout) -> Iterator[PaymentRow]:
    reader = _csv_reader(text, layout.delimiter, layout.quoting, layout.quotechar)
    header_reader = (
        _ControlReader(layout.header_record, "header record", layout.amount_style)
        if layout.header_record
        else None
    )
    trailer_reader = (
        _ControlReader(layout.trailer_record, "trailer", layout.amount_style)
        if layout.trailer_record
        else None
    )
    inverse = {name: {v: k for k, v in m.items()} for name, m in layout.value_maps.items()}
    names = [name for _, name in layout.columns]
    expecting = ["header record"] if header_reader else []
    expecting += ["header row"] if layout.header else []
    header_found: tuple[dict[str, str], int] | None = None
    trailer_found: tuple[dict[str, str], int] | None = None
    count = total = 0
    while True:
        line = reader.line_num + 1
        try:
            row: list[str] = next(reader)
        except StopIteration:
            break
        except (csv.Error, UnicodeDecodeError) as exc:
            raise PaymentFileError(f"line {line}: unreadable: {exc}") from None
        if not row:
            continue
        # Undo the writer's formula quotes first, so every check below sees the values.
        row = [restore(cell) for cell in row]
        if trailer_found is not None:
            raise PaymentFileError(f"line {line}: rows after the trailer")
        if expecting and expecting[0] == "header record" and header_reader is not None:
            if not header_reader.matches(row):
                raise PaymentFileError(f"line {line}: expected the header record")
            header_found = (header_reader.read(row, line), line)
            expecting.pop(0)
            continue
        if expecting:
            if row != [header for header, _ in layout.columns]:
                raise PaymentFileError(f"line {line}: expected the header row")
            expecting.pop(0)
            continue
        if trailer_reader is not None and trailer_reader.matches(row):
            trailer_found = (trailer_reader.read(row, line), line)
            continue
        if len(row) != len(names):
            raise PaymentFileError(f"line {line}: {len(row)} cells, expected {len(names)}")
        payment = _payment_from_cells(dict(zip(names, row, strict=True)), inverse, layout, line)
        count += 1
        total += _summed(payment, layout.sum_field)
        yield payment
    if expecting:
        raise PaymentFileError(f"file has no {expecting[0]}")
    if trailer_reader is not None:
        if trailer_found is None:
            raise PaymentFileError("file ends without its trailer: truncated?")
        found, line = trailer_found
        trailer_reader.check(found, count, total, line)
    if header_reader is not None and header_found is not None:
        found, line = header_found
        header_reader.check(found, count, total, line)


def _payment_from_cells(
    cells: dict[str, str],
    inverse: Mapping[str, Mapping[str, str]],
    layout: PaymentLayout,
    line: int,
) -> PaymentRow:
    for name, text in cells.items():
        if name.startswith("="):
            if text != name[1:]:
                raise PaymentFileError(f"line {line}: {show_value(text)} should be {name[1:]!r}")
        elif name in inverse:
            cells[name] = inverse[name].get(text, text)
    style = layout.amount_style
    try:
        amounts = {
            name: _parse_amount(name, cells[name], style)
            for name in ("amount", "fee", "total")
            if name in cells
        }
        paid_at = _parse_paid_at(cells["paid_at"], layout.datetime_format, layout.zone)
    except (FieldError, ValueError) as exc:
        raise PaymentFileError(f"line {line}: {exc}") from None
    amount = amounts.get("amount")
    fee = amounts.get("fee")
    if amount is None:
        amount = amounts["total"] - (fee or 0)
    if fee is None:
        fee = amounts["total"] - amount if "total" in amounts else 0
    if "total" in amounts and amounts["total"] != amount + fee:
        raise PaymentFileError(f"line {line}: total is not amount plus fee")
    try:
        return PaymentRow(
            account_number=cells["account_number"],
            amount_cents=amount,
            fee_cents=fee,
            paid_at=paid_at,
            confirmation_number=cells["confirmation_number"],
            method=cells["method"],
            card_brand=cells.get("card_brand") or None,
            last4=cells.get("last4") or None,
            currency=cells.get("currency", "USD"),
            idempotency_key=cells.get("idempotency_key", ""),
            call_sid=cells.get("call_sid", ""),
        )
    except (TypeError, ValueError) as exc:
        raise PaymentFileError(f"line {line}: {exc}") from None


DEFAULT_PAYMENT_LAYOUT = PaymentLayout(name="default")


# --- TOML ---------------------------------------------------------------------------------


class _Table:
    """Typed access to one TOML table that records every problem instead of stopping."""

    def __init__(self, data: Mapping[str, Any], where: str, problems: list[str]) -> None:
        self._data = data
        self.where = where
        self._problems = problems
        self._used: set[str] = set()

    def problem(self, key: str, text: str) -> None:
        self._problems.append(f"{self.where}.{key}: {text}")

    def get(self, key: str, kind: type | tuple[type, ...], what: str) -> Any:
        self._used.add(key)
        if key not in self._data:
            return None
        value = self._data[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if isinstance(value, bool) and bool not in kinds:
            value = None  # fall through to the type problem below
        if value is None or not isinstance(value, kinds):
            self.problem(key, f"expected {what}, got {self._data[key]!r}")
            return None
        return value

    def table(self, key: str) -> _Table | None:
        value = self.get(key, dict, "a table")
        return _Table(value, f"{self.where}.{key}", self._problems) if value is not None else None

    def string_map(self, key: str) -> dict[str, str] | None:
        sub = self.table(key)
        if sub is None:
            return None
        result: dict[str, str] = {}
        for name in sub:
            value = sub.get(name, str, "text")
            if value is not None:
                result[name] = value
        return result

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._data))

    def kwargs(self, spec: Mapping[str, tuple[type | tuple[type, ...], str]]) -> dict[str, Any]:
        """The keys in ``spec`` that are present and well-typed."""
        out: dict[str, Any] = {}
        for key, (kind, what) in spec.items():
            value = self.get(key, kind, what)
            if value is not None:
                out[key] = value
        return out

    def finish(self) -> None:
        for key in self._data:
            if key not in self._used:
                self.problem(key, "unknown key")


_TEXT = (str, "text")
_BOOL = (bool, "true or false")
_INT = (int, "a whole number")


def _built(problems: list[str], where: str, build: Callable[[], _B]) -> _B | None:
    """Run a dataclass constructor, filing its LayoutError problems under ``where``."""
    try:
        return build()
    except LayoutError as exc:
        problems.extend(f"{where}: {p}" for p in exc.problems)
        return None


def _control_record(table: _Table, key: str, problems: list[str]) -> ControlRecord | None:
    sub = table.table(key)
    if sub is None:
        return None
    kwargs = sub.kwargs(
        {
            "tag": _TEXT,
            "tag_position": _INT,
            "count_position": _INT,
            "total_position": _INT,
            "required": _BOOL,
        }
    )
    sub.finish()
    if "tag" not in kwargs:
        sub.problem("tag", "is required")
        return None
    return _built(problems, f"{table.where}.{key}", lambda: ControlRecord(**kwargs))


def _account_layout(
    name: str, table: _Table, where: str, problems: list[str]
) -> AccountLayout | None:
    before = len(problems)
    kwargs = table.kwargs(
        {
            "encoding": _TEXT,
            "delimiter": _TEXT,
            "quoting": _TEXT,
            "quotechar": _TEXT,
            "header": _BOOL,
            "date_format": _TEXT,
            "phone_separator": _TEXT,
            "detail_tag": _TEXT,
            "detail_tag_position": _INT,
            "width": _INT,
            "missing_columns": _TEXT,
        }
    )
    columns_table = table.table("columns")
    if columns_table is None:
        table.problem("columns", "is required")
    else:
        columns: dict[str, str | int] = {}
        for key in columns_table:
            value = columns_table.get(key, (str, int), "a column name or position")
            if value is not None:
                columns[key] = value
        kwargs["columns"] = columns
    amounts_table = table.table("amounts")
    if amounts_table is not None:
        amount_kwargs = amounts_table.kwargs(
            {
                "style": _TEXT,
                "currency_symbol": _TEXT,
                "thousands_separator": _TEXT,
                "credit": (list, "a list of credit marks"),
            }
        )
        amounts_table.finish()
        amounts = _built(problems, f"{where}.amounts", lambda: AmountFormat(**amount_kwargs))
        if amounts is not None:
            kwargs["amounts"] = amounts
    maps_table = table.table("value_maps")
    if maps_table is not None:
        maps = {}
        for key in maps_table:
            mapping = maps_table.string_map(key)
            if mapping is not None:
                maps[key] = mapping
        kwargs["value_maps"] = maps
    for key in ("header_record", "trailer_record"):
        record = _control_record(table, key, problems)
        if record is not None:
            kwargs[key] = record
    table.finish()
    if len(problems) > before or "columns" not in kwargs:
        return None
    return _built(problems, where, lambda: AccountLayout(name=name, **kwargs))


def _payment_layout(
    name: str, table: _Table, where: str, problems: list[str]
) -> PaymentLayout | None:
    before = len(problems)
    kwargs = table.kwargs(
        {
            "encoding": _TEXT,
            "delimiter": _TEXT,
            "quoting": _TEXT,
            "quotechar": _TEXT,
            "header": _BOOL,
            "datetime_format": _TEXT,
            "time_zone": _TEXT,
            "amount_style": _TEXT,
            "sum_field": _TEXT,
            "line_terminator": _TEXT,
        }
    )
    columns = table.get("columns", list, "a list of [header name, field] pairs")
    if columns is not None:
        pairs: list[tuple[str, str]] = []
        for i, pair in enumerate(columns, start=1):
            if (
                not isinstance(pair, list)
                or len(pair) != 2
                or not all(isinstance(p, str) for p in pair)
            ):
                table.problem(f"columns[{i}]", f"expected [header name, field], got {pair!r}")
            else:
                pairs.append((pair[0], pair[1]))
        kwargs["columns"] = tuple(pairs)
    for key in ("header_record", "trailer_record"):
        cells = table.get(key, list, "a list of cells (empty for none)")
        if cells is not None:
            if all(isinstance(c, str) for c in cells):
                kwargs[key] = tuple(cells)
            else:
                table.problem(key, "every cell must be text")
    maps_table = table.table("value_maps")
    if maps_table is not None:
        maps = {}
        for key in maps_table:
            mapping = maps_table.string_map(key)
            if mapping is not None:
                maps[key] = mapping
        kwargs["value_maps"] = maps
    table.finish()
    if len(problems) > before:
        return None
    return _built(problems, where, lambda: PaymentLayout(name=name, **kwargs))


_Builder = Callable[[str, _Table, str, list[str]], AccountLayout | PaymentLayout | None]


def load_layouts(path: Path) -> dict[str, AccountLayout | PaymentLayout]:
    """Read ``[account.NAME]`` and ``[payment.NAME]`` tables from a TOML file.

    Keys of the result are ``"account.NAME"`` and ``"payment.NAME"``. Raises
    ``LayoutError`` listing every problem (unknown keys, wrong types, bad values) found in
    the whole file. ``default`` is reserved for the built-in layouts.
    """
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        raise LayoutError([f"{path}: not valid TOML: {exc}"]) from None
    problems: list[str] = []
    layouts: dict[str, AccountLayout | PaymentLayout] = {}
    builders: dict[str, _Builder] = {"account": _account_layout, "payment": _payment_layout}
    for kind, tables in data.items():
        build = builders.get(kind)
        if build is None:
            problems.append(f"{kind}: unknown table (expected [account.NAME] or [payment.NAME])")
            continue
        if not isinstance(tables, dict):
            problems.append(f"{kind}: expected tables like [{kind}.NAME]")
            continue
        for name, spec in tables.items():
            where = f"{kind}.{name}"
            if name == "default":
                problems.append(f"{where}: the name 'default' is reserved for the built-in layout")
                continue
            if not isinstance(spec, dict):
                problems.append(f"{where}: expected a table")
                continue
            layout = build(name, _Table(spec, where, problems), where, problems)
            if layout is not None:
                layouts[where] = layout
    if problems:
        raise LayoutError([f"{path}: {p}" for p in problems])
    return layouts
