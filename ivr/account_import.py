"""Applying account files to the cache: staged in bulk, then merged in one statement.

Rows are parsed as a stream and loaded into ``accounts_staging`` in batches (COPY on
PostgreSQL, executemany elsewhere), so memory stays flat however large the file. Only when
the whole file has been read, and nothing was rejected (unless partial imports are allowed),
are the staged rows merged into ``accounts`` with one INSERT ... ON CONFLICT DO UPDATE and the
phone numbers replaced. It all happens inside the caller's transaction, behind a savepoint: a
bad file leaves the cache exactly as it was.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

from sqlalchemy import delete, func, insert, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from connectors.account_file import (
    AccountFileError,
    AccountRecord,
    FileSummary,
    Rejection,
    iter_account_file,
)
from ivr.models import Account, AccountPhone, AccountStaging, ImportRun, utcnow
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


def _staged(record: AccountRecord, import_id: str, pin_iterations: int) -> dict[str, Any]:
    return {
        "import_id": import_id,
        "account_number": record.account_number,
        "customer_name": record.customer_name,
        "service_zip": record.service_zip,
        "pin_hash": hash_pin(record.pin, pin_iterations) if record.pin else None,
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


_STAGE_COLUMNS = ("import_id", *_COLUMNS, "phones")


def _load_batch(db: Session, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    connection = db.connection()
    if connection.dialect.name == "postgresql":
        # COPY is PostgreSQL's bulk path: several times faster than multi-row INSERTs.
        raw = connection.connection.driver_connection
        columns = ", ".join(_STAGE_COLUMNS)
        with raw.cursor() as cursor, cursor.copy(  # type: ignore[union-attr]
                f"COPY accounts_staging ({columns}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row([row[c] for c in _STAGE_COLUMNS])
        return
    db.execute(insert(AccountStaging), rows)


def _merge(db: Session, import_id: str) -> None:
    """Upsert the staged rows into accounts, then replace their phone numbers."""
    dialect = db.connection().dialect.name
    source = select(*(getattr(AccountStaging, c) for c in _COLUMNS), func.now()).where(
        AccountStaging.import_id == import_id)
    module: Any = postgresql if dialect == "postgresql" else sqlite
    stmt = module.insert(Account).from_select([*_COLUMNS, "updated_at"], source)
    updates = {c: stmt.excluded[c] for c in _COLUMNS if c != "account_number"}
    updates["updated_at"] = func.now()
    db.execute(stmt.on_conflict_do_update(index_elements=["account_number"], set_=updates))
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


def _batches(items: Iterable[AccountRecord | Rejection], report: ImportReport, import_id: str,
             pin_iterations: int, partial: bool) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    for item in items:
        if isinstance(item, Rejection):
            report.rejected += 1
            if len(report.rejections) < MAX_REPORTED:
                report.rejections.append(item)
            continue
        report.records += 1
        if report.rejected and not partial:
            continue  # the file will be rejected; read on only to report every bad line
        batch.append(_staged(item, import_id, pin_iterations))
        if len(batch) >= BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def apply_account_records(db: Session, items: Iterable[AccountRecord | Rejection], source: str,
                          *, pin_iterations: int, partial: bool = False) -> ImportReport:
    """Stage, check and merge parsed records; all-or-nothing unless ``partial``."""
    report = ImportReport(source=source)
    import_id = str(uuid.uuid4())
    savepoint = db.begin_nested()
    try:
        for batch in _batches(items, report, import_id, pin_iterations, partial):
            _load_batch(db, batch)
    except AccountFileError as exc:
        report.error = str(exc)
    if report.error or (report.rejected and not partial):
        savepoint.rollback()
    else:
        _merge(db, import_id)
        db.execute(delete(AccountStaging).where(AccountStaging.import_id == import_id))
        savepoint.commit()
        report.applied = True
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


def import_accounts(db: Session, stream: IO[bytes], source: str, *, pin_iterations: int,
                    partial: bool = False) -> ImportReport:
    """Apply an account file in the default layout (design section 4) to the cache."""
    summary = FileSummary(records=0, rejected=0, balance_sum_cents=0, trailer=None)
    return apply_account_records(db, iter_account_file(stream, summary), source,
                                 pin_iterations=pin_iterations, partial=partial)
