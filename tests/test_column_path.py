"""The column path reads exactly what the row path reads, or hands the file back.

The row path (connectors/files/account_reader.py) is the contract. For any file, the column
path (connectors/files/column_reader.py) must either give the very records and totals the
row path gives to a file it accepts whole, or raise NotClean; it must never accept a file
the row path refuses or a row it rejects. An import through either path leaves the same
cache, and a rejected file's report is the row path's, word for word.
"""

from __future__ import annotations

import io
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from connectors.files.column_reader import NotClean, read_columns
from connectors.files.columns import COLUMN_NAMES
from connectors.files.layouts import DEFAULT_ACCOUNT_LAYOUT, iter_layout_file
from connectors.files.rows import AccountFileError, FileSummary, Rejection
from ivr.accounts.importer import apply_account_records, import_account_file
from ivr.db import Database

# Cells near each column's rules: valid shapes, near misses, odd spacing and characters.
CELLS: dict[str, list[str]] = {
    "account_number": ["1001", "A-1", "--1", "---", "-7", "x" * 33, "AB CD", " 1002 ",
                       "\u0661\u0662", "1001"],
    "balance_due": ["12.34", "-5", "0.5", "00000000000001.00", " 7.00 ", "-0.00", "1.234",
                    "1e3", "", "9999999999999", "\uff11\uff12"],
    "status": ["active", "ACTIVE", "Disconnect_Pending", "closed", "gone", "", "İactive"],
    "disconnect_date": ["2026-12-01", "2026-02-30", "2026-1-05", "0000-01-01", "", "20261201",
                        "2024-02-29", "2023-02-29"],
    "customer_name": ["Ann", "José Núñez", "\u00a0Bob\u00a0", "", "n" * 201, "a,b", 'say "hi"'],
    "phones": ["+13125550123", "312-555-0123", "+13125550123;+13125550124", "", "12",
               "+1312555012", " +13125550199 ", "a;;"],
    "service_zip": ["60614", "60614-1234", "6061", "", "60614-12"],
    "pin": ["1234", "12345678", "", "123", "12a4"],
    "past_due_amount": ["0", "-0", "3.5", "", "-1.00"],
    "due_date": ["2026-12-10", "", "2026-13-01"],
    "usage_amount": ["640.5", "-3", "007", "", "1.2345", "1e2"],
    "usage_unit": ["kWh", "", "k\tWh", "m³", "u" * 33],
    "language": ["en", "ES", "fr", ""],
    "payment_allowed": ["Y", "n", "yes", ""],
}


# How many of each column's cells above are valid: most rows are drawn from these, so many
# files are clean and compared record by record.
VALID = {"account_number": 3, "balance_due": 6, "status": 4, "disconnect_date": 1,
         "customer_name": 4, "phones": 4, "service_zip": 2, "pin": 3, "past_due_amount": 4,
         "due_date": 2, "usage_amount": 4, "usage_unit": 2, "language": 2,
         "payment_allowed": 2}


def _cell(name: str, noisy: bool) -> st.SearchStrategy[str]:
    cells = CELLS.get(name, [""])
    return st.sampled_from(cells if noisy else cells[:VALID.get(name, 1)])


def _quote(cell: str) -> str:
    if any(ch in cell for ch in ',"\r\n') or cell != cell.strip():
        return '"' + cell.replace('"', '""') + '"'
    return cell


@st.composite
def account_files(draw: st.DrawFn) -> bytes:
    """A default-layout file: a header, rows of near-valid cells, perhaps a trailer."""
    names = draw(st.permutations(list(COLUMN_NAMES)))
    noisy = draw(st.booleans())  # half the files have only valid cells
    rows = draw(st.lists(st.fixed_dictionaries({n: _cell(n, noisy) for n in names}),
                         min_size=0, max_size=6))
    lines = [",".join(names)]
    for i, row in enumerate(rows):
        # Most account numbers unique; the sampled ones may collide on purpose.
        if draw(st.integers(0, 9)):
            row["account_number"] = f"9{i:04d}"
        lines.append(",".join(_quote(row[n]) for n in names))
    extra = draw(st.sampled_from(["", "blank", "commas", "trailer", "bad trailer",
                                  "short row", "junk after quote", "quote inside"]))
    if extra == "blank":
        lines.insert(len(lines) // 2 + 1, "")
    elif extra == "commas":
        lines.append("," * (len(names) - 1))
    elif extra == "trailer":
        total = 0
        for row in rows:
            try:
                cents = round(float(row["balance_due"]) * 100)
            except ValueError:
                cents = 0
            total += cents
        lines.append(f"TRAILER,{len(rows)},{total // 100}.{total % 100:02d}")
    elif extra == "bad trailer":
        lines.append(f"TRAILER,{len(rows) + 1},0.00")
    elif extra == "short row":
        lines.append("1,2")
    elif extra == "junk after quote":
        lines.append(",".join(['"1"x', *[""] * (len(names) - 1)]))
    elif extra == "quote inside":
        lines.append(",".join(['1"2', *[""] * (len(names) - 1)]))
    ending = draw(st.sampled_from(["\r\n", "\n"]))
    return (ending.join(lines) + ending).encode("utf-8")


def _row_path(data: bytes) -> tuple[list[object], FileSummary | None, str | None]:
    summary = FileSummary()
    try:
        items = list(iter_layout_file(io.BytesIO(data), DEFAULT_ACCOUNT_LAYOUT, summary))
    except AccountFileError as exc:
        return [], None, str(exc)
    return items, summary, None


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(account_files())
def test_column_path_accepts_only_what_the_row_path_accepts(data: bytes) -> None:
    items, row_summary, error = _row_path(data)
    try:
        records, summary = read_columns(data, DEFAULT_ACCOUNT_LAYOUT)
    except NotClean:
        return  # handed back: the row path reads it and reports
    assert error is None, f"column path accepted a file the row path refuses: {error}"
    assert not any(isinstance(item, Rejection) for item in items), \
        "column path accepted a file with a rejected row"
    assert records == items
    assert summary == row_summary
    assert row_summary is not None and summary.columns == row_summary.columns
    ACCEPTED.append(len(records))


ACCEPTED: list[int] = []


def test_the_differential_test_saw_accepted_files() -> None:
    """Runs after the property: it must have compared real records, not only hand-backs."""
    assert sum(1 for n in ACCEPTED if n) >= 10


def test_a_clean_file_is_read_by_columns() -> None:
    """The differential test above would pass if the column path refused everything."""
    header = ",".join(COLUMN_NAMES)
    row = {n: CELLS[n][0] if n in CELLS else "" for n in COLUMN_NAMES}
    row["status"], row["disconnect_date"] = "disconnect_pending", "2026-12-20"
    lines = [header] + [",".join(_quote(row[n]) if n != "account_number" else f"A{i}"
                                 for n in COLUMN_NAMES) for i in range(300)]
    lines.append("TRAILER,300,3702.00")  # 300 balances of 12.34
    data = ("\r\n".join(lines) + "\r\n").encode()
    records, summary = read_columns(data, DEFAULT_ACCOUNT_LAYOUT)
    items, row_summary, error = _row_path(data)
    assert error is None and records == items and summary == row_summary
    assert len(records) == 300 and summary.trailer == (300, 370200)


@pytest.mark.parametrize("case", [
    '"1"x', '1"2', '" 1"', "\x07", "\u0085", "2026-02-30", "A-1\r\n1", "TRAILER,1,0.00",
])
def test_what_pyarrow_reads_differently_is_handed_back(case: str) -> None:
    """Python's csv refuses text after a closing quote, takes a mid-cell quote literally and
    rejects control characters; the column path must not read such files its own way."""
    header = ",".join(COLUMN_NAMES)
    cells = dict.fromkeys(COLUMN_NAMES, "")
    cells["balance_due"] = "1.00"
    good = ",".join(cells[n] if n != "account_number" else "77" for n in COLUMN_NAMES)
    bad = ",".join(case if n == "account_number" else cells[n] for n in COLUMN_NAMES)
    data = f"{header}\r\n{bad}\r\n{good}\r\n".encode()
    items, _summary, error = _row_path(data)
    clean = error is None and not any(isinstance(i, Rejection) for i in items)
    try:
        records, _ = read_columns(data, DEFAULT_ACCOUNT_LAYOUT)
    except NotClean:
        return
    assert clean and records == items


def _file(rows: list[dict[str, str]], names: list[str]) -> bytes:
    lines = [",".join(names)] + [",".join(_quote(r.get(n, "")) for n in names) for r in rows]
    return ("\r\n".join(lines) + "\r\n").encode()


def _cache(database: Database) -> list[tuple[object, ...]]:
    """Everything the cache holds about each account, as a caller or ops would see it."""
    from sqlalchemy import select

    from ivr.models import Account, AccountPhone

    with database.session() as db:
        accounts = db.scalars(select(Account).order_by(Account.account_number)).all()
        phones = {(a, p) for a, p in db.execute(
            select(Account.account_number, AccountPhone.phone).join(AccountPhone))}
        return [(a.account_number, a.customer_name, a.service_zip, a.pin_hash is not None,
                 a.balance_due_cents, a.past_due_cents, a.due_date, a.last_payment_cents,
                 a.last_payment_date, a.status, a.disconnect_date,
                 None if a.usage_amount is None else Decimal(a.usage_amount).normalize(),
                 a.usage_unit, a.usage_period_end, a.language, a.payment_allowed,
                 sorted(p for n, p in phones if n == a.account_number)) for a in accounts]


def test_both_paths_leave_the_same_cache(database_url: str) -> None:
    """A first file, then a refresh that moves phones, changes balances and lacks the pin
    column: by rows and by columns, on both databases, the cache ends the same."""
    names = list(COLUMN_NAMES)
    first = [{"account_number": f"10{i}", "balance_due": f"{i}.5", "phones":
              "+13125550100;312-555-0101" if i == 1 else f"+1312555{i:04d}",
              "pin": "1234" if i % 2 else "", "usage_amount": "007.50" if i == 2 else "12",
              "customer_name": "José" if i == 3 else f"C{i}", "status": "ACTIVE",
              "service_zip": "60614-1234", "due_date": "2026-12-10"} for i in range(6)]
    second = [dict(row) for row in first[2:]]
    for row in second:
        row["balance_due"] = "0.00"
    second[0]["phones"] = "+13125550100"  # moved from account 101
    second.append({"account_number": "999", "balance_due": "-3"})
    refresh_names = [n for n in names if n != "pin"]
    files = [_file(first, names), _file(second, refresh_names)]
    for data in files:
        read_columns(data, DEFAULT_ACCOUNT_LAYOUT)  # clean: the column path takes them

    database = Database(database_url)
    database.upgrade()
    try:
        for data in files:
            apply_account_records(
                database, iter_layout_file(io.BytesIO(data), DEFAULT_ACCOUNT_LAYOUT,
                                           summary := FileSummary()),
                "rows", pin_key="k", summary=summary)
        by_rows = _cache(database)
        with database.engine.begin() as connection:
            connection.execute(text("DELETE FROM account_phones"))
            connection.execute(text("DELETE FROM accounts"))
        for data in files:
            report = import_account_file(database, io.BytesIO(data), DEFAULT_ACCOUNT_LAYOUT,
                                         "columns", pin_key="k")
            assert report.applied
        assert _cache(database) == by_rows
        assert len(by_rows) == 7
    finally:
        database.dispose()


def test_new_accounts_before_known_ones_in_a_chunk(database_url: str) -> None:
    """A refresh whose chunk starts with new accounts and goes on to known ones (the plain
    INSERT of new accounts is undone and the chunk upserted): the cache ends as by rows."""
    names = list(COLUMN_NAMES)
    known = [{"account_number": "200", "balance_due": "1.00", "phones": "+13125550200"},
             {"account_number": "300", "balance_due": "2.00", "phones": "+13125550300"}]
    refresh = [{"account_number": "100", "balance_due": "3.00", "phones": "+13125550200"},
               {"account_number": "200", "balance_due": "4.00", "phones": "+13125550201"},
               {"account_number": "400", "balance_due": "5.00", "phones": ""}]
    files = [_file(known, names), _file(refresh, names), _file(refresh[::-1], names)]
    database = Database(database_url)
    database.upgrade()
    try:
        for data in files[:2]:
            apply_account_records(
                database, iter_layout_file(io.BytesIO(data), DEFAULT_ACCOUNT_LAYOUT,
                                           summary := FileSummary()),
                "rows", pin_key="k", summary=summary)
        by_rows = _cache(database)
        for second in files[1:]:  # new accounts first, then last
            with database.engine.begin() as connection:
                connection.execute(text("DELETE FROM account_phones"))
                connection.execute(text("DELETE FROM accounts"))
            for data in (files[0], second):
                assert import_account_file(database, io.BytesIO(data), DEFAULT_ACCOUNT_LAYOUT,
                                           "columns", pin_key="k").applied
            assert _cache(database) == by_rows
        assert len(by_rows) == 4
    finally:
        database.dispose()


def test_a_large_file_merges_in_paced_chunks_while_calls_are_on_the_line(
        sqlite_url: str) -> None:
    """With a webhook just served, SQLite merges in short chunks; with no call the chunks
    are large again."""
    from ivr.accounts.bulk_merge import BUSY_ROWS, QUIET_ROWS, ChunkMerger
    from ivr.models import CallEvent

    database = Database(sqlite_url)
    database.upgrade()
    try:
        assert ChunkMerger(database, None, "k", None).chunk_rows() == QUIET_ROWS
        with database.session() as db:
            db.add(CallEvent(call_sid="CA1", state="incoming", event="incoming"))
        assert ChunkMerger(database, None, "k", None).chunk_rows() == BUSY_ROWS
        _import_many(database, BUSY_ROWS * 2 + 300)
    finally:
        database.dispose()


def test_a_large_file_merges_in_many_chunks(database_url: str) -> None:
    """Many chunks (on PostgreSQL, two at once on their own connections): every account
    and phone number arrives once, and a second file moves numbers between accounts."""
    from ivr.accounts.bulk_merge import POSTGRES_ROWS, QUIET_ROWS

    database = Database(database_url)
    database.upgrade()
    try:
        count = (QUIET_ROWS if database.is_sqlite else POSTGRES_ROWS) * 2 + 300
        _import_many(database, count)
        _import_many(database, count, shift=1)  # each number moves to the next account
    finally:
        database.dispose()


def _import_many(database: Database, count: int, shift: int = 0) -> None:
    rows = [{"account_number": f"A{i:06d}", "balance_due": f"{shift}.00",
             "phones": f"+1312{2000000 + (i + shift) % count:07d}"} for i in range(count)]
    report = import_account_file(database, io.BytesIO(_file(rows, list(COLUMN_NAMES))),
                                 DEFAULT_ACCOUNT_LAYOUT, "big", pin_key="k")
    assert report.applied and report.records == count
    with database.engine.connect() as connection:
        assert connection.execute(text(
            "SELECT count(*), sum(balance_due_cents) FROM accounts")).one() == (
                count, shift * 100 * count)
        pairs = connection.execute(text(
            "SELECT a.account_number, p.phone FROM account_phones p "
            "JOIN accounts a ON a.id = p.account_id")).all()
    assert sorted(pairs) == sorted((r["account_number"], r["phones"]) for r in rows)


def test_a_sqlite_import_leaves_no_staging_file_behind(
        sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each SQLite chunk is written into a staging file of its own (ADBC): none is left in
    TMPDIR afterwards, whether the import succeeds or its merge fails."""
    import tempfile

    from ivr.accounts import bulk_merge

    staging = tmp_path / "tmp"
    staging.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(staging))
    database = Database(sqlite_url)
    database.upgrade()
    try:
        _import_many(database, 1_000)
        assert list(staging.iterdir()) == []

        def broken(*_args: object) -> int:
            raise RuntimeError("the merge failed")

        rows = [{"account_number": f"B{i:04d}", "balance_due": "1.00", "phones": ""}
                for i in range(50)]
        monkeypatch.setattr(bulk_merge.ChunkMerger, "_upsert_sqlite", broken)
        with pytest.raises(RuntimeError, match="the merge failed"):
            import_account_file(database, io.BytesIO(_file(rows, list(COLUMN_NAMES))),
                                DEFAULT_ACCOUNT_LAYOUT, "broken", pin_key="k")
        assert list(staging.iterdir()) == []
        with database.engine.connect() as connection:  # the failed chunk changed nothing
            assert connection.execute(text(
                "SELECT count(*) FROM accounts WHERE account_number LIKE 'B%'")).scalar() == 0

        # Several chunks, the first failing while the next ones are staged (written ahead
        # of their merge): the import stops, whole chunks at most are merged, no file stays.
        failed: list[bool] = []
        upsert = bulk_merge.ChunkMerger._upsert_sqlite

        def first_fails(self: Any, *args: Any) -> int | None:
            if not failed:
                failed.append(True)
                raise RuntimeError("the merge failed")
            return upsert(self, *args)

        monkeypatch.setattr(bulk_merge.ChunkMerger, "_upsert_sqlite", first_fails)
        monkeypatch.setattr(bulk_merge, "QUIET_ROWS", 10)
        rows = [{"account_number": f"C{i:04d}", "balance_due": "1.00", "phones": ""}
                for i in range(50)]
        with pytest.raises(RuntimeError, match="the merge failed"):
            import_account_file(database, io.BytesIO(_file(rows, list(COLUMN_NAMES))),
                                DEFAULT_ACCOUNT_LAYOUT, "broken", pin_key="k")
        assert list(staging.iterdir()) == []
        with database.engine.connect() as connection:
            merged = connection.execute(text(
                "SELECT count(*) FROM accounts WHERE account_number LIKE 'C%'")).scalar()
        assert merged is not None and merged % 10 == 0 and merged < 50
    finally:
        database.dispose()
