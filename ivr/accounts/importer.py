"""Applying account files to the cache: staged in bulk, then swapped in at once.

Rows are parsed as a stream and loaded into ``accounts_staging`` in committed batches (COPY
on PostgreSQL, executemany elsewhere): memory stays flat however large the file, and calls go
on meanwhile (no lock is held while a large file is read). Only when the whole file has been
read, and nothing was rejected (unless partial imports are allowed), are the staged rows
merged into ``accounts`` in one short transaction: one INSERT ... ON CONFLICT DO UPDATE, the
phone numbers replaced, and payments the biller's file cannot yet know about applied again.
A rejected file's staged rows are deleted; the cache is exactly as it was.
"""

from __future__ import annotations

import io
import logging
import os
import tempfile
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from decimal import Decimal
from operator import itemgetter
from typing import IO, Any, cast

import pyarrow as pa
import pyarrow.ipc
from sqlalchemy import (
    ColumnElement,
    Connection,
    Select,
    and_,
    delete,
    func,
    insert,
    or_,
    select,
    union,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from connectors.files.account_file import (
    AccountFileError,
    AccountRecord,
    FileSummary,
    Rejection,
)
from connectors.files.column_reader import (
    ColumnBatch,
    NotClean,
    column_path_problem,
    iter_column_batches,
)
from connectors.files.columns import KEY, Kind
from connectors.files.layouts import DEFAULT_ACCOUNT_LAYOUT, AccountLayout, iter_layout_file
from ivr.accounts.bulk_merge import (
    CACHED,
    CACHED_NAMES,
    PHONES,
    carried_columns,
    merge_batches,
)
from ivr.accounts.first_load import load_first
from ivr.arrangements.lifecycle import settle_arrangements
from ivr.db import Database
from ivr.models import (
    Account,
    AccountPhone,
    AccountPhoneStaging,
    AccountStaging,
    ImportRun,
    OutboxEntry,
    Payment,
    Reversal,
    SyncRun,
    utcnow,
)
from ivr.progress import Progress, ProgressCallback
from ivr.security import hash_pin
from ivr.statuses import ImportStatus, OutboxStatus, PostingStatus, SyncKind, SyncRunStatus

log = logging.getLogger(__name__)

BATCH = 5000
# Rejections kept in full for the report; beyond this only the count grows (memory stays flat).
MAX_REPORTED = 1000


@dataclass
class ImportReport:
    """What an import did, for the operator: counts and every rejected line with its reason."""

    source: str
    applied: bool = False
    records: int = 0
    rejected: int = 0
    rejections: list[Rejection] = field(default_factory=list)
    error: str | None = None
    run_id: int | None = None
    reapplied: int = 0  # recent payments taken off again (not yet in the biller's file)
    # Active payment arrangements the applied file ended (ivr/arrangements/lifecycle.py).
    arrangements_broken: int = 0
    arrangements_kept: int = 0

    def lines(self) -> list[str]:
        """The report as text lines."""
        out = [
            f"{self.source}: {'applied' if self.applied else 'REJECTED, cache unchanged'}; "
            f"{self.records} accounts, {self.rejected} rejected lines"
        ]
        if self.error:
            out.append(f"file error: {self.error}")
        out.extend(f"line {r.line}: {r.reason}" for r in self.rejections)
        if self.rejected > len(self.rejections):
            out.append(f"... and {self.rejected - len(self.rejections)} more rejected lines")
        if self.arrangements_broken or self.arrangements_kept:
            out.append(f"payment arrangements: {self.arrangements_broken} broken, "
                       f"{self.arrangements_kept} kept")
        return out


def _staged(record: AccountRecord, import_id: str, pin_key: str,
            now: datetime) -> tuple[Any, ...]:
    """One staging row, in _STAGE_COLUMNS order (tuples: the bulk paths take them as they are)."""
    values: tuple[Any, ...] = _CACHED_VALUES(record.values)
    for i in _HASHED_AT:
        if values[i] is not None:
            values = (*values[:i], hash_pin(values[i], pin_key), *values[i + 1:])
    return (import_id, now, *values)


# Per row, so done in C: the record's values for CACHED_NAMES, and which of them are hashed.
_CACHED_VALUES = itemgetter(*(c.field for c in CACHED))
_HASHED_AT = tuple(i for i, c in enumerate(CACHED) if c.kind is Kind.HASHED)


_STAGE_COLUMNS = ("import_id", "staged_at", *CACHED_NAMES)
_PHONE_COLUMNS = ("import_id", "account_number", "phone")


def _bulk(db: Session, table: str, columns: tuple[str, ...],
          rows: list[tuple[Any, ...]]) -> None:
    """Load rows with the driver's bulk path: COPY on PostgreSQL, executemany elsewhere.

    Bypasses the ORM on purpose: at a million rows its per-row bookkeeping costs more than
    the database does.
    """
    if not rows:
        return
    connection = db.connection()
    raw: Any = connection.connection.driver_connection
    names = ", ".join(columns)
    if connection.dialect.name == "postgresql":
        with raw.cursor() as cursor, cursor.copy(f"COPY {table} ({names}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        return
    marks = ", ".join("?" * len(columns))
    # sqlite3 stores what it is given: keep the types SQLAlchemy would have written.
    as_text = [i for i, name in enumerate(columns) if name in _SQLITE_TEXT]
    if as_text:
        rows = [_sqlite_row(row, as_text) for row in rows]
    cursor = raw.cursor()
    try:
        cursor.executemany(f"INSERT INTO {table} ({names}) VALUES ({marks})", rows)  # noqa: S608
    finally:
        cursor.close()


# Columns SQLAlchemy writes to SQLite as text: timestamps and decimals.
_SQLITE_TEXT = frozenset({"staged_at", *(c.cache for c in CACHED if c.kind is Kind.DECIMAL)})


def _sqlite_row(row: tuple[Any, ...], as_text: list[int]) -> tuple[Any, ...]:
    """``row`` with the values at ``as_text`` written as SQLAlchemy writes them to SQLite."""
    values = list(row)
    for i in as_text:
        value = values[i]
        if isinstance(value, datetime):
            values[i] = value.isoformat(sep=" ")
        elif isinstance(value, Decimal):
            values[i] = str(value)
    return tuple(values)


def _merge(db: Session, import_id: str, columns: frozenset[str] | None, ids: tuple[int, int],
           ) -> None:
    """Upsert the staged rows with ids in ``ids`` (inclusive) into accounts, then replace
    their phone numbers, set-based.

    Only columns the file carries are updated: a file without a ``pin`` column leaves PINs
    as they were (new accounts take the defaults).
    """
    dialect = db.connection().dialect.name
    in_chunk = and_(AccountStaging.import_id == import_id, AccountStaging.id.between(*ids))
    source = select(*(getattr(AccountStaging, c) for c in CACHED_NAMES), func.now()).where(
        in_chunk)
    module: Any = postgresql if dialect == "postgresql" else sqlite
    stmt = module.insert(Account).from_select([*CACHED_NAMES, "updated_at"], source)
    carried = carried_columns(columns)
    updates = {c: stmt.excluded[c] for c in carried}
    updates["updated_at"] = func.now()
    db.execute(stmt.on_conflict_do_update(index_elements=["account_number"], set_=updates))
    if columns is not None and PHONES.name not in columns:
        return
    staged_ids = (select(Account.id)
                  .join(AccountStaging, AccountStaging.account_number == Account.account_number)
                  .where(in_chunk))
    db.execute(delete(AccountPhone).where(AccountPhone.account_id.in_(staged_ids)))
    phones = (select(Account.id, AccountPhoneStaging.phone)
              .join(AccountStaging,
                    and_(AccountStaging.import_id == AccountPhoneStaging.import_id,
                         AccountStaging.account_number == AccountPhoneStaging.account_number))
              .join(Account, Account.account_number == AccountPhoneStaging.account_number)
              .where(in_chunk))
    db.execute(insert(AccountPhone).from_select(["account_id", "phone"], phones))


def reapply_recent_payments(db: Session, as_of: datetime,
                            accounts: ColumnElement[bool]) -> int:
    """Take off again the payments the biller's file cannot include yet.

    The file shows the biller's books when it was made (``as_of``). A payment the biller
    had not heard of by then is missing from it; without this the next caller would hear a
    balance they have already paid. The biller has heard of a payment once it was posted to
    their system, or sent to them in a confirmation file (``ivr sync push``), before
    ``as_of``. Looks back RECENT_DAYS; older ones are a matter for reconciliation. Only
    the ``accounts`` the condition picks (the chunk just merged) are looked at.
    """
    stmt = recent_payments(as_of, Account, Payment).where(accounts)
    count = 0
    for account, payment in db.execute(stmt):
        account.balance_due_cents -= payment.amount_cents
        account.past_due_cents = max(0, account.past_due_cents - payment.amount_cents)
        count += 1
    # Likewise money taken back (a bank return, a refund) the biller had not heard of: the
    # file still counts it as paid, so the balance goes back up by it again.
    for account, reversal in db.execute(recent_reversals(as_of, Account, Reversal)
                                        .where(accounts)):
        account.balance_due_cents += reversal.amount_cents
    return count


RECENT_DAYS = 30


def recent_payments(as_of: datetime, *what: Any) -> Select[Any]:
    """Select ``what`` for the payments of the last RECENT_DAYS the biller had not heard of
    by ``as_of`` (see reapply_recent_payments), joined with their accounts."""
    horizon = as_of - timedelta(days=RECENT_DAYS)
    return (select(*what)
            .select_from(Account)
            .join(Payment, Payment.account_id == Account.id)
            .outerjoin(OutboxEntry, OutboxEntry.payment_id == Payment.id)
            .where(Payment.paid_at >= horizon, Payment.posting_status != PostingStatus.TEST,
                   _unheard_of(as_of, Payment.paid_at)))


def _unheard_of(as_of: datetime, moment: Any) -> ColumnElement[bool]:
    """The joined outbox row was not posted by ``as_of``, and no confirmation file sent by
    then covered ``moment``: the biller had not heard of it."""
    pushed = (select(SyncRun.id)
              .where(SyncRun.kind == SyncKind.PUSH, SyncRun.status == SyncRunStatus.OK,
                     SyncRun.finished_at <= as_of, SyncRun.interval_start <= moment,
                     SyncRun.interval_end > moment)
              .exists())
    posted = and_(OutboxEntry.status == OutboxStatus.POSTED, OutboxEntry.posted_at <= as_of)
    return and_(~pushed, or_(OutboxEntry.id.is_(None), ~posted))


def recent_reversals(as_of: datetime, *what: Any) -> Select[Any]:
    """Select ``what`` for the reversals of the last RECENT_DAYS the biller had not heard of
    by ``as_of`` (neither posted to their system nor sent in a confirmation file by then),
    joined with their accounts."""
    horizon = as_of - timedelta(days=RECENT_DAYS)
    return (select(*what)
            .select_from(Account)
            .join(Payment, Payment.account_id == Account.id)
            .join(Reversal, Reversal.payment_id == Payment.id)
            .outerjoin(OutboxEntry, OutboxEntry.reversal_id == Reversal.id)
            .where(Reversal.created_at >= horizon, _unheard_of(as_of, Reversal.created_at)))


Batch = tuple[list[tuple[Any, ...]], list[tuple[str, str, str]]]


def _batches(items: Iterable[AccountRecord | Rejection], report: ImportReport, import_id: str,
             pin_key: str, partial: bool) -> Iterator[Batch]:
    batch: list[tuple[Any, ...]] = []
    phones: list[tuple[str, str, str]] = []
    now = utcnow()
    for item in items:
        if isinstance(item, Rejection):
            report.rejected += 1
            if len(report.rejections) < MAX_REPORTED:
                report.rejections.append(item)
            continue
        report.records += 1
        if report.rejected and not partial:
            continue  # the file will be rejected; read on only to report every bad line
        batch.append(_staged(item, import_id, pin_key, now))
        account_number = cast(str, item[KEY.field])
        numbers = cast(tuple[str, ...], item[PHONES.field])
        phones.extend((import_id, account_number, p) for p in numbers)
        if len(batch) >= BATCH:
            yield batch, phones
            batch, phones = [], []
    if batch:
        yield batch, phones


def apply_account_records(database: Database, items: Iterable[AccountRecord | Rejection],
                          source: str, *, pin_key: str, partial: bool = False,
                          summary: FileSummary | None = None,
                          as_of: datetime | None = None,
                          zone: tzinfo = UTC) -> ImportReport:
    """Stage, check and swap in parsed records; all-or-nothing unless ``partial``.

    ``summary`` is the parser's (its ``columns`` say which columns the file carries: only
    those are updated); ``as_of`` is when the file was made (default: now), for payments
    it cannot know about yet and, with the biller's time ``zone``, for the day payment
    arrangements are judged on.
    """
    report = ImportReport(source=source)
    import_id = str(uuid.uuid4())
    _clean_stale_staging(database)
    try:
        for rows, phones in _batches(items, report, import_id, pin_key, partial):
            with database.session() as db:
                _bulk(db, "accounts_staging", _STAGE_COLUMNS, rows)
                _bulk(db, "account_phones_staging", _PHONE_COLUMNS, phones)
    except AccountFileError as exc:
        report.error = str(exc)
    columns = summary.columns if summary is not None and summary.columns else None
    return _swap_in(database, import_id, report, columns, as_of or utcnow(), zone,
                    partial=partial)


# Staged rows merged per transaction: each takes the write lock (SQLite) or the rows' locks
# (PostgreSQL) for tens of milliseconds, so callers interleave with a large import.
MERGE_ROWS = 5000


def _swap_in(database: Database, import_id: str, report: ImportReport,
             columns: frozenset[str] | None, as_of: datetime, zone: tzinfo, *, partial: bool,
             progress: ProgressCallback | None = None) -> ImportReport:
    """Merge a staged file into the cache, unless it was rejected; record the run.

    The merge goes in chunks of MERGE_ROWS staged rows, each one short transaction in which
    an account's row, its phones and its re-applied payments change together: a caller sees
    each account either as it was or as the file says, never half of it, and never waits
    long on the import.
    """
    applied = not report.error and not (report.rejected and not partial)
    if applied:
        with database.session() as db:
            low, high = db.execute(select(func.min(AccountStaging.id), func.max(AccountStaging.id))
                                   .where(AccountStaging.import_id == import_id)).one()
        chunks = range(low, high + 1, MERGE_ROWS) if low is not None else range(0)
        for n, start in enumerate(chunks):
            ids = (start, start + MERGE_ROWS - 1)
            with database.session() as db:
                _merge(db, import_id, columns, ids)
                staged = select(AccountStaging.account_number).where(
                    AccountStaging.import_id == import_id, AccountStaging.id.between(*ids))
                report.reapplied += reapply_recent_payments(
                    db, as_of, Account.account_number.in_(staged))
                _drop_staged(db, import_id, ids)
            if progress is not None:
                progress(Progress("merging", n + 1, len(chunks), rows=report.records))
        report.applied = True
    _drop_all_staged(database, import_id)
    return _record_run(database, report, as_of, zone)


def _record_run(database: Database, report: ImportReport, as_of: datetime,
                zone: tzinfo) -> ImportReport:
    """After an applied file, end the payment arrangements it shows broken or kept; keep
    the import's outcome and report in ``import_runs``, and log it.

    Both paths (rows and columns), and so both ``ivr accounts import`` and ``ivr sync
    pull``, end here.
    """
    if report.applied and not database.is_sqlite:
        # Fresh statistics: planned on the old ones, the caller-ID look-up may scan.
        with database.engine.begin() as connection:
            connection.exec_driver_sql("ANALYZE accounts, account_phones")
    if report.applied:
        with database.session() as db:
            settled = settle_arrangements(db, as_of, zone)
        report.arrangements_broken, report.arrangements_kept = settled.broken, settled.kept
    with database.session() as db:
        run = ImportRun(source=report.source[:500], finished_at=utcnow(),
                        status=ImportStatus.APPLIED if report.applied else ImportStatus.REJECTED,
                        records=report.records, rejected=report.rejected,
                        report={"lines": report.lines()[:MAX_REPORTED + 2]})
        db.add(run)
        db.flush()
        report.run_id = run.id
    log.info("account import", extra={"fields": {
        "source": report.source, "applied": report.applied, "records": report.records,
        "rejected": report.rejected, "error": report.error,
        "arrangements_broken": report.arrangements_broken,
        "arrangements_kept": report.arrangements_kept}})
    return report


def _drop_staged(db: Session, import_id: str, ids: tuple[int, int]) -> None:
    """Delete the staged rows with ids in ``ids`` and their phone numbers."""
    in_chunk = and_(AccountStaging.import_id == import_id, AccountStaging.id.between(*ids))
    db.execute(delete(AccountPhoneStaging).where(
        AccountPhoneStaging.import_id == import_id,
        AccountPhoneStaging.account_number.in_(
            select(AccountStaging.account_number).where(in_chunk))))
    db.execute(delete(AccountStaging).where(in_chunk))


def _drop_all_staged(database: Database, import_id: str) -> None:
    """Delete what an import staged, a chunk per transaction (a long delete would hold
    SQLite's write lock for seconds)."""
    with database.session() as db:
        low, high = db.execute(select(func.min(AccountStaging.id), func.max(AccountStaging.id))
                               .where(AccountStaging.import_id == import_id)).one()
    for start in range(low, high + 1, MERGE_ROWS) if low is not None else range(0):
        with database.session() as db:
            _drop_staged(db, import_id, (start, start + MERGE_ROWS - 1))
    with database.session() as db:
        # Phones whose account row was never staged (none, unless a batch failed midway).
        db.execute(delete(AccountPhoneStaging).where(
            AccountPhoneStaging.import_id == import_id))


def _clean_stale_staging(database: Database) -> None:
    """Drop rows left by an import that crashed a day or more ago."""
    with database.session() as db:
        stale = select(AccountStaging.import_id).where(
            AccountStaging.staged_at < utcnow() - timedelta(days=1))
        db.execute(delete(AccountPhoneStaging).where(AccountPhoneStaging.import_id.in_(stale)))
        db.execute(delete(AccountStaging).where(
            AccountStaging.staged_at < utcnow() - timedelta(days=1)))


def import_account_file(database: Database, stream: IO[bytes], layout: AccountLayout,
                        source: str, *, pin_key: str, partial: bool = False,
                        as_of: datetime | None = None, zone: tzinfo = UTC,
                        progress: ProgressCallback | None = None) -> ImportReport:
    """Apply an account file in ``layout`` to the cache; ``progress`` hears how far it got.

    ``as_of`` (default now) is when the file was made; ``zone`` is the biller's time zone
    (settings.toml ``[transfer] timezone``), in which its day is reckoned for payment
    arrangements (ivr/arrangements/lifecycle.py).

    A clean file in a layout the column path reads (connectors/files/column_reader.py) is
    checked and staged by column; any other file, or one the column path cannot vouch for,
    is read again by rows, whose report says what is wrong with each line.
    """
    if stream.seekable() and column_path_problem(layout) is None:
        start = stream.tell()
        report = _import_by_columns(database, stream, layout, ImportReport(source=source),
                                    pin_key, as_of or utcnow(), zone, progress)
        if report is not None:
            return report
        stream.seek(start)
    summary = FileSummary()
    items = iter_layout_file(stream, layout, summary)
    if progress is not None:
        items = _reporting(items, stream, summary, progress)
    return apply_account_records(database, items, source, pin_key=pin_key, partial=partial,
                                 summary=summary, as_of=as_of, zone=zone)


def _reporting(items: Iterator[AccountRecord | Rejection], stream: IO[bytes],
               summary: FileSummary, progress: ProgressCallback,
               ) -> Iterator[AccountRecord | Rejection]:
    size = _size(stream)
    for n, item in enumerate(items, 1):
        if n % BATCH == 0:
            progress(Progress("checking", stream.tell(), size, summary.records,
                              summary.rejected))
        yield item
    progress(Progress("checking", size or 0, size, summary.records, summary.rejected))


def _size(stream: IO[bytes]) -> int | None:
    try:
        return os.fstat(stream.fileno()).st_size
    except (OSError, AttributeError, io.UnsupportedOperation):
        return None


def _import_by_columns(database: Database, stream: IO[bytes], layout: AccountLayout,
                       report: ImportReport, pin_key: str, as_of: datetime, zone: tzinfo,
                       progress: ProgressCallback | None) -> ImportReport | None:
    """Check a file by column, then merge it chunk by chunk; None if it is not clean.

    Checked batches wait in a temporary Arrow file (not in memory, not in the database)
    until the whole file is known to be clean, then go straight into the cache. A first
    import on PostgreSQL (ivr/accounts/first_load.py) loads each batch as it is checked
    instead, in one transaction that a file found not clean undoes.
    """
    summary = FileSummary()

    def read(phase: str) -> Iterator[ColumnBatch]:
        def on_bytes(done: int, total: int) -> None:
            if progress is not None:
                progress(Progress(phase, done, total, summary.records, 0))

        return iter_column_batches(stream, layout, summary, on_bytes)

    def loaded(done: int) -> None:
        if progress is not None:
            progress(Progress("loading", done, summary.records, done))

    try:
        if not load_first(database, read("loading"), pin_key):
            with tempfile.TemporaryFile(prefix="ivr-import-") as spill:
                batches = _spilled(read("checking"), spill)
                report.reapplied = merge_batches(database, batches, summary.columns or None,
                                                 pin_key, _Reapply(as_of), loaded)
        report.records = summary.records
    except NotClean as exc:
        log.info("account file read by rows", extra={"fields": {"why": str(exc)}})
        return None
    report.applied = True
    return _record_run(database, report, as_of, zone)


def _spilled(checked: Iterator[ColumnBatch], spill: IO[bytes]) -> Iterator[ColumnBatch]:
    """Every checked batch, written to ``spill`` first and read back from it: none is
    given before the whole file is known clean (NotClean is raised before any)."""
    writer: pa.ipc.RecordBatchStreamWriter | None = None
    try:
        for batch in checked:
            table = pa.table(dict(batch.values))
            if writer is None:
                writer = pa.ipc.new_stream(spill, table.schema)
            writer.write_table(table)
    finally:
        if writer is not None:
            writer.close()
    spill.seek(0)
    return (ColumnBatch(dict(zip(b.schema.names, b.columns, strict=True)))
            for b in (pa.ipc.open_stream(spill) if writer is not None else ()))


class _Reapply:
    """Recent payments taken off again for a chunk's accounts, in the chunk's transaction
    (ChunkMerger's ``reapply``)."""

    def __init__(self, as_of: datetime) -> None:
        self.as_of = as_of
        # The accounts that have any: one statement, built once per import. Built and run
        # through a session for each chunk, the two look-ups were almost half of what a
        # 500-account SQLite chunk holds the write lock for while calls are on the line.
        self._owing = union(recent_payments(as_of, Account.account_number),
                            recent_reversals(as_of, Account.account_number))

    def __call__(self, connection: Connection, keys: list[str]) -> int:
        # Few accounts have recent payments: find those first, without naming 5,000 keys.
        mine = set(connection.scalars(self._owing)).intersection(keys)
        if not mine:
            return 0
        with Session(bind=connection) as db:
            count = reapply_recent_payments(db, self.as_of, Account.account_number.in_(mine))
            db.flush()
        return count


def import_accounts(database: Database, stream: IO[bytes], source: str, *, pin_key: str,
                    partial: bool = False, as_of: datetime | None = None,
                    zone: tzinfo = UTC) -> ImportReport:
    """Apply an account file in the default layout (docs/files.md) to the cache."""
    return import_account_file(database, stream, DEFAULT_ACCOUNT_LAYOUT, source,
                               pin_key=pin_key, partial=partial, as_of=as_of, zone=zone)
