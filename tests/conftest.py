"""Shared fixtures: real databases (SQLite and PostgreSQL), the app, signed Twilio requests."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

import psycopg
import pytest
from flask import Flask
from sqlalchemy import text
from sqlalchemy.engine import make_url
from twilio.request_validator import RequestValidator

from ivr.db import Database
from ivr.simulator import CallResult, FlaskTransport, ScriptedCaller, run_call
from ivr.simulator.demo import demo_file
from ivr.web.app import create_app, get_database

TOKEN = "0123456789abcdef0123456789abcdef"
REPO = Path(__file__).resolve().parent.parent
_PG_SERVER = os.environ.get("IVR_TEST_POSTGRES_URL",
                            "postgresql+psycopg://postgres@127.0.0.1:5432/ivr_test")
# A database of this run's own: two test runs on one machine (a developer's and CI's, say)
# must not truncate each other's tables.
PG_URL = make_url(_PG_SERVER).set(
    database=f"{make_url(_PG_SERVER).database}_{os.getpid()}").render_as_string(
    hide_password=False)
# A Tuesday at 10:00 in Chicago: inside business hours.
OPEN_TIME = datetime(2026, 12, 1, 16, 0, tzinfo=UTC)
# A Saturday at 10:00 in Chicago: closed all weekend.
CLOSED_TIME = datetime(2026, 12, 5, 16, 0, tzinfo=UTC)


def _postgres_available() -> str | None:
    """Create a fresh test database; return None on success or why it is unavailable."""
    url = make_url(PG_URL)
    admin = url.set(database="postgres").render_as_string(hide_password=False)
    admin = admin.replace("postgresql+psycopg://", "postgresql://")
    try:
        with psycopg.connect(admin, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{url.database}"')
    except psycopg.Error as exc:
        return str(exc).strip().splitlines()[0]
    return None


def unavailable(why: str) -> NoReturn:
    """A real server a test needs cannot run here: skip locally, fail under CI=true (a green
    CI must mean every test ran)."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"required under CI=true: {why}")
    pytest.skip(why)


def requires(why: str | None) -> pytest.MarkDecorator:
    """Mark a test that needs something ``why`` says is missing (None: nothing is): skipped
    locally, run (and so failing) under CI=true."""
    return pytest.mark.skipif(why is not None and os.environ.get("CI") != "true",
                              reason=why or "")


def need_espeak() -> None:
    """espeak-ng, which speaks prompt previews: skipped locally without it, failed under CI."""
    if shutil.which("espeak-ng") is None:
        unavailable("espeak-ng is not installed (apt-get install espeak-ng)")


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A migrated PostgreSQL database on 127.0.0.1 (skipped locally when none runs)."""
    problem = _postgres_available()
    if problem is not None:
        unavailable(f"PostgreSQL not available at {PG_URL}: {problem}")
    from ivr.db import Database

    database = Database(PG_URL)
    database.upgrade()
    database.dispose()
    yield PG_URL
    _drop_postgres()


def _drop_postgres() -> None:
    url = make_url(PG_URL)
    admin = url.set(database="postgres").render_as_string(hide_password=False)
    with psycopg.connect(admin.replace("postgresql+psycopg://", "postgresql://"),
                         autocommit=True, connect_timeout=3) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)')


def _truncate_postgres(url: str) -> None:
    from ivr.db import Database
    from ivr.models import Base

    database = Database(url)
    names = ", ".join(t.name for t in Base.metadata.sorted_tables)
    with database.engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
    database.dispose()


@pytest.fixture
def sqlite_dir(tmp_path: Path) -> Iterator[Path]:
    """Where a test's SQLite database goes: in memory-backed /dev/shm where there is one, so
    that a commit's fsync never waits seconds on a disk that other work keeps busy (the
    checkpoints PostgreSQL writes after a test's million-row import), past a webhook's
    deadline; removed after the test. Elsewhere, the test's own folder."""
    shm = Path("/dev/shm")  # noqa: S108 - a private folder is made in it (mkdtemp, 0700)
    if not (shm.is_dir() and os.access(shm, os.W_OK)):
        yield tmp_path
        return
    folder = Path(tempfile.mkdtemp(prefix="ivr-test-", dir=shm))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.slow)])
def database_url(request: pytest.FixtureRequest) -> str:
    """Each test using this runs on both backends, each starting empty (the quick loop,
    ``-m "not slow"``, on SQLite only)."""
    if request.param == "sqlite":
        sqlite: str = request.getfixturevalue("sqlite_url")
        return sqlite
    url: str = request.getfixturevalue("postgres_url")
    _truncate_postgres(url)
    return url


@pytest.fixture
def database(database_url: str) -> Iterator[Database]:
    """A migrated, empty database on each backend, its connections closed after."""
    database = Database(database_url)
    database.upgrade()
    yield database
    database.dispose()


@pytest.fixture
def sqlite_url(sqlite_dir: Path) -> str:
    """An empty SQLite database file, for tests that only need one backend."""
    return f"sqlite:///{sqlite_dir / 'ivr.sqlite3'}"


@pytest.fixture
def prompts_dir() -> Path:
    """The shipped prompts (tests assert through the catalog, so wording edits don't break them)."""
    return REPO / "prompts"


def custom_prompts(tmp_path: Path, edits: dict[str, tuple[str, str]]) -> Path:
    """A copy of the shipped prompts with (old, new) text replaced per file."""
    prompts = tmp_path / "prompts"
    shutil.copytree(REPO / "prompts", prompts, dirs_exist_ok=True)
    for name, (old, new) in edits.items():
        path = prompts / name
        text = path.read_text(encoding="utf-8")
        assert old in text, old
        path.write_text(text.replace(old, new), encoding="utf-8")
    return prompts


def never_serve(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make `ivr serve` fail, rather than serve forever, should it get past its checks."""

    def served(*_args: object) -> None:
        raise AssertionError("ivr serve started the line")

    monkeypatch.setattr("ivr.web.server.run_gunicorn", served)


def make_app(database_url: str, prompts_dir: Path, now: datetime = OPEN_TIME,
             **overrides: Any) -> Flask:
    """An app with a fixed clock, migrated and loaded with the demo accounts."""
    from ivr.accounts.importer import import_accounts

    app = create_app({"database_url": database_url, "twilio_auth_token": TOKEN,
                      "prompts_dir": str(prompts_dir), "pin_key": "test-pin-key",
                      **overrides})
    app.extensions["ivr.clock"] = lambda: now
    _APPS.append(app)
    database = get_database(app)
    database.upgrade()
    import io

    report = import_accounts(database, io.BytesIO(demo_file(now.date())), "demo",
                             pin_key="test-pin-key")
    assert report.applied, report.lines()
    # As `ivr serve` does before taking calls: the prompts are loaded (and kept in the
    # database) now, so no test's first webhook carries the one-off load in its deadline.
    app.extensions["ivr.prompts.catalog"].get()
    return app


_APPS: list[Flask] = []


@pytest.fixture(autouse=True)
def _dispose_apps() -> Iterator[None]:
    """Close every app's connection pool after each test (no leaked connections)."""
    yield
    while _APPS:
        app = _APPS.pop()
        # A prompts version being kept in the database (a thread of its own) must finish
        # first, or its connection would outlive the pool.
        app.extensions["ivr.prompts.catalog"].wait_until_kept(timeout=10)
        get_database(app).dispose()


@pytest.fixture
def app(database_url: str, prompts_dir: Path) -> Flask:
    """The line on both databases, in business hours, with the demo accounts."""
    return make_app(database_url, prompts_dir)


@pytest.fixture
def lite_app(sqlite_url: str, prompts_dir: Path) -> Flask:
    """The line on SQLite only (for many-request property tests)."""
    return make_app(sqlite_url, prompts_dir)


def set_clock(app: Flask, now: datetime) -> None:
    """Run the app's calls at ``now``."""
    app.extensions["ivr.clock"] = lambda: now


def call(app: Flask, presses: Sequence[str] | str, *, cards: Sequence[str] = ("4111111111111111",),
         bank: Sequence[str] = ("123456789",), from_number: str = "+15555550123",
         base_url: str = "http://localhost") -> CallResult:
    """A whole simulated call through signed webhooks."""
    if isinstance(presses, str):
        presses = presses.split()
    transport = FlaskTransport(app, TOKEN, base_url=base_url)
    caller = ScriptedCaller(list(presses), cards=list(cards), bank_accounts=list(bank))
    return run_call(transport, caller, base_url=base_url, from_number=from_number)


@dataclass
class Twilio:
    """Posts webhooks to the app signed as Twilio would, and parses the TwiML answer."""

    app: Flask
    base_url: str = "http://localhost"

    def post(self, path: str, sign: bool = True, headers: dict[str, str] | None = None,
             **form: str) -> Any:
        """POST form params to ``path``; returns the test response."""
        url = self.base_url + path
        sig = RequestValidator(TOKEN).compute_signature(url, form) if sign else None
        hdrs = {"X-Twilio-Signature": sig} if sig else {}
        hdrs.update(headers or {})
        return self.app.test_client().post(path, data=form, headers=hdrs,
                                           base_url=self.base_url)


def twiml(response: Any) -> ET.Element:
    """The TwiML document of a 200 response."""
    assert response.status_code == 200, response.data
    assert response.mimetype == "text/xml"
    root = ET.fromstring(response.data)  # noqa: S314 - our own app's output
    assert root.tag == "Response"
    return root


def new_sid() -> str:
    """A fresh CallSid."""
    return "CA" + uuid.uuid4().hex


def said_text(app: Flask, prompt_id: str, lang: str = "en-US", **params: str) -> str:
    """What the line says for a prompt, flattened as the simulator flattens <Say>."""
    from ivr.prompts.catalog import PromptStore

    store: PromptStore = app.extensions["ivr.prompts.catalog"]
    ssml = store.get().render(prompt_id, lang, **params).ssml
    root = ET.fromstring(f"<speak>{ssml}</speak>")  # noqa: S314
    return " ".join("".join(root.itertext()).split())


Poster = Callable[..., Any]


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[Any]:
    """A real OpenSSH sftp server on 127.0.0.1 for one test."""
    from tests.servers.sshd import sshd_available, start_sshd

    problem = sshd_available()
    if problem:
        unavailable(problem)
    server = start_sshd(tmp_path / "sshd")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def tryton(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A seeded Tryton for one test module."""
    from tests.servers.tryton import TrytonUnavailable, start_tryton

    try:
        server = start_tryton(tmp_path_factory.mktemp("tryton"))
    except TrytonUnavailable as exc:
        unavailable(f"Tryton 8.2 could not be installed or started: {exc}")
    try:
        yield server
    finally:
        server.stop()


# The secret the receiver fixture shares with the line.
WEBHOOK_SECRET = "receiver-secret-0123456789abcdef"


@pytest.fixture
def hledger(tmp_path: Path) -> Iterator[Any]:
    """A real hledger-web on 127.0.0.1 for one test (skipped locally when not installed)."""
    from tests.servers.hledger import hledger_available, start_hledger

    problem = hledger_available()
    if problem:
        unavailable(problem)
    server = start_hledger(tmp_path / "hledger")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[Any]:
    """The reference webhook receiver (examples/webhook_receiver.py) for one test."""
    from tests.servers.webhook import start_receiver

    server = start_receiver(tmp_path / "receiver", WEBHOOK_SECRET)
    try:
        yield server
    finally:
        server.stop()
