"""What both confirmation files (payments, arrangements) share: a row's cells from a
layout's columns, turning cells into lines, control records, and the streaming writer.

A confirmation file is an optional header record, an optional header row, one row per
record and an optional trailer record; ``{count}`` and ``{sum}`` in a control record are
filled from the rows. payment_file.py and arrangement_file.py say what a row's cells are.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Callable, Iterable, Mapping
from typing import IO, TypeVar

from connectors.files.account_file import FieldError, parse_count, show_value
from connectors.files.cells import neutralise
from connectors.files.layout_base import (
    _BUILTIN_PLACEHOLDERS,
    _WRITE_CHUNK,
    PaymentFileError,
    RecordLayout,
)
from connectors.files.payment_layout import _format_amount, _parse_amount, _template_fields

R = TypeVar("R")


def cell_getters(layout: RecordLayout,
                 getters: Mapping[str, Callable[[R], str]]) -> list[Callable[[R], str]]:
    """One function per column of ``layout`` giving its cell text for a row: the field's
    getter from ``getters`` with its value map applied, or the text of an ``"=text"`` column.
    """
    result: list[Callable[[R], str]] = []
    for _, name in layout.columns:
        if name.startswith("="):
            result.append(_constant(name[1:]))
            continue
        mapping = layout.value_maps.get(name)
        result.append(_mapped(getters[name], mapping) if mapping else getters[name])
    return result


def _constant(text: str) -> Callable[[object], str]:
    return lambda _row: text


def _mapped(getter: Callable[[R], str], mapping: Mapping[str, str]) -> Callable[[R], str]:
    def get(row: R) -> str:
        value = getter(row)
        return mapping.get(value, value)

    return get


class _CellWriter:
    """Turns cells into one delimited line, quoting as RFC 4180 says.

    csv.writer is not used because it leaves a lone CR unquoted when the line terminator is
    LF, which a reader then splits into two records.
    """

    def __init__(self, layout: RecordLayout) -> None:
        self._delimiter = layout.delimiter
        self._quote = layout.quotechar
        self._terminator = layout.line_terminator
        self._quoting = layout.quoting
        special = {layout.delimiter, "\r", "\n"}
        if layout.quoting == "minimal":
            special.add(layout.quotechar)
        self._special = re.compile("|".join(re.escape(c) for c in sorted(special)))

    def line(self, cells: list[str]) -> str:
        quote = self._quote
        out: list[str] = []
        for cell in cells:
            if self._special.search(cell) is None:
                out.append(cell)
            elif self._quoting == "none":
                raise PaymentFileError(
                    f"{show_value(cell)} holds the delimiter or a line break, "
                    'which quoting = "none" cannot write'
                )
            else:
                out.append(quote + cell.replace(quote, quote + quote) + quote)
        if len(out) == 1 and not out[0] and self._quoting == "minimal":
            # A lone empty cell would be a blank line, which readers skip.
            out[0] = quote + quote
        return self._delimiter.join(out) + self._terminator


def _render_template(template: tuple[str, ...], context: Mapping[str, str]) -> list[str]:
    """The record's cells; a cell of only {count} and {sum} is a number, the rest is text."""
    cells: list[str] = []
    for cell in template:
        parts = _template_fields(cell)
        number = all(not literal and name in _BUILTIN_PLACEHOLDERS
                     for literal, name, _, _ in parts)
        rendered = cell.format_map(context)
        cells.append(rendered if number else neutralise(rendered))
    return cells


def _template_names(template: tuple[str, ...]) -> set[str]:
    return {name for cell in template for _, name, _, _ in _template_fields(cell) if name}


def write_records(
    rows: Iterable[R],
    out: IO[bytes],
    layout: RecordLayout,
    *,
    cells: Callable[[R], list[str]],
    text_cells: list[bool],
    summed: Callable[[R], int],
    describe: Callable[[int, R], str],
    values: Mapping[str, str] | None = None,
    records: Iterable[tuple[str, tuple[str, ...], Mapping[str, str]]] = (),
) -> tuple[int, int]:
    """Write ``rows`` as a confirmation file in ``layout``; return (count, sum in cents).

    ``cells`` gives a row's cells (value maps applied), ``text_cells`` which columns are
    text (a spreadsheet formula in one gets a leading ``'``), ``summed`` what a row adds to
    ``{sum}``, ``describe`` how a problem names the row ("payment 3 (ABC123)"). ``records``
    are further records written after the rows, each (what, template, its values), counted
    in neither ``{count}`` nor ``{sum}``. See ``write_payment_file`` for the rest.
    """
    context = dict(values or {})
    needed = _template_names(layout.header_record) | _template_names(layout.trailer_record)
    missing = sorted(needed - _BUILTIN_PLACEHOLDERS - set(context))
    if missing:
        raise ValueError(f"layout {layout.name} needs values for: {', '.join(missing)}")
    style = layout.amount_style
    first_pass: tuple[int, int] | None = None
    if _template_names(layout.header_record) & _BUILTIN_PLACEHOLDERS:
        if iter(rows) is rows:
            raise ValueError("a header record with {count} or {sum} needs rows it can read twice")
        first_pass = (0, 0)
        for row in rows:
            first_pass = (first_pass[0] + 1, first_pass[1] + summed(row))
        context |= {"count": str(first_pass[0]), "sum": _format_amount(first_pass[1], style)}

    lines = _CellWriter(layout)
    encoder = codecs.getincrementalencoder(layout.encoding)("strict")
    # A data row that a reader would take for the trailer (same width, same plain cells).
    lookalike = (
        _ControlReader(layout.trailer_record, "trailer", style)
        if len(layout.trailer_record) == len(layout.columns)
        else None
    )
    chunk: list[bytes] = []
    size = 0

    def emit(cell_values: list[str]) -> None:
        nonlocal size
        try:
            data = encoder.encode(lines.line(cell_values))
        except UnicodeEncodeError:
            raise PaymentFileError(
                f"holds characters that {layout.encoding} cannot write"
            ) from None
        chunk.append(data)
        size += len(data)
        if size >= _WRITE_CHUNK:
            out.write(b"".join(chunk))
            chunk.clear()
            size = 0

    def emit_as(what: str, cell_values: list[str]) -> None:
        try:
            emit(cell_values)
        except PaymentFileError as exc:
            raise PaymentFileError(f"{what}: {exc}") from None

    if layout.header_record:
        emit_as("header record", _render_template(layout.header_record, context))
    if layout.header:
        emit_as("header row", [neutralise(header) for header, _ in layout.columns])
    written, total = 0, 0
    for row in rows:
        written += 1
        total += summed(row)
        cell_values = cells(row)
        try:
            if lookalike is not None and lookalike.matches(cell_values):
                raise PaymentFileError("would read as the trailer record")
            emit([neutralise(v) if text else v
                  for v, text in zip(cell_values, text_cells, strict=True)])
        except PaymentFileError as exc:
            raise PaymentFileError(f"{describe(written, row)}: {exc}") from None
    if first_pass is not None and first_pass != (written, total):
        raise PaymentFileError("rows changed between the two passes over them")
    for what, template, fields in records:
        emit_as(what, _render_template(template, fields))
    context |= {"count": str(written), "sum": _format_amount(total, style)}
    if layout.trailer_record:
        emit_as("trailer record", _render_template(layout.trailer_record, context))
    chunk.append(encoder.encode("", final=True))
    out.write(b"".join(chunk))
    out.flush()
    return written, total


def _template_pattern(cell: str) -> tuple[re.Pattern[str], list[str]]:
    """A regex matching what ``cell`` renders to, with the placeholders' names in order."""
    pattern = ""
    names: list[str] = []
    for literal, name, _, _ in _template_fields(cell):
        pattern += re.escape(literal)
        if name is not None:
            pattern += f"(?P<g{len(names)}>.*?)"
            names.append(name)
    return re.compile(pattern, re.DOTALL), names


class _ControlReader:
    """Recognises a control record by its plain-text cells and reads count and sum."""

    def __init__(self, template: tuple[str, ...], label: str, amount_style: str) -> None:
        self.label = label
        self.width = len(template)
        self._style = amount_style
        self._literals = [
            (i, cell) for i, cell in enumerate(template) if not _template_names((cell,))
        ]
        self._patterns = [
            (i, *_template_pattern(cell))
            for i, cell in enumerate(template)
            if _template_names((cell,))
        ]

    def matches(self, row: list[str]) -> bool:
        return len(row) == self.width and all(row[i] == text for i, text in self._literals)

    def read(self, row: list[str], line: int) -> dict[str, str]:
        found: dict[str, str] = {}
        for i, pattern, names in self._patterns:
            match = pattern.fullmatch(row[i])
            if match is None:
                raise PaymentFileError(f"line {line}: {self.label} cell {i + 1} is malformed")
            for n, name in enumerate(names):
                found[name] = match.group(f"g{n}")
        return found

    def check(self, found: dict[str, str], count: int, total: int, line: int) -> None:
        problems: list[str] = []
        try:
            if "count" in found and parse_count(found["count"]) != count:
                problems.append(f"record count {found['count']} does not match {count} rows")
            raw_sum = found.get("sum")
            if raw_sum is not None and _parse_amount("sum", raw_sum.strip(), self._style) != total:
                problems.append(
                    f"sum {raw_sum} does not match {_format_amount(total, self._style)}"
                )
        except FieldError as exc:
            problems.append(str(exc))
        if problems:
            raise PaymentFileError(f"line {line}: {self.label}: " + "; ".join(problems))


