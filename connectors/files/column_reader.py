"""Reading an account file by column, at the speed of compiled code, or not at all.

The row path (``connectors.files.account_reader``) is the contract: it reads any layout and
says exactly what is wrong with each bad line. This module reads the common case, a clean
file, column by column with pyarrow's CSV reader and compute functions, and must give the
very records the row path would. It never reports problems itself: whatever it cannot vouch
for (a bad cell, a duplicate, a quote it would read differently from Python's ``csv``, a
trailer that does not add up, a layout feature it does not handle) raises ``NotClean``, and
the caller reads the file again by rows for the report. So a rejected file's report is the
row path's, word for word, and a clean file never pays for per-row Python.

Cells take a fast shape (an ASCII cell matching a regular expression compiled by RE2);
any other non-blank cell is parsed by the column's own Python parser, the row path's, so
an unusual but valid value (a 13-digit zero-padded amount, a phone with dashes, an accented
name) is read exactly as before, only slower.
"""

from __future__ import annotations

import codecs
import csv
import functools
import io
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from decimal import Decimal
from typing import IO, Any, cast

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from connectors.files.account_layout import AccountLayout, AmountFormat
from connectors.files.account_reader import check_control_totals, start_reading
from connectors.files.column_cells import (
    ColumnPlan,
    NotClean,
    literal,
    plan_columns,
    read_column,
    strip_cells,
)
from connectors.files.columns import (
    BY_FIELD,
    BY_NAME,
    FIELDS,
    KEY,
    SUMMED,
    AccountRecord,
    Column,
)
from connectors.files.rows import AccountFileError, FileSummary, RowValidator, is_blank_row

__all__ = ["ColumnBatch", "NotClean", "column_path_problem", "iter_column_batches"]

# Small blocks keep memory flat: pyarrow reads several blocks ahead.
BLOCK_BYTES = 1 << 18
_SCAN_BYTES = 1 << 20
# Rows checked together: enough to pay each compute call's fixed cost rarely.
BATCH_ROWS = 20_000
# A batch's columns checked at once (our machines have 2 cores; more threads gained nothing).
CHECK_THREADS = 2
_TAIL_BYTES = 64 << 10
# Batches are summed in int64: at most this many rows of at most 10^14 cents each.
_MAX_BATCH_ROWS = 90_000


@dataclass(frozen=True)
class ColumnBatch:
    """Accepted rows, one pyarrow array per ``AccountRecord`` field.

    Types by kind: text and hashed (the PIN, not yet hashed) ``string``, cents ``int64``,
    dates ``date32``, decimals ``string`` (the number as written), flags ``bool_``, phone
    lists ``list_(string)`` in E.164.
    """

    values: Mapping[str, pa.Array]

    def __len__(self) -> int:
        return len(self.values[KEY.field])

    def slice(self, offset: int, length: int) -> ColumnBatch:
        """Rows ``offset`` to ``offset + length`` of the batch."""
        return ColumnBatch({name: values.slice(offset, length)
                            for name, values in self.values.items()})

    def records(self) -> list[AccountRecord]:
        """The batch as the row path's records (for checks and small files; slow)."""
        columns = [_as_python(BY_FIELD[name], self.values[name]) for name in FIELDS]
        return [AccountRecord.from_values(dict(zip(FIELDS, row, strict=True)))
                for row in zip(*columns, strict=True)]


def _as_python(column: Column, values: pa.Array) -> list[object]:
    out: list[object] = values.to_pylist()
    if column.kind == "decimal":
        return [None if v is None else Decimal(cast(str, v)) for v in out]
    if column.kind == "phones":
        return [tuple(cast(list[str], v)) for v in out]
    return out


def column_path_problem(layout: AccountLayout) -> str | None:
    """Why ``layout`` is read by rows only, or None when the column path can read it."""
    if codecs.lookup(layout.encoding).name not in ("utf-8", "utf-8-sig"):
        return "encoding other than UTF-8"
    if layout.amounts != AmountFormat() or layout.date_format != "%Y-%m-%d":
        return "amounts or dates spelt their own way"
    if any(layout.value_maps.values()):
        return "value maps"
    if layout.header_record is not None or layout.detail_tag is not None:
        return "header records or detail tags"
    if not layout.header and layout.width is None:
        return "rows without a fixed width"
    if len(layout.delimiter) != 1 or (layout.quoting != "none" and len(layout.quotechar) != 1):
        return "multi-character delimiter or quote"
    return None


# --- what the raw bytes must look like --------------------------------------------------------


def _has_control(data: np.ndarray, c1_lead: bool) -> bool:
    """True if the bytes hold a control character the row path rejects in a cell: C0 but
    tab and line breaks, DEL, and C1 (U+0080-U+009F, 0xC2 0x80-0x9F in UTF-8; ``c1_lead``
    says the previous chunk ended on 0xC2)."""
    low = int(np.count_nonzero(data < 32))
    if low and low != sum(int(np.count_nonzero(data == b)) for b in (9, 10, 13)):
        return True
    if np.count_nonzero(data == 127):
        return True
    if c1_lead and 0x80 <= data[0] <= 0x9F:
        return True
    if not np.count_nonzero(data == 0xC2):
        return False
    lead = data[:-1] == 0xC2
    return bool((lead & (data[1:] >= 0x80) & (data[1:] <= 0x9F)).any())


@dataclass
class _RawScan:
    """What one pass over the raw bytes found out."""

    size: int = 0
    quotes: int = 0
    tail: bytes = b""


def _scan_raw(stream: IO[bytes], layout: AccountLayout) -> _RawScan:
    """Check the bytes for what the compiled reader would read differently from ``csv``.

    Python's reader (strict) refuses text after a closing quote and takes a quote inside an
    unquoted cell literally; pyarrow glues the first and toggles on the second. Pairing the
    quotes in order (opening, closing, ...) and requiring every opening quote to follow a
    delimiter, a line break or a closing quote, and every closing quote to precede one (or
    an opening quote: a doubled quote), leaves exactly the files both read alike.
    """
    scan = _RawScan()
    quote = ord(layout.quotechar) if layout.quoting != "none" else None
    delimiter = ord(layout.delimiter)
    prev = ord("\n")  # the byte before the current chunk (start of file: a line start)
    pending_close = False  # the previous chunk ended on a closing quote
    c1_lead = False  # the previous chunk ended on 0xC2 (a C1 control may follow)
    while True:
        chunk = stream.read(_SCAN_BYTES)
        if not chunk:
            break
        data = np.frombuffer(chunk, dtype=np.uint8)
        scan.size += len(chunk)
        scan.tail = (scan.tail + chunk)[-_TAIL_BYTES:]
        if _has_control(data, c1_lead):
            raise NotClean("control character")
        c1_lead = bool(data[-1] == 0xC2)
        if quote is not None:
            if pending_close and not _ends_cell(int(data[0]), delimiter, quote):
                raise NotClean("text after a closing quote")
            pending_close = _check_quotes(data, prev, scan, quote, delimiter)
        prev = int(data[-1])
    if scan.quotes % 2:
        raise NotClean("a quote left open")
    return scan


def _ends_cell(byte: int, delimiter: int, quote: int) -> bool:
    return byte in (delimiter, 10, 13, quote)


def _check_quotes(data: np.ndarray, prev: int, scan: _RawScan, quote: int,
                  delimiter: int) -> bool:
    """Check this chunk's quotes; True if its last byte is a closing quote (checked next)."""
    where = np.flatnonzero(data == quote)
    if not len(where):
        return False
    opening = ((np.arange(len(where)) + scan.quotes) % 2) == 0
    scan.quotes += len(where)
    before = np.where(where > 0, data[np.maximum(where - 1, 0)], prev)
    starts = (before == delimiter) | (before == 10) | (before == 13) | (before == quote)
    if not starts[opening].all():
        raise NotClean("a quote inside an unquoted cell")
    closing = where[~opening]
    last = len(data) - 1
    inner = closing[closing < last]
    after = data[inner + 1]
    ends = (after == delimiter) | (after == 10) | (after == 13) | (after == quote)
    if not ends.all():
        raise NotClean("text after a closing quote")
    return bool(len(closing) and closing[-1] == last)


def _last_row(tail: bytes, layout: AccountLayout) -> list[str] | None:
    """The file's last non-blank row, as Python's reader reads it (None: all blank)."""
    lines = tail.decode("utf-8", errors="replace").splitlines()
    for line in reversed(lines):
        row = next(_reader([line], layout), [])
        if not is_blank_row(row):
            return row
    return None


def _reader(lines: list[str], layout: AccountLayout) -> Iterator[list[str]]:
    return csv.reader(lines, delimiter=layout.delimiter, quotechar=layout.quotechar,
                      quoting=csv.QUOTE_NONE if layout.quoting == "none" else csv.QUOTE_MINIMAL,
                      doublequote=True, strict=True)


# --- the file -------------------------------------------------------------------------------------


@functools.cache
def _lean_memory_pool() -> None:
    """Arrow's memory from jemalloc where the wheel has it, else the C library's: pyarrow
    now defaults to mimalloc, which held on to about 60 MB more at the peak of a
    million-row import (281 MB against 222 MB, and 247 MB with the C library's)."""
    try:
        pa.set_memory_pool(pa.jemalloc_memory_pool())
    except NotImplementedError:
        pa.set_memory_pool(pa.system_memory_pool())


def iter_column_batches(stream: IO[bytes], layout: AccountLayout,
                        summary: FileSummary | None = None,
                        on_bytes: Callable[[int, int], None] | None = None,
                        ) -> Iterator[ColumnBatch]:
    """Yield the accepted rows of a seekable file in ``layout``, batch by batch.

    Raises ``NotClean`` (possibly after yielding batches) unless every row is accepted and
    the file as a whole passes, exactly as the row path would decide; duplicates and control
    totals are checked once every row is in. ``summary`` is reset and kept up to date like
    the row path's. ``on_bytes(done, total)`` hears how far through the file reading is.
    """
    problem = column_path_problem(layout)
    if problem is not None:
        raise NotClean(problem)
    _lean_memory_pool()
    totals = summary if summary is not None else FileSummary()
    totals.restart()
    start = stream.tell()
    scan = _scan_raw(stream, layout)
    stream.seek(start)
    state, rules = start_reading(layout, totals)
    first = stream.readline()
    if layout.header:
        header = next(_reader([first.decode("utf-8-sig", errors="replace")], layout), [])
        if is_blank_row(header) or first.count(layout.quotechar.encode()) % 2:
            raise NotClean("header not on the first line")
        try:
            rules.read_header(state, header, 1)
        except AccountFileError as exc:
            raise NotClean(str(exc)) from None
        skip = 1
    else:
        stream.seek(start)
        skip = 0
    validator = cast(RowValidator, state.validator)
    width, _exact = validator.width
    stream.seek(start)
    yield from _batches(stream, layout, skip, width, plan_columns(validator, layout), totals,
                        scan, on_bytes, state, rules)


def _batches(stream: IO[bytes], layout: AccountLayout, skip: int, width: int,
             plans: list[ColumnPlan], totals: FileSummary, scan: _RawScan,
             on_bytes: Callable[[int, int], None] | None, state: Any, rules: Any,
             ) -> Iterator[ColumnBatch]:
    trailer = layout.trailer_record
    odd_rows: list[list[str]] = []  # rows of another width: blank, the trailer, or trouble

    def other_width(row: Any) -> str:
        odd_rows.append(next(_reader([row.text], layout), []))
        return "skip"

    names = [f"c{i}" for i in range(width)]
    keys: list[np.ndarray] = []  # a 64-bit fingerprint of each account number
    trailer_rows: list[list[str]] = []
    # Threads the columns of a batch are checked on (pyarrow's kernels let go of the GIL).
    with ThreadPoolExecutor(CHECK_THREADS, thread_name_prefix="ivr-check") as checking:
        try:
            reader = pa_csv.open_csv(
                stream,
                # One thread: as fast here (the batches are checked meanwhile) and less memory.
                read_options=pa_csv.ReadOptions(block_size=BLOCK_BYTES, skip_rows=skip,
                                                use_threads=False, column_names=names),
                parse_options=pa_csv.ParseOptions(
                    delimiter=layout.delimiter,
                    quote_char=False if layout.quoting == "none" else layout.quotechar,
                    double_quote=True, newlines_in_values=True, ignore_empty_lines=True,
                    invalid_row_handler=other_width),
                convert_options=pa_csv.ConvertOptions(
                    column_types=dict.fromkeys(names, pa.string()), strings_can_be_null=False,
                    quoted_strings_can_be_null=False, check_utf8=True),
            )
            for record_batch in _combined(reader):
                for offset in range(0, record_batch.num_rows, _MAX_BATCH_ROWS):
                    part = record_batch.slice(offset, _MAX_BATCH_ROWS)
                    batch, found = _read_batch(part, plans, layout, checking)
                    trailer_rows.extend(found)
                    if batch is None:
                        continue
                    keys.append(_fingerprints(batch.values[KEY.field]))
                    totals.records += len(batch)
                    totals.balance_sum_cents += pc.sum(batch.values[SUMMED.field]).as_py() or 0
                    if on_bytes is not None:
                        on_bytes(min(stream.tell(), scan.size), scan.size)
                    yield batch
        except pa.ArrowException as exc:
            raise NotClean(f"pyarrow: {exc}") from None
    for row in odd_rows:
        if is_blank_row(row):
            continue
        if trailer is None or not trailer.matches(row):
            raise NotClean("a row of another width")
        trailer_rows.append(row)
    _check_file(layout, trailer_rows, keys, totals, scan, state, rules)


def _combined(reader: Any) -> Iterator[pa.RecordBatch]:
    """The reader's small batches, joined into batches of about BATCH_ROWS rows: each
    compute call has a fixed cost, paid per batch."""
    pending: list[pa.RecordBatch] = []
    rows = 0
    for record_batch in reader:
        pending.append(record_batch)
        rows += record_batch.num_rows
        if rows >= BATCH_ROWS:
            yield pa.Table.from_batches(pending).combine_chunks().to_batches()[0]
            pending, rows = [], 0
    if rows:
        yield pa.Table.from_batches(pending).combine_chunks().to_batches()[0]


def _fingerprints(keys: pa.Array) -> np.ndarray:
    """64-bit fingerprints of account numbers: 8 bytes each, where a hash table of a
    million strings would take tens of megabytes."""
    return np.fromiter((hash(key) for key in keys.to_pylist()), dtype=np.int64,
                       count=len(keys))


def _read_batch(part: pa.RecordBatch, plans: list[ColumnPlan], layout: AccountLayout,
                checking: Executor) -> tuple[ColumnBatch | None, list[list[str]]]:
    """A batch's accepted rows and the trailer rows in it."""
    stripped: dict[int, tuple[pa.Array, bool]] = {
        i: strip_cells(part.column(i)) for i in range(part.num_columns)}
    blank_row = None
    for cells, _ascii in stripped.values():
        empty = pc.equal(pc.utf8_length(cells), literal(0))
        blank_row = empty if blank_row is None else pc.and_(blank_row, empty)
    keep = pc.invert(blank_row) if blank_row is not None else None
    if keep is not None and not pc.all(keep).as_py():
        part = part.filter(keep)
        stripped = {i: (cells.filter(keep), ascii_only)
                    for i, (cells, ascii_only) in stripped.items()}
    if not part.num_rows:
        return None, []
    trailer_rows: list[list[str]] = []
    trailer = layout.trailer_record
    if trailer is not None and trailer.tag_position <= part.num_columns:
        tag_cells = stripped[trailer.tag_position - 1][0]
        is_tag = pc.equal(tag_cells, literal(trailer.tag))
        if pc.any(is_tag).as_py():
            rows = part.filter(is_tag).to_pylist()
            trailer_rows = [[str(v) for v in row.values()] for row in rows]
            part = part.filter(pc.invert(is_tag))
            stripped = {i: (cells.filter(pc.invert(is_tag)), ascii_only)
                        for i, (cells, ascii_only) in stripped.items()}
            if not part.num_rows:
                return None, trailer_rows
    def column(plan: ColumnPlan) -> pa.Array:
        if plan.position is None:
            return pa.repeat(plan.blank, part.num_rows)
        cells, ascii_only = stripped[plan.position]
        return read_column(plan, cells, ascii_only)

    # Columns at once: pyarrow's kernels let go of the GIL, so the check takes every core.
    # In order: the first column that refuses a cell is the one reported, as one by one.
    values = {plan.column.field: value
              for plan, value in zip(plans, checking.map(column, plans), strict=True)}
    _check_required_if(values, stripped, plans)
    return ColumnBatch(values), trailer_rows


def _check_required_if(values: Mapping[str, pa.Array],
                       stripped: Mapping[int, tuple[pa.Array, bool]],
                       plans: list[ColumnPlan]) -> None:
    for plan in plans:
        condition = plan.column.required_if
        if condition is None:
            continue
        other, value = condition
        when = pc.equal(values[BY_NAME[other].field], literal(value))
        if plan.position is None:
            missing = when
        else:
            blank = pc.equal(pc.utf8_length(stripped[plan.position][0]), literal(0))
            missing = pc.and_(when, blank)
        if pc.any(missing).as_py():
            raise NotClean(f"{plan.column.name} required")


def _check_file(layout: AccountLayout, trailer_rows: list[list[str]],
                keys: list[np.ndarray], totals: FileSummary,
                scan: _RawScan, state: Any, rules: Any) -> None:
    """What the row path checks once every row is in: one trailer, last; no duplicate
    account; control totals."""
    trailer = layout.trailer_record
    if len(trailer_rows) > 1:
        raise NotClean("more than one trailer")
    if trailer_rows and trailer is not None:
        if _last_row(scan.tail, layout) != trailer_rows[0]:
            raise NotClean("rows after the trailer")
        try:
            count, total = rules.read_control(state, trailer, "trailer", trailer_rows[0], 0)
            check_control_totals("trailer", count, total, totals)
        except AccountFileError as exc:
            raise NotClean(str(exc)) from None
        if count is not None and total is not None:
            totals.trailer = (count, total)
    elif trailer is not None and trailer.required:
        raise NotClean("no trailer")
    if keys:
        every = np.sort(np.concatenate(keys))
        # Equal fingerprints are a duplicate, or (about 3e-8 for a million accounts) two
        # numbers with the same hash: either way the row path decides, exactly.
        if bool((every[1:] == every[:-1]).any()):
            raise NotClean("a duplicate account (or a fingerprint collision)")


def read_columns(data: bytes, layout: AccountLayout) -> tuple[list[AccountRecord], FileSummary]:
    """Every record of ``data`` by the column path (for tests); raises ``NotClean``."""
    summary = FileSummary()
    records = [record for batch in iter_column_batches(io.BytesIO(data), layout, summary)
               for record in batch.records()]
    return records, summary
