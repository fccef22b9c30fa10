"""hledger-web (Debian's 1.25) as a real separate process, on a seeded journal.

``start_hledger(workdir)`` writes ``workdir/biller.journal`` (account declarations and an
opening bill for each IVR demo account), starts ``hledger-web --serve-api`` on a free
127.0.0.1 port and returns once ``/version`` answers. Always ``stop()`` it (the tests do so
in a fixture's ``finally``); an atexit hook kills any server a crashed run forgot.

The read-back helpers deliberately do not use the connector: ``balance`` asks the server
over plain HTTP, ``transactions_with_code`` reads the journal file itself (the truth, even
when the server's view of it is stale).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import requests

from ivr.simulator.demo import demo_rows
from tests.servers.process import ServerProcess, free_port, listens_on

BINARY = "hledger-web"
START_TIMEOUT = 15.0
RECEIVABLE_PREFIX = "receivables:customers:"
CLEARING_ACCOUNT = "assets:bank:clearing"
FEE_ACCOUNT = "income:convenience-fees"
BILLED_ACCOUNT = "income:utility"
COMMODITY = "USD"
# The opening bills are dated long before any test payment.
OPENING_DATE = "2026-01-01"
# hledger-web re-reads the journal only when its mtime is newer than its last read, and
# mtimes come from a coarse clock: an edit within a tick (1-10 ms) of a read goes unseen.
RELOAD_GAP = 0.05



def hledger_available() -> str | None:
    """None when hledger-web can run here, else why not."""
    path = shutil.which(BINARY)
    if path is None:
        return f"{BINARY} is not installed (apt-get install --no-install-recommends hledger-web)"
    try:
        out = subprocess.run([path, "--version"], capture_output=True, timeout=10,  # noqa: S603
                             check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{BINARY} --version failed: {exc}"
    if out.returncode != 0:
        return f"{BINARY} --version exited {out.returncode}"
    return None


def seed_journal() -> str:
    """Account declarations and one opening bill per demo account (balance due)."""
    rows = demo_rows(datetime.now(UTC).date())
    lines = [f"commodity {COMMODITY} 1000.00", ""]
    lines += [f"account {name}" for name in (CLEARING_ACCOUNT, FEE_ACCOUNT, BILLED_ACCOUNT)]
    lines += [f"account {RECEIVABLE_PREFIX}{row['account_number']}" for row in rows]
    for row in rows:
        number = row["account_number"]
        lines += [
            "",
            f"{OPENING_DATE} Opening bill {number}  ; acct:{number}",
            f"    {RECEIVABLE_PREFIX}{number}    {COMMODITY} {row['balance_due']}",
            f"    {BILLED_ACCOUNT}",
        ]
    return "\n".join(lines) + "\n"


def _quantity(amount: dict[str, object]) -> Decimal:
    quantity = amount["aquantity"]
    assert isinstance(quantity, dict)
    return Decimal(int(quantity["decimalMantissa"])).scaleb(-int(quantity["decimalPlaces"]))


class HledgerServer(ServerProcess):
    """One hledger-web process; ``restart()`` brings it back on the same port and journal."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.journal = workdir / "biller.journal"
        self.log_file = workdir / "hledger-web.log"
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Base URL of the JSON API."""
        return f"http://127.0.0.1:{self.port}"

    def settings(self) -> dict[str, str]:
        """IVR settings that point the hledger connector at this server."""
        return {"IVR_ACCOUNTING": "hledger", "IVR_HLEDGER_URL": self.url,
                "IVR_HLEDGER_RECEIVABLE_PREFIX": RECEIVABLE_PREFIX,
                "IVR_HLEDGER_CLEARING_ACCOUNT": CLEARING_ACCOUNT,
                "IVR_HLEDGER_FEE_ACCOUNT": FEE_ACCOUNT, "IVR_HLEDGER_COMMODITY": COMMODITY}

    # -- read-back, independent of the connector ------------------------------------------

    def account_balance(self, account: str) -> Decimal:
        """An account's inclusive balance in USD from ``GET /accounts`` (0 when absent)."""
        response = requests.get(f"{self.url}/accounts", timeout=5)
        response.raise_for_status()
        for entry in response.json():
            if entry["aname"] == account:
                return sum((_quantity(a) for a in entry["aibalance"]
                            if a["acommodity"] == COMMODITY), Decimal(0))
        return Decimal(0)

    def balance(self, account_number: str) -> Decimal:
        """The customer's balance due, as the server reports it."""
        return self.account_balance(RECEIVABLE_PREFIX + account_number)

    def transactions_with_code(self, code: str) -> int:
        """How many transactions in the journal file carry ``(code)`` in their header."""
        header = re.compile(r"^\d{4}[-/.]\d{1,2}[-/.]\d{1,2}\S*(?: [*!])? \(" + re.escape(code)
                            + r"\)", re.MULTILINE)
        return len(header.findall(self.journal.read_text(encoding="utf-8")))

    def append_journal(self, text: str) -> None:
        """Append to the journal as an operator would, late enough for the server to notice."""
        time.sleep(RELOAD_GAP)
        with self.journal.open("a", encoding="utf-8") as journal:
            journal.write(text)

    # -- process control ------------------------------------------------------------------

    def start(self) -> None:
        """Launch (on ``self.port``; 0 picks a free one) and wait until ``/version`` answers."""
        if self.running:
            raise RuntimeError("hledger-web already running")
        binary = shutil.which(BINARY)
        if binary is None:
            raise RuntimeError(f"{BINARY} is not installed")
        pick_port = self.port == 0
        for _ in range(5):
            if pick_port:
                self.port = free_port()
            if self._launch(binary):
                return
            if not pick_port:
                raise RuntimeError(f"hledger-web exited (port {self.port} taken?): "
                                   f"{self.log_tail()}")
            # Another process took the port between our probe and hledger-web's bind.
        raise RuntimeError(f"hledger-web could not bind a port: {self.log_tail()}")

    def _launch(self, binary: str) -> bool:
        """Start on ``self.port``; False if it exited (lost the port) before answering."""
        with self.log_file.open("ab") as log:
            process = subprocess.Popen(  # noqa: S603 - fixed arguments, our own files
                [binary, "-f", str(self.journal), "--serve-api", "--host", "127.0.0.1",
                 "--port", str(self.port)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=self.workdir)
        self._launched(process)
        try:
            return self._wait_answering()
        except BaseException:
            self.kill()
            raise

    def _wait_answering(self) -> bool:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if not self.running:
                self._reap()
                return False
            # Only our own process's answer counts: not another server's on a lost port.
            assert self._process is not None
            if listens_on(self._process.pid, self.port):
                try:
                    if requests.get(f"{self.url}/version", timeout=1).ok:
                        return True
                except requests.RequestException:
                    pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"hledger-web did not answer in {START_TIMEOUT} s: "
                                   f"{self.log_tail()}")
            time.sleep(0.02)

    def log_tail(self) -> str:
        """The end of the server's output (errors such as an unparseable journal)."""
        try:
            return self.log_file.read_text(encoding="utf-8", errors="replace")[-2000:]
        except FileNotFoundError:
            return "(no log)"

def start_hledger(workdir: Path) -> HledgerServer:
    """A running hledger-web on a freshly seeded journal in ``workdir``."""
    workdir.mkdir(parents=True, exist_ok=True)
    server = HledgerServer(workdir)
    server.journal.write_text(seed_journal(), encoding="utf-8")
    server.start()
    return server

