"""Scheduled file exchange: account files in (``ivr sync pull``), confirmation files out
(``ivr sync push``), over SFTP or a local folder.

Pull: every new file in the inbox is downloaded to a temporary file (verified against its
listing), decrypted when PGP is configured, parsed as a stream in the configured layout and
applied to the cache all-or-nothing (ivr.accounts.importer: staged, then swapped in). Each
remote file is ingested once, tracked by name, size, mtime and sha256; processed files are
moved to ``archive/`` (rejected ones to ``rejected/`` with a report beside them). Files
matching ``IVR_SYNC_RETURNS_PATTERN`` are bank returns files instead, applied the same way by
ivr/money/returns.py (docs/returns.md).

Push: payments are grouped into intervals of the biller's local time that tile the calendar
(a day by default). An interval is pushed only once it has closed and settled (no webhook
still writing into it), as ``<prefix>_<start>.csv`` uploaded to ``NAME.part`` and renamed.
The file depends only on the interval's payments, so pushing an interval again reproduces it
byte for byte; by default every closed interval since the last push is pushed, so no payment
falls between two files. The same run writes the interval's arrangement confirmation file
(``<arrangement prefix>_<start>.csv``: the payment arrangements made in it), for every
interval when ``IVR_SYNC_ARRANGEMENT_LAYOUT`` is set, otherwise only for intervals that
have arrangements (``none``: never); see docs/sync.md.

Both refuse to run while a twin holds the job lock, and record every run in ``sync_runs``.
Both take an optional ``progress`` callback (ivr.progress) for a person watching; its phase
names the file ("loading accounts.csv", "writing payments_20261126.csv").
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from functools import partial
from pathlib import Path
from typing import IO, Any, Protocol
from zoneinfo import ZoneInfo

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.exc import IntegrityError

from connectors.files.layouts import (
    DEFAULT_ACCOUNT_LAYOUT,
    DEFAULT_ARRANGEMENT_LAYOUT,
    DEFAULT_PAYMENT_LAYOUT,
    AccountLayout,
    ArrangementLayout,
    PaymentLayout,
    PaymentRow,
    load_layouts,
    write_arrangement_file,
    write_payment_file,
)
from connectors.files.pgp import decrypt_file, encrypt_file
from connectors.files.returns_file import DEFAULT_RETURNS_LAYOUT, ReturnsLayout
from connectors.files.transport import RemoteFile, TransferError, Transport, open_transport
from ivr.accounts.importer import ImportReport, import_account_file
from ivr.arrangements.confirmation_file import arrangement_rows, count_created, first_created
from ivr.db import Database
from ivr.models import IngestedFile, JobLock, Payment, SyncRun, utcnow
from ivr.money.returns import apply_returns_file
from ivr.money.reversals import reversal_rows
from ivr.progress import Progress, ProgressCallback
from ivr.prompts.settings import ReturnsSettings
from ivr.statuses import IngestOutcome, PostingStatus, SyncKind, SyncRunStatus

log = logging.getLogger(__name__)

PGP_SUFFIXES = (".pgp", ".gpg", ".asc")


class SyncError(Exception):
    """A sync run could not do its job; the message says why, for the operator."""


@dataclass(frozen=True)
class SyncConfig:
    """The ``IVR_SYNC_*``, ``IVR_SFTP_*`` and ``IVR_PGP_*`` settings, checked."""

    inbox_url: str
    outbox_url: str
    pattern: str
    account_layout: AccountLayout
    payment_layout: PaymentLayout
    file_prefix: str
    # The arrangement confirmation file: its layout (None: never written), whether an
    # interval without arrangements gets one too (IVR_SYNC_ARRANGEMENT_LAYOUT set), prefix.
    arrangement_layout: ArrangementLayout | None
    arrangement_every_interval: bool
    arrangement_prefix: str
    # Bank returns files in the inbox (IVR_SYNC_RETURNS_PATTERN; None: none picked up).
    returns_pattern: str | None
    returns_layout: ReturnsLayout
    interval_minutes: int  # 1440 = a day
    settle: timedelta
    archive: bool
    pgp_home: Path | None
    pgp_recipient: str | None
    pgp_passphrase: str | None
    lock_ttl: timedelta
    transport_settings: Mapping[str, str]

    @classmethod
    def from_settings(cls, settings: Mapping[str, str]) -> SyncConfig:
        """Read and check the variables; SyncError names what is wrong."""
        layouts: dict[str, Any] = {}
        layouts_file = settings.get("IVR_SYNC_LAYOUTS", "")
        if layouts_file:
            try:
                layouts = dict(load_layouts(Path(layouts_file)))
            except (OSError, ValueError) as exc:
                raise SyncError(f"IVR_SYNC_LAYOUTS {layouts_file}: {exc}") from None

        def layout(kind: str, variable: str, default: Any) -> Any:
            name = settings.get(variable, "default") or "default"
            if name == "default":
                return default
            found = layouts.get(f"{kind}.{name}")
            if found is None:
                raise SyncError(f"{variable}={name}: no [{kind}.{name}] in IVR_SYNC_LAYOUTS")
            return found

        interval = settings.get("IVR_SYNC_INTERVAL", "day")
        minutes = {"day": 1440, "hour": 60}.get(interval)
        if minutes is None:
            try:
                minutes = int(interval)
            except ValueError:
                raise SyncError("IVR_SYNC_INTERVAL must be day, hour or minutes") from None
        if minutes <= 0 or 1440 % minutes:
            raise SyncError("IVR_SYNC_INTERVAL minutes must divide a day evenly (15, 60, 240...)")
        pgp_home = settings.get("IVR_PGP_HOME") or None
        arrangement_setting = settings.get("IVR_SYNC_ARRANGEMENT_LAYOUT", "")
        file_prefix = settings.get("IVR_SYNC_FILE_PREFIX", "payments")
        arrangement_prefix = settings.get("IVR_SYNC_ARRANGEMENT_PREFIX", "arrangements")
        if arrangement_prefix == file_prefix:
            raise SyncError("IVR_SYNC_ARRANGEMENT_PREFIX must differ from IVR_SYNC_FILE_PREFIX "
                            f"({file_prefix!r}): the two files would have one name")
        return cls(
            inbox_url=settings.get("IVR_SYNC_INBOX_URL", ""),
            outbox_url=settings.get("IVR_SYNC_OUTBOX_URL", ""),
            pattern=settings.get("IVR_SYNC_INBOX_PATTERN", "*"),
            account_layout=layout("account", "IVR_SYNC_ACCOUNT_LAYOUT", DEFAULT_ACCOUNT_LAYOUT),
            payment_layout=layout("payment", "IVR_SYNC_PAYMENT_LAYOUT", DEFAULT_PAYMENT_LAYOUT),
            file_prefix=file_prefix,
            arrangement_layout=None if arrangement_setting == "none" else layout(
                "arrangement", "IVR_SYNC_ARRANGEMENT_LAYOUT", DEFAULT_ARRANGEMENT_LAYOUT),
            arrangement_every_interval=arrangement_setting not in {"", "none"},
            arrangement_prefix=arrangement_prefix,
            returns_pattern=settings.get("IVR_SYNC_RETURNS_PATTERN") or None,
            returns_layout=layout("returns", "IVR_SYNC_RETURNS_LAYOUT",
                                  DEFAULT_RETURNS_LAYOUT),
            interval_minutes=minutes,
            settle=timedelta(seconds=int(settings.get("IVR_SYNC_SETTLE_SECONDS", "120"))),
            archive=settings.get("IVR_SYNC_ARCHIVE", "1") not in {"0", "false", "no"},
            pgp_home=Path(pgp_home) if pgp_home else None,
            pgp_recipient=settings.get("IVR_PGP_RECIPIENT") or None,
            pgp_passphrase=settings.get("IVR_PGP_PASSPHRASE") or None,
            lock_ttl=timedelta(seconds=int(settings.get("IVR_SYNC_LOCK_SECONDS", "3600"))),
            transport_settings=dict(settings),
        )


# --- the job lock ---------------------------------------------------------------------------

def holder_name() -> str:
    """This process, as named in locks and runs."""
    return f"{socket.gethostname()}:{os.getpid()}"


@contextmanager
def job_lock(database: Database, name: str, ttl: timedelta) -> Iterator[None]:
    """Hold the named lock for the block, or raise SyncError if a live twin holds it."""
    me = holder_name()
    now = utcnow()
    with database.session() as db:
        lock = db.get(JobLock, name, with_for_update=True)
        if lock is not None and lock.expires_at > now and lock.holder != me:
            raise SyncError(f"another {name} is running ({lock.holder}, since "
                            f"{lock.acquired_at:%Y-%m-%d %H:%M:%S}Z); not starting a second one")
        if lock is None:
            db.add(JobLock(name=name, holder=me, acquired_at=now, expires_at=now + ttl))
        else:  # expired (its holder died) or ours
            lock.holder, lock.acquired_at, lock.expires_at = me, now, now + ttl
        try:
            db.flush()
        except IntegrityError:
            raise SyncError(f"another {name} started at the same moment") from None
    try:
        yield
    finally:
        with database.session() as db:
            lock = db.get(JobLock, name)
            if lock is not None and lock.holder == me:
                db.delete(lock)


@contextmanager
def recorded_run(database: Database, kind: str) -> Iterator[SyncRun]:
    """A sync_runs row for the block: running, then ok or failed with the reason."""
    with database.session() as db:
        run = SyncRun(kind=kind, status=SyncRunStatus.RUNNING, started_at=utcnow(),
                      host=holder_name())
        db.add(run)
    try:
        yield run
    except BaseException as exc:
        run.status = SyncRunStatus.FAILED
        run.detail = (run.detail + "\n" if run.detail else "") + f"{type(exc).__name__}: {exc}"
        raise
    else:
        run.status = SyncRunStatus.FAILED if run.rejected else SyncRunStatus.OK
    finally:
        run.finished_at = utcnow()
        with database.session() as db:
            db.merge(run)


# --- pull ----------------------------------------------------------------------------------

class Applied(Protocol):
    """What applying one pulled file reports, an account import's or a returns file's
    (one applied before counts as applied)."""

    @property
    def applied(self) -> bool: ...
    @property
    def records(self) -> int: ...
    @property
    def rejected(self) -> int: ...
    @property
    def run_id(self) -> int | None: ...
    def lines(self) -> list[str]: ...


@dataclass
class PulledFile:
    """What happened to one inbound file."""

    name: str
    outcome: str  # applied | rejected | skipped
    report: Applied | None = None


def _already_ingested(database: Database, remote: RemoteFile) -> bool:
    with database.session() as db:
        return db.scalar(select(IngestedFile.id).where(
            IngestedFile.name == remote.name, IngestedFile.size == remote.size,
            IngestedFile.mtime == remote.mtime).limit(1)) is not None


def _same_content_ingested(database: Database, name: str, sha256: str) -> bool:
    with database.session() as db:
        return db.scalar(select(IngestedFile.id).where(
            IngestedFile.name == name, IngestedFile.sha256 == sha256).limit(1)) is not None


def pull(database: Database, config: SyncConfig, *, pin_key: str, zone: tzinfo = UTC,
         progress: ProgressCallback | None = None,
         returns: ReturnsSettings | None = None) -> list[PulledFile]:
    """Fetch and apply every new account file, and every new bank returns file when
    IVR_SYNC_RETURNS_PATTERN is set; SyncError when any file was rejected.

    ``zone`` is the biller's time zone, in which a file's day is reckoned for payment
    arrangements (ivr/arrangements/lifecycle.py); ``returns`` is settings.toml's
    ``[returns]`` (its defaults when not given).
    """
    if not config.inbox_url:
        raise SyncError("IVR_SYNC_INBOX_URL is not set")
    results: list[PulledFile] = []
    with job_lock(database, "sync-pull", config.lock_ttl), \
            recorded_run(database, SyncKind.PULL) as run, \
            open_transport(config.inbox_url, config.transport_settings) as transport, \
            tempfile.TemporaryDirectory(prefix="ivr-pull-") as tmp:
        returns_files = (transport.list_files(config.returns_pattern)
                         if config.returns_pattern else [])
        returns_names = {remote.name for remote in returns_files}
        for remote in transport.list_files(config.pattern):
            if remote.name in returns_names:
                continue  # a returns file is never read as an account file
            accounts = partial(_import_accounts, database, config, pin_key, zone,
                               _naming(progress, remote.name))
            results.append(_pull_one(database, config, transport, remote, Path(tmp), run,
                                     accounts))
        settings = returns or ReturnsSettings()
        for remote in returns_files:
            results.append(_pull_one(
                database, config, transport, remote, Path(tmp), run,
                lambda local, source, _: apply_returns_file(
                    database, local.read_bytes(), source, settings, config.returns_layout)))
        run.files = [{"name": r.name, "outcome": r.outcome,
                      "records": r.report.records if r.report else 0,
                      "rejected": r.report.rejected if r.report else 0} for r in results]
        run.records = sum(r.report.records for r in results if r.report and r.report.applied)
        run.rejected = sum(1 for r in results if r.outcome == IngestOutcome.REJECTED)
    rejected = [r.name for r in results if r.outcome == IngestOutcome.REJECTED]
    if rejected:
        raise SyncError(f"rejected {len(rejected)} file(s), cache unchanged for them: "
                        + ", ".join(rejected))
    return results


def _naming(progress: ProgressCallback | None, name: str) -> ProgressCallback | None:
    """``progress`` with the file's name after each phase: "loading accounts.csv"."""
    if progress is None:
        return None
    return lambda done: progress(replace(done, phase=f"{done.phase} {name}"))


def _import_accounts(database: Database, config: SyncConfig, pin_key: str, zone: tzinfo,
                     progress: ProgressCallback | None, local: Path, source: str,
                     remote: RemoteFile) -> ImportReport:
    """Apply a pulled account file to the cache."""
    with local.open("rb") as stream:
        return import_account_file(database, stream, config.account_layout, source,
                                   pin_key=pin_key,
                                   as_of=datetime.fromtimestamp(remote.mtime, UTC),
                                   zone=zone, progress=progress)


def _pull_one(database: Database, config: SyncConfig, transport: Transport, remote: RemoteFile,
              tmp: Path, run: SyncRun,
              apply: Callable[[Path, str, RemoteFile], Applied]) -> PulledFile:
    if _already_ingested(database, remote):
        return PulledFile(remote.name, IngestOutcome.SKIPPED)
    local = tmp / "download"
    sha256 = transport.download(remote.name, local, expected=remote)
    if _same_content_ingested(database, remote.name, sha256):
        # Touched or copied again without changes: remember this listing, load nothing.
        _remember(database, remote, sha256, IngestOutcome.SKIPPED, None, run)
        return PulledFile(remote.name, IngestOutcome.SKIPPED)
    if config.pgp_home is not None and remote.name.lower().endswith(PGP_SUFFIXES):
        clear = tmp / "decrypted"
        decrypt_file(local, clear, config.pgp_home, config.pgp_passphrase)
        local = clear
    source = f"{config.inbox_url.rstrip('/')}/{remote.name}"
    report = apply(local, source, remote)
    outcome = IngestOutcome.APPLIED if report.applied else IngestOutcome.REJECTED
    _remember(database, remote, sha256, outcome, report, run)
    if config.archive:
        folder = "archive" if report.applied else "rejected"
        transport.makedirs(folder)
        if not report.applied:
            note = tmp / "report.txt"
            note.write_text("\n".join(report.lines()) + "\n", encoding="utf-8")
            transport.upload(note, f"{folder}/{remote.name}.report.txt")
        transport.rename(remote.name, f"{folder}/{remote.name}")
    log.info("pulled file", extra={"fields": {"file": remote.name, "outcome": outcome,
                                              "records": report.records,
                                              "rejected": report.rejected}})
    return PulledFile(remote.name, outcome, report)


def _remember(database: Database, remote: RemoteFile, sha256: str, status: str,
              report: Applied | None, run: SyncRun) -> None:
    with database.session() as db:
        db.add(IngestedFile(name=remote.name, size=remote.size, mtime=remote.mtime,
                            sha256=sha256, status=status,
                            records=report.records if report else 0,
                            rejected=report.rejected if report else 0, run_id=run.id,
                            import_run_id=report.run_id if report else None, seen_at=utcnow()))


# --- push ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Interval:
    """A span of the biller's local time: [start, end)."""

    start: datetime  # aware, local zone
    end: datetime

    @property
    def utc(self) -> tuple[datetime, datetime]:
        """The same span in UTC, for querying paid_at."""
        return self.start.astimezone(UTC), self.end.astimezone(UTC)


def interval_containing(moment: datetime, minutes: int, zone: ZoneInfo) -> Interval:
    """The interval of ``minutes`` (dividing a day) that ``moment`` falls in, local time."""
    local = moment.astimezone(zone)
    midnight = datetime.combine(local.date(), time(0), tzinfo=zone)
    # Wall-clock arithmetic: a day interval is a calendar day even across DST changes.
    index = (local.hour * 60 + local.minute) // minutes
    start_wall = datetime.combine(local.date(), time(0)) + timedelta(minutes=index * minutes)
    end_wall = start_wall + timedelta(minutes=minutes)
    start = start_wall.replace(tzinfo=zone) if index else midnight
    end = end_wall.replace(tzinfo=zone)
    return Interval(start, end)


def parse_interval(text: str, minutes: int, zone: ZoneInfo) -> Interval:
    """``2026-11-26`` (that local day, or its first interval when shorter than a day) or
    ``2026-11-26T14:00`` (the interval starting then)."""
    try:
        if "T" in text:
            moment = datetime.fromisoformat(text).replace(tzinfo=zone)
        else:
            moment = datetime.combine(date.fromisoformat(text), time(0), tzinfo=zone)
    except ValueError:
        raise SyncError(f"--interval {text!r}: expected YYYY-MM-DD or YYYY-MM-DDTHH:MM") from None
    interval = interval_containing(moment, minutes, zone)
    if interval.start != moment:
        raise SyncError(f"--interval {text!r} is not the start of a {minutes}-minute interval")
    return interval


def file_name(prefix: str, interval: Interval, minutes: int) -> str:
    """``payments_20261126.csv`` for a day, ``payments_20261126_1400.csv`` for shorter."""
    stamp = f"{interval.start:%Y%m%d}" if minutes == 1440 else f"{interval.start:%Y%m%d_%H%M}"
    return f"{prefix}_{stamp}.csv"


def _in_interval(interval: Interval) -> tuple[ColumnElement[bool], ...]:
    """The payments a confirmation file of ``interval`` holds."""
    start, end = interval.utc
    return (Payment.paid_at >= start, Payment.paid_at < end,
            Payment.posting_status != PostingStatus.TEST)


def _rows(database: Database, interval: Interval) -> Iterator[PaymentRow]:
    with database.session() as db:
        stmt = (select(Payment).where(*_in_interval(interval))
                .order_by(Payment.paid_at, Payment.id).execution_options(yield_per=1000))
        for payment in db.scalars(stmt):
            yield PaymentRow(
                account_number=payment.account_number, amount_cents=payment.amount_cents,
                fee_cents=payment.fee_cents, paid_at=payment.paid_at,
                confirmation_number=payment.confirmation_code, method=payment.method,
                card_brand=payment.card_brand, last4=payment.card_last4 or payment.bank_last,
                currency=payment.currency, idempotency_key=payment.idempotency_key,
                call_sid=payment.call_sid)


_PROGRESS_EVERY = 1000  # rows between two reports to a progress callback


def _reporting(rows: Iterator[PaymentRow], phase: str, total: int,
               progress: ProgressCallback) -> Iterator[PaymentRow]:
    """``rows`` as they are; each thousandth written, and the last, told to ``progress``."""
    progress(Progress(phase, 0, total))
    written = 0
    for written, row in enumerate(rows, 1):
        yield row  # resumed once the row has been written
        if written % _PROGRESS_EVERY == 0:
            progress(Progress(phase, written, total, rows=written))
    progress(Progress(phase, written, max(total, written), rows=written))


def write_interval(database: Database, config: SyncConfig, interval: Interval,
                   out: IO[bytes], *, progress: ProgressCallback | None = None
                   ) -> tuple[int, int]:
    """Write the interval's confirmation file; returns (count, sum cents)."""
    rows = _rows(database, interval)
    if progress is not None:
        with database.session() as db:
            total = db.scalar(select(func.count()).select_from(Payment)
                              .where(*_in_interval(interval))) or 0
        rows = _reporting(rows, "writing", total, progress)
    start, end = interval.utc
    return write_payment_file(rows, out, config.payment_layout,
                              reversals=reversal_rows(database, start, end))


def intervals_due(database: Database, config: SyncConfig, zone: ZoneInfo,
                  now: datetime) -> list[Interval]:
    """Every closed, settled interval after the last one pushed (or from the first payment)."""
    minutes = config.interval_minutes
    settled = interval_containing(now - config.settle, minutes, zone).start  # exclusive
    with database.session() as db:
        last_end = db.scalar(select(SyncRun.interval_end).where(
            SyncRun.kind == SyncKind.PUSH, SyncRun.status == SyncRunStatus.OK)
            .order_by(SyncRun.interval_end.desc()).limit(1))
        first_paid = db.scalar(select(Payment.paid_at).order_by(Payment.paid_at).limit(1))
    first_arranged = first_created(database) if config.arrangement_layout else None
    if first_arranged is not None and (first_paid is None or first_arranged < first_paid):
        first_paid = first_arranged
    if last_end is not None:
        cursor = interval_containing(last_end, minutes, zone)
    elif first_paid is not None:
        cursor = interval_containing(first_paid, minutes, zone)
    else:  # nothing ever: the latest closed interval, so the biller sees an empty file
        cursor = interval_containing(settled - timedelta(minutes=1), minutes, zone)
    due: list[Interval] = []
    while cursor.end <= settled and len(due) < 10_000:
        due.append(cursor)
        cursor = interval_containing(cursor.end, minutes, zone)
    return due


@dataclass
class PushedArrangements:
    """One arrangement confirmation file sent."""

    name: str
    arrangements: int
    rows: int  # one per instalment
    sum_cents: int  # of the instalments
    sha256: str


@dataclass
class PushedFile:
    """One interval's payment confirmation file sent, and its arrangement file if any."""

    name: str
    count: int
    sum_cents: int
    sha256: str
    interval: Interval
    arrangements: PushedArrangements | None = None


def push(database: Database, config: SyncConfig, zone: ZoneInfo, *,
         interval: Interval | None = None, now: datetime | None = None,
         progress: ProgressCallback | None = None) -> list[PushedFile]:
    """Push one interval, or every interval due; each becomes one file."""
    if not config.outbox_url:
        raise SyncError("IVR_SYNC_OUTBOX_URL is not set")
    moment = now or utcnow()
    if interval is not None and interval.end > moment - config.settle:
        raise SyncError(f"interval {interval.start:%Y-%m-%d %H:%M} to {interval.end:%H:%M} "
                        "has not closed yet (payments may still arrive in it)")
    pushed: list[PushedFile] = []
    with job_lock(database, "sync-push", config.lock_ttl), \
            tempfile.TemporaryDirectory(prefix="ivr-push-") as tmp, \
            open_transport(config.outbox_url, config.transport_settings) as transport:
        todo = [interval] if interval else intervals_due(database, config, zone, moment)
        for item in todo:
            with recorded_run(database, SyncKind.PUSH) as run:
                run.interval_start, run.interval_end = item.utc
                sent = _push_one(database, config, transport, item, Path(tmp), progress)
                run.files = [{"name": sent.name, "count": sent.count,
                              "sum_cents": sent.sum_cents, "sha256": sent.sha256}]
                sent.arrangements = _push_arrangements(database, config, transport, item,
                                                       Path(tmp))
                if sent.arrangements is not None:
                    extra = sent.arrangements
                    run.files = [*run.files, {"name": extra.name, "arrangements":
                                              extra.arrangements, "count": extra.rows,
                                              "sum_cents": extra.sum_cents,
                                              "sha256": extra.sha256}]
                run.records = sent.count
                pushed.append(sent)
    return pushed


def _push_one(database: Database, config: SyncConfig, transport: Transport, interval: Interval,
              tmp: Path, progress: ProgressCallback | None) -> PushedFile:
    name = file_name(config.file_prefix, interval, config.interval_minutes)
    local = tmp / name
    with local.open("wb") as out:
        count, total = write_interval(database, config, interval, out,
                                      progress=_naming(progress, name))
    name, digest = _send(config, transport, local, tmp)
    log.info("pushed file", extra={"fields": {"file": name, "count": count,
                                              "sum_cents": total}})
    return PushedFile(name, count, total, digest, interval)


def _send(config: SyncConfig, transport: Transport, local: Path,
          tmp: Path) -> tuple[str, str]:
    """Upload a written file (encrypted when PGP is set); its remote name and sha256."""
    name = local.name
    digest = hashlib.sha256(local.read_bytes()).hexdigest()
    if config.pgp_recipient and config.pgp_home:
        encrypted = tmp / (name + ".pgp")
        encrypt_file(local, encrypted, config.pgp_recipient, config.pgp_home)
        local, name = encrypted, name + ".pgp"
    try:
        transport.upload(local, name)
    except TransferError as exc:
        raise SyncError(f"upload of {name} failed: {exc}") from exc
    return name, digest


def _push_arrangements(database: Database, config: SyncConfig, transport: Transport,
                       interval: Interval, tmp: Path) -> PushedArrangements | None:
    """The interval's arrangement confirmation file, when one is due (docs/sync.md)."""
    layout = config.arrangement_layout
    if layout is None:
        return None
    start, end = interval.utc
    made = count_created(database, start, end)
    if not made and not config.arrangement_every_interval:
        return None
    local = tmp / file_name(config.arrangement_prefix, interval, config.interval_minutes)
    with local.open("wb") as out:
        rows, total = write_arrangement_file(arrangement_rows(database, start, end), out,
                                             layout)
    name, digest = _send(config, transport, local, tmp)
    log.info("pushed file", extra={"fields": {"file": name, "arrangements": made,
                                              "count": rows, "sum_cents": total}})
    return PushedArrangements(name, made, rows, total, digest)
