"""Reading an account file in a declared layout, through the default layout's validators."""

from __future__ import annotations

import codecs
import csv
import io
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from datetime import date
from typing import IO, Any, cast

from connectors.files.account_file import (
    REQUIRED_COLUMNS,
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
from connectors.files.account_layout import (
    DEFAULT_ACCOUNT_LAYOUT,
    AccountLayout,
    AmountFormat,
    ControlRecord,
)
from connectors.files.layout_base import _MAX_AMOUNT_INT_DIGITS, _text_encoding

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
