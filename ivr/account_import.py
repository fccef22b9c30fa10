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

import logging
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import IO, Any

from sqlalchemy import delete, func, insert, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from connectors.account_file import (
    AccountFileError,
    AccountRecord,
    FileSummary,
    Rejection,
    iter_account_file,
)
from ivr.db import Database
from ivr.models import (
    Account,
    AccountPhone,
    AccountStaging,
    ImportRun,
    OutboxEntry,
    Payment,
    utcnow,
)
from ivr.security import hash_pin

log = logging.getLogger(__name__)

BATCH = 5000
# Rejections kept in full for the report; beyond this only the count grows (memory stays flat).
MAX_REPORTED = 1000
_COLUMNS = ("account_number", "customer_name", "service_zip", "pin_hash", "balance_due_cents",
            "past_due_cents", "due_date", "last_payment_cents", "last_payment_date", "status",
            "disconnect_date", "usage_amount", "usage_unit", "usage_period_end", "language",
            "payment_allowed")


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
        return out


def _staged(record: AccountRecord, import_id: str, pin_key: str,
            now: datetime) -> dict[str, Any]:
    return {
        "import_id": import_id,
        "staged_at": now,
        "account_number": record.account_number,
        "customer_name": record.customer_name,
        "service_zip": record.service_zip,
        "pin_hash": hash_pin(record.pin, pin_key) if record.pin else None,
        "balance_due_cents": record.balance_due_cents,
        "past_due_cents": record.past_due_cents,
        "due_date": record.due_date,
        "last_payment_cents": record.last_payment_cents,
        "last_payment_date": record.last_payment_date,
        "status": record.status,
        "disconnect_date": record.disconnect_date,
        "usage_amount": record.usage_amount,
        "usage_unit": record.usage_unit,
        "usage_period_end": record.usage_period_end,
        "language": record.language,
        "payment_allowed": record.payment_allowed,
        "phones": ";".join(record.phones),
    }


_STAGE_COLUMNS = ("import_id", "staged_at", *_COLUMNS, "phones")


def _load_batch(db: Session, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    connection = db.connection()
    if connection.dialect.name == "postgresql":
        # COPY is PostgreSQL's bulk path: several times faster than multi-row INSERTs.
        raw: Any = connection.connection.driver_connection
        columns = ", ".join(_STAGE_COLUMNS)
        with raw.cursor() as cursor, cursor.copy(
                f"COPY accounts_staging ({columns}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row([row[c] for c in _STAGE_COLUMNS])
        return
    db.execute(insert(AccountStaging), rows)


def _merge(db: Session, import_id: str, columns: frozenset[str] | None) -> None:
    """Upsert the staged rows into accounts, then replace their phone numbers.

    Only columns the file carries are updated: a file without a ``pin`` column leaves PINs
    as they were (new accounts take the defaults).
    """
    dialect = db.connection().dialect.name
    source = select(*(getattr(AccountStaging, c) for c in _COLUMNS), func.now()).where(
        AccountStaging.import_id == import_id)
    module: Any = postgresql if dialect == "postgresql" else sqlite
    stmt = module.insert(Account).from_select([*_COLUMNS, "updated_at"], source)
    carried = [c for c in _COLUMNS if c != "account_number"
               and (columns is None or _FILE_COLUMN.get(c, c) in columns)]
    updates = {c: stmt.excluded[c] for c in carried}
    updates["updated_at"] = func.now()
    db.execute(stmt.on_conflict_do_update(index_elements=["account_number"], set_=updates))
    if columns is not None and "phones" not in columns:
        return
    staged_ids = (select(Account.id)
                  .join(AccountStaging, AccountStaging.account_number == Account.account_number)
                  .where(AccountStaging.import_id == import_id))
    db.execute(delete(AccountPhone).where(AccountPhone.account_id.in_(staged_ids)))
    # Phones travel joined by ";" in staging; split them here in batches.
    query = (select(Account.id, AccountStaging.phones)
             .join(AccountStaging, AccountStaging.account_number == Account.account_number)
             .where(AccountStaging.import_id == import_id, AccountStaging.phones != ""))
    batch: list[dict[str, Any]] = []
    for account_id, phones in db.execute(query).yield_per(BATCH):
        batch.extend({"account_id": account_id, "phone": p} for p in phones.split(";") if p)
        if len(batch) >= BATCH:
            db.execute(insert(AccountPhone), batch)
            batch = []
    if batch:
        db.execute(insert(AccountPhone), batch)


# Our column names where the file's differ.
_FILE_COLUMN = {"pin_hash": "pin", "balance_due_cents": "balance_due",
                "past_due_cents": "past_due_amount", "last_payment_cents": "last_payment_amount"}


def reapply_recent_payments(db: Session, import_id: str, as_of: datetime) -> int:
    """Take off again the payments the biller's file cannot include yet.

    The file shows the biller's books when it was made (``as_of``). A payment we took that
    was not posted by then (still queued, dead-lettered, or posted later) is missing from
    it; without this the next caller would hear a balance they have already paid. Looks back
    RECENT_DAYS; older unposted payments are a matter for reconciliation.
    """
    horizon = as_of - timedelta(days=RECENT_DAYS)
    stmt = (select(Account, Payment)
            .join(AccountStaging, AccountStaging.account_number == Account.account_number)
            .join(Payment, Payment.account_id == Account.id)
            .outerjoin(OutboxEntry, OutboxEntry.payment_id == Payment.id)
            .where(AccountStaging.import_id == import_id, Payment.paid_at >= horizon,
                   or_(OutboxEntry.id.is_(None), OutboxEntry.status != "posted",
                       OutboxEntry.posted_at.is_(None), OutboxEntry.posted_at > as_of)))
    count = 0
    for account, payment in db.execute(stmt):
        account.balance_due_cents -= payment.amount_cents
        account.past_due_cents = max(0, account.past_due_cents - payment.amount_cents)
        count += 1
    return count


RECENT_DAYS = 30


def _batches(items: Iterable[AccountRecord | Rejection], report: ImportReport, import_id: str,
             pin_key: str, partial: bool) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
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
        if len(batch) >= BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def apply_account_records(database: Database, items: Iterable[AccountRecord | Rejection],
                          source: str, *, pin_key: str, partial: bool = False,
                          columns: frozenset[str] | None = None,
                          as_of: datetime | None = None) -> ImportReport:
    """Stage, check and swap in parsed records; all-or-nothing unless ``partial``.

    ``columns`` names the file's columns (None: all); ``as_of`` is when the file was made
    (default: now), for payments it cannot know about yet.
    """
    report = ImportReport(source=source)
    import_id = str(uuid.uuid4())
    _clean_stale_staging(database)
    try:
        for batch in _batches(items, report, import_id, pin_key, partial):
            with database.session() as db:
                _load_batch(db, batch)
    except AccountFileError as exc:
        report.error = str(exc)
    with database.session() as db:
        if report.error or (report.rejected and not partial):
            report.applied = False
        else:
            _merge(db, import_id, columns)
            report.reapplied = reapply_recent_payments(db, import_id, as_of or utcnow())
            report.applied = True
        db.execute(delete(AccountStaging).where(AccountStaging.import_id == import_id))
        run = ImportRun(source=source[:500], finished_at=utcnow(),
                        status="applied" if report.applied else "rejected",
                        records=report.records, rejected=report.rejected,
                        report={"lines": report.lines()[:MAX_REPORTED + 2]})
        db.add(run)
        db.flush()
        report.run_id = run.id
    log.info("account import", extra={"fields": {
        "source": source, "applied": report.applied, "records": report.records,
        "rejected": report.rejected, "error": report.error}})
    return report


def _clean_stale_staging(database: Database) -> None:
    """Drop rows left by an import that crashed a day or more ago."""
    with database.session() as db:
        db.execute(delete(AccountStaging).where(
            AccountStaging.staged_at < utcnow() - timedelta(days=1)))


def import_accounts(database: Database, stream: IO[bytes], source: str, *, pin_key: str,
                    partial: bool = False, as_of: datetime | None = None) -> ImportReport:
    """Apply an account file in the default layout (design section 4) to the cache."""
    summary = FileSummary(records=0, rejected=0, balance_sum_cents=0, trailer=None)
    return apply_account_records(database, iter_account_file(stream, summary), source,
                                 pin_key=pin_key, partial=partial, as_of=as_of)
