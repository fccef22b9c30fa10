"""The arrangement confirmation file: its layouts (default and declared) and `ivr sync push`
writing it through a real OpenSSH sshd on 127.0.0.1, each arrangement exactly once."""

from __future__ import annotations

import csv
import io
import os
import re
from datetime import UTC, date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from flask import Flask

from connectors.files.layout_base import LayoutError
from connectors.files.layouts import (
    DEFAULT_ARRANGEMENT_LAYOUT,
    ArrangementLayout,
    ArrangementRow,
    load_layouts,
    write_arrangement_file,
)
from ivr.accounts.sync import SyncConfig, SyncError, pull, push
from ivr.models import Arrangement
from ivr.statuses import ArrangementStatus, PostingStatus
from ivr.web.app import get_config, get_database
from tests.arrangement_rows import add_arrangement
from tests.conftest import REPO, make_app
from tests.servers.sshd import SshdServer

CHICAGO = ZoneInfo("America/Chicago")
JORDAN, CASEY = "4401005678", "4401007890"


def _row(n: int, of: int, due: date, cents: int, **extra: object) -> ArrangementRow:
    values: dict[str, object] = {
        "account_number": JORDAN, "confirmation_number": "ARRJORD1", "kind": "instalments",
        "created_at": datetime(2026, 11, 30, 21, 15, tzinfo=UTC), "balance_cents": 31280,
        "down_payment_cents": 7820, "instalment": n, "instalments": of, "due_date": due,
        "amount_cents": cents, **extra}
    return ArrangementRow(**values)  # type: ignore[arg-type]


ROWS = [_row(1, 2, date(2026, 12, 30), 11730), _row(2, 2, date(2027, 1, 29), 11730)]


def test_default_arrangement_file_exact_bytes() -> None:
    out = io.BytesIO()
    assert write_arrangement_file(ROWS, out, DEFAULT_ARRANGEMENT_LAYOUT) == (2, 23460)
    assert out.getvalue().decode() == (
        "account_number,confirmation_number,kind,created_at,balance,down_payment,instalment,"
        "instalments,due_date,amount\r\n"
        "4401005678,ARRJORD1,instalments,2026-11-30T21:15:00+00:00,312.80,78.20,1,2,"
        "2026-12-30,117.30\r\n"
        "4401005678,ARRJORD1,instalments,2026-11-30T21:15:00+00:00,312.80,78.20,2,2,"
        "2027-01-29,117.30\r\n"
        "TRAILER,2,234.60\r\n")


DECLARED = """
[arrangement.citywater]
delimiter = "|"
header = false
amount_style = "cents"
time_zone = "America/Chicago"
datetime_format = "%Y%m%d%H%M"
date_format = "%m/%d/%Y"
columns = [["ACCT", "account_number"], ["REF", "confirmation_number"], ["TYPE", "kind"],
           ["MADE", "created_at"], ["N", "instalment"], ["DUE", "due_date"],
           ["AMT", "amount"], ["DP", "down_payment_confirmation"], ["SRC", "=IVR"]]
header_record = ["H", "{biller_id}"]
trailer_record = ["T", "{count}", "{sum}"]
line_terminator = "LF"

[arrangement.citywater.value_maps.kind]
instalments = "PA"
extension = "EXT"
"""


def _declared(tmp_path: Path) -> Path:
    path = tmp_path / "layouts.toml"
    # line_terminator in a TOML file is the character itself.
    path.write_text(DECLARED.replace('"LF"', '"\\n"'))
    return path


def test_a_declared_arrangement_layout_is_honoured(tmp_path: Path) -> None:
    layout = load_layouts(_declared(tmp_path))["arrangement.citywater"]
    assert isinstance(layout, ArrangementLayout)
    out = io.BytesIO()
    rows = [ROWS[0], _row(1, 1, date(2026, 12, 14), 26540, account_number=CASEY,
                          confirmation_number="ARRCASE1", kind="extension",
                          down_payment_cents=0, down_payment_confirmation="")]
    rows[0] = _row(1, 2, date(2026, 12, 30), 11730, down_payment_confirmation="PAY00001")
    write_arrangement_file(rows, out, layout, values={"biller_id": "CITYWATER"})
    assert out.getvalue().decode() == (
        "H|CITYWATER\n"
        "4401005678|ARRJORD1|PA|202611301515|1|12/30/2026|11730|PAY00001|IVR\n"
        "4401007890|ARRCASE1|EXT|202611301515|1|12/14/2026|26540||IVR\n"
        "T|2|38270\n")


def test_bad_arrangement_layouts_name_every_problem(tmp_path: Path) -> None:
    path = tmp_path / "layouts.toml"
    path.write_text('[arrangement.bad]\ncolumns = [["A", "card_number"]]\n'
                    'date_format = "%H"\namount_style = "money"\ncolour = "red"\n')
    with pytest.raises(LayoutError) as caught:
        load_layouts(path)
    text = str(caught.value)
    assert "colour" in text
    path.write_text('[arrangement.bad]\ncolumns = [["A", "card_number"]]\n'
                    'date_format = "%H"\namount_style = "money"\n')
    with pytest.raises(LayoutError) as caught:
        load_layouts(path)
    assert caught.value.problems == [
        f"{path}: arrangement.bad: columns[1]: 'card_number' is not one of "
        "account_number, confirmation_number, kind, created_at, balance, down_payment, "
        "down_payment_confirmation, instalment, instalments, due_date, amount, "
        "idempotency_key, call_sid",
        f"{path}: arrangement.bad: date_format: '%H' cannot write and read back a date",
        f"{path}: arrangement.bad: amount_style: 'money' is not one of plain, cents"]


def test_arrangement_settings_are_checked() -> None:
    base = {"IVR_SYNC_OUTBOX_URL": "file:///tmp/none"}
    config = SyncConfig.from_settings(base)
    assert config.arrangement_layout == DEFAULT_ARRANGEMENT_LAYOUT
    assert not config.arrangement_every_interval
    assert config.arrangement_prefix == "arrangements"
    assert SyncConfig.from_settings(
        {**base, "IVR_SYNC_ARRANGEMENT_LAYOUT": "default"}).arrangement_every_interval
    assert SyncConfig.from_settings(
        {**base, "IVR_SYNC_ARRANGEMENT_LAYOUT": "none"}).arrangement_layout is None
    with pytest.raises(SyncError, match=r"no \[arrangement.nope\]"):
        SyncConfig.from_settings({**base, "IVR_SYNC_ARRANGEMENT_LAYOUT": "nope"})
    with pytest.raises(SyncError, match="must differ"):
        SyncConfig.from_settings({**base, "IVR_SYNC_ARRANGEMENT_PREFIX": "payments"})


def test_sync_pull_ends_arrangements_on_the_billers_day(sqlite_url: str,
                                                        tmp_path: Path) -> None:
    inbox = tmp_path / "in"
    inbox.mkdir()
    app = make_app(sqlite_url, REPO / "prompts", sync_settings={
        "IVR_SYNC_INBOX_URL": f"file://{inbox}"})
    made = add_arrangement(get_database(app), JORDAN, "ARRPULL1", balance=31280, down=7820,
                           instalments=[(date(2026, 12, 11), 23460)])
    path = inbox / "accounts.csv"
    path.write_text("account_number,customer_name,balance_due,past_due_amount\r\n"
                    f"{JORDAN},Jordan Lee,312.80,234.60\r\n")
    # 2026-12-12 03:00 UTC is still 2026-12-11 in Chicago: the instalment is not late yet.
    stamp = datetime(2026, 12, 12, 3, 0, tzinfo=UTC).timestamp()
    os.utime(path, (stamp, stamp))
    config = SyncConfig.from_settings(get_config(app).sync_settings)
    [result] = pull(get_database(app), config, pin_key="k", zone=CHICAGO)
    assert result.report is not None and result.report.arrangements_broken == 0
    path = inbox / "accounts2.csv"
    path.write_text("account_number,customer_name,balance_due,past_due_amount\r\n"
                    f"{JORDAN},Jordan Lee,312.80,234.60\r\n")
    stamp = datetime(2026, 12, 12, 18, 0, tzinfo=UTC).timestamp()
    os.utime(path, (stamp, stamp))
    [result] = pull(get_database(app), config, pin_key="k", zone=CHICAGO)
    assert result.report is not None and result.report.arrangements_broken == 1
    with get_database(app).session() as db:
        found = db.get(Arrangement, made)
        assert found is not None and found.status is ArrangementStatus.BROKEN


# --- pushed through sshd ---------------------------------------------------------------------


def _app(database_url: str, sshd: SshdServer, **extra: str) -> Flask:
    return make_app(database_url, REPO / "prompts", sync_settings={
        "IVR_SYNC_OUTBOX_URL": sshd.url("outbox"), **sshd.settings(), **extra})


def _push(app: Flask, now: datetime) -> list[str]:
    config = SyncConfig.from_settings(get_config(app).sync_settings)
    sent = push(get_database(app), config, CHICAGO, now=now)
    return [s.name for s in sent] + [s.arrangements.name for s in sent if s.arrangements]


def _confirmations(outbox: Path) -> list[tuple[str, str, str, str]]:
    """(file, confirmation, instalment, amount) of every arrangement row in the outbox."""
    found = []
    for path in sorted(outbox.glob("arrangements_*.csv")):
        for row in csv.DictReader(io.StringIO(path.read_text())):
            if row["account_number"] != "TRAILER":
                found.append((path.name, row["confirmation_number"], row["instalment"],
                              row["amount"]))
    return found


@pytest.mark.slow
def test_push_sends_each_arrangement_exactly_once(database_url: str,
                                                 sshd: SshdServer) -> None:
    app = _app(database_url, sshd)
    database = get_database(app)
    add_arrangement(database, JORDAN, "ARRNOV28", balance=31280, down=7820,
                    instalments=[(date(2026, 12, 28), 11730), (date(2027, 1, 27), 11730)],
                    created_at=datetime(2026, 11, 28, 18, 0, tzinfo=UTC),
                    down_payment_code="DOWN0001")
    add_arrangement(database, CASEY, "ARRTEST1", balance=26540,
                    instalments=[(date(2026, 12, 10), 26540)],
                    created_at=datetime(2026, 11, 28, 19, 0, tzinfo=UTC),
                    posting=PostingStatus.TEST)
    # Before 00:00 local on Nov 29 (UTC-6): still Nov 28's file.
    add_arrangement(database, "4402000011", "ARRNOV28B", balance=26540,
                    instalments=[(date(2026, 12, 10), 26540)],
                    created_at=datetime(2026, 11, 29, 5, 59, tzinfo=UTC))
    first = _push(app, datetime(2026, 12, 1, 7, 0, tzinfo=UTC))
    # Payments files every day, as before; an arrangement file only for a day with some.
    assert first == ["payments_20261128.csv", "payments_20261129.csv",
                     "payments_20261130.csv", "arrangements_20261128.csv"]
    add_arrangement(database, "4402000022", "ARRDEC01", balance=10000,
                    instalments=[(date(2026, 12, 15), 10000)],
                    created_at=datetime(2026, 12, 1, 18, 0, tzinfo=UTC))
    second = _push(app, datetime(2026, 12, 2, 7, 0, tzinfo=UTC))
    assert second == ["payments_20261201.csv", "arrangements_20261201.csv"]
    outbox = sshd.root / "outbox"
    assert _confirmations(outbox) == [
        ("arrangements_20261128.csv", "ARRNOV28", "1", "117.30"),
        ("arrangements_20261128.csv", "ARRNOV28", "2", "117.30"),
        ("arrangements_20261128.csv", "ARRNOV28B", "1", "265.40"),
        ("arrangements_20261201.csv", "ARRDEC01", "1", "100.00")]
    trailer = (outbox / "arrangements_20261128.csv").read_bytes().splitlines()[-1]
    assert trailer == b"TRAILER,3,500.00"
    # Nothing more is due: no file is written twice.
    assert _push(app, datetime(2026, 12, 2, 8, 0, tzinfo=UTC)) == []


@pytest.mark.slow
def test_declared_layout_file_every_interval_and_none(sqlite_url: str, sshd: SshdServer,
                                                      tmp_path: Path) -> None:
    app = _app(sqlite_url, sshd, IVR_SYNC_LAYOUTS=str(_declared(tmp_path)),
               IVR_SYNC_ARRANGEMENT_LAYOUT="citywater", IVR_SYNC_ARRANGEMENT_PREFIX="promises")
    add_arrangement(get_database(app), JORDAN, "ARRDECL1", balance=31280, down=7820,
                    instalments=[(date(2026, 12, 28), 23460)],
                    created_at=datetime(2026, 11, 30, 18, 0, tzinfo=UTC),
                    down_payment_code="DOWN0002")
    config = SyncConfig.from_settings(get_config(app).sync_settings)
    with pytest.raises(ValueError, match="biller_id"):  # the layout's own placeholder
        push(get_database(app), config, CHICAGO, now=datetime(2026, 12, 1, 7, 0, tzinfo=UTC))
    # Without the header record's placeholder the layout writes; an empty day gets a file.
    (tmp_path / "layouts.toml").write_text(
        _declared(tmp_path).read_text().replace('header_record = ["H", "{biller_id}"]\n', ""))
    app = _app(sqlite_url, sshd, IVR_SYNC_LAYOUTS=str(tmp_path / "layouts.toml"),
               IVR_SYNC_ARRANGEMENT_LAYOUT="citywater", IVR_SYNC_ARRANGEMENT_PREFIX="promises")
    assert _push(app, datetime(2026, 12, 2, 7, 0, tzinfo=UTC)) == [
        "payments_20261130.csv", "payments_20261201.csv", "promises_20261130.csv",
        "promises_20261201.csv"]
    outbox = sshd.root / "outbox"
    assert (outbox / "promises_20261130.csv").read_text() == (
        "4401005678|ARRDECL1|PA|202611301200|1|12/28/2026|23460|DOWN0002|IVR\nT|1|23460\n")
    assert (outbox / "promises_20261201.csv").read_text() == "T|0|0\n"
    # none: never an arrangement file, whatever was made.
    add_arrangement(get_database(app), CASEY, "ARRNONE1", balance=26540,
                    instalments=[(date(2026, 12, 20), 26540)],
                    created_at=datetime(2026, 12, 2, 18, 0, tzinfo=UTC))
    app = _app(sqlite_url, sshd, IVR_SYNC_ARRANGEMENT_LAYOUT="none")
    assert _push(app, datetime(2026, 12, 3, 7, 0, tzinfo=UTC)) == ["payments_20261202.csv"]


def test_the_documented_arrangement_example_is_what_the_writer_makes(tmp_path: Path) -> None:
    text = (REPO / "docs" / "layouts.md").read_text(encoding="utf-8")
    path = tmp_path / "layouts.toml"
    path.write_text("\n".join(re.findall(r"```toml\n(.*?)```", text, re.DOTALL)))
    layout = load_layouts(path)["arrangement.citywater"]
    assert isinstance(layout, ArrangementLayout)
    (sample,) = re.findall(r"```text citywater-arrangements\n(.*?)```", text, re.DOTALL)
    rows = [_row(n, 2, due, 11730, down_payment_confirmation="PAY-7Q2K9")
            for n, due in ((1, date(2026, 12, 30)), (2, date(2027, 1, 29)))]
    out = io.BytesIO()
    write_arrangement_file(rows, out, layout)
    assert out.getvalue().decode() == sample
    # The default file shown there too.
    default = io.BytesIO()
    write_arrangement_file(ROWS, default, DEFAULT_ARRANGEMENT_LAYOUT)
    assert default.getvalue().decode().replace("\r\n", "\n") in text
