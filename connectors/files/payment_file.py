"""Writing payment confirmation files in a declared layout, and reading them back."""

from __future__ import annotations

import codecs
import csv
import io
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import IO

from connectors.files.account_file import (
    FieldError,
    parse_count,
    show_value,
)
from connectors.files.account_reader import _csv_reader
from connectors.files.cells import neutralise, restore
from connectors.files.layout_base import (
    _BUILTIN_PLACEHOLDERS,
    _NUMBER_FIELDS,
    _PAYMENT_READ_NEEDS,
    _WRITE_CHUNK,
    PaymentFileError,
    _text_encoding,
)
from connectors.files.payment_layout import (
    PaymentLayout,
    PaymentRow,
    _format_amount,
    _format_paid_at,
    _parse_amount,
    _parse_paid_at,
    _template_fields,
)


def _payment_getters(layout: PaymentLayout) -> list[Callable[[PaymentRow], str]]:
    """One function per column giving its cell text for a row, value maps applied."""
    style, zone, datetime_format = layout.amount_style, layout.zone, layout.datetime_format
    getters: dict[str, Callable[[PaymentRow], str]] = {
        "account_number": lambda r: r.account_number,
        "amount": lambda r: _format_amount(r.amount_cents, style),
        "fee": lambda r: _format_amount(r.fee_cents, style),
        "total": lambda r: _format_amount(r.total_cents, style),
        "currency": lambda r: r.currency,
        "paid_at": lambda r: _format_paid_at(r.paid_at, datetime_format, zone),
        "confirmation_number": lambda r: r.confirmation_number,
        "method": lambda r: r.method,
        "card_brand": lambda r: r.card_brand or "",
        "last4": lambda r: r.last4 or "",
        "idempotency_key": lambda r: r.idempotency_key,
        "call_sid": lambda r: r.call_sid,
    }
    result: list[Callable[[PaymentRow], str]] = []
    for _, name in layout.columns:
        if name.startswith("="):
            result.append(_constant(name[1:]))
            continue
        getter = getters[name]
        mapping = layout.value_maps.get(name)
        result.append(_mapped(getter, mapping) if mapping else getter)
    return result


def _constant(text: str) -> Callable[[PaymentRow], str]:
    return lambda _row: text


def _mapped(
    getter: Callable[[PaymentRow], str], mapping: Mapping[str, str]
) -> Callable[[PaymentRow], str]:
    def get(row: PaymentRow) -> str:
        value = getter(row)
        return mapping.get(value, value)

    return get


def _summed(row: PaymentRow, sum_field: str) -> int:
    if sum_field == "fee":
        return row.fee_cents
    if sum_field == "total":
        return row.total_cents
    return row.amount_cents


class _CellWriter:
    """Turns cells into one delimited line, quoting as RFC 4180 says.

    csv.writer is not used because it leaves a lone CR unquoted when the line terminator is
    LF, which a reader then splits into two records.
    """

    def __init__(self, layout: PaymentLayout) -> None:
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


def write_payment_file(
    rows: Iterable[PaymentRow],
    out: IO[bytes],
    layout: PaymentLayout,
    *,
    values: Mapping[str, str] | None = None,
) -> tuple[int, int]:
    """Write ``rows`` as a confirmation file in ``layout``; return (count, sum in cents).

    Streams and is deterministic: the same rows, layout and ``values`` give the same bytes.
    ``values`` fills control-record placeholders other than ``{count}`` and ``{sum}`` (say
    ``{biller_id}``); pass times there derived from the interval, never the clock. A header
    record that carries ``{count}`` or ``{sum}`` needs ``rows`` that can be iterated twice
    (a list or a re-runnable query). Text cells that a spreadsheet would run as a formula
    get a leading ``'`` (``connectors.files.cells``); amounts and counts are written as they are.
    Raises ``PaymentFileError`` for a value the layout cannot write (text its encoding
    lacks, a delimiter with quoting = "none"); the output is then incomplete, so write to a
    temporary name and rename on success.
    """
    context = dict(values or {})
    needed = _template_names(layout.header_record) | _template_names(layout.trailer_record)
    missing = sorted(needed - _BUILTIN_PLACEHOLDERS - set(context))
    if missing:
        raise ValueError(f"layout {layout.name} needs values for: {', '.join(missing)}")
    style, sum_field = layout.amount_style, layout.sum_field
    first_pass: tuple[int, int] | None = None
    if _template_names(layout.header_record) & _BUILTIN_PLACEHOLDERS:
        if iter(rows) is rows:
            raise ValueError("a header record with {count} or {sum} needs rows it can read twice")
        first_pass = (0, 0)
        for row in rows:
            first_pass = (first_pass[0] + 1, first_pass[1] + _summed(row, sum_field))
        context |= {"count": str(first_pass[0]), "sum": _format_amount(first_pass[1], style)}

    cells = _CellWriter(layout)
    encoder = codecs.getincrementalencoder(layout.encoding)("strict")
    getters = _payment_getters(layout)
    text_cells = [name not in _NUMBER_FIELDS for _, name in layout.columns]
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
            data = encoder.encode(cells.line(cell_values))
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
    written, summed = 0, 0
    for row in rows:
        written += 1
        summed += _summed(row, sum_field)
        cell_values = [get(row) for get in getters]
        try:
            if lookalike is not None and lookalike.matches(cell_values):
                raise PaymentFileError("would read as the trailer record")
            emit([neutralise(v) if text else v
                  for v, text in zip(cell_values, text_cells, strict=True)])
        except PaymentFileError as exc:
            what = f"payment {written} ({show_value(row.confirmation_number)})"
            raise PaymentFileError(f"{what}: {exc}") from None
    if first_pass is not None and first_pass != (written, summed):
        raise PaymentFileError("rows changed between the two passes over them")
    context |= {"count": str(written), "sum": _format_amount(summed, style)}
    if layout.trailer_record:
        emit_as("trailer record", _render_template(layout.trailer_record, context))
    chunk.append(encoder.encode("", final=True))
    out.write(b"".join(chunk))
    out.flush()
    return written, summed


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


def read_payment_file(stream: IO[bytes], layout: PaymentLayout) -> Iterator[PaymentRow]:
    """Yield the rows of a confirmation file in ``layout``, checking its control records.

    For round-trip tests and billers' own checks: any problem raises ``PaymentFileError``
    naming the line. Fields the layout does not carry take ``PaymentRow``'s defaults (fee
    is total minus amount when only those are present). The caller's stream is left open.
    """
    fields_present = {name for _, name in layout.columns}
    lacking = [name for name in _PAYMENT_READ_NEEDS if name not in fields_present]
    if len(fields_present & {"amount", "fee", "total"}) < 2 and "amount" not in fields_present:
        lacking.append("amount")
    if lacking:
        raise ValueError(f"layout {layout.name} has no column for: {', '.join(lacking)}")
    text = io.TextIOWrapper(stream, encoding=_text_encoding(layout.encoding), newline="")
    try:
        yield from _iter_payment_rows(text, layout)
    finally:
        text.detach()


def _iter_payment_rows(text: IO[str], layout: PaymentLayout) -> Iterator[PaymentRow]:
    reader = _csv_reader(text, layout.delimiter, layout.quoting, layout.quotechar)
    header_reader = (
        _ControlReader(layout.header_record, "header record", layout.amount_style)
        if layout.header_record
        else None
    )
    trailer_reader = (
        _ControlReader(layout.trailer_record, "trailer", layout.amount_style)
        if layout.trailer_record
        else None
    )
    inverse = {name: {v: k for k, v in m.items()} for name, m in layout.value_maps.items()}
    names = [name for _, name in layout.columns]
    expecting = ["header record"] if header_reader else []
    expecting += ["header row"] if layout.header else []
    header_found: tuple[dict[str, str], int] | None = None
    trailer_found: tuple[dict[str, str], int] | None = None
    count = total = 0
    while True:
        line = reader.line_num + 1
        try:
            row: list[str] = next(reader)
        except StopIteration:
            break
        except (csv.Error, UnicodeDecodeError) as exc:
            raise PaymentFileError(f"line {line}: unreadable: {exc}") from None
        if not row:
            continue
        # Undo the writer's formula quotes first, so every check below sees the values.
        row = [restore(cell) for cell in row]
        if trailer_found is not None:
            raise PaymentFileError(f"line {line}: rows after the trailer")
        if expecting and expecting[0] == "header record" and header_reader is not None:
            if not header_reader.matches(row):
                raise PaymentFileError(f"line {line}: expected the header record")
            header_found = (header_reader.read(row, line), line)
            expecting.pop(0)
            continue
        if expecting:
            if row != [header for header, _ in layout.columns]:
                raise PaymentFileError(f"line {line}: expected the header row")
            expecting.pop(0)
            continue
        if trailer_reader is not None and trailer_reader.matches(row):
            trailer_found = (trailer_reader.read(row, line), line)
            continue
        if len(row) != len(names):
            raise PaymentFileError(f"line {line}: {len(row)} cells, expected {len(names)}")
        payment = _payment_from_cells(dict(zip(names, row, strict=True)), inverse, layout, line)
        count += 1
        total += _summed(payment, layout.sum_field)
        yield payment
    if expecting:
        raise PaymentFileError(f"file has no {expecting[0]}")
    if trailer_reader is not None:
        if trailer_found is None:
            raise PaymentFileError("file ends without its trailer: truncated?")
        found, line = trailer_found
        trailer_reader.check(found, count, total, line)
    if header_reader is not None and header_found is not None:
        found, line = header_found
        header_reader.check(found, count, total, line)


def _payment_from_cells(
    cells: dict[str, str],
    inverse: Mapping[str, Mapping[str, str]],
    layout: PaymentLayout,
    line: int,
) -> PaymentRow:
    for name, text in cells.items():
        if name.startswith("="):
            if text != name[1:]:
                raise PaymentFileError(f"line {line}: {show_value(text)} should be {name[1:]!r}")
        elif name in inverse:
            cells[name] = inverse[name].get(text, text)
    style = layout.amount_style
    try:
        amounts = {
            name: _parse_amount(name, cells[name], style)
            for name in ("amount", "fee", "total")
            if name in cells
        }
        paid_at = _parse_paid_at(cells["paid_at"], layout.datetime_format, layout.zone)
    except (FieldError, ValueError) as exc:
        raise PaymentFileError(f"line {line}: {exc}") from None
    amount = amounts.get("amount")
    fee = amounts.get("fee")
    if amount is None:
        amount = amounts["total"] - (fee or 0)
    if fee is None:
        fee = amounts["total"] - amount if "total" in amounts else 0
    if "total" in amounts and amounts["total"] != amount + fee:
        raise PaymentFileError(f"line {line}: total is not amount plus fee")
    try:
        return PaymentRow(
            account_number=cells["account_number"],
            amount_cents=amount,
            fee_cents=fee,
            paid_at=paid_at,
            confirmation_number=cells["confirmation_number"],
            method=cells["method"],
            card_brand=cells.get("card_brand") or None,
            last4=cells.get("last4") or None,
            currency=cells.get("currency", "USD"),
            idempotency_key=cells.get("idempotency_key", ""),
            call_sid=cells.get("call_sid", ""),
        )
    except (TypeError, ValueError) as exc:
        raise PaymentFileError(f"line {line}: {exc}") from None
