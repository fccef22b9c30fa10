"""Writing payment confirmation files in a declared layout, and reading them back."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable, Iterator, Mapping
from functools import partial
from typing import IO

from connectors.files.account_file import (
    FieldError,
    show_value,
)
from connectors.files.account_reader import _csv_reader
from connectors.files.cells import restore
from connectors.files.layout_base import (
    _NUMBER_FIELDS,
    _PAYMENT_READ_NEEDS,
    PaymentFileError,
    _text_encoding,
)
from connectors.files.payment_layout import (
    PaymentLayout,
    PaymentRow,
    ReversalRow,
    _format_amount,
    _format_paid_at,
    _parse_amount,
    _parse_paid_at,
)
from connectors.files.record_file import _ControlReader, cell_getters, write_records


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
    return cell_getters(layout, getters)


def _summed(row: PaymentRow, sum_field: str) -> int:
    if sum_field == "fee":
        return row.fee_cents
    if sum_field == "total":
        return row.total_cents
    return row.amount_cents


def write_payment_file(
    rows: Iterable[PaymentRow],
    out: IO[bytes],
    layout: PaymentLayout,
    *,
    values: Mapping[str, str] | None = None,
    reversals: Iterable[ReversalRow] = (),
) -> tuple[int, int]:
    """Write ``rows`` as a confirmation file in ``layout``; return (count, sum in cents).

    ``reversals`` follow the payments, one ``layout.reversal_record`` each (not counted in
    the count or sum); with none, the file is byte for byte what it was before they existed.

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
    getters = _payment_getters(layout)
    return write_records(
        rows, out, layout,
        cells=lambda row: [get(row) for get in getters],
        text_cells=[name not in _NUMBER_FIELDS for _, name in layout.columns],
        summed=partial(_summed, sum_field=layout.sum_field),
        describe=lambda n, row: f"payment {n} ({show_value(row.confirmation_number)})",
        values=values,
        records=((f"reversal of {show_value(r.confirmation_number)}", layout.reversal_record,
                  _reversal_values(r, layout)) for r in reversals),
    )


def _reversal_values(row: ReversalRow, layout: PaymentLayout) -> dict[str, str]:
    """A reversal record's placeholders, in the layout's amount style and time zone."""
    return {
        "account_number": row.account_number,
        "amount": _format_amount(row.amount_cents, layout.amount_style),
        "effective_date": row.effective_date.isoformat(),
        "recorded_at": _format_paid_at(row.recorded_at, layout.datetime_format, layout.zone),
        "confirmation_number": row.confirmation_number,
        "kind": row.kind,
        "return_code": row.return_code or "",
        "method": row.method,
    }


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
    reversal_reader = _ControlReader(layout.reversal_record, "reversal", layout.amount_style)
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
        if reversal_reader.matches(row):
            continue  # a reversal record: not a payment
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
