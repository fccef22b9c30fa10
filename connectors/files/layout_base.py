"""What every declared layout shares: field names, option types, errors and checks."""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal, TypeVar, get_args
from zoneinfo import ZoneInfo

from connectors.files.columns import COLUMN_NAMES

# The names a declared account layout may map: the schema's columns.
ACCOUNT_FIELDS = COLUMN_NAMES
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
    "channel",
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
# What write_payment_file writes; sums of many payments may pass an account amount's 12 digits.
_PLAIN_AMOUNT_RE = re.compile(r"-?[0-9]+\.[0-9]{2}")
# <Pay> reports 4 digits of a card number but only 2 of a bank account number.
_LAST4_RE = re.compile(r"[0-9]{1,4}")
_CURRENCY_RE = re.compile(r"[A-Z]{3}")
_LINE_TERMINATORS = ("\r\n", "\n", "\r")
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


@dataclass(frozen=True)
class RecordLayout:
    """What both confirmation file layouts share (``PaymentLayout``, ``ArrangementLayout``):
    the file's dialect, its columns, times, amounts, value maps and control records.

    A subclass sets its own ``columns`` default, adds its own keys and says its problems
    in ``_problems``; building one with problems raises ``LayoutError``.
    """

    name: str
    columns: tuple[tuple[str, str], ...] = ()
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
    line_terminator: str = "\r\n"

    def __post_init__(self) -> None:
        object.__setattr__(self, "columns", tuple(tuple(c) for c in self.columns))
        object.__setattr__(self, "header_record", tuple(self.header_record))
        object.__setattr__(self, "trailer_record", tuple(self.trailer_record))
        object.__setattr__(self, "value_maps", _freeze_maps(self.value_maps))
        problems = self._problems()
        if problems:
            raise LayoutError(problems)

    def _problems(self) -> list[str]:
        """Every problem of this layout's values, one per item."""
        raise NotImplementedError

    @property
    def zone(self) -> ZoneInfo:
        """The time zone the layout's times (paid_at, created_at) are written in."""
        return ZoneInfo(self.time_zone)


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


def file_problems(name: str, encoding: str, delimiter: str, quoting: str,
                  quotechar: str) -> list[str]:
    """What every layout, account or payment, checks of its name and its file's dialect."""
    problems: list[str] = []
    if not _NAME_RE.fullmatch(name):
        problems.append(f"name: {name!r} must be 1-64 letters, digits, _ or -")
    encoding_problem = _encoding_problem(encoding)
    if encoding_problem:
        problems.append(encoding_problem)
    return problems + _dialect_problems(delimiter, quoting, quotechar)


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
