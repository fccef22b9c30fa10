"""Reading account, payment, arrangement and returns layouts from a TOML file, reporting every
problem.

Each ``[account.NAME]``, ``[payment.NAME]``, ``[arrangement.NAME]`` and ``[returns.NAME]``
table is validated by
a pydantic model that knows the keys and their TOML types (strict: unknown keys and wrong
types are refused); the values themselves are checked by the layout dataclasses, whose
problems are reported under the table they came from. A key of a layout is one field of its
dataclass (``AccountLayout``, ``PaymentLayout``, ``ArrangementLayout``, ``AmountFormat``,
``ControlRecord``; the keys both confirmation layouts share are ``RecordLayout``'s) and one
line here; the tests check that the two agree. Problems are worded as for settings.toml
(connectors.toml_settings).
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Self

from pydantic import BeforeValidator, ValidationError, model_validator

from connectors.files.account_layout import AccountLayout, AmountFormat, ControlRecord
from connectors.files.arrangement_file import ArrangementLayout
from connectors.files.layout_base import LayoutError
from connectors.files.payment_layout import PaymentLayout
from connectors.files.returns_file import ReturnsLayout
from connectors.toml_settings import (
    Array,
    TomlTable,
    dotted,
    expect,
    in_file,
    must_be,
    refuse,
    toml_problems,
)

# value_maps: per column, the biller's code -> our value (e.g. "DP" -> "disconnect_pending").
_ValueMaps = Mapping[str, Mapping[str, str]]


class _Keys(TomlTable):
    """A table whose keys are a dataclass's fields; keys left out keep the dataclass default."""

    def given(self) -> dict[str, Any]:
        """The keys the file sets, as keyword arguments."""
        return {name: getattr(self, name) for name in self.model_fields_set}


class _Part(_Keys):
    """A table inside a layout, built (and so checked) as soon as its keys are well-typed.

    Its problems are then listed with those of the layout's other keys, under its own name
    (``account.NAME.amounts: credit: ...``).
    """

    def build(self) -> object:
        """The dataclass these keys describe; raises LayoutError when they do not fit."""
        raise NotImplementedError

    @model_validator(mode="after")
    def _usable(self) -> Self:
        try:
            self.build()
        except LayoutError as exc:
            raise refuse(*exc.problems) from None
        return self


class AmountsTable(_Part):
    """``[account.NAME.amounts]``: an ``AmountFormat``."""

    style: str | None = None
    currency_symbol: str | None = None
    thousands_separator: str | None = None
    credit: Annotated[Array[str], expect("a list of credit marks", list)] | None = None

    def build(self) -> AmountFormat:
        """The amount format these keys describe."""
        return AmountFormat(**self.given())


class ControlTable(_Part):
    """``[account.NAME.header_record]`` or ``trailer_record``: a ``ControlRecord``."""

    tag: str
    tag_position: int | None = None
    count_position: int | None = None
    total_position: int | None = None
    required: bool | None = None

    def build(self) -> ControlRecord:
        """The control record these keys describe."""
        return ControlRecord(**self.given())


_Column = Annotated[str | int, expect("a column name or position", str, int)]


class AccountTable(_Keys):
    """``[account.NAME]``: an ``AccountLayout``."""

    encoding: str | None = None
    delimiter: str | None = None
    quoting: str | None = None
    quotechar: str | None = None
    header: bool | None = None
    date_format: str | None = None
    phone_separator: str | None = None
    detail_tag: str | None = None
    detail_tag_position: int | None = None
    width: int | None = None
    missing_columns: str | None = None
    columns: Mapping[str, _Column]
    amounts: AmountsTable | None = None
    value_maps: _ValueMaps | None = None
    header_record: ControlTable | None = None
    trailer_record: ControlTable | None = None

    def build(self, name: str) -> AccountLayout:
        """The layout named ``name``; raises LayoutError when its values do not fit."""
        keys = self.given()
        for key in ("amounts", "header_record", "trailer_record"):
            if key in keys:
                keys[key] = keys[key].build()
        return AccountLayout(name=name, **keys)


def _pair(value: object) -> object:
    if isinstance(value, list) and len(value) == 2 and all(isinstance(p, str) for p in value):
        return tuple(value)
    raise refuse(must_be("[header name, field]", value))


_Cells = Annotated[Array[str], expect("a list of cells (empty for none)", list)]


class _RecordTable(_Keys):
    """The keys every confirmation file layout table has (``RecordLayout``'s fields)."""

    encoding: str | None = None
    delimiter: str | None = None
    quoting: str | None = None
    quotechar: str | None = None
    header: bool | None = None
    datetime_format: str | None = None
    time_zone: str | None = None
    amount_style: str | None = None
    line_terminator: str | None = None
    columns: (
        Annotated[
            Array[Annotated[tuple[str, str], BeforeValidator(_pair)]],
            expect("a list of [header name, field] pairs", list),
        ]
        | None
    ) = None
    header_record: _Cells | None = None
    trailer_record: _Cells | None = None
    value_maps: _ValueMaps | None = None


class PaymentTable(_RecordTable):
    """``[payment.NAME]``: a ``PaymentLayout``."""

    sum_field: str | None = None
    reversal_record: _Cells | None = None

    def build(self, name: str) -> PaymentLayout:
        """The layout named ``name``; raises LayoutError when its values do not fit."""
        return PaymentLayout(name=name, **self.given())


class ArrangementTable(_RecordTable):
    """``[arrangement.NAME]``: an ``ArrangementLayout``."""

    date_format: str | None = None

    def build(self, name: str) -> ArrangementLayout:
        """The layout named ``name``; raises LayoutError when its values do not fit."""
        return ArrangementLayout(name=name, **self.given())


class ReturnsTable(_Keys):
    """``[returns.NAME]``: a ``ReturnsLayout`` (a processor's returns report)."""

    encoding: str | None = None
    delimiter: str | None = None
    quotechar: str | None = None
    date_format: str | None = None
    columns: Mapping[str, str] | None = None
    amounts: AmountsTable | None = None
    value_maps: _ValueMaps | None = None

    def build(self, name: str) -> ReturnsLayout:
        """The layout named ``name``; raises LayoutError when its values do not fit."""
        keys = self.given()
        if "amounts" in keys:
            keys["amounts"] = keys["amounts"].build()
        return ReturnsLayout(name=name, **keys)


Layout = AccountLayout | PaymentLayout | ArrangementLayout | ReturnsLayout

_TABLES: Mapping[str, type[AccountTable | PaymentTable | ArrangementTable | ReturnsTable]] = {
    "account": AccountTable,
    "payment": PaymentTable,
    "arrangement": ArrangementTable,
    "returns": ReturnsTable,
}


def load_layouts(path: Path) -> dict[str, Layout]:
    """Read ``[account.NAME]``, ``[payment.NAME]``, ``[arrangement.NAME]`` and
    ``[returns.NAME]`` tables from a TOML file.

    Keys of the result are ``"account.NAME"``, ``"payment.NAME"``, ``"arrangement.NAME"``
    and ``"returns.NAME"``. Raises
    ``LayoutError`` listing every problem (unknown keys, wrong types, bad values) found in
    the whole file. ``default`` is reserved for the built-in layouts.
    """
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        raise LayoutError([f"{path}: not valid TOML: {exc}"]) from None
    problems: list[str] = []
    layouts: dict[str, Layout] = {}
    for kind, tables in data.items():
        model = _TABLES.get(kind)
        if model is None:
            problems.append(f"{kind}: unknown table (expected [account.NAME], [payment.NAME], "
                            "[arrangement.NAME] or [returns.NAME])")
            continue
        if not isinstance(tables, dict):
            problems.append(f"{kind}: {must_be(f'tables like [{kind}.NAME]', tables)}")
            continue
        for name, spec in tables.items():
            where = dotted((kind, name))
            if name == "default":
                problems.append(f"{where}: the name 'default' is reserved for the built-in layout")
                continue
            try:
                table = model.model_validate(spec)
            except ValidationError as exc:
                problems += toml_problems(exc, model, (kind, name))
                continue
            # The layout's own checks (values, and keys against each other) once every key
            # is well-typed.
            try:
                layouts[f"{kind}.{name}"] = table.build(name)
            except LayoutError as exc:
                problems += [f"{where}: {problem}" for problem in exc.problems]
    if problems:
        raise LayoutError(in_file(path, problems))
    return layouts
