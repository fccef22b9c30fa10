"""`ivr sync pull` and `ivr sync push` through a real OpenSSH sshd on 127.0.0.1."""

from __future__ import annotations

import io
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner
from flask import Flask
from sqlalchemy import select

from connectors.files.layouts import DEFAULT_PAYMENT_LAYOUT, read_payment_file
from ivr.accounts.sync import Interval, SyncConfig, SyncError, interval_containing, pull, push
from ivr.cli import main
from ivr.models import Account, IngestedFile, JobLock, Payment, SyncRun, utcnow
from ivr.simulator.demo import demo_file, demo_rows
from ivr.web.app import get_config, get_database
from tests.conftest import OPEN_TIME, REPO, call, make_app, unavailable
from tests.servers.sshd import SshdServer

pytestmark = pytest.mark.slow

CHICAGO = ZoneInfo("America/Chicago")
# The demo file's accounts (the same whatever the day).
DEMO_COUNT = len(demo_rows(utcnow().date()))



def sync_settings(sshd: SshdServer, **extra: str) -> dict[str, str]:
    return {"IVR_SYNC_INBOX_URL": sshd.url("inbox"), "IVR_SYNC_OUTBOX_URL": sshd.url("outbox"),
            **sshd.settings(), **extra}


def sync_app(database_url: str, sshd: SshdServer, **extra: str) -> Flask:
    return make_app(database_url, REPO / "prompts", sync_settings=sync_settings(sshd, **extra))


def config_of(app: Flask) -> SyncConfig:
    return SyncConfig.from_settings(get_config(app).sync_settings)


def balance(app: Flask, number: str) -> int:
    with get_database(app).session() as db:
        account = db.scalar(select(Account).where(Account.account_number == number))
        assert account is not None
        return account.balance_due_cents


def account_file(**balances: str) -> bytes:
    """The demo accounts file with some balances changed (trailer recomputed)."""
    from decimal import Decimal

    lines = demo_file(OPEN_TIME.date()).decode().splitlines()
    out, total = [lines[0]], Decimal(0)
    for line in lines[1:-1]:
        cells = line.split(",")
        new = balances.get(f"a{cells[0]}")
        if new is not None:
            cells[5] = new
        total += Decimal(cells[5])
        out.append(",".join(cells))
    out.append(f"TRAILER,{len(out) - 1},{total:.2f}")
    return ("\r\n".join(out) + "\r\n").encode()


def put(sshd: SshdServer, name: str, data: bytes, mtime: int | None = None) -> Path:
    path = sshd.root / "inbox" / name
    path.write_bytes(data)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def test_pulled_file_updates_the_cache_and_the_next_call_hears_it(
        database_url: str, sshd: SshdServer) -> None:
    app = sync_app(database_url, sshd)
    put(sshd, "accounts_20261201.csv", account_file(a4401001234="250.00"))
    [result] = pull(get_database(app), config_of(app), pin_key="test-pin-key")
    assert result.outcome == "applied"
    assert balance(app, "4401001234") == 25000
    assert (sshd.root / "inbox" / "archive" / "accounts_20261201.csv").exists()
    assert not (sshd.root / "inbox" / "accounts_20261201.csv").exists()
    said = call(app, "1 60614 -").said()
    assert "two hundred fifty dollars" in said
    with get_database(app).session() as db:
        [run] = db.scalars(select(SyncRun)).all()
        assert run.kind == "pull" and run.status == "ok" and run.records == DEMO_COUNT


def test_the_same_remote_file_is_loaded_once(sqlite_url: str, sshd: SshdServer) -> None:
    app = sync_app(sqlite_url, sshd, IVR_SYNC_ARCHIVE="0")
    data = account_file(a4401001234="250.00")
    put(sshd, "accounts.csv", data, mtime=1_790_000_000)
    assert [r.outcome for r in pull(get_database(app), config_of(app), pin_key="k")] == [
        "applied"]
    # A cashier pays by other means; then the same file is seen again: nothing reloads.
    with get_database(app).session() as db:
        account = db.scalar(select(Account).where(Account.account_number == "4401001234"))
        assert account is not None
        account.balance_due_cents = 100
    assert [r.outcome for r in pull(get_database(app), config_of(app), pin_key="k")] == [
        "skipped"]
    # Copied again (new mtime), same bytes: still loaded once.
    put(sshd, "accounts.csv", data, mtime=1_790_000_500)
    assert [r.outcome for r in pull(get_database(app), config_of(app), pin_key="k")] == [
        "skipped"]
    assert balance(app, "4401001234") == 100
    with get_database(app).session() as db:
        assert len(db.scalars(select(IngestedFile)).all()) == 2


@pytest.mark.parametrize(("name", "mangle", "why"), [
    ("bad_trailer.csv", lambda d: d.replace(f"TRAILER,{DEMO_COUNT},".encode(),
                                            f"TRAILER,{DEMO_COUNT + 1},".encode()),
     "trailer"),
    ("bad_rows.csv", lambda d: d.replace(b"312.80", b"31x.80"), "balance_due"),
    ("cp1252.csv", lambda d: d.replace("Martínez".encode(), "Martínez".encode("cp1252")),
     "line"),
    ("truncated.csv", lambda d: d[: len(d) // 2], ""),
])
def test_bad_files_are_rejected_with_a_report_and_the_cache_kept(
        sqlite_url: str, sshd: SshdServer, name: str, mangle: object, why: str) -> None:
    app = sync_app(sqlite_url, sshd)
    data = account_file(a4401001234="999.00")
    assert callable(mangle)
    put(sshd, name, mangle(data))
    with pytest.raises(SyncError, match="rejected 1 file"):
        pull(get_database(app), config_of(app), pin_key="k")
    assert balance(app, "4401001234") == 12345
    report = (sshd.root / "inbox" / "rejected" / f"{name}.report.txt").read_text()
    assert "REJECTED" in report and why in report
    assert (sshd.root / "inbox" / "rejected" / name).exists()
    with get_database(app).session() as db:
        [run] = db.scalars(select(SyncRun)).all()
        assert run.status == "failed" and run.rejected == 1


def test_changed_host_key_is_refused(sqlite_url: str, sshd: SshdServer,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    put(sshd, "accounts.csv", account_file(a4401001234="250.00"))
    sshd.regenerate_host_key()
    for key, value in sync_settings(sshd).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("IVR_DATABASE_URL", sqlite_url)
    make_app(sqlite_url, REPO / "prompts")  # migrated and seeded
    result = CliRunner().invoke(main, ["sync", "pull"])
    assert result.exit_code != 0
    assert "CHANGED" in result.output or "changed" in result.output.lower()


def add_payment(app: Flask, paid_at: datetime, cents: int, code: str) -> None:
    with get_database(app).session() as db:
        account = db.scalar(select(Account).where(Account.account_number == "4401001234"))
        assert account is not None
        db.add(Payment(idempotency_key=f"key-{code}", call_sid=f"CA{code}", confirmation_code=code,
                       account_id=account.id, account_number=account.account_number,
                       amount_cents=cents, fee_cents=0, method="card", card_brand="visa",
                       card_last4="1111", paid_at=paid_at))


def day(text: str) -> Interval:
    moment = datetime.fromisoformat(text).replace(tzinfo=CHICAGO)
    return interval_containing(moment, 1440, CHICAGO)


def test_pushed_file_holds_exactly_the_interval_and_reruns_identically(
        database_url: str, sshd: SshdServer) -> None:
    app = sync_app(database_url, sshd)
    nov30 = day("2026-11-30")
    # Just inside and just outside the local day (America/Chicago is UTC-6 in winter).
    add_payment(app, datetime(2026, 11, 30, 6, 0, tzinfo=UTC), 1000, "EDGE0000")  # 00:00 local
    add_payment(app, datetime(2026, 12, 1, 5, 59, 59, tzinfo=UTC), 2000, "EDGE2359")
    add_payment(app, datetime(2026, 11, 30, 5, 59, 59, tzinfo=UTC), 3000, "BEFORE00")
    add_payment(app, datetime(2026, 12, 1, 6, 0, tzinfo=UTC), 4000, "AFTER000")
    now = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    [sent] = push(get_database(app), config_of(app), CHICAGO, interval=nov30, now=now)
    assert sent.name == "payments_20261130.csv"
    path = sshd.root / "outbox" / sent.name
    first = path.read_bytes()
    rows = list(read_payment_file(io.BytesIO(first), DEFAULT_PAYMENT_LAYOUT))
    assert [r.confirmation_number for r in rows] == ["EDGE0000", "EDGE2359"]
    assert (sent.count, sent.sum_cents) == (2, 3000)
    assert b"4111" not in first.replace(b"1111", b"")  # last 4 only
    # Again: byte-identical, no duplicates; no .part left behind.
    push(get_database(app), config_of(app), CHICAGO, interval=nov30, now=now)
    assert path.read_bytes() == first
    assert not list((sshd.root / "outbox").glob("*.part"))


def test_push_catches_up_every_closed_interval_without_gaps(
        sqlite_url: str, sshd: SshdServer) -> None:
    app = sync_app(sqlite_url, sshd)
    add_payment(app, datetime(2026, 11, 28, 18, 0, tzinfo=UTC), 500, "NOV28AAA")
    add_payment(app, datetime(2026, 11, 30, 18, 0, tzinfo=UTC), 700, "NOV30AAA")
    now = datetime(2026, 12, 1, 7, 0, tzinfo=UTC)  # 01:00 Dec 1 local; Nov 30 has settled
    sent = push(get_database(app), config_of(app), CHICAGO, now=now)
    assert [s.name for s in sent] == ["payments_20261128.csv", "payments_20261129.csv",
                                      "payments_20261130.csv"]
    assert [s.count for s in sent] == [1, 0, 1]
    empty = (sshd.root / "outbox" / "payments_20261129.csv").read_bytes()
    assert empty.splitlines()[0].startswith(b"account_number")  # header
    assert empty.splitlines()[-1] == b"TRAILER,0,0.00"
    # A later run continues where the last one stopped; the open day is never pushed.
    add_payment(app, datetime(2026, 12, 1, 18, 0, tzinfo=UTC), 900, "DEC01AAA")
    assert push(get_database(app), config_of(app), CHICAGO, now=now) == []
    later = push(get_database(app), config_of(app), CHICAGO,
                 now=datetime(2026, 12, 2, 7, 0, tzinfo=UTC))
    assert [(s.name, s.count) for s in later] == [("payments_20261201.csv", 1)]


def test_an_open_interval_is_refused(sqlite_url: str, sshd: SshdServer) -> None:
    app = sync_app(sqlite_url, sshd)
    with pytest.raises(SyncError, match="not closed"):
        push(get_database(app), config_of(app), CHICAGO, interval=day("2026-12-01"),
             now=datetime(2026, 12, 1, 20, 0, tzinfo=UTC))


def test_a_running_twin_is_refused(sqlite_url: str, sshd: SshdServer) -> None:
    app = sync_app(sqlite_url, sshd)
    with get_database(app).session() as db:
        db.add(JobLock(name="sync-pull", holder="other-host:123", acquired_at=utcnow(),
                       expires_at=utcnow() + timedelta(minutes=30)))
    with pytest.raises(SyncError, match="another sync-pull is running"):
        pull(get_database(app), config_of(app), pin_key="k")
    # A lock whose holder died (expired) is taken over.
    with get_database(app).session() as db:
        lock = db.get(JobLock, "sync-pull")
        assert lock is not None
        lock.expires_at = utcnow() - timedelta(seconds=1)
    assert pull(get_database(app), config_of(app), pin_key="k") == []


def test_cli_push_and_runs(sqlite_url: str, sshd: SshdServer,
                           monkeypatch: pytest.MonkeyPatch) -> None:
    app = sync_app(sqlite_url, sshd)
    # The command uses the real clock: a day already over.
    past = (utcnow() - timedelta(days=3)).astimezone(CHICAGO).date()
    add_payment(app, datetime.combine(past, datetime.min.time(), CHICAGO) + timedelta(hours=9),
                700, "CLI00001")
    for key, value in sync_settings(sshd).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("IVR_DATABASE_URL", sqlite_url)
    result = CliRunner().invoke(main, ["sync", "push", "--interval", past.isoformat()])
    assert result.exit_code == 0, result.output
    assert f"payments_{past:%Y%m%d}.csv: 1 payments, $7.00" in result.output
    runs = CliRunner().invoke(main, ["sync", "runs", "--json"])
    assert '"kind": "push"' in runs.output
    bad = CliRunner().invoke(main, ["sync", "push", "--interval", "2026-13-40"])
    assert bad.exit_code != 0 and "YYYY-MM-DD" in bad.output


def test_sync_with_a_local_folder(sqlite_url: str, tmp_path: Path) -> None:
    inbox, outbox = tmp_path / "in", tmp_path / "out"
    inbox.mkdir()
    outbox.mkdir()
    app = make_app(sqlite_url, REPO / "prompts", sync_settings={
        "IVR_SYNC_INBOX_URL": f"file://{inbox}", "IVR_SYNC_OUTBOX_URL": f"file://{outbox}"})
    (inbox / "accounts.csv").write_bytes(account_file(a4401001234="10.00"))
    [result] = pull(get_database(app), config_of(app), pin_key="k")
    assert result.outcome == "applied" and balance(app, "4401001234") == 1000
    assert (inbox / "archive" / "accounts.csv").exists()


def test_pgp_both_ways(sqlite_url: str, sshd: SshdServer, tmp_path: Path) -> None:
    import shutil
    import subprocess
    import tempfile

    from connectors.files.pgp import decrypt_file, encrypt_file
    from tests.test_layouts import _keyring

    if shutil.which("gpg") is None:
        unavailable("GnuPG (gpg) is not installed")
    root = Path(tempfile.mkdtemp(prefix="gpg", dir="/tmp"))  # short: gpg-agent socket path
    ring = _keyring(root, "ivr", None)
    try:
        app = sync_app(sqlite_url, sshd, IVR_PGP_HOME=str(ring.home),
                       IVR_PGP_RECIPIENT=ring.fingerprint)
        # Inbound: the biller encrypts the account file to our key.
        plain = tmp_path / "accounts.csv"
        plain.write_bytes(account_file(a4401001234="42.00"))
        inbound = sshd.root / "inbox" / "accounts.csv.pgp"
        encrypt_file(plain, inbound, ring.fingerprint, ring.home)
        inbound.chmod(0o644)  # as if the biller had uploaded it as the SFTP user
        [pulled] = pull(get_database(app), config_of(app), pin_key="k")
        assert pulled.outcome == "applied" and balance(app, "4401001234") == 4200
        # Outbound: the confirmation file is encrypted to the biller's key.
        add_payment(app, datetime(2026, 11, 30, 18, 0, tzinfo=UTC), 4200, "PGP00001")
        [sent] = push(get_database(app), config_of(app), CHICAGO, interval=day("2026-11-30"),
                      now=datetime(2026, 12, 1, 12, 0, tzinfo=UTC))
        assert sent.name == "payments_20261130.csv.pgp"
        sealed = (sshd.root / "outbox" / sent.name).read_bytes()
        assert b"PGP00001" not in sealed
        opened = tmp_path / "back.csv"
        decrypt_file(sshd.root / "outbox" / sent.name, opened, ring.home, None)
        with opened.open("rb") as stream:
            rows = list(read_payment_file(stream, DEFAULT_PAYMENT_LAYOUT))
        assert [r.confirmation_number for r in rows] == ["PGP00001"]
    finally:
        subprocess.run(["gpgconf", "--homedir", str(ring.home), "--kill", "gpg-agent"],  # noqa: S603,S607
                       check=False)
        shutil.rmtree(root, ignore_errors=True)
