"""What callers type to prove who they are, and their card and bank numbers, end up nowhere: not
in any log line, not in any table the line writes while calls run."""

from __future__ import annotations

import io
import logging
import re
from pathlib import Path

from flask import Flask
from sqlalchemy import select

from ivr.logs import JsonFormatter
from ivr.models import Base
from ivr.web.app import get_database
from tests.conftest import call, custom_prompts, make_app

CARD = "4111111111111111"
BANK = "123456789"
PIN = "2468"  # the demo PIN of 4401001234
ZIP = "60614"
WRONG_ZIP = "60699"
ACCOUNT = "4401001234"
# Tables that hold what the biller sent us (the account cache, its import): the ZIP is there
# by design. Every other table is written by calls and must hold none of the secrets.
_BILLER_DATA = {"accounts", "accounts_staging", "account_phones", "account_phones_staging",
                "import_runs"}


def _has(text: str, secret: str) -> bool:
    """Whether ``secret`` appears as such: not as a chance run inside a random hex id
    (CallSids, idempotency keys), which would make this test fail by luck."""
    return re.search(rf"(?<![0-9A-Fa-f]){secret}(?![0-9A-Fa-f])", text) is not None


def _log_lines(app: Flask, script: list[list[str]], **kwargs: object) -> str:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.setLevel(logging.DEBUG)
    loggers = [logging.getLogger(name) for name in ("ivr", "connectors")]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
    try:
        for presses in script:
            call(app, presses, **kwargs)  # type: ignore[arg-type]
    finally:
        for logger in loggers:
            logger.removeHandler(handler)
    return stream.getvalue()


def _written_by_calls(app: Flask) -> str:
    rows = []
    with get_database(app).session() as db:
        for table in Base.metadata.sorted_tables:
            if table.name in _BILLER_DATA:
                continue
            rows.extend(repr(tuple(row)) for row in db.execute(select(table)))
    return "\n".join(rows)


def test_zip_card_and_bank_digits_are_nowhere(database_url: str) -> None:
    app = make_app(database_url, Path(__file__).resolve().parent.parent / "prompts")
    logs = _log_lines(app, [
        ["1", "2", f"{ACCOUNT}#", WRONG_ZIP, ZIP, "1", "1", "1", "1", "1"],  # card
        ["1", ZIP, "1", "2", "1", "1"],  # bank debit
    ], cards=[CARD], bank=[BANK], from_number="+15555550123")
    stored = _written_by_calls(app)
    assert "webhook" in logs  # the capture worked
    for secret in (CARD, BANK, ZIP, WRONG_ZIP, ACCOUNT):
        assert not _has(logs, secret), secret
    for secret in (CARD, BANK, ZIP, WRONG_ZIP):
        assert not _has(stored, secret), secret


def test_a_pin_is_nowhere(database_url: str, tmp_path: Path) -> None:
    prompts = custom_prompts(tmp_path, {"settings.toml": ('method = "zip"', 'method = "pin"')})
    app = make_app(database_url, prompts)
    logs = _log_lines(app, [["1", "9999#", f"{PIN}#", "1", "1"]],
                      cards=[CARD])
    assert "webhook" in logs
    with get_database(app).session() as db:
        everything = _written_by_calls(app) + "\n" + "\n".join(
            repr(tuple(row)) for row in db.execute(select(Base.metadata.tables["accounts"])))
    for secret in (PIN, "9999", CARD):
        assert not _has(logs, secret), secret
        assert not _has(everything, secret), secret
