"""The column schema (connectors/files/columns.py) and what follows from it.

Every check here runs over every column, so a column added to the schema is covered without
a new test: the cache must hold it in the SQL type of its kind, and each layout must read
its example and the import store it, or leave it alone when a file lacks it.
"""

from __future__ import annotations

import io
from typing import Any

import pytest
from sqlalchemy import BigInteger, Boolean, Date, Integer, Numeric, String, select
from sqlalchemy.sql.type_api import TypeEngine

from connectors.files.account_file import AccountRecord, FileSummary, iter_account_file
from connectors.files.columns import COLUMN_NAMES, COLUMNS, KIND_TYPES, Column, Kind
from connectors.files.layouts import DEFAULT_ACCOUNT_LAYOUT, AccountLayout, iter_layout_file
from connectors.files.parsers import FieldError
from connectors.files.rows import DEFAULT_ROW_RULES
from ivr.accounts.importer import apply_account_records
from ivr.db import Database
from ivr.models import Account, AccountFields, AccountStaging
from ivr.security import check_pin

PIN_KEY = "test-pin-key"
SQL_TYPES: dict[Kind, type[TypeEngine[Any]]] = {
    Kind.TEXT: String, Kind.HASHED: String, Kind.CENTS: BigInteger, Kind.DATE: Date,
    Kind.DECIMAL: Numeric, Kind.FLAG: Boolean, Kind.COUNT: Integer,
}
CACHED = [c for c in COLUMNS if c.cache is not None]


def example_value(column: Column) -> object:
    """What the default layout reads from the column's example cell."""
    return column.read(DEFAULT_ROW_RULES)(column.name, column.example)


@pytest.mark.parametrize("column", COLUMNS, ids=COLUMN_NAMES)
def test_example_is_valid_of_its_kind_and_differs_from_blank(column: Column) -> None:
    value = example_value(column)
    assert isinstance(value, KIND_TYPES[column.kind]) and value != column.blank


@pytest.mark.parametrize("column", CACHED, ids=[c.name for c in CACHED])
@pytest.mark.parametrize("model", [Account, AccountStaging])
def test_cache_holds_each_column_in_the_type_of_its_kind(
    column: Column, model: type[Account] | type[AccountStaging]
) -> None:
    assert column.cache is not None
    sql = model.__table__.c[column.cache]
    assert isinstance(sql.type, SQL_TYPES[column.kind]), (column.name, sql.type)
    # A blank cell stores None only where the cache allows it, and the model's default for a
    # new row is the blank value.
    assert sql.nullable == (column.blank is None and not column.required)
    if not column.required and column.blank is not None and sql.default is not None:
        assert sql.default.arg == column.blank  # type: ignore[attr-defined]
    if isinstance(sql.type, String) and column.kind is Kind.TEXT:
        # Nothing the parser accepts can overflow the column.
        length = sql.type.length
        assert length is not None
        with pytest.raises(FieldError):
            column.read(DEFAULT_ROW_RULES)(column.name, "x" * (length + 1))
        for choice in column.choices or ():
            assert len(choice) <= length


def test_every_cache_column_of_a_file_is_in_the_schema() -> None:
    """A column added to the model only (or the schema only) is caught here."""
    model_columns = {name for name in vars(AccountFields) if not name.startswith("_")}
    assert model_columns | {"account_number"} == {c.cache for c in CACHED}


def test_a_record_needs_the_required_fields() -> None:
    values = {c.field: example_value(c) for c in COLUMNS}
    record = AccountRecord(**values)
    assert [record[c.field] for c in COLUMNS] == list(values.values())
    assert record == AccountRecord(**values) and hash(record) == hash(AccountRecord(**values))
    with pytest.raises(TypeError):
        AccountRecord(**{k: v for k, v in values.items() if k != "balance_due_cents"})
    with pytest.raises(TypeError):
        AccountRecord(**values, meter_numbr="M-1")
    # Fields left out take their blank value.
    least = AccountRecord(account_number="1", balance_due_cents=0)
    assert least.status == "active" and least.phones == () and least.pin is None
    with pytest.raises(AttributeError):
        record.account_number = "1"  # type: ignore[misc]


# --- every column through each layout into the cache ------------------------------------------

RENAMED = AccountLayout(
    name="renamed",
    columns={name: f"Their {name.replace('_', ' ')}" for name in COLUMN_NAMES},
    delimiter="|",
    missing_columns="blank",
)


def file_of(layout: AccountLayout, rows: list[dict[str, str]]) -> bytes:
    names = list(rows[0])
    header = [str(layout.columns[name]) for name in names]
    lines = [header] + [[row[name] for name in names] for row in rows]
    return "".join(layout.delimiter.join(cells) + "\r\n" for cells in lines).encode()


def load(database: Database, layout: AccountLayout, data: bytes) -> None:
    summary = FileSummary()
    report = apply_account_records(
        database, iter_layout_file(io.BytesIO(data), layout, summary), layout.name,
        pin_key=PIN_KEY, summary=summary)
    assert report.applied, report.lines()


def cached(database: Database, number: str) -> dict[str, object]:
    """The cache's value of every column for one account, as a file would give it."""
    with database.session() as db:
        account = db.scalar(select(Account).where(Account.account_number == number))
        assert account is not None
        values: dict[str, object] = {}
        for column in COLUMNS:
            if column.kind is Kind.PHONES:
                values[column.name] = tuple(p.phone for p in account.phones)
            else:
                values[column.name] = getattr(account, str(column.cache))
        return values


@pytest.mark.parametrize("layout", [DEFAULT_ACCOUNT_LAYOUT, RENAMED], ids=["default", "declared"])
def test_every_column_is_read_stored_and_kept_when_a_file_lacks_it(
    database: Database, layout: AccountLayout
) -> None:
    examples = {c.name: c.example for c in COLUMNS}
    number = examples["account_number"]
    required = {c.name: examples[c.name] for c in COLUMNS if c.required}

    # A new account from a file of the required columns alone takes every blank value.
    load(database, layout, file_of(layout, [required]))
    new = cached(database, number)
    for column in COLUMNS:
        if not column.required:
            assert new[column.name] == column.blank, column.name

    # A file of every column replaces every value.
    load(database, layout, file_of(layout, [examples]))
    stored = cached(database, number)
    for column in COLUMNS:
        if column.kind is Kind.HASHED:
            assert check_pin(column.example, str(stored[column.name]), PIN_KEY)
        else:
            assert stored[column.name] == example_value(column), column.name

    # A file of the required columns alone updates those and leaves every other one alone.
    load(database, layout, file_of(layout, [required | {"balance_due": "1.00"}]))
    assert cached(database, number) == stored | {"balance_due": 100}


def test_the_default_layout_reads_a_header_of_every_column() -> None:
    data = file_of(DEFAULT_ACCOUNT_LAYOUT, [{c.name: c.example for c in COLUMNS}])
    summary = FileSummary()
    (record,) = iter_account_file(io.BytesIO(data), summary)
    assert record == AccountRecord(**{c.field: example_value(c) for c in COLUMNS})
    assert summary.columns == frozenset(COLUMN_NAMES)
