"""Bank returns files: a processor's report of returned debits and notices of change.

The default layout (docs/returns.md) is CSV with a header naming ``confirmation_number``,
``return_code`` (R01-R99 for a return, C01-C13 for a notice of change), ``return_date``
(YYYY-MM-DD), ``amount`` and, optionally, ``trace_number`` and ``detail``. A declared
``[returns.NAME]`` layout maps a processor's own header names, dates and amounts onto these
fields, with the same amount and date rules as account layouts (account_reader.py).

Reading checks every row's own cells and returns each row or the reason it is refused; what
a row means (which payment, whether its amount matches) is for the caller to decide.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date
from types import MappingProxyType
from typing import IO

from connectors.files.account_layout import AmountFormat, _date_format_problems
from connectors.files.account_reader import _amount_parser, _date_parser
from connectors.files.layout_base import LayoutError, _text_encoding, file_problems
from connectors.files.parsers import FieldError, show_value
from connectors.return_codes import is_notice, is_return

__all__ = ["DEFAULT_RETURNS_LAYOUT", "RETURNS_FIELDS", "ReturnRow", "ReturnsFileError",
           "ReturnsLayout", "RowProblem", "read_returns_file"]

RETURNS_FIELDS = ("confirmation_number", "return_code", "return_date", "amount",
                  "trace_number", "detail")
_REQUIRED = RETURNS_FIELDS[:4]
_CONFIRMATION_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
_TRACE_RE = re.compile(r"[0-9]{15}")
_MAX_DETAIL = 500


class ReturnsFileError(ValueError):
    """The file as a whole cannot be read (no header, a required column missing)."""


@dataclass(frozen=True)
class ReturnsLayout:
    """How a processor's returns report is laid out (docs/returns.md#layouts).

    ``columns`` maps our field names to the report's header names; fields left out take
    their own names. ``value_maps`` may map the report's codes to ours, e.g.
    ``{"return_code": {"NSF": "R01"}}``.
    """

    name: str
    columns: Mapping[str, str] = field(default_factory=dict)
    encoding: str = "utf-8"
    delimiter: str = ","
    quotechar: str = '"'
    date_format: str = "%Y-%m-%d"
    amounts: AmountFormat = AmountFormat()  # noqa: RUF009 - frozen, so shared safely
    value_maps: Mapping[str, Mapping[str, str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "columns", MappingProxyType(dict(self.columns)))
        object.__setattr__(self, "value_maps", MappingProxyType(
            {k: MappingProxyType({c.strip().casefold(): v for c, v in m.items()})
             for k, m in self.value_maps.items()}))
        problems = file_problems(self.name, self.encoding, self.delimiter, "minimal",
                                 self.quotechar)
        problems += [f"columns: unknown field {name!r}" for name in self.columns
                     if name not in RETURNS_FIELDS]
        problems += [f"value_maps: unknown field {name!r}" for name in self.value_maps
                     if name not in RETURNS_FIELDS]
        problems += _date_format_problems(self.date_format)
        if problems:
            raise LayoutError(problems)

    def header_name(self, name: str) -> str:
        """The report's header for one of our fields."""
        return self.columns.get(name, name)


DEFAULT_RETURNS_LAYOUT = ReturnsLayout(name="default", encoding="utf-8-sig")


@dataclass(frozen=True)
class ReturnRow:
    """One checked row: a return (``code`` R..) or a notice of change (C..)."""

    line: int
    confirmation_number: str
    code: str
    return_date: date
    amount_cents: int
    trace_number: str | None = None
    detail: str = ""

    @property
    def is_notice(self) -> bool:
        """A notice of change, not a return."""
        return is_notice(self.code)


@dataclass(frozen=True)
class RowProblem:
    """A row refused, and why (the whole file is then refused)."""

    line: int
    reason: str


def read_returns_file(stream: IO[bytes], layout: ReturnsLayout = DEFAULT_RETURNS_LAYOUT
                      ) -> Iterator[ReturnRow | RowProblem]:
    """Each data row of the file, checked; raises ReturnsFileError for an unreadable file."""
    text = io.TextIOWrapper(stream, encoding=_text_encoding(layout.encoding),
                            errors="strict", newline="")
    reader = csv.reader(text, delimiter=layout.delimiter, quotechar=layout.quotechar)
    try:
        header = next(reader, None)
    except (UnicodeDecodeError, csv.Error) as exc:
        raise ReturnsFileError(f"line 1: cannot be read: {exc}") from None
    if header is None:
        raise ReturnsFileError("the file is empty: a header row is required")
    names = [cell.strip().lstrip("\ufeff").casefold() for cell in header]
    where: dict[str, int] = {}
    for field_name in RETURNS_FIELDS:
        wanted = layout.header_name(field_name).casefold()
        if wanted in names:
            where[field_name] = names.index(wanted)
    missing = [layout.header_name(f) for f in _REQUIRED if f not in where]
    if missing:
        raise ReturnsFileError(f"line 1: the header lacks {', '.join(missing)}")
    parse_amount = _amount_parser(layout.amounts)
    parse_date = _date_parser(layout.date_format)
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except (UnicodeDecodeError, csv.Error) as exc:
            raise ReturnsFileError(f"line {reader.line_num}: cannot be read: {exc}") from None
        if not any(cell.strip() for cell in row):
            continue
        cells = {name: (row[i].strip() if i < len(row) else "") for name, i in where.items()}
        for name, mapping in layout.value_maps.items():
            if name in cells and cells[name].casefold() in mapping:
                cells[name] = mapping[cells[name].casefold()]
        try:
            yield _row(reader.line_num, cells, parse_amount, parse_date, layout)
        except FieldError as exc:
            yield RowProblem(reader.line_num, str(exc))


def _row(line: int, cells: Mapping[str, str], parse_amount: object, parse_date: object,
         layout: ReturnsLayout) -> ReturnRow:
    conf, code = cells["confirmation_number"], cells["return_code"].upper()
    shown = layout.header_name
    if not _CONFIRMATION_RE.fullmatch(conf):
        raise FieldError(f"{shown('confirmation_number')}: {show_value(conf)} is not a "
                         "confirmation number")
    if not (is_return(code) or is_notice(code)):
        raise FieldError(f"{shown('return_code')}: {show_value(cells['return_code'])} is not "
                         "a return code (R01-R99) or a notice of change (C01-C13)")
    raw_date = cells["return_date"]
    if not raw_date:
        raise FieldError(f"{shown('return_date')}: missing")
    day = parse_date(shown("return_date"), raw_date)  # type: ignore[operator]
    raw_amount = cells["amount"]
    if not raw_amount:
        raise FieldError(f"{shown('amount')}: missing")
    cents = int(parse_amount(shown("amount"), raw_amount))  # type: ignore[operator]
    if cents < 0:
        # Some reports sign returned debits negative: the size is what is matched.
        cents = -cents
    trace = cells.get("trace_number") or None
    if trace is not None and not _TRACE_RE.fullmatch(trace):
        raise FieldError(f"{shown('trace_number')}: {show_value(trace)} is not a 15-digit "
                         "trace number")
    return ReturnRow(line=line, confirmation_number=conf, code=code, return_date=day,
                     amount_cents=cents, trace_number=trace,
                     detail=(cells.get("detail") or "")[:_MAX_DETAIL])
