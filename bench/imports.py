"""Account-file import and confirmation-file export speed, against bare baselines.

Import: a generated N-row account file (default layout) into SQLite and PostgreSQL through
`ivr` (stream parse and validate, staged load, one merge), against a bare load of the same
rows in the same run (csv.reader + sqlite3 executemany; csv.reader + PostgreSQL COPY) into a
plain table, which is the limit. Export: M payments written as a confirmation file by the
default payment layout, against a bare csv.writer of the same values. Each phase runs in a
fresh process so its peak memory (ru_maxrss) is its own.

Webhooks (bench/webhook_load.py): on the database the import filled, `ivr serve` answers
signed webhooks from closed-loop callers (caller-ID lookup, verification), first idle, then
while `ivr accounts import` loads the next night's file (the same accounts, every balance
changed); p50/p99/max of each, p99 during/idle, failed webhooks and the import's time.

Usage: python -m bench.imports [--rows 1000000] [--payments 100000] [--postgres URL]
       [--no-webhooks] [--idle-seconds 30] [--callers 2] [--pause-ms 30] [--timeline]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

# The default layout's header is every column of the schema.
from connectors.files.columns import COLUMN_NAMES as COLUMNS  # noqa: E402

DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/ivr_bench"


def phone(i: int) -> str:
    """Row ``i``'s phone: one account per phone, so a caller ID matches exactly one account."""
    return f"+1312{2000000 + i % 8000000:07d}"


def service_zip(i: int) -> str:
    """Row ``i``'s service ZIP (what a caller types to verify)."""
    return f"{60600 + i % 99:05d}"


def make_account_file(path: Path, rows: int, variant: int = 0) -> None:
    """A realistic file: a phone on every row, some past due, some pending disconnection.

    Another ``variant`` is the same accounts with every balance (and past-due amount) changed:
    the next night's file.
    """
    base = date(2026, 12, 15)
    total = 0
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, lineterminator="\r\n")
        writer.writerow(COLUMNS)
        for i in range(rows):
            # 4999 is prime to 50000: every balance moves unless variant is a multiple of 50000.
            cents = (i * 7919 + 4999 * variant) % 50000 - 2000
            total += cents
            pending = i % 97 == 0
            values = {
                "account_number": f"{1000000000 + i}", "customer_name": f"Customer {i}, Jr.",
                "phones": phone(i), "service_zip": service_zip(i),
                "balance_due": _money(cents),
                "past_due_amount": _money(max(0, cents // 3)) if pending else "0.00",
                "due_date": (base + timedelta(days=i % 28)).isoformat(),
                "last_payment_amount": "45.10", "last_payment_date": "2026-11-10",
                "status": "disconnect_pending" if pending else "active",
                "disconnect_date": "2026-12-20" if pending else "",
                "usage_amount": str(300 + i % 900), "usage_unit": "kWh",
                "usage_period_end": "2026-11-20", "language": "es" if i % 5 == 0 else "en",
                "payment_allowed": "Y",
            }
            # Columns without a value here (a PIN, any column added since) are left blank.
            writer.writerow([values.get(name, "") for name in COLUMNS])
        writer.writerow(["TRAILER", rows, _money(total)])


def _money(cents: int) -> str:
    sign = "-" if cents < 0 else ""
    return f"{sign}{abs(cents) // 100}.{abs(cents) % 100:02d}"


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def phase_ours(file: Path, url: str) -> dict[str, float]:
    """Import through ivr: parse, validate, stage, merge."""
    from ivr.accounts.importer import import_accounts
    from ivr.db import Database

    database = Database(url)
    database.upgrade()
    started = time.perf_counter()
    with file.open("rb") as stream:
        report = import_accounts(database, stream, str(file), pin_key="bench")
    elapsed = time.perf_counter() - started
    assert report.applied, report.lines()[:5]
    database.dispose()
    return {"seconds": elapsed, "rows": report.records, "peak_mb": _peak_mb()}


def phase_bare_sqlite(file: Path, url: str) -> dict[str, float]:
    """csv.reader + executemany into a plain table: the least work that loads the rows."""
    path = url.removeprefix("sqlite:///")
    conn = sqlite3.connect(path)
    conn.execute(f"CREATE TABLE bare ({', '.join(c + ' TEXT' for c in COLUMNS)})")
    started = time.perf_counter()
    count = 0
    with file.open(encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        next(reader)
        batch: list[list[str]] = []
        marks = ", ".join("?" * len(COLUMNS))
        for row in reader:
            if row[0] == "TRAILER":
                continue
            batch.append(row)
            if len(batch) == 5000:
                conn.executemany(f"INSERT INTO bare VALUES ({marks})", batch)  # noqa: S608
                count += len(batch)
                batch = []
        conn.executemany(f"INSERT INTO bare VALUES ({marks})", batch)  # noqa: S608
        count += len(batch)
    conn.commit()
    elapsed = time.perf_counter() - started
    conn.close()
    return {"seconds": elapsed, "rows": count, "peak_mb": _peak_mb()}


def phase_bare_postgres(file: Path, url: str) -> dict[str, float]:
    """csv.reader + COPY into a plain table."""
    import psycopg

    conn = psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"))
    conn.execute("DROP TABLE IF EXISTS bare")
    conn.execute(f"CREATE TABLE bare ({', '.join(c + ' TEXT' for c in COLUMNS)})")
    started = time.perf_counter()
    count = 0
    with file.open(encoding="utf-8", newline="") as f, conn.cursor() as cur, \
            cur.copy(f"COPY bare ({', '.join(COLUMNS)}) FROM STDIN") as copy:
        reader = csv.reader(f)
        next(reader)
        for row in reader:
            if row[0] != "TRAILER":
                copy.write_row(row)
                count += 1
    conn.commit()
    elapsed = time.perf_counter() - started
    conn.close()
    return {"seconds": elapsed, "rows": count, "peak_mb": _peak_mb()}


def _floor_tables(phone_id: str) -> list[str]:
    """Tables with the cache's keys: accounts unique by number, phones tied to their account
    by a foreign key, unique per account and indexed by number. Values stay text."""
    columns = ", ".join(f"{c} TEXT" for c in COLUMNS if c != "phones")
    return [
        f"CREATE TABLE floor_accounts (id INTEGER PRIMARY KEY, {columns}, "
        "UNIQUE (account_number))",
        f"CREATE TABLE floor_phones (id {phone_id}, account_id INTEGER NOT NULL "
        "REFERENCES floor_accounts (id), phone TEXT NOT NULL, UNIQUE (account_id, phone))",
        "CREATE INDEX ix_floor_phones_phone ON floor_phones (phone)",
    ]


def _floor_rows(file: Path) -> Iterator[tuple[int, list[str], str]]:
    """(account id, the row without its phones, its phones cell) for each data row."""
    at = COLUMNS.index("phones")
    with file.open(encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        next(reader)
        for n, row in enumerate(reader, 1):
            if row[0] != "TRAILER":
                yield n, row[:at] + row[at + 1:], row[at]


def phase_floor_sqlite(file: Path, url: str) -> dict[str, float]:
    """csv.reader + executemany into tables with the cache's keys (_floor_tables): what
    the cache's own indexes and foreign key cost, before any checking or merging."""
    conn = sqlite3.connect(url.removeprefix("sqlite:///"))
    conn.execute("PRAGMA foreign_keys = ON")
    for statement in _floor_tables("INTEGER PRIMARY KEY"):
        conn.execute(statement)
    names = [c for c in COLUMNS if c != "phones"]
    insert_account = (f"INSERT INTO floor_accounts (id, {', '.join(names)}) "  # noqa: S608
                      f"VALUES (?, {', '.join('?' * len(names))})")
    started = time.perf_counter()
    count = 0
    accounts: list[list[object]] = []
    phones: list[tuple[int, str]] = []
    for n, values, cell in _floor_rows(file):
        accounts.append([n, *values])
        phones.append((n, cell))
        if len(accounts) == 5000:
            conn.executemany(insert_account, accounts)
            conn.executemany("INSERT INTO floor_phones (account_id, phone) VALUES (?, ?)",
                             phones)
            count += len(accounts)
            accounts, phones = [], []
    conn.executemany(insert_account, accounts)
    conn.executemany("INSERT INTO floor_phones (account_id, phone) VALUES (?, ?)", phones)
    count += len(accounts)
    conn.commit()
    elapsed = time.perf_counter() - started
    conn.close()
    return {"seconds": elapsed, "rows": count, "peak_mb": _peak_mb()}


def phase_floor_postgres(file: Path, url: str) -> dict[str, float]:
    """csv.reader + COPY into tables with the cache's keys (_floor_tables)."""
    import psycopg

    conn = psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"))
    conn.execute("DROP TABLE IF EXISTS floor_phones, floor_accounts")
    for statement in _floor_tables("INTEGER GENERATED ALWAYS AS IDENTITY PRIMARY KEY"):
        conn.execute(statement)
    names = [c for c in COLUMNS if c != "phones"]
    started = time.perf_counter()
    count = 0
    with conn.cursor() as cur:
        with cur.copy(f"COPY floor_accounts (id, {', '.join(names)}) FROM STDIN") as copy:
            for n, values, _cell in _floor_rows(file):
                copy.write_row([n, *values])
                count += 1
        with cur.copy("COPY floor_phones (account_id, phone) FROM STDIN") as copy:
            for n, _values, cell in _floor_rows(file):
                copy.write_row((n, cell))
    conn.commit()
    elapsed = time.perf_counter() - started
    conn.close()
    return {"seconds": elapsed, "rows": count, "peak_mb": _peak_mb()}


def _payment_rows(count: int) -> list[tuple[str, int, int, datetime, str]]:
    start = datetime(2026, 11, 26, 6, 0, tzinfo=UTC)
    return [(f"{1000000000 + i}", 1000 + i % 90000, 0 if i % 3 else 295,
             start + timedelta(seconds=i), f"C{i:09d}") for i in range(count)]


def phase_export_ours(count: int) -> dict[str, float]:
    """The default confirmation layout writing ``count`` payments."""
    from connectors.files.layouts import DEFAULT_PAYMENT_LAYOUT, PaymentRow, write_payment_file

    rows = [PaymentRow(account_number=a, amount_cents=c, fee_cents=f, paid_at=t,
                       confirmation_number=code, method="card", card_brand="visa",
                       last4="1111") for a, c, f, t, code in _payment_rows(count)]
    with tempfile.TemporaryFile() as out:
        started = time.perf_counter()
        written, _total = write_payment_file(rows, out, DEFAULT_PAYMENT_LAYOUT)
        elapsed = time.perf_counter() - started
    return {"seconds": elapsed, "rows": written, "peak_mb": _peak_mb()}


def phase_export_bare(count: int) -> dict[str, float]:
    """csv.writer of the same values, formatted the simplest way."""
    data = _payment_rows(count)
    with tempfile.TemporaryFile("w", newline="") as out:
        started = time.perf_counter()
        writer = csv.writer(out)
        writer.writerow(["account_number", "amount", "fee", "paid_at", "confirmation_number",
                         "method", "card_brand", "last4"])
        for a, c, f, t, code in data:
            writer.writerow([a, f"{c // 100}.{c % 100:02d}", f"{f // 100}.{f % 100:02d}",
                             t.isoformat(), code, "card", "visa", "1111"])
        writer.writerow(["TRAILER", count, "0"])
        elapsed = time.perf_counter() - started
    return {"seconds": elapsed, "rows": count, "peak_mb": _peak_mb()}


def _fresh_postgres(url: str) -> None:
    import psycopg
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    admin = parsed.set(database="postgres").render_as_string(hide_password=False)
    with psycopg.connect(admin.replace("postgresql+psycopg://", "postgresql://"),
                         autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{parsed.database}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{parsed.database}"')


def run_phase(*args: str) -> dict[str, float]:
    """Run one phase in a fresh interpreter; returns its figures."""
    output = subprocess.run(  # noqa: S603 - this very script
        [sys.executable, "-m", "bench.imports", "--phase", *args], cwd=REPO, check=True,
        capture_output=True, text=True, env={**os.environ, "IVR_LOG_LEVEL": "WARNING"}).stdout
    figures: dict[str, float] = json.loads(output.strip().splitlines()[-1])
    return figures


def webhook_phase(label: str, url: str, file: Path, rows: int, work: Path,
                  args: argparse.Namespace) -> None:
    """Webhook latency on ``url`` (which holds the accounts) idle, then while ``file`` (the
    same accounts, every balance changed) is imported by `ivr accounts import`."""
    from bench.webhook_load import Caller, Latency, PostgresProbe, measure, serving, settle

    rng = random.Random(7)
    callers = [Caller(phone(i), service_zip(i))
               for i in (rng.randrange(rows) for _ in range(min(rows, 5000)))]
    log = work / f"serve-{label.lower()}.log"
    settle(url)
    probe = PostgresProbe(url) if url.startswith("postgresql") else None
    try:
        with serving(url, log, workers=args.workers) as base_url:
            result = measure(base_url, callers, file, url, log, idle_seconds=args.idle_seconds,
                             threads=args.callers, pause=args.pause_ms / 1000,
                             probe=probe)
    finally:
        if probe is not None:
            probe.close()

    def row(name: str, latency: Latency) -> str:
        return f"{label:>10} webhooks {name:>13}: {latency.line()}"

    print(row("idle", result.idle))
    print(row("during import", result.during))
    status = "applied" if result.import_ok else "FAILED: " + result.import_output[-300:]
    print(f"{label:>10} webhooks: p99 during/idle {result.during.p99 / result.idle.p99:.2f}x | "
          f"failed {result.idle.failed + result.during.failed} | import under load "
          f"{result.import_seconds:.1f} s ({status})")
    for outcome, n in result.server_outcomes.items():
        print(f"{label:>10} server log: {n} {outcome}")
    for gist, n in result.unexpected.most_common(3):
        print(f"{label:>10} unexpected answer ({n}x): {gist}")
    if args.timeline:
        for line in result.timeline:
            print(f"{label:>10}   {line}")


def main() -> None:
    """Generate, run each phase, print figures and ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--payments", type=int, default=100_000)
    parser.add_argument("--postgres", default=DEFAULT_PG, help="'' to skip PostgreSQL")
    parser.add_argument("--webhooks", action=argparse.BooleanOptionalAction, default=True,
                        help="webhook latency while a second file is imported, against idle")
    # Long enough for an idle p99 of some 1,500 webhooks: over 10 s (about 480) it was the
    # fifth slowest, and moved the during/idle ratio by half from run to run.
    parser.add_argument("--idle-seconds", type=float, default=30.0)
    parser.add_argument("--callers", type=int, default=2, help="caller threads (closed loop)")
    parser.add_argument("--pause-ms", type=float, default=30.0,
                        help="each caller's pause between webhooks")
    parser.add_argument("--workers", type=int, default=2, help="ivr serve --workers")
    parser.add_argument("--timeline", action="store_true",
                        help="print the latency in tenths of the import (and, on PostgreSQL, "
                             "what the import was running)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the work folder (files, databases, server logs)")
    parser.add_argument("--repeat", type=int, default=3,
                        help="rounds of bare, floor and ivr, interleaved (min and median)")
    parser.add_argument("--phase", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        name, *rest = args.phase
        funcs = {"ours": phase_ours, "bare-sqlite": phase_bare_sqlite,
                 "bare-postgres": phase_bare_postgres, "floor-sqlite": phase_floor_sqlite,
                 "floor-postgres": phase_floor_postgres}
        if name in funcs:
            result = funcs[name](Path(rest[0]), rest[1])
        elif name == "export-ours":
            result = phase_export_ours(int(rest[0]))
        else:
            result = phase_export_bare(int(rest[0]))
        print(json.dumps(result))
        return
    work = Path(tempfile.mkdtemp(prefix="bench-imports-"))
    try:
        run_all(work, args)
    finally:
        if args.keep:
            print(f"work folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


DIALECTS = {"SQLite": "sqlite", "PostgreSQL": "postgres"}


def _print_import(label: str, runs: dict[str, list[dict[str, float]]]) -> None:
    """Min and median seconds of each, and ivr's ratios to the bare load and the floor."""
    def stat(kind: str) -> tuple[float, float]:
        seconds = [r["seconds"] for r in runs[kind]]
        return min(seconds), statistics.median(seconds)

    (bare_min, bare_med), (floor_min, floor_med), (ivr_min, ivr_med) = (
        stat("bare"), stat("floor"), stat("ivr"))
    rows = runs["ivr"][0]["rows"]
    peak = max(r["peak_mb"] for r in runs["ivr"])
    print(f"{label:>10} import, {len(runs['ivr'])} rounds, seconds min/median: "
          f"bare {bare_min:.1f}/{bare_med:.1f} | floor {floor_min:.1f}/{floor_med:.1f} | "
          f"ivr {ivr_min:.1f}/{ivr_med:.1f} ({rows / ivr_min:,.0f} rows/s, peak {peak:.0f} MB)")
    print(f"{label:>10} import: ivr takes {ivr_min / bare_min:.2f}x the bare load "
          f"({ivr_med / bare_med:.2f}x by median), {ivr_min / floor_min:.2f}x the floor "
          f"({ivr_med / floor_med:.2f}x); the floor is {floor_min / bare_min:.2f}x the bare load")


def run_all(work: Path, args: argparse.Namespace) -> None:
    """Every phase, in order, printing as it goes."""
    file = work / "accounts.csv"
    started = time.perf_counter()
    make_account_file(file, args.rows)
    size_mb = file.stat().st_size / 1e6
    print(f"account file: {args.rows:,} rows, {size_mb:.0f} MB "
          f"(generated in {time.perf_counter() - started:.1f} s)")
    next_file = work / "accounts-next.csv"
    if args.webhooks:
        make_account_file(next_file, args.rows, variant=1)
    targets = ["SQLite"] + (["PostgreSQL"] if args.postgres else [])
    for label in targets:
        runs: dict[str, list[dict[str, float]]] = {"bare": [], "floor": [], "ivr": []}
        for round_ in range(args.repeat):
            # Interleaved, each on a fresh database: noise hits all three alike.
            for kind in runs:
                if label == "PostgreSQL":
                    _fresh_postgres(args.postgres)
                    url = args.postgres
                else:
                    url = f"sqlite:///{work / f'{kind}-{round_}.sqlite3'}"
                phase = "ours" if kind == "ivr" else f"{kind}-{DIALECTS[label]}"
                runs[kind].append(run_phase(phase, str(file), url))
        _print_import(label, runs)
        if args.webhooks:
            # The last import's database: the next night's file goes on top.
            ours_url = (args.postgres if label == "PostgreSQL"
                        else f"sqlite:///{work / f'ivr-{args.repeat - 1}.sqlite3'}")
            webhook_phase(label, ours_url, next_file, args.rows, work, args)
    ours = run_phase("export-ours", str(args.payments))
    bare = run_phase("export-bare", str(args.payments))
    print(f"    export: ivr {ours['rows'] / ours['seconds']:9,.0f} rows/s "
          f"({ours['seconds']:.2f} s, peak {ours['peak_mb']:.0f} MB) | csv.writer "
          f"{bare['rows'] / bare['seconds']:9,.0f} rows/s ({bare['seconds']:.2f} s) | ivr takes "
          f"{ours['seconds'] / bare['seconds']:.2f}x")


if __name__ == "__main__":
    main()
