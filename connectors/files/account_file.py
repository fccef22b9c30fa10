"""Streaming parser for the default account file layout (UTF-8 CSV, one account per row).

The layout is a contract with billers; see ``iter_account_file`` for the rules. The parser
yields one ``AccountRecord`` or ``Rejection`` per data row and never holds the file in
memory: only a compact fingerprint table for duplicate detection grows with the file.

The cell validators (``RowValidator`` and ``RowRules``) are shared with
``connectors.files.layouts``, which reads billers' own layouts through the same rules.
"""

from __future__ import annotations

import csv
import io
import re
from array import array
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import IO, TypeVar, cast

from connectors.amounts import cents_to_text
from connectors.phones import normalize_e164

__all__ = [
    "LANGUAGES",
    "OPTIONAL_COLUMNS",
    "REQUIRED_COLUMNS",
    "STATUSES",
    "AccountFileError",
    "AccountRecord",
    "FieldError",
    "FileSummary",
    "Rejection",
    "RowRules",
    "RowValidator",
    "check_control_totals",
    "has_undecodable",
    "is_blank_row",
    "iter_account_file",
    "parse_amount_cents",
    "parse_count",
    "parse_iso_date",
    "show_value",
]

REQUIRED_COLUMNS = ("account_number", "balance_due")
OPTIONAL_COLUMNS = (
    "customer_name",
    "phones",
    "service_zip",
    "pin",
    "past_due_amount",
    "due_date",
    "last_payment_amount",
    "last_payment_date",
    "status",
    "disconnect_date",
    "usage_amount",
    "usage_unit",
    "usage_period_end",
    "language",
    "payment_allowed",
)
_KNOWN_COLUMNS = frozenset(REQUIRED_COLUMNS + OPTIONAL_COLUMNS)
STATUSES = frozenset({"active", "disconnect_pending", "disconnected", "closed"})
LANGUAGES = frozenset({"en", "es"})

# ASCII-only classes throughout: str.isdigit() and \d accept Arabic-Indic and other digits,
# which Decimal and date would then happily parse.
_ACCOUNT_RE = re.compile(r"[A-Za-z0-9-]{1,32}")
_AMOUNT_RE = re.compile(r"-?[0-9]+(?:\.[0-9]{1,2})?")
# Fits the cache's NUMERIC(14, 3) column exactly, so nothing is rounded or overflows there.
_USAGE_RE = re.compile(r"-?[0-9]{1,11}(?:\.[0-9]{1,3})?")
_ZIP_RE = re.compile(r"([0-9]{5})(?:-[0-9]{4})?")
_PIN_RE = re.compile(r"[0-9]{4,8}")
_DATE_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_COUNT_RE = re.compile(r"[0-9]{1,12}")
# Control characters no value may hold: they would reach spoken SSML (where XML forbids
# them), the ops console and files we write. NUL is among them (PostgreSQL text cannot hold
# it). Tab and line breaks are left to quoted cells: a spreadsheet's Alt+Enter makes them.
_CONTROL_RE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
# Under errors="surrogateescape" each undecodable byte becomes one of these code points.
_UNDECODABLE_RE = re.compile("[\udc80-\udcff]")

# Keeps cents inside a signed 64-bit column with room to sum a large file.
_MAX_AMOUNT_INT_DIGITS = 12
_MAX_USAGE_UNIT = 32
_MAX_CUSTOMER_NAME = 200
_MAX_SHOWN_VALUE = 60
_TRAILER = "TRAILER"


@dataclass(frozen=True)
class AccountRecord:
    """One accepted account row; money in integer cents."""

    account_number: str
    customer_name: str
    phones: tuple[str, ...]
    service_zip: str | None
    pin: str | None
    balance_due_cents: int
    past_due_cents: int
    due_date: date | None
    last_payment_cents: int | None
    last_payment_date: date | None
    status: str
    disconnect_date: date | None
    usage_amount: Decimal | None
    usage_unit: str | None
    usage_period_end: date | None
    language: str
    payment_allowed: bool


@dataclass(frozen=True)
class Rejection:
    """A data row that was not accepted, located by the physical line where it starts."""

    line: int
    account_number: str | None
    reason: str


class AccountFileError(Exception):
    """The file as a whole is unusable (header, encoding, CSV syntax or trailer)."""


@dataclass
class FileSummary:
    """Running totals, updated as the iterator is consumed.

    ``balance_sum_cents`` covers every data row whose balance_due parsed, accepted or
    rejected, because that is the figure the trailer's sum is checked against.
    """

    records: int = 0
    rejected: int = 0
    balance_sum_cents: int = 0
    trailer: tuple[int, int] | None = None
    # Our column names the file carries, once its header (or layout) is known: an import
    # updates only these, so a file without a pin column leaves PINs as they are. Not part
    # of equality: it describes the file's shape, not its totals.
    columns: frozenset[str] = field(default=frozenset(), compare=False)


class FieldError(Exception):
    """One cell failed validation; the message is the user-facing reason."""


_T = TypeVar("_T")


def _attempt(
    errors: list[str], parse: Callable[[str, str], _T], column: str, raw: str, fallback: _T
) -> _T:
    """Run one column's parser, collecting its error so a row reports every bad column."""
    try:
        return parse(column, raw)
    except FieldError as exc:
        errors.append(str(exc))
        return fallback


def show_value(value: str) -> str:
    """Quote a bad value for a reason, cut short so one huge cell can't flood a report."""
    if len(value) > _MAX_SHOWN_VALUE:
        value = value[:_MAX_SHOWN_VALUE] + "..."
    return repr(value)


def parse_amount_cents(column: str, raw: str) -> int:
    """Parse ``123.45`` / ``-5`` / ``0.5`` into integer cents; anything else is an error."""
    text = raw.strip()
    # The regex rejects exponents, NaN, Infinity, thousands separators and currency signs,
    # all of which Decimal alone would accept or misread.
    if not _AMOUNT_RE.fullmatch(text):
        raise FieldError(f"{column}: {show_value(raw)} is not an amount")
    negative = text.startswith("-")
    whole, _, fraction = text.lstrip("-").partition(".")
    if len(whole.lstrip("0")) > _MAX_AMOUNT_INT_DIGITS:
        raise FieldError(f"{column}: {show_value(raw)} is too large")
    # Exact integer arithmetic on the digits the regex allowed (at most two decimals).
    cents = int(whole) * 100 + int(fraction.ljust(2, "0"))
    return -cents if negative else cents


def parse_iso_date(column: str, raw: str) -> date | None:
    """Parse a ``YYYY-MM-DD`` cell; blank is None."""
    if not raw:
        return None
    # date.fromisoformat in 3.11 also takes "20240131" and week dates; the contract is
    # YYYY-MM-DD only.
    if not _DATE_RE.fullmatch(raw):
        raise FieldError(f"{column}: {show_value(raw)} is not a date (YYYY-MM-DD)")
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise FieldError(f"{column}: {show_value(raw)} is not a real date") from None


def _optional_amount(parse_amount: Callable[[str, str], int]) -> Callable[[str, str], int | None]:
    """A parser for an amount column that may be blank but never negative."""

    def parse(column: str, raw: str) -> int | None:
        if not raw:
            return None
        cents = parse_amount(column, raw)
        if cents < 0:
            raise FieldError(f"{column}: {show_value(raw)} cannot be negative")
        return cents

    return parse


def _parse_phones(column: str, raw: str, separator: str = ";") -> tuple[str, ...]:
    phones: list[str] = []
    for part in raw.split(separator):
        piece = part.strip()
        if not piece:
            # Tolerate "a;b;" and "a;;b" from hand-edited sheets.
            continue
        e164 = normalize_e164(piece)
        if e164 is None:
            raise FieldError(f"{column}: {show_value(piece)} is not a phone number")
        if e164 not in phones:
            phones.append(e164)
    return tuple(phones)


def _parse_zip(column: str, raw: str) -> str | None:
    if not raw:
        return None
    match = _ZIP_RE.fullmatch(raw)
    if match is None:
        raise FieldError(f"{column}: {show_value(raw)} is not a ZIP code (12345 or 12345-6789)")
    return match.group(1)


def _parse_pin(column: str, raw: str) -> str | None:
    if not raw:
        return None
    if not _PIN_RE.fullmatch(raw):
        # The value is a credential (or a typo of one): never echo it into reports or logs.
        raise FieldError(f"{column}: must be 4 to 8 digits (value not shown)")
    return raw


def _parse_choice(column: str, raw: str, allowed: frozenset[str], default: str) -> str:
    if not raw:
        return default
    value = raw.lower()
    if value not in allowed:
        choices = ", ".join(sorted(allowed))
        raise FieldError(f"{column}: {show_value(raw)} is not one of {choices}")
    return value


def _parse_status(column: str, raw: str) -> str:
    return _parse_choice(column, raw, STATUSES, "active")


def _parse_language(column: str, raw: str) -> str:
    return _parse_choice(column, raw, LANGUAGES, "en")


def _parse_flag(column: str, raw: str) -> bool:
    value = raw.upper()
    if value in ("", "Y"):
        return True
    if value == "N":
        return False
    raise FieldError(f"{column}: {show_value(raw)} is not Y or N")


def _parse_usage(column: str, raw: str) -> Decimal | None:
    if not raw:
        return None
    # Negative usage is real (net-metered solar); exponents and NaN are not.
    if not _USAGE_RE.fullmatch(raw):
        raise FieldError(f"{column}: {show_value(raw)} is not a number with at most 3 decimals")
    return Decimal(raw)


def _parse_name(column: str, raw: str) -> str:
    if len(raw) > _MAX_CUSTOMER_NAME:
        raise FieldError(
            f"{column}: {show_value(raw)} is longer than {_MAX_CUSTOMER_NAME} characters"
        )
    return raw


def _parse_unit(column: str, raw: str) -> str | None:
    if not raw:
        return None
    if len(raw) > _MAX_USAGE_UNIT or not raw.isprintable():
        raise FieldError(f"{column}: {show_value(raw)} is not a unit name")
    return raw


class _Fingerprints:
    """Set of 64-bit account fingerprints, each with the line it was first seen on.

    A Python set of 200,000 account strings costs ~20 MB; two flat arrays cost 12 bytes a
    slot, 2-4 slots per account. The price is a ~n^2/2^65 chance of calling two different
    accounts duplicates (about 3e-8 for a million rows), which rejects a row, never merges.
    """

    def __init__(self) -> None:
        self._keys = array("Q", [0]) * 1024
        # "I" is 4 bytes everywhere that matters ("L" is 8 on 64-bit Linux); lines past 4e9
        # are clamped, which only affects the line quoted in a duplicate's reason.
        self._lines = array("I", [0]) * 1024
        self._used = 0

    @staticmethod
    def _fingerprint(key: str) -> int:
        # hash() of str is 64-bit SipHash on 64-bit builds and cached on the string. 0 marks
        # an empty slot, so it is remapped.
        return (hash(key) & 0xFFFF_FFFF_FFFF_FFFF) or 1

    def add(self, key: str, line: int) -> int | None:
        """Record ``key``; return the first line if it was already present, else None."""
        fp = self._fingerprint(key)
        keys = self._keys
        mask = len(keys) - 1
        slot = fp & mask
        while keys[slot]:
            if keys[slot] == fp:
                return int(self._lines[slot])
            slot = (slot + 1) & mask
        keys[slot] = fp
        self._lines[slot] = min(line, 0xFFFF_FFFF)
        self._used += 1
        if self._used * 2 > len(keys):
            self._grow()
        return None

    def _grow(self) -> None:
        old_keys, old_lines = self._keys, self._lines
        size = len(old_keys) * 2
        self._keys = array("Q", [0]) * size
        self._lines = array("I", [0]) * size
        mask = size - 1
        for fp, line in zip(old_keys, old_lines, strict=True):
            if fp:
                slot = fp & mask
                while self._keys[slot]:
                    slot = (slot + 1) & mask
                self._keys[slot] = fp
                self._lines[slot] = line


def _text_stream(stream: IO[bytes] | IO[str]) -> tuple[IO[str], io.TextIOWrapper | None]:
    """Return a text view of ``stream`` and the wrapper we created (to detach later)."""
    probe = stream.read(0)
    if isinstance(probe, str):
        return cast(IO[str], stream), None
    # surrogateescape instead of strict: a bad byte then surfaces inside the row it belongs
    # to, so the error names the exact line rather than the start of an 8 KB decode chunk.
    wrapper = io.TextIOWrapper(
        cast(IO[bytes], stream), encoding="utf-8-sig", errors="surrogateescape", newline=""
    )
    return wrapper, wrapper


def is_blank_row(row: list[str]) -> bool:
    """True for an empty row or one of only empty or space cells."""
    # Spreadsheet exports pad empty lines with commas (",,,,"); those are blank too.
    return all(not cell.strip() for cell in row)


def _read_header(row: list[str], line: int) -> dict[str, int]:
    names = [cell.strip().lower() for cell in row]
    if names:
        # A text stream opened as plain "utf-8" leaves the BOM on the first name.
        names[0] = names[0].lstrip("\ufeff").strip()
    if names and names[0] == _TRAILER.lower():
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
    return index


def _parse_trailer(row: list[str], line: int) -> tuple[int, int]:
    cells = [cell.strip() for cell in row]
    # Spreadsheets pad the trailer out to the header's width with empty cells.
    while len(cells) > 3 and not cells[-1]:
        cells.pop()
    if len(cells) != 3:
        raise AccountFileError(
            f"trailer: line {line} must be TRAILER,<record count>,<sum of balance_due>"
        )
    try:
        return parse_count(cells[1]), parse_amount_cents("trailer sum", cells[2])
    except FieldError as exc:
        raise AccountFileError(f"trailer: line {line}: {exc}") from None


def parse_count(raw: str) -> int:
    """Parse a control record's record count (ASCII digits only)."""
    text = raw.strip()
    if not _COUNT_RE.fullmatch(text):
        raise FieldError(f"{show_value(text)} is not a record count")
    return int(text)


def has_undecodable(row: list[str]) -> bool:
    """True if a row read with errors="surrogateescape" holds bytes its encoding rejected."""
    return _UNDECODABLE_RE.search("".join(row)) is not None


@dataclass(frozen=True)
class RowRules:
    """How a layout spells amounts, dates and phone lists; the defaults are the
    default layout's (docs/files.md).

    ``value_maps`` maps a column name to {file value: our value}; keys are matched without
    regard to case and values not in the map pass through to the column's own validation.
    """

    parse_amount: Callable[[str, str], int] = parse_amount_cents
    parse_date: Callable[[str, str], date | None] = parse_iso_date
    phone_separator: str = ";"
    value_maps: Mapping[str, Mapping[str, str]] = field(default_factory=dict)


DEFAULT_ROW_RULES = RowRules()


class RowValidator:
    """Validates data rows, given where each of our columns sits in a row.

    ``columns`` maps column names to 0-based cell indexes (unknown names are ignored; absent
    ones read as blank). A row must have exactly ``width`` cells, or at least ``width`` when
    ``exact_width`` is false; ``width_source`` names what set the width in the reason.
    """

    def __init__(
        self,
        columns: Mapping[str, int],
        width: int,
        *,
        rules: RowRules = DEFAULT_ROW_RULES,
        exact_width: bool = True,
        width_source: str = "the header",
    ) -> None:
        self._columns = tuple((n, i) for n, i in columns.items() if n in _KNOWN_COLUMNS)
        self.columns = frozenset(n for n, _ in self._columns)
        self._width = width
        self._exact_width = exact_width
        self._width_source = width_source
        self._seen = _Fingerprints()
        self._parse_amount = rules.parse_amount
        self._parse_date = rules.parse_date
        self._parse_optional_amount = _optional_amount(rules.parse_amount)
        separator = rules.phone_separator
        self._parse_phones: Callable[[str, str], tuple[str, ...]] = lambda column, raw: (
            _parse_phones(column, raw, separator)
        )
        # Keys folded once here so each row pays one dict lookup per mapped column.
        self._value_maps = tuple(
            (name, {key.strip().casefold(): value for key, value in mapping.items()})
            for name, mapping in rules.value_maps.items()
            if mapping
        )

    def width_problem(self, cells: int) -> str | None:
        """Why a row of ``cells`` cells cannot be read, or None if its width is right."""
        if self._exact_width and cells != self._width:
            return f"row has {cells} cells but {self._width_source} has {self._width}"
        if not self._exact_width and cells < self._width:
            return f"row has {cells} cells but {self._width_source} needs at least {self._width}"
        return None

    def parse(self, row: list[str], line: int, summary: FileSummary) -> AccountRecord | Rejection:
        """Validate one data row, adding its balance to ``summary`` if that parsed."""
        width_problem = self.width_problem(len(row))
        if width_problem is not None:
            # Cells are misaligned, so no column can be trusted, not even account_number.
            return Rejection(line, None, width_problem)
        # Columns absent from the header read as blank, i.e. take their default.
        cells = {name: row[i].strip() for name, i in self._columns}
        for name, mapping in self._value_maps:
            value = cells.get(name)
            if value is not None:
                cells[name] = mapping.get(value.casefold(), value)
        try:
            record = self._parse_good_row(cells, line)
        except FieldError:
            # Something is wrong: read the row again, this time collecting every reason.
            return self._parse_bad_row(cells, line, summary)
        summary.balance_sum_cents += record.balance_due_cents
        return record

    def _parse_good_row(self, cells: dict[str, str], line: int) -> AccountRecord:
        """The common case, straight through: any problem raises FieldError.

        Same parsers and rules as _parse_bad_row, without collecting errors per cell (which
        costs more than the checks themselves on large files). The duplicate check comes
        last, so a row that falls back to the careful path is not counted twice.
        """
        get = cells.get
        if _CONTROL_RE.search("".join(cells.values())):
            raise FieldError("control character")
        balance_raw = get("balance_due", "")
        account = get("account_number", "")
        if not balance_raw or not account or not _ACCOUNT_RE.fullmatch(account) or (
                account.strip("-") == ""):
            raise FieldError("account or balance")
        status = _parse_status("status", get("status", ""))
        parse_date = self._parse_date
        disconnect_raw = get("disconnect_date", "")
        if status == "disconnect_pending" and not disconnect_raw:
            raise FieldError("disconnect_date")
        optional_amount = self._parse_optional_amount
        record = AccountRecord(
            account_number=account,
            customer_name=_parse_name("customer_name", get("customer_name", "")),
            phones=self._parse_phones("phones", get("phones", "")),
            service_zip=_parse_zip("service_zip", get("service_zip", "")),
            pin=_parse_pin("pin", get("pin", "")),
            balance_due_cents=self._parse_amount("balance_due", balance_raw),
            past_due_cents=optional_amount("past_due_amount", get("past_due_amount", "")) or 0,
            due_date=parse_date("due_date", get("due_date", "")),
            last_payment_cents=optional_amount("last_payment_amount",
                                               get("last_payment_amount", "")),
            last_payment_date=parse_date("last_payment_date", get("last_payment_date", "")),
            status=status,
            disconnect_date=parse_date("disconnect_date", disconnect_raw),
            usage_amount=_parse_usage("usage_amount", get("usage_amount", "")),
            usage_unit=_parse_unit("usage_unit", get("usage_unit", "")),
            usage_period_end=parse_date("usage_period_end", get("usage_period_end", "")),
            language=_parse_language("language", get("language", "")),
            payment_allowed=_parse_flag("payment_allowed", get("payment_allowed", "")),
        )
        if self._seen.add(account, line) is not None:
            raise FieldError("duplicate")
        return record

    def _parse_bad_row(self, cells: dict[str, str], line: int,
                       summary: FileSummary) -> AccountRecord | Rejection:
        """Read a row cell by cell, collecting every problem for the report."""
        errors: list[str] = []
        get = cells.get

        for name, value in cells.items():
            found = _CONTROL_RE.search(value)
            if found is None:
                continue
            if "\x00" in value:
                errors.append(f"{name}: contains a NUL character")
            else:
                errors.append(f"{name}: contains a control character (U+{ord(found[0]):04X})")

        # balance_due first and independently: the trailer sum counts every row whose
        # amount parsed, even if another column rejects the row.
        balance: int | None = None
        balance_raw = get("balance_due", "")
        if not balance_raw:
            errors.append("balance_due: is required")
        else:
            try:
                balance = self._parse_amount("balance_due", balance_raw)
                summary.balance_sum_cents += balance
            except FieldError as exc:
                errors.append(str(exc))

        account: str | None = get("account_number", "")
        if not account:
            errors.append("account_number: is required")
            account = None
        elif not _ACCOUNT_RE.fullmatch(account) or account.strip("-") == "":
            errors.append(
                f"account_number: {show_value(account)} must be 1-32 letters, digits or dashes"
            )
            account = None
        else:
            first = self._seen.add(account, line)
            if first is not None:
                errors.append(f"account_number: {show_value(account)} duplicates line {first}")

        status = _attempt(errors, _parse_status, "status", get("status", ""), "active")
        disconnect_raw = get("disconnect_date", "")
        disconnect = _attempt(errors, self._parse_date, "disconnect_date", disconnect_raw, None)
        if status == "disconnect_pending" and not disconnect_raw:
            errors.append("disconnect_date: is required when status is disconnect_pending")

        def cell(parse: Callable[[str, str], _T], column: str, fallback: _T) -> _T:
            return _attempt(errors, parse, column, get(column, ""), fallback)

        parse_date = self._parse_date
        record = AccountRecord(
            account_number=account or "",
            customer_name=cell(_parse_name, "customer_name", ""),
            phones=cell(self._parse_phones, "phones", ()),
            service_zip=cell(_parse_zip, "service_zip", None),
            pin=cell(_parse_pin, "pin", None),
            balance_due_cents=balance or 0,
            past_due_cents=cell(self._parse_optional_amount, "past_due_amount", None) or 0,
            due_date=cell(parse_date, "due_date", None),
            last_payment_cents=cell(self._parse_optional_amount, "last_payment_amount", None),
            last_payment_date=cell(parse_date, "last_payment_date", None),
            status=status,
            disconnect_date=disconnect,
            usage_amount=cell(_parse_usage, "usage_amount", None),
            usage_unit=cell(_parse_unit, "usage_unit", None),
            usage_period_end=cell(parse_date, "usage_period_end", None),
            language=cell(_parse_language, "language", "en"),
            payment_allowed=cell(_parse_flag, "payment_allowed", True),
        )
        if errors or balance is None or account is None:
            return Rejection(line, account, "; ".join(errors))
        return record


def iter_account_file(
    stream: IO[bytes] | IO[str], summary: FileSummary | None = None
) -> Iterator[AccountRecord | Rejection]:
    """Yield one ``AccountRecord`` or ``Rejection`` per data row of an account file.

    ``stream`` may be binary (decoded as UTF-8, BOM tolerated) or text (open it with
    ``newline=""`` so line breaks inside quoted fields survive). The first non-blank row is
    the header; blank rows are skipped; an optional ``TRAILER,<count>,<sum>`` row must come
    last. File-level problems raise ``AccountFileError``; a trailer mismatch is raised only
    after every row has been yielded. ``summary``, if given, is reset when iteration starts
    and updated as rows go by. The caller's stream is left open.
    """
    totals = summary if summary is not None else FileSummary()
    # The trailer is checked against these counters, so they must describe this file only.
    totals.records = totals.rejected = totals.balance_sum_cents = 0
    totals.trailer = None
    totals.columns = frozenset()
    text, wrapper = _text_stream(stream)
    try:
        yield from _iter_rows(text, totals)
    finally:
        if wrapper is not None:
            # Otherwise the wrapper closes the caller's stream when it is garbage collected.
            wrapper.detach()


def _iter_rows(text: IO[str], totals: FileSummary) -> Iterator[AccountRecord | Rejection]:
    # strict: RFC 4180 quoting errors (text after a closing quote, a quote left open at end
    # of file) are reported instead of silently guessed at.
    reader = csv.reader(text, strict=True)
    parser: RowValidator | None = None
    trailer_line: int | None = None
    while True:
        # csv.reader counts physical lines consumed, so the next record starts one past it,
        # even when a quoted field spans several lines.
        line = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            break
        except UnicodeDecodeError:
            # Only a caller-supplied text stream can raise here; its decoder reads ahead, so
            # the line is approximate.
            raise AccountFileError(f"line {line}: file is not valid UTF-8 (near here)") from None
        except csv.Error as exc:
            raise AccountFileError(f"line {line}: malformed CSV: {exc}") from None
        if has_undecodable(row):
            raise AccountFileError(
                f"line {line}: file is not valid UTF-8 (save it as UTF-8, not Windows-1252)"
            )
        if is_blank_row(row):
            continue
        if trailer_line is not None:
            raise AccountFileError(f"line {line}: rows after the trailer on line {trailer_line}")
        if parser is None:
            parser = RowValidator(_read_header(row, line), len(row))
            totals.columns = parser.columns
            continue
        if row[0].strip() == _TRAILER:
            totals.trailer = _parse_trailer(row, line)
            trailer_line = line
            continue
        result = parser.parse(row, line, totals)
        if isinstance(result, Rejection):
            totals.rejected += 1
        else:
            totals.records += 1
        yield result

    if parser is None:
        raise AccountFileError("file has no header row")
    if totals.trailer is not None:
        check_control_totals("trailer", *totals.trailer, totals)


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
