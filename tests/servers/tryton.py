"""A real Tryton 8.2 server on 127.0.0.1 for the connector tests.

``ensure_tryton_venv()`` installs Tryton from PyPI into ``<repo>/.cache/tryton-venv`` once (a
marker file records the finished install). ``start_tryton(workdir)`` copies a seeded SQLite
database into ``workdir`` and runs ``trytond`` on a free port. The seeded database is built
once a month (fiscal years are dated) by ``trytond-admin`` plus ``tryton_seed.py`` and
cached under ``.cache/`` as a template. Tryton runs in its own venv because it pins its own
Werkzeug. Always ``stop()`` the server; an atexit hook kills any a crashed run forgot.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import requests

from tests.servers.process import ServerProcess, free_port, listens_on

REPO = Path(__file__).resolve().parents[2]
CACHE = REPO / ".cache"
VENV = CACHE / "tryton-venv"
SEED_SCRIPT = Path(__file__).with_name("tryton_seed.py")
PACKAGES = ("trytond==8.2.*", "trytond-account-invoice==8.2.*", "proteus==8.2.*")
DATABASE = "biller"
ADMIN_USER, ADMIN_PASSWORD = "admin", "admin"
# A user with only the "Accounting" group, as the operator docs tell billers to create.
IVR_USER, IVR_PASSWORD = "ivr", "ivr-connector-pass"
PAYMENT_METHOD = "IVR"
START_TIMEOUT = 30.0

# The IVR demo accounts (ivr/simulator/demo.py) and a few for tests that must not share invoices.
# Invoices are [days before the seeding day, amount], posted.
PARTIES: tuple[dict[str, Any], ...] = (
    {"code": "4401001234", "name": "Alex Morgan", "invoices": [[16, "123.45"]]},
    {"code": "4401005678", "name": "Jordan Lee",
     "invoices": [[50, "187.50"], [20, "125.30"]]},
    {"code": "4401009012", "name": "Sam Rivera", "invoices": []},
    {"code": "4401003456", "name": "Rosa Martínez", "invoices": [[20, "76.20"]]},
    {"code": "TEST-TWICE", "name": "Test Twice", "invoices": [[10, "50.00"]]},
    {"code": "TEST-OVERPAY", "name": "Test Overpay", "invoices": [[10, "30.00"]]},
    {"code": "TEST-CRASH", "name": "Test Crash",
     "invoices": [[30, "40.00"], [10, "60.00"]]},
    {"code": "TEST-OUTAGE", "name": "Test Outage", "invoices": [[10, "100.00"]]},
    {"code": "TEST-SESSION", "name": "Test Session", "invoices": [[10, "100.00"]]},
    {"code": "TEST-USER", "name": "Test User", "invoices": [[10, "100.00"]]},
)
SEED_SPEC: dict[str, Any] = {
    "payment_method": PAYMENT_METHOD,
    "users": [{"login": IVR_USER, "password": IVR_PASSWORD, "groups": ["Accounting"]}],
    "parties": list(PARTIES),
}



class TrytonUnavailable(RuntimeError):
    """Tryton could not be installed, initialised or started here."""


@contextlib.contextmanager
def _cache_lock() -> Iterator[None]:
    # Two pytest sessions (or engineers) may build the cache at once.
    CACHE.mkdir(parents=True, exist_ok=True)
    with (CACHE / "tryton.lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _clean_env(**extra: str) -> dict[str, str]:
    # Nothing of ours (PYTHONPATH, a TRYTOND_* override) may leak into Tryton's venv.
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("TRYTON", "PYTHON", "VIRTUAL_ENV"))}
    env.update(extra)
    return env


def _run(command: list[str], *, timeout: float, **kwargs: Any) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout,  # noqa: S603
                              check=False, **kwargs)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise TrytonUnavailable(f"{Path(command[0]).name} failed: {exc}") from exc
    if done.returncode != 0:
        raise TrytonUnavailable(f"{' '.join(command[:3])} exited {done.returncode}: "
                                f"{(done.stderr or done.stdout)[-2000:]}")
    return str(done.stdout)


def ensure_tryton_venv() -> Path:
    """The venv with trytond, its invoicing module and proteus (installed on first use)."""
    marker = VENV / ".ivr-installed"
    wanted = "\n".join(PACKAGES)
    if marker.is_file() and marker.read_text(encoding="utf-8") == wanted:
        return VENV
    with _cache_lock():
        if marker.is_file() and marker.read_text(encoding="utf-8") == wanted:
            return VENV
        shutil.rmtree(VENV, ignore_errors=True)  # a half-finished or outdated install
        _run([sys.executable, "-m", "venv", str(VENV)], timeout=120, env=_clean_env())
        _run([str(VENV / "bin" / "python"), "-m", "pip", "install", "--quiet",
              "--disable-pip-version-check", *PACKAGES], timeout=900, env=_clean_env())
        marker.write_text(wanted, encoding="utf-8")
    return VENV


def _write_config(path: Path, db_dir: Path, port: int, session_timeout: int | None) -> None:
    lines = [
        "[database]", "uri = sqlite://", f"path = {db_dir}",
        "[web]", f"listen = 127.0.0.1:{port}",
        # Tests log in often; the default allows 5 failed attempts before throttling.
        "[session]", "max_attempt = 1000", "max_attempt_ip_network = 10000",
    ]
    if session_timeout is not None:
        lines.append(f"timeout = {session_timeout}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _template(venv: Path) -> Path:
    """A seeded database file, built at most once a month per seed and Tryton version."""
    digest = hashlib.sha256()
    digest.update(SEED_SCRIPT.read_bytes())
    digest.update(json.dumps(SEED_SPEC, sort_keys=True).encode())
    digest.update("\n".join(PACKAGES).encode())
    # The fiscal year spans about six months either side of the seeding day.
    name = f"tryton-template-{date.today():%Y-%m}-{digest.hexdigest()[:12]}.sqlite"  # noqa: DTZ011
    template = CACHE / name
    if template.is_file():
        return template
    with _cache_lock():
        if template.is_file():
            return template
        with tempfile.TemporaryDirectory(prefix="tryton-init-", dir=CACHE) as tmp:
            work = Path(tmp)
            db_dir = work / "db"
            db_dir.mkdir()
            (db_dir / f"{DATABASE}.sqlite").touch()
            (work / "pass.txt").write_text(ADMIN_PASSWORD + "\n", encoding="utf-8")
            conf = work / "trytond.conf"
            _write_config(conf, db_dir, 0, None)
            env = _clean_env(TRYTONPASSFILE=str(work / "pass.txt"))
            bin_dir = venv / "bin"
            _run([str(bin_dir / "trytond-admin"), "-c", str(conf), "-d", DATABASE, "--all",
                  "-u", "account_invoice", "--activate-dependencies",
                  "--email", "admin@example.com"], timeout=600, env=env, cwd=work)
            _run([str(bin_dir / "python"), str(SEED_SCRIPT), str(conf), DATABASE],
                 timeout=300, env=env, cwd=work, input=json.dumps(SEED_SPEC))
            partial = template.with_suffix(".partial")
            shutil.copyfile(db_dir / f"{DATABASE}.sqlite", partial)
            os.replace(partial, template)
        for old in CACHE.glob("tryton-template-*.sqlite"):
            if old != template:
                old.unlink(missing_ok=True)
    return template


class TrytonServer(ServerProcess):
    """One ``trytond`` process; ``restart()`` brings it back on the same port and data."""

    def __init__(self, venv: Path, workdir: Path, session_timeout: int | None) -> None:
        self.venv = venv
        self.workdir = workdir
        self.database = DATABASE
        self.port = free_port()
        self.config_file = workdir / "trytond.conf"
        self.log_file = workdir / "trytond.log"
        self.db_dir = workdir / "db"
        self.session_timeout = session_timeout
        _write_config(self.config_file, self.db_dir, self.port, session_timeout)
        self._process: subprocess.Popen[bytes] | None = None
        self._answered = False

    @property
    def url(self) -> str:
        """Base URL, as IVR_TRYTON_URL wants it."""
        return f"http://127.0.0.1:{self.port}"

    def settings(self, user: str = ADMIN_USER, password: str = ADMIN_PASSWORD
                 ) -> dict[str, str]:
        """IVR_TRYTON_* settings pointing the connector at this server."""
        return {"IVR_ACCOUNTING": "tryton", "IVR_TRYTON_URL": self.url,
                "IVR_TRYTON_DATABASE": self.database, "IVR_TRYTON_USER": user,
                "IVR_TRYTON_PASSWORD": password, "IVR_TRYTON_PAYMENT_METHOD": PAYMENT_METHOD}

    def start(self) -> None:
        """Launch ``trytond`` and wait until the database answers a login."""
        if self.running:
            raise RuntimeError("trytond already running")
        for _ in range(5):
            logged = self.log_file.stat().st_size if self.log_file.exists() else 0
            try:
                self._launch()
            except TrytonUnavailable:
                lost = b"Address already in use" in self.log_file.read_bytes()[logged:]
                if self._answered or not lost:
                    raise
                # Another process took the port between our probe and trytond's bind.
                self.port = free_port()
                _write_config(self.config_file, self.db_dir, self.port, self.session_timeout)
                continue
            self._answered = True
            return
        raise TrytonUnavailable(f"trytond could not bind a port: {self._log_tail()}")

    def _launch(self) -> None:
        with self.log_file.open("ab") as log:
            # "-d" loads the database's pool at start; without it the first login fails.
            process = subprocess.Popen(  # noqa: S603 - our venv, fixed arguments
                [str(self.venv / "bin" / "trytond"), "-c", str(self.config_file),
                 "-d", self.database],
                env=_clean_env(), stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                cwd=self.workdir)
        self._launched(process)
        try:
            self._wait_ready()
        except BaseException:
            self.kill()
            raise

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                # Only our own trytond's answer counts, not another server's on a lost port.
                assert self._process is not None
                if listens_on(self._process.pid, self.port):
                    with requests.Session() as session:
                        self._rpc(session, "common.server.version", [], root=True)
                    return
                raise requests.ConnectionError("not listening yet")
            except (requests.ConnectionError, requests.Timeout):
                if not self.running:
                    raise TrytonUnavailable(f"trytond exited: {self._log_tail()}") from None
                if time.monotonic() > deadline:
                    raise TrytonUnavailable(
                        f"trytond did not answer in {START_TIMEOUT} s: {self._log_tail()}"
                    ) from None
            time.sleep(0.05)

    def _log_tail(self) -> str:
        try:
            return self.log_file.read_text(encoding="utf-8", errors="replace")[-2000:]
        except FileNotFoundError:
            return "(no log)"

    # -- reading back, independently of the connector ------------------------------------

    def invoice_amounts(self, account_number: str) -> list[Decimal]:
        """amount_to_pay of the party's posted or paid customer invoices, oldest first."""
        rows = self._search_read("model.account.invoice.search_read", [
            [["party.code", "=", account_number], ["type", "=", "out"],
             ["state", "in", ["posted", "paid"]]],
            0, None, [["invoice_date", "ASC"], ["id", "ASC"]], ["amount_to_pay"]])
        return [Decimal(row["amount_to_pay"]).quantize(Decimal("0.01")) for row in rows]

    def receivable(self, account_number: str) -> Decimal:
        """The party's receivable balance (negative: in credit)."""
        rows = self._search_read("model.party.party.search_read", [
            [["code", "=", account_number]], 0, None, None, ["receivable"]])
        (row,) = rows
        return Decimal(row["receivable"]).quantize(Decimal("0.01"))

    def moves(self, description_like: str) -> list[dict[str, Any]]:
        """Account moves whose description matches (a Tryton "like" pattern)."""
        return self._search_read("model.account.move.search_read", [
            [["description", "like", description_like]], 0, None, [["id", "ASC"]],
            ["number", "description", "state"]])

    def notes(self, account_number: str) -> list[str]:
        """The messages of the notes on the party (``ir.note``), oldest first."""
        (party,) = self._search_read("model.party.party.search_read", [
            [["code", "=", account_number]], 0, None, None, ["id"]])
        rows = self._search_read("model.ir.note.search_read", [
            [["resource", "=", f"party.party,{party['id']}"]], 0, None, [["id", "ASC"]],
            ["message"]])
        return [str(row["message"]) for row in rows]

    def _search_read(self, method: str, params: list[Any]) -> list[dict[str, Any]]:
        with requests.Session() as session:
            user_id, token, _ = self._rpc(session, "common.db.login",
                                          [ADMIN_USER, {"password": ADMIN_PASSWORD}, "en"])
            raw = f"{ADMIN_USER}:{user_id}:{token}".encode()
            session.headers["Authorization"] = "Session " + base64.b64encode(raw).decode()
            context = self._rpc(session, "model.res.user.get_preferences", [True, {}])
            rows: list[dict[str, Any]] = self._rpc(session, method, [*params, context])
            return rows

    def _rpc(self, session: requests.Session, method: str, params: list[Any], *,
             root: bool = False) -> Any:
        url = f"{self.url}/rpc/" if root else f"{self.url}/{self.database}/rpc/"
        response = session.post(url, json={"id": 1, "method": method, "params": params},
                                timeout=(2, 10))
        response.raise_for_status()

        def decode(obj: dict[str, Any]) -> Any:
            return Decimal(obj["decimal"]) if obj.get("__class__") == "Decimal" else obj

        body = response.json(object_hook=decode, parse_float=Decimal)
        if "error" in body:
            raise RuntimeError(f"{method}: {body['error']!r}"[:500])
        return body["result"]


def start_tryton(workdir: Path, *, session_timeout: int | None = None) -> TrytonServer:
    """A running, seeded Tryton keeping its database and log in ``workdir``.

    ``session_timeout`` sets ``[session] timeout``: how long a session stays "fresh" for
    calls such as the pay wizard (Tryton's default is 300 s). Raises TrytonUnavailable.
    """
    venv = ensure_tryton_venv()
    template = _template(venv)
    workdir.mkdir(parents=True, exist_ok=True)
    server = TrytonServer(venv, workdir, session_timeout)
    server.db_dir.mkdir(exist_ok=True)
    shutil.copyfile(template, server.db_dir / f"{DATABASE}.sqlite")
    server.start()
    return server

