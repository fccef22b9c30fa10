"""Reading an account file in any layout: one loop for the default layout and declared ones.

``iter_layout_file`` streams a file in a declared ``AccountLayout``; ``iter_account_file``
reads the default layout (docs/files.md), which is ``DEFAULT_ACCOUNT_LAYOUT`` read the same
way. Rows are validated by ``connectors.files.rows`` against the column schema; this module
handles what is about the file: encoding, CSV syntax, the header, control records, a file cut
short. The default layout keeps its own header rules and wording for these (``_DEFAULT``),
which predate declared layouts and are documented; declared layouts use ``_DECLARED``.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import date
from typing import IO, Any, cast

from connectors.amounts import cents_to_text
from connectors.files.account_layout import (
    DEFAULT_ACCOUNT_LAYOUT,
    AccountLayout,
    AmountFormat,
    ControlRecord,
)
from connectors.files.columns import REQUIRED_COLUMNS, AccountRecord
from connectors.files.layout_base import _text_encoding
from connectors.files.parsers import (
    MAX_AMOUNT_INT_DIGITS,
    FieldError,
    RowRules,
    parse_amount_cents,
    parse_count,
    parse_iso_date,
    show_value,
)
from connectors.files.rows import (
    AccountFileError,
    FileSummary,
    Rejection,
    RowValidator,
    has_undecodable,
    is_blank_row,
)

__all__ = ["check_control_totals", "iter_account_file", "iter_layout_file", "start_reading"]

# --- how a layout spells amounts and dates ---------------------------------------------------


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
        if len(whole.lstrip("0")) > MAX_AMOUNT_INT_DIGITS:
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


# --- the text of a file -----------------------------------------------------------------------


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


def _text_stream(
    stream: IO[bytes] | IO[str], encoding: str
) -> tuple[IO[str], io.TextIOWrapper | None]:
    """Return a text view of ``stream`` and the wrapper we created (to detach later)."""
    probe = stream.read(0)
    if isinstance(probe, str):
        return cast(IO[str], stream), None
    # surrogateescape instead of strict: a bad byte then surfaces inside the row it belongs
    # to, so the error names the exact line rather than the start of an 8 KB decode chunk.
    wrapper = io.TextIOWrapper(
        cast(IO[bytes], stream),
        encoding=_text_encoding(encoding),
        errors="surrogateescape",
        newline="",
    )
    return wrapper, wrapper


# --- one pass over a file ---------------------------------------------------------------------


class _AccountReader:
    """The state of one pass over an account file."""

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
            self.use(RowValidator(
                positions,
                layout.width or max(positions.values()) + 1,
                rules=self.rules,
                exact_width=layout.width is not None,
                width_source="the layout",
            ))
        # (label, count, total) of control records read, checked once every row is in.
        self.controls: list[tuple[str, int | None, int | None]] = []

    def use(self, validator: RowValidator) -> None:
        """Read data rows with ``validator`` from now on."""
        self.validator = validator
        self.totals.columns = validator.columns


def _header_names(row: list[str], fold: Callable[[str], str]) -> list[str]:
    names = [fold(cell.strip()) for cell in row]
    if names:
        # A text stream opened as plain "utf-8" leaves the BOM on the first name.
        names[0] = names[0].lstrip("\ufeff").strip()
    return names


def _default_header(state: _AccountReader, row: list[str], line: int) -> None:
    """The default layout's header: our column names, in any order; others are ignored."""
    names = _header_names(row, str.lower)
    trailer = state.layout.trailer_record
    if names and trailer is not None and names[0] == trailer.tag.lower():
        raise AccountFileError(f"line {line}: trailer found where the header row should be")
    index: dict[str, int] = {}
    for i, name in enumerate(names):
        if not name:
            continue
        if name in index:
            raise AccountFileError(f"line {line}: header names column {name!r} twice")
        index[name] = i
    missing = [name for name in REQUIRED_COLUMNS if name not in index]
    if missing:
        raise AccountFileError(
            f"line {line}: header is missing required column(s): {', '.join(missing)}"
        )
    state.use(RowValidator(index, len(row), rules=state.rules))


def _declared_header(state: _AccountReader, row: list[str], line: int) -> None:
    """A declared layout's header: the file's names for our columns, as the layout maps them."""
    layout = state.layout
    where: dict[str, list[int]] = {}
    for i, name in enumerate(_header_names(row, str.casefold)):
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
    state.use(RowValidator(index, len(row), rules=state.rules))


def _default_trailer(
    state: _AccountReader, record: ControlRecord, label: str, row: list[str], line: int
) -> tuple[int | None, int | None]:
    """The default layout's ``TRAILER,<record count>,<sum of balance_due>``."""
    cells = [cell.strip() for cell in row]
    # Spreadsheets pad the trailer out to the header's width with empty cells.
    while len(cells) > 3 and not cells[-1]:
        cells.pop()
    if len(cells) != 3:
        raise AccountFileError(
            f"trailer: line {line} must be TRAILER,<record count>,<sum of balance_due>"
        )
    try:
        return parse_count(cells[1]), state.parse_amount("trailer sum", cells[2])
    except FieldError as exc:
        raise AccountFileError(f"trailer: line {line}: {exc}") from None


def _declared_control(
    state: _AccountReader, record: ControlRecord, label: str, row: list[str], line: int
) -> tuple[int | None, int | None]:
    """A declared header or trailer record: the count and total where the layout says."""
    if len(row) < record.width:
        raise AccountFileError(
            f"{label}: line {line} has {len(row)} cells but needs at least {record.width}"
        )
    try:
        count = parse_count(row[record.count_position - 1]) if record.count_position else None
        total = (
            state.parse_amount("control total", row[record.total_position - 1].strip())
            if record.total_position
            else None
        )
    except FieldError as exc:
        raise AccountFileError(f"{label}: line {line}: {exc}") from None
    return count, total


def _default_undecodable(line: int, encoding: str) -> str:
    return f"line {line}: file is not valid UTF-8 (save it as UTF-8, not Windows-1252)"


def _declared_undecodable(line: int, encoding: str) -> str:
    if codecs.lookup(encoding).name.startswith("utf-8"):
        return (
            f"line {line}: file is not valid UTF-8 "
            '(if it is Windows-1252, declare encoding = "cp1252")'
        )
    return f"line {line}: file has bytes that are not valid {encoding}"


@dataclass(frozen=True)
class _FileRules:
    """How file-level problems are found and worded, where the two kinds of layout differ."""

    read_header: Callable[[_AccountReader, list[str], int], None]
    read_control: Callable[
        [_AccountReader, ControlRecord, str, list[str], int], tuple[int | None, int | None]
    ]
    undecodable: Callable[[int, str], str]
    # A declared layout refuses a last line cut short; the default layout rejects that row.
    detect_cut_short: bool


_DEFAULT = _FileRules(_default_header, _default_trailer, _default_undecodable, False)
_DECLARED = _FileRules(_declared_header, _declared_control, _declared_undecodable, True)


def iter_account_file(
    stream: IO[bytes] | IO[str], summary: FileSummary | None = None
) -> Iterator[AccountRecord | Rejection]:
    """Yield one ``AccountRecord`` or ``Rejection`` per data row of an account file in the
    default layout (docs/files.md).

    ``stream`` may be binary (decoded as UTF-8, BOM tolerated) or text (open it with
    ``newline=""`` so line breaks inside quoted fields survive). The first non-blank row is
    the header; blank rows are skipped; an optional ``TRAILER,<count>,<sum>`` row must come
    last. File-level problems raise ``AccountFileError``; a trailer mismatch is raised only
    after every row has been yielded. ``summary``, if given, is reset when iteration starts
    and updated as rows go by. The caller's stream is left open.
    """
    return _read(stream, DEFAULT_ACCOUNT_LAYOUT, summary, _DEFAULT)


def iter_layout_file(
    stream: IO[bytes], layout: AccountLayout, summary: FileSummary | None = None
) -> Iterator[AccountRecord | Rejection]:
    """Yield one ``AccountRecord`` or ``Rejection`` per data row of a file in ``layout``.

    Streams: memory does not grow with the file beyond the duplicate table. Rows are
    validated exactly as ``iter_account_file`` does (same reasons, physical line numbers).
    File-level problems raise ``AccountFileError``: bytes the encoding cannot decode (naming
    the line), malformed quoting, a missing header, a missing required header or trailer
    record, a last record cut short, and (after every row has been yielded) control counts
    or totals that do not match. ``summary`` is reset, then kept up to date. The caller's
    stream is left open. A layout equal to the default one reads as the default layout.
    """
    if replace(layout, name=DEFAULT_ACCOUNT_LAYOUT.name) == DEFAULT_ACCOUNT_LAYOUT:
        return _read(stream, DEFAULT_ACCOUNT_LAYOUT, summary, _DEFAULT)
    return _read(stream, layout, summary, _DECLARED)


def start_reading(
    layout: AccountLayout, totals: FileSummary
) -> tuple[_AccountReader, _FileRules]:
    """The state and file rules the row path reads ``layout`` with, before its first row.

    The column path (``connectors.files.column_reader``) reads the header and control
    records with these, so both paths word and check them alike.
    """
    if replace(layout, name=DEFAULT_ACCOUNT_LAYOUT.name) == DEFAULT_ACCOUNT_LAYOUT:
        return _AccountReader(DEFAULT_ACCOUNT_LAYOUT, totals), _DEFAULT
    return _AccountReader(layout, totals), _DECLARED


def _read(
    stream: IO[bytes] | IO[str],
    layout: AccountLayout,
    summary: FileSummary | None,
    rules: _FileRules,
) -> Iterator[AccountRecord | Rejection]:
    totals = summary if summary is not None else FileSummary()
    # The control records are checked against these counters: they must describe this file.
    totals.restart()
    text, wrapper = _text_stream(stream, layout.encoding)
    try:
        yield from _rows(text, _AccountReader(layout, totals), rules)
    finally:
        if wrapper is not None:
            # Otherwise the wrapper closes the caller's stream when it is garbage collected.
            wrapper.detach()


def _rows(
    text: IO[str], state: _AccountReader, rules: _FileRules
) -> Iterator[AccountRecord | Rejection]:
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
        except UnicodeDecodeError:
            # Only a caller-supplied text stream can raise here; its decoder reads ahead, so
            # the line is approximate.
            raise AccountFileError(f"line {line}: file is not valid UTF-8 (near here)") from None
        except csv.Error as exc:
            hint = " (file cut short?)" if rules.detect_cut_short and ends.unterminated else ""
            raise AccountFileError(f"line {line}: malformed CSV: {exc}{hint}") from None
        if has_undecodable(row):
            raise AccountFileError(rules.undecodable(line, layout.encoding))
        if is_blank_row(row):
            continue
        if trailer_line is not None:
            raise AccountFileError(f"line {line}: rows after the trailer on line {trailer_line}")
        if header_record is not None and header_record.matches(row):
            if not before_data or header_record_line is not None:
                raise AccountFileError(f"line {line}: header record is not the first row")
            _read_control(state, rules, header_record, "header record", row, line)
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
            rules.read_header(state, row, line)
            continue
        if trailer_record is not None and trailer_record.matches(row):
            _read_control(state, rules, trailer_record, "trailer", row, line)
            trailer_line = line
            continue
        if rules.detect_cut_short and ends.unterminated:
            width_problem = state.validator.width_problem(len(row))
            if width_problem is not None:
                # The file's last line, without a line break and short of cells: a cut
                # transfer.
                raise AccountFileError(
                    f"line {line}: the last record is cut short ({width_problem}); "
                    "file truncated?"
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
    for label, count, total in state.controls:
        check_control_totals(label, count, total, totals)


def _read_control(
    state: _AccountReader,
    rules: _FileRules,
    record: ControlRecord,
    label: str,
    row: list[str],
    line: int,
) -> None:
    """Take the count and total a control record carries, to check once every row is in."""
    count, total = rules.read_control(state, record, label, row, line)
    state.controls.append((label, count, total))
    if count is not None and total is not None:
        state.totals.trailer = (count, total)


def check_control_totals(
    label: str,
    count: int | None,
    total: int | None,
    totals: FileSummary,
    format_amount: Callable[[int], str] = cents_to_text,
) -> None:
    """Raise ``AccountFileError`` unless a control record's count and sum (where it carries
    them) match every data row read and the sum of the balances that parsed."""
    rows = totals.records + totals.rejected
    problems: list[str] = []
    if count is not None and count != rows:
        problems.append(f"record count {count} does not match {rows} data rows")
    if total is not None and total != totals.balance_sum_cents:
        problems.append(
            f"balance sum {format_amount(total)} does not match "
            f"{format_amount(totals.balance_sum_cents)} in the file"
        )
    if problems:
        raise AccountFileError(f"{label}: " + "; ".join(problems))
