"""Webhook latency while an account import runs: the real server and a closed-loop caller.

`ivr serve` (gunicorn) runs against a database that already holds the accounts; one or two
threads play callers, each one call after another, a short pause between webhooks, so the
server is busy but not saturated. Each call is the path every caller takes: the first
webhook, English (the caller-ID lookup), "yes, that's my account", the service ZIP (the
balance summary), then the status callback. A webhook fails when it is not a 200 or does not
answer with the question the flow asks next (the apology a missed deadline gives, say).
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import requests
from twilio.request_validator import RequestValidator

REPO = Path(__file__).resolve().parent.parent
# What Twilio issues: 32 hex characters (docs/configuration.md).
TOKEN = "0123456789abcdef0123456789abcdef"
# Twilio gives up on a webhook after 15 s ("an application error has occurred").
TWILIO_TIMEOUT = 15.0
# `ivr` as a command, whatever the interpreter's scripts folder holds.
IVR = [sys.executable, "-c", "from ivr.cli import main; main(prog_name='ivr')"]
IMPORT_APP_NAME = "ivr-bench-import"


def ivr_env(database_url: str) -> dict[str, str]:
    """The environment of `ivr serve` and `ivr accounts import`: only our IVR_* variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("IVR_")}
    env.update({"IVR_DATABASE_URL": database_url, "IVR_TWILIO_AUTH_TOKEN": TOKEN,
                "IVR_PIN_KEY": "b" * 64, "IVR_SECRET_KEY": "c" * 64,
                "IVR_PROMPTS_DIR": str(REPO / "prompts"), "PYTHONPATH": str(REPO)})
    return env


def free_port() -> int:
    """A port on 127.0.0.1 nobody listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def settle(database_url: str) -> None:
    """Let the database finish with the import that filled it (autovacuum and checkpoints
    after a million inserted rows), so that "idle" is idle."""
    if database_url.startswith("postgresql"):
        import psycopg

        with psycopg.connect(database_url.replace("postgresql+psycopg://", "postgresql://"),
                             autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE")
            conn.execute("CHECKPOINT")
    else:
        import sqlite3

        lite = sqlite3.connect(database_url.removeprefix("sqlite:///"))
        lite.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        lite.close()


@contextmanager
def serving(database_url: str, log: Path, workers: int = 2) -> Iterator[str]:
    """`ivr serve` on a free port of 127.0.0.1; yields its base URL, stops it after."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with log.open("ab") as out:
        server = subprocess.Popen(  # noqa: S603 - our own command
            [*IVR, "serve", "--port", str(port), "--workers", str(workers)], cwd=REPO,
            env=ivr_env(database_url), stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"ivr serve exited with {server.returncode}; see {log}")
            try:
                if requests.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"ivr serve did not answer /healthz in 60 s; see {log}")
            time.sleep(0.2)
        yield base
    finally:
        server.send_signal(signal.SIGTERM)  # gunicorn's master stops its workers
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


@dataclass(frozen=True)
class Caller:
    """A caller the file knows: the phone on file and the service ZIP."""

    phone: str
    zip_code: str


@dataclass(frozen=True)
class Sample:
    """One webhook: when it was sent (monotonic s), its route, its latency, why it failed."""

    at: float
    route: str
    ms: float
    failure: str  # "" when the answer was the one the flow gives


# Each step of a call: (route label, path, Digits or None, what the answer must hold).
_STEPS: tuple[tuple[str, str, str | None, str], ...] = (
    # The caller's account has its language on file: no language menu.
    ("incoming", "/voice/incoming", None, "/voice/step/confirm_account"),
    ("confirm", "/voice/step/confirm_account", "1", "/voice/step/verify"),
    ("verify", "/voice/step/verify", "zip", "/voice/step/main_menu"),
    ("status", "/voice/status", None, ""),
)


def _judge(response: requests.Response, expect: str) -> str:
    """Why the answer is not the flow's next question ("" when it is)."""
    if response.status_code != 200:
        return f"http {response.status_code}"
    body = response.text
    if expect and f'action="{expect}"' not in body and f"{expect}<" not in body:
        # The apology a missed deadline or an error gives ends the call.
        return "apology" if "<Hangup" in body else "unexpected answer"
    if not expect and "<Say" in body:
        return "apology"
    return ""


class CallerLoad:
    """Closed-loop callers: each thread makes one call after another until stopped."""

    def __init__(self, base_url: str, callers: Sequence[Caller], threads: int = 2,
                 pause: float = 0.03, seed: int = 1) -> None:
        self.base_url = base_url
        self.callers = callers
        self.pause = pause
        self.samples: list[Sample] = []
        self.unexpected: Counter[str] = Counter()  # first bytes of unexpected answers
        self._stop = threading.Event()
        self._validator = RequestValidator(TOKEN)
        self._threads = [threading.Thread(target=self._run, args=(seed + i,), daemon=True)
                         for i in range(threads)]

    def __enter__(self) -> CallerLoad:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=TWILIO_TIMEOUT + 5)

    def _run(self, seed: int) -> None:
        rng = random.Random(seed)
        session = requests.Session()
        while not self._stop.is_set():
            self._call(session, rng.choice(self.callers))

    def _call(self, session: requests.Session, caller: Caller) -> None:
        sid = "CA" + uuid.uuid4().hex
        base = {"AccountSid": "AC" + "0" * 32, "ApiVersion": "2010-04-01", "CallSid": sid,
                "CallStatus": "in-progress", "Direction": "inbound", "From": caller.phone,
                "Caller": caller.phone, "To": "+13125550100", "Called": "+13125550100"}
        for route, path, digits, expect in _STEPS:
            if self._stop.is_set():
                return
            form = dict(base)
            if digits is not None:
                form["Digits"] = caller.zip_code if digits == "zip" else digits
                form["FinishedOnKey"] = ""
            if route == "status":
                form.update(CallStatus="completed", CallDuration="42")
            url = self.base_url + path
            headers = {"X-Twilio-Signature": self._validator.compute_signature(url, form)}
            started = time.monotonic()
            try:
                response = session.post(url, data=form, headers=headers,
                                        timeout=TWILIO_TIMEOUT)
                failure = _judge(response, expect)
                if failure == "unexpected answer":
                    self.unexpected[_gist(response.text)] += 1
            except requests.Timeout:
                failure = "timeout"
            except requests.RequestException as exc:
                failure = f"connection ({type(exc).__name__})"
            self.samples.append(Sample(started, route, (time.monotonic() - started) * 1000,
                                       failure))
            if failure:
                return  # Twilio would have ended the call here
            time.sleep(self.pause)

    def between(self, start: float, end: float) -> list[Sample]:
        """The webhooks sent in [start, end)."""
        return [s for s in list(self.samples) if start <= s.at < end]


def _gist(body: str) -> str:
    return re.sub(r"\s+", " ", body)[:160]


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank percentile (q in 0..100) of ``values``; nan when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


@dataclass
class Latency:
    """p50, p99 and max of a phase's webhooks, and what failed."""

    count: int
    p50: float
    p99: float
    max: float
    failures: Counter[str] = field(default_factory=Counter)

    @classmethod
    def of(cls, samples: Sequence[Sample]) -> Latency:
        """The figures of ``samples``."""
        ms = [s.ms for s in samples]
        return cls(len(ms), percentile(ms, 50), percentile(ms, 99), max(ms, default=math.nan),
                   Counter(s.failure for s in samples if s.failure))

    @property
    def failed(self) -> int:
        """How many webhooks failed."""
        return sum(self.failures.values())

    def line(self) -> str:
        """``p50 .. ms  p99 .. ms  max .. ms  (N webhooks, F failed: why)``."""
        why = ", ".join(f"{n} {reason}" for reason, n in self.failures.most_common())
        if not self.count:
            return "(no webhook sent)"
        return (f"p50 {self.p50:6.1f} ms  p99 {self.p99:7.1f} ms  max {self.max:7.1f} ms  "
                f"({self.count:,} webhooks, {self.failed} failed{': ' + why if why else ''})")


@dataclass
class LoadResult:
    """Idle against during-import figures, the import's own time and the server's outcomes."""

    idle: Latency
    during: Latency
    import_seconds: float
    import_ok: bool
    import_output: str
    timeline: list[str]
    server_outcomes: Counter[str]
    unexpected: Counter[str]


Probe = Callable[[], str]


class PostgresProbe:
    """What the import's connection runs now (its first words), from pg_stat_activity."""

    def __init__(self, url: str) -> None:
        import psycopg

        self._conn = psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"),
                                     autocommit=True)

    def __call__(self) -> str:
        rows = self._conn.execute("SELECT state, query FROM pg_stat_activity "
                                  "WHERE application_name = %s", (IMPORT_APP_NAME,)).fetchall()
        labels = []
        for state, query in rows:
            words = " ".join(str(query or "").split()[:3])[:40]
            labels.append(words if state == "active" else str(state))
        return " + ".join(sorted(labels)) or "not connected"

    def close(self) -> None:
        """Close the probe's connection."""
        self._conn.close()


def measure(base_url: str, callers: Sequence[Caller], import_file: Path, database_url: str,
            server_log: Path, *, idle_seconds: float = 10.0, warmup_seconds: float = 2.0,
            threads: int = 2, pause: float = 0.03, slices: int = 10,
            probe: Probe | None = None) -> LoadResult:
    """Load the server idle for ``idle_seconds``, then while ``import_file`` is imported."""
    log_start = server_log.stat().st_size
    probes: list[tuple[float, str]] = []
    with CallerLoad(base_url, callers, threads, pause) as load:
        time.sleep(warmup_seconds)  # connections, the catalog, the first queries
        idle_start = time.monotonic()
        time.sleep(idle_seconds)
        import_start = time.monotonic()
        env = {**ivr_env(database_url), "IVR_LOG_LEVEL": "WARNING", "PGAPPNAME": IMPORT_APP_NAME}
        importer = subprocess.Popen(  # noqa: S603 - our own command
            [*IVR, "accounts", "import", str(import_file)], cwd=REPO, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        while importer.poll() is None:
            if probe is not None:
                probes.append((time.monotonic(), probe()))
            time.sleep(0.25)
        import_end = time.monotonic()
        output = importer.stdout.read() if importer.stdout else ""
    idle = Latency.of(load.between(idle_start, import_start))
    during_samples = load.between(import_start, import_end)
    during = Latency.of(during_samples)
    return LoadResult(idle, during, import_end - import_start, importer.returncode == 0,
                      output.strip(), _timeline(during_samples, probes, import_start,
                                                import_end, slices),
                      _server_outcomes(server_log, log_start), load.unexpected)


def _timeline(samples: Sequence[Sample], probes: Sequence[tuple[float, str]], start: float,
              end: float, slices: int) -> list[str]:
    """The import in ``slices`` equal slices: each one's latency and what the import ran."""
    lines = []
    width = (end - start) / slices
    for i in range(slices):
        lo, hi = start + i * width, start + (i + 1) * width
        latency = Latency.of([s for s in samples if lo <= s.at < hi])
        seen = Counter(label for at, label in probes if lo <= at < hi)
        doing = ", ".join(f"{label} {n * 100 // max(1, sum(seen.values()))}%"
                          for label, n in seen.most_common(2))
        lines.append(f"{lo - start:6.1f}-{hi - start:6.1f} s  {latency.line()}"
                     + (f"  [{doing}]" if doing else ""))
    for route in dict.fromkeys(step[0] for step in _STEPS):
        latency = Latency.of([s for s in samples if s.route == route])
        lines.append(f"{route:>15}  {latency.line()}")
    return lines


def _server_outcomes(log: Path, offset: int) -> Counter[str]:
    """The webhook outcomes other than ok the server logged after ``offset``, by route
    (``error on step:verify``), then each error's first exception, its cause."""
    outcomes: Counter[str] = Counter()
    causes: Counter[str] = Counter()
    with log.open("rb") as f:
        f.seek(offset)
        for raw in f:
            if not raw.startswith(b"{"):
                continue  # gunicorn's own lines and the access log
            try:
                entry = json.loads(raw)
            except ValueError:
                continue
            if entry.get("msg") == "webhook" and entry.get("outcome") != "ok":
                outcomes[f"{entry.get('outcome')} on {entry.get('route')}"] += 1
            elif entry.get("msg") == "webhook failed":
                causes[f"cause on {entry.get('route')}: {_cause(entry.get('error', ''))}"] += 1
    return outcomes + causes


def _cause(error: str) -> str:
    """The first exception line of a logged traceback (the root cause)."""
    for line in error.splitlines():
        if line and not line[0].isspace() and not line.startswith(
                ("Traceback", "The above exception", "During handling", "CONTEXT", "(")):
            return line[:120]
    return "?"
