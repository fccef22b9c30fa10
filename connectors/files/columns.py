"""The account columns: one row per column, and everything else about account files follows.

A ``Column`` says what a biller's file may tell us about an account: its name (the default
layout's header, a declared layout's key), the kind of value, how a cell is read, whether it
is required, what a blank cell means, and where the value is kept (the ``AccountRecord``
field and the cache's ``Account`` attribute). From ``COLUMNS`` follow the default layout's
columns, the names a declared layout may map, the rows the readers validate, what an import
stores, and the report's order of problems.

To add a column: a ``Column`` row here (with a parser from ``connectors.files.parsers``, or a
new one there), the attribute in ``ivr.models.AccountFields`` (the SQL type of its kind), an
Alembic migration, and its row in docs/files.md. tests/test_columns.py then checks it end to
end with its ``example``; see docs/development.md.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from enum import StrEnum
from types import MappingProxyType
from typing import Any, NoReturn

from connectors.files.parsers import (
    YES_NO,
    OneOf,
    ParserFactory,
    account_number,
    amount,
    count,
    layout_date,
    not_negative_amount,
    phones,
    pin,
    text,
    unit,
    usage,
    zip_code,
)

__all__ = [
    "BY_FIELD",
    "BY_NAME",
    "COLUMNS",
    "COLUMN_NAMES",
    "FIELDS",
    "KEY",
    "KIND_TYPES",
    "LANGUAGES",
    "OPTIONAL_COLUMNS",
    "REQUIRED_COLUMNS",
    "STATUSES",
    "SUMMED",
    "AccountRecord",
    "AccountStatus",
    "Column",
    "Kind",
]


class AccountStatus(StrEnum):
    """An account's service status, as account files give it (``accounts.status``)."""

    ACTIVE = "active"
    DISCONNECT_PENDING = "disconnect_pending"  # a disconnection notice: the date is required
    DISCONNECTED = "disconnected"
    CLOSED = "closed"  # no payments by phone


STATUSES = frozenset(AccountStatus)
LANGUAGES = frozenset({"en", "es"})


class Kind(StrEnum):
    """What a column's value is; the cache stores each kind in its own SQL type."""

    TEXT = "text"  # str
    CENTS = "cents"  # int: money in integer cents
    DATE = "date"  # datetime.date
    DECIMAL = "decimal"  # decimal.Decimal
    FLAG = "flag"  # bool
    HASHED = "hashed"  # str (a PIN), stored only as a salted hash
    PHONES = "phones"  # tuple of E.164 numbers, kept in account_phones rather than accounts
    COUNT = "count"  # int: how many times something happened


@dataclass(frozen=True)
class Column:
    """One column of the account file.

    ``read`` makes the parser of a non-blank cell (connectors.files.parsers). ``blank`` is
    the value of a blank cell, and what a new account gets when the file lacks the column
    (an existing account keeps its value then). ``field`` names the ``AccountRecord`` field
    and ``cache`` the ``Account`` attribute (None: not an accounts column); both default to
    ``name``. ``required_if`` = (other column, value) requires this one when the other has
    that value; the other must come earlier. ``example`` is a valid cell, other than blank's
    meaning, for the documentation and tests/test_columns.py.
    """

    name: str
    kind: Kind
    read: ParserFactory
    example: str
    field: str = ""
    cache: str | None = ""
    required: bool = False
    blank: object = None
    required_if: tuple[str, str] | None = None
    key: bool = False  # identifies the account: required, unique in a file
    summed: bool = False  # the control total of trailers is this column's sum

    @property
    def choices(self) -> frozenset[str] | None:
        """The values a cell may hold, for columns read as one of a few (else None)."""
        choices = getattr(self.read, "choices", None)
        return choices if isinstance(choices, frozenset) else None

    def __post_init__(self) -> None:
        if not self.field:
            object.__setattr__(self, "field", self.name)
        if self.cache == "":
            object.__setattr__(self, "cache", self.field)


# In the order rows are checked, which is the order of the problems in a rejected row's report.
COLUMNS: tuple[Column, ...] = (
    Column("account_number", Kind.TEXT, account_number, "0012345678", required=True, key=True),
    Column("balance_due", Kind.CENTS, amount, "123.45", field="balance_due_cents",
           required=True, summed=True),
    Column("status", Kind.TEXT, OneOf(STATUSES), "disconnect_pending",
           blank=AccountStatus.ACTIVE.value),
    Column("disconnect_date", Kind.DATE, layout_date, "2026-12-01",
           required_if=("status", AccountStatus.DISCONNECT_PENDING.value)),
    Column("customer_name", Kind.TEXT, text(200), "Alex Morgan", blank=""),
    Column("phones", Kind.PHONES, phones, "+13125550123", cache=None, blank=()),
    Column("service_zip", Kind.TEXT, zip_code, "60614"),
    Column("pin", Kind.HASHED, pin, "1357", cache="pin_hash"),
    Column("past_due_amount", Kind.CENTS, not_negative_amount, "20.00",
           field="past_due_cents", blank=0),
    Column("due_date", Kind.DATE, layout_date, "2026-12-10"),
    Column("last_payment_amount", Kind.CENTS, not_negative_amount, "98.10",
           field="last_payment_cents"),
    Column("last_payment_date", Kind.DATE, layout_date, "2026-11-10"),
    Column("usage_amount", Kind.DECIMAL, usage, "640.5"),
    Column("usage_unit", Kind.TEXT, unit(32), "kWh"),
    Column("usage_period_end", Kind.DATE, layout_date, "2026-11-20"),
    Column("language", Kind.TEXT, OneOf(LANGUAGES), "es", blank="en"),
    Column("payment_allowed", Kind.FLAG, YES_NO, "N", blank=True),
    # Per-account payment rules (docs/files.md); blank keeps the line's own behaviour.
    Column("ach_allowed", Kind.FLAG, YES_NO, "N", blank=True),
    Column("card_allowed", Kind.FLAG, YES_NO, "N", blank=True),
    Column("minimum_payment", Kind.CENTS, not_negative_amount, "25.00",
           field="minimum_payment_cents"),
    Column("full_payment_required", Kind.FLAG, YES_NO, "Y", blank=False),
    Column("reconnect_amount", Kind.CENTS, not_negative_amount, "180.00",
           field="reconnect_cents"),
    # What payment-arrangement rules are evaluated over ([arrangements] in settings.toml).
    Column("service_start_date", Kind.DATE, layout_date, "2019-04-01"),
    Column("broken_arrangements_12m", Kind.COUNT, count, "1", blank=0),
    Column("returned_payments_12m", Kind.COUNT, count, "2", blank=0),
    # The biller's own word on arrangements: Y or N overrides the rules, blank lets them decide.
    Column("arrangement_eligible", Kind.FLAG, YES_NO, "Y"),
)

COLUMN_NAMES = tuple(column.name for column in COLUMNS)
REQUIRED_COLUMNS = tuple(column.name for column in COLUMNS if column.required)
OPTIONAL_COLUMNS = tuple(column.name for column in COLUMNS if not column.required)
FIELDS = tuple(column.field for column in COLUMNS)
BY_NAME: Mapping[str, Column] = MappingProxyType({column.name: column for column in COLUMNS})


def _schema_problems(columns: tuple[Column, ...]) -> Iterator[str]:
    """What makes a schema unreadable; checked at import, so a bad edit fails every test."""
    for attribute in ("name", "field", "cache"):
        values = [getattr(c, attribute) for c in columns if getattr(c, attribute) is not None]
        if len(set(values)) != len(values):
            yield f"two columns share a {attribute}"
    for flag_name in ("key", "summed"):
        if sum(getattr(c, flag_name) for c in columns) != 1:
            yield f"exactly one column must be {flag_name}"
    for i, column in enumerate(columns):
        if (column.key or column.summed) and not column.required:
            yield f"{column.name}: the key and the summed column must be required"
        earlier = {c.name for c in columns[:i]}
        if column.required_if is not None and column.required_if[0] not in earlier:
            yield f"{column.name}: required_if must name an earlier column"
        if (column.kind is Kind.PHONES) != (column.cache is None):
            yield f"{column.name}: phone lists, and only they, live outside accounts"


_problems = list(_schema_problems(COLUMNS))
if _problems:
    raise RuntimeError("connectors/files/columns.py: " + "; ".join(_problems))

KEY = next(column for column in COLUMNS if column.key)
SUMMED = next(column for column in COLUMNS if column.summed)


class AccountRecord:
    """One accepted account row: a value for every column, by field; money in integer cents.

    Read a value as an attribute (``record.balance_due_cents``) or by field name
    (``record["balance_due_cents"]``). Records are immutable and compare by value. Build
    one with fields as keywords, as for a dataclass: the required columns' fields must be
    given, the others default to their blank value.
    """

    __slots__ = ("_values",)
    _values: dict[str, object]

    def __init__(self, **values: object) -> None:
        missing = [c.field for c in COLUMNS if c.required and c.field not in values]
        unknown = [name for name in values if name not in BY_FIELD]
        if missing or unknown:
            raise TypeError(f"AccountRecord: missing fields {missing}, unknown fields {unknown}")
        full = {c.field: values.get(c.field, c.blank) for c in COLUMNS}
        object.__setattr__(self, "_values", full)

    @classmethod
    def from_values(cls, values: dict[str, object]) -> AccountRecord:
        """A record of ``values`` (every field, in ``FIELDS`` order), taken as they are."""
        record = object.__new__(cls)
        object.__setattr__(record, "_values", values)
        return record

    @property
    def values(self) -> Mapping[str, object]:
        """Every field's value, in ``FIELDS`` order (a read-only view)."""
        return MappingProxyType(self._values)

    def __getattr__(self, name: str) -> Any:
        if name == "_values":
            raise AttributeError(name)
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(f"AccountRecord has no field {name!r}") from None

    def __getitem__(self, name: str) -> object:
        return self._values[name]

    def __setattr__(self, name: str, value: object) -> NoReturn:
        raise AttributeError("AccountRecord is immutable")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, AccountRecord):
            return NotImplemented
        return self._values == other._values

    def __hash__(self) -> int:
        return hash(tuple(self._values.values()))

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={value!r}" for name, value in self._values.items())
        return f"AccountRecord({fields})"


BY_FIELD: Mapping[str, Column] = MappingProxyType({column.field: column for column in COLUMNS})

# Value types of the kinds, for readers of a record who want them spelt out.
KIND_TYPES: Mapping[Kind, type] = MappingProxyType({
    Kind.TEXT: str, Kind.CENTS: int, Kind.DATE: date, Kind.DECIMAL: Decimal, Kind.FLAG: bool,
    Kind.HASHED: str, Kind.PHONES: tuple, Kind.COUNT: int,
})
