"""Reading account and payment layouts from a TOML file, reporting every problem."""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from connectors.files.account_layout import AccountLayout, AmountFormat, ControlRecord
from connectors.files.layout_base import _B, LayoutError
from connectors.files.payment_layout import PaymentLayout

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
