"""The column path's reading of cells: each column's fast shape, compiled, and its parser
for the rest (see connectors/files/column_reader.py)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import cast

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from connectors.files.account_layout import AccountLayout
from connectors.files.account_reader import start_reading
from connectors.files.columns import COLUMNS, Column
from connectors.files.parsers import (
    YES_NO,
    FieldError,
    OneOf,
    Parser,
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
from connectors.files.rows import FileSummary, RowValidator

__all__ = ["ColumnPlan", "NotClean", "literal", "plan_columns", "read_column", "strip_cells"]


class NotClean(Exception):
    """The column path cannot vouch for this file: read it by rows."""


# --- cells by column ----------------------------------------------------------------------------


@functools.cache
def literal(value: str | int) -> pa.Scalar:
    """``value`` as a typed pyarrow scalar, for compute calls.

    Given a bare Python value, pyarrow infers its type, and the inference tries to import
    dateutil on every call: without it installed, a failed import of about 0.1 ms, some
    3,500 times (a third of a second and more) in a million-row file.
    """
    return pa.scalar(value, pa.int64() if isinstance(value, int) else pa.string())


_Vector = Callable[[pa.Array], tuple[pa.Array, pa.Array]]
"""(stripped ASCII cells) -> (values, ok): where ok is false the Python parser decides."""


def _matches(cells: pa.Array, pattern: str) -> pa.Array:
    return pc.match_substring_regex(cells, pattern)


def _account_numbers(cells: pa.Array) -> tuple[pa.Array, pa.Array]:
    # 1-32 letters, digits or dashes, not dashes alone.
    ok = pc.and_(_matches(cells, r"^-*[A-Za-z0-9][A-Za-z0-9-]*$"),
                 pc.less_equal(pc.utf8_length(cells), literal(32)))
    return cells, ok


_AMOUNT = r"^-?[0-9]{1,12}(\.[0-9]{1,2})?$"
_HUNDRED = pa.scalar(100, pa.decimal128(3, 0))


def _cents(cells: pa.Array, allow_negative: bool) -> tuple[pa.Array, pa.Array]:
    ok = _matches(cells, _AMOUNT)
    if not allow_negative:
        # "-0" is not negative to the row path: let its parser decide every minus sign.
        ok = pc.and_(ok, pc.invert(pc.starts_with(cells, "-")))
    # Exact: a decimal with two places, times 100, is the integer number of cents.
    shaped = cells if pc.all(ok).as_py() else pc.if_else(ok, cells, literal("0"))
    cents = pc.cast(pc.multiply(pc.cast(shaped, pa.decimal128(16, 2)), _HUNDRED), pa.int64())
    return cents, ok


def _counts(cells: pa.Array) -> tuple[pa.Array, pa.Array]:
    ok = _matches(cells, r"^[0-9]{1,4}$")
    shaped = cells if pc.all(ok).as_py() else pc.if_else(ok, cells, literal("0"))
    return pc.cast(shaped, pa.int64()), ok


def _dates(cells: pa.Array) -> tuple[pa.Array, pa.Array]:
    blank = pc.equal(pc.utf8_length(cells), literal(0))
    filled = pc.if_else(blank, literal("2000-01-01"), cells) if pc.any(blank).as_py() else cells
    try:
        days = pc.cast(filled, pa.date32())  # strict YYYY-MM-DD, real dates only
    except pa.ArrowInvalid:
        # Some cell is not a date: find which, cell by cell. strptime rolls 2025-02-30 over
        # to March and takes 2025-1-5, so only a date that reads back as the very same
        # text is taken; the row path's parser judges the rest.
        parsed = pc.strptime(cells, format="%Y-%m-%d", unit="s", error_is_null=True)
        days = pc.cast(parsed, pa.date32())
    same = pc.equal(pc.fill_null(pc.cast(days, pa.string()), literal("")), cells)
    ok = pc.and_(same, pc.invert(pc.starts_with(cells, "0000")))
    return days, ok


def _phone_lists(cells: pa.Array) -> tuple[pa.Array, pa.Array]:
    ok = _matches(cells, r"^\+1[2-9][0-9]{9}$")
    offsets = pa.array(np.arange(len(cells) + 1, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, cells), ok


def _first_five(cells: pa.Array) -> tuple[pa.Array, pa.Array]:
    return pc.utf8_slice_codeunits(cells, 0, 5), _matches(cells, r"^[0-9]{5}(-[0-9]{4})?$")


def _usage(cells: pa.Array) -> tuple[pa.Array, pa.Array]:
    return cells, _matches(cells, r"^-?[0-9]{1,11}(\.[0-9]{1,3})?$")


def _yes_no(cells: pa.Array) -> tuple[pa.Array, pa.Array]:
    upper = pc.utf8_upper(cells)
    return pc.equal(upper, literal("Y")), pc.is_in(upper, _YES_OR_NO)


_YES_OR_NO = pa.array(["Y", "N"], pa.string())


def _vector_for(column: Column) -> _Vector | None:
    """The compiled reading of a column's fast shape (None: every cell by its parser)."""
    read = column.read
    if read is account_number:
        return _account_numbers
    if read is amount:
        return lambda cells: _cents(cells, allow_negative=True)
    if read is not_negative_amount:
        return lambda cells: _cents(cells, allow_negative=False)
    if read is layout_date:
        return _dates
    if read is count:
        return _counts
    if read is phones:
        return _phone_lists
    if read is zip_code:
        return _first_five
    if read is pin:
        return lambda cells: (cells, _matches(cells, r"^[0-9]{4,8}$"))
    if read is usage:
        return _usage
    if read is YES_NO:
        return _yes_no
    if isinstance(read, OneOf):
        choices = pa.array(sorted(read.choices), pa.string())

        def one_of(cells: pa.Array) -> tuple[pa.Array, pa.Array]:
            lower = pc.utf8_lower(cells)
            return lower, pc.is_in(lower, choices)

        return one_of
    if isinstance(read, text):
        limit = literal(read.max_length)
        return lambda cells: (cells, pc.less_equal(pc.utf8_length(cells), limit))
    if isinstance(read, unit):
        pattern = rf"^[\x20-\x7e]{{1,{read.max_length}}}$"
        return lambda cells: (cells, _matches(cells, pattern))
    return None


_ARROW_TYPES: Mapping[str, pa.DataType] = {
    "text": pa.string(), "hashed": pa.string(), "cents": pa.int64(), "date": pa.date32(),
    "decimal": pa.string(), "flag": pa.bool_(), "phones": pa.list_(pa.string()),
    "count": pa.int64(),
}


def _to_arrow(column: Column, value: object) -> object:
    """A Python parser's value in the column's arrow form."""
    if column.kind == "decimal" and value is not None:
        return str(value)
    if column.kind == "phones":
        return list(cast(tuple[str, ...], value))
    return value


@dataclass(frozen=True)
class ColumnPlan:
    column: Column
    position: int | None  # None: the file lacks the column; every row takes the blank value
    parse: Parser
    vector: _Vector | None
    blank: pa.Scalar


def plan_columns(validator: RowValidator, layout: AccountLayout) -> list[ColumnPlan]:
    rules = start_reading(layout, FileSummary())[0].rules
    positions = validator.positions
    plans = []
    for column in COLUMNS:
        arrow_type = _ARROW_TYPES[column.kind]
        plans.append(ColumnPlan(column, positions.get(column.name), column.read(rules),
                                 _vector_for(column),
                                 pa.scalar(_to_arrow(column, column.blank), arrow_type)))
    return plans


def strip_cells(cells: pa.Array) -> tuple[pa.Array, bool]:
    """Cells stripped as ``str.strip`` does; and whether all of them were ASCII."""
    if pc.all(pc.string_is_ascii(cells)).as_py() is not False:
        return pc.ascii_trim_whitespace(cells), True
    return pa.array([cell.strip() for cell in cells.to_pylist()], pa.string()), False


def read_column(plan: ColumnPlan, raw: pa.Array, ascii_only: bool) -> pa.Array:
    """One column's values for a batch; NotClean at the first cell the row path refuses."""
    column = plan.column
    blank = pc.equal(pc.utf8_length(raw), literal(0))
    if column.required and pc.any(blank).as_py():
        raise NotClean(f"{column.name} blank")
    arrow_type = _ARROW_TYPES[column.kind]
    if plan.vector is not None and ascii_only:
        values, ok = plan.vector(raw)
        ok = pc.or_(pc.fill_null(ok, False), blank)
    else:
        values = pa.nulls(len(raw), arrow_type)
        ok = blank
    values = pc.if_else(blank, plan.blank, values) if column.kind != "phones" else values
    slow = pc.indices_nonzero(pc.invert(ok))
    if column.kind == "phones":
        return _phone_values(plan, raw, blank, values, slow)
    if not len(slow):
        return values
    cells = pc.take(raw, slow).to_pylist()
    mask = pc.invert(ok)
    replacements = pa.array([_to_arrow(column, _parse(plan, cell)) for cell in cells], arrow_type)
    return pc.replace_with_mask(values, mask, replacements)


def _phone_values(plan: ColumnPlan, raw: pa.Array, blank: pa.Array, values: pa.Array,
                  slow: pa.Array) -> pa.Array:
    if not len(slow) and not pc.any(blank).as_py():
        return values
    lists: list[list[str]] = []
    slow_at = set(slow.to_pylist())
    for i, (cell, is_blank) in enumerate(zip(raw.to_pylist(), blank.to_pylist(), strict=True)):
        if is_blank:
            lists.append([])
        elif i in slow_at:
            lists.append(list(cast(tuple[str, ...], _parse(plan, cast(str, cell)))))
        else:
            lists.append([cast(str, cell)])
    return pa.array(lists, pa.list_(pa.string()))


def _parse(plan: ColumnPlan, cell: str) -> object:
    try:
        return plan.parse(plan.column.name, cell)
    except FieldError as exc:
        raise NotClean(str(exc)) from None


