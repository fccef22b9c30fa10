"""The line against the floor for a webhook, side by side in one run (issue 14).

    python -m bench.load [--databases sqlite,postgresql] [--rounds 3] [--workers 2]

The floor is bench/bare_app.py (a Flask app that checks the Twilio signature and answers a
constant ~1 KB <Gather>) under the same gunicorn settings as `ivr serve` (its gthread worker
class and heartbeat folder, the same workers and threads: ``floor_settings``). For each
database the two servers run at once, on a database that holds ``--accounts`` accounts,
and every figure is measured on one, then the other, interleaved, ``--rounds`` times (min
and median printed):

- sequential: one caller, no pause: mean and p99 per webhook, and the server's CPU per
  webhook (the gunicorn processes; on PostgreSQL also the backends of its connections);
- closed loop: N callers, no pause: webhooks per second, p99, errors;
- the operator's figure: how many simultaneous callers, each pausing 4-8 s between keypresses
  (the time a prompt takes to hear and answer), one node serves at p99 < 250 ms with zero
  errors (a short search over caller counts).

With ``--accounts-vs N`` it measures something else (bench/scale.py): the line alone on
``--accounts`` accounts and on N, each database straight after its import, interleaved.

Each call is the path every caller takes (bench/webhook_load.py): the first webhook, English
(caller-ID lookup), "yes, that's my account", the service ZIP (the balance), the status
callback. Each webhook opens its own connection, as Twilio's do through a proxy. The load
runs on the same machine as the servers: a shared 2-core machine is noisy; repeat.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

import psutil
import requests
from twilio.request_validator import RequestValidator

from bench.imports import make_account_file, phone, service_zip
from bench.webhook_load import TOKEN, free_port, ivr_env, percentile, settle

REPO = Path(__file__).resolve().parent.parent
DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/ivr_load"
APP_NAME = "ivr-bench-load"
STEPS: tuple[tuple[str, str | None, str], ...] = (
    # The caller's account has its language on file: no language menu.
    ("/voice/incoming", None, "/voice/step/confirm_account"),
    ("/voice/step/confirm_account", "1", "/voice/step/verify"),
    ("/voice/step/verify", "zip", "/voice/step/main_menu"),
    ("/voice/status", None, ""),
)
P99_TARGET_MS = 250.0


@dataclass
class Server:
    """A running server: its name, base URL, gunicorn master, and whether it is the line."""

    name: str
    host: str
    port: int
    process: subprocess.Popen[bytes]
    line: bool
    database_url: str = ""

    def cpu_seconds(self) -> float:
        """CPU the gunicorn master and workers used so far (and, on PostgreSQL, the line's
        database backends)."""
        total = 0.0
        try:
            master = psutil.Process(self.process.pid)
            for proc in [master, *master.children(recursive=True)]:
                times = proc.cpu_times()
                total += times.user + times.system
        except psutil.Error:
            pass
        for pid in self._backends():
            try:
                times = psutil.Process(pid).cpu_times()
                total += times.user + times.system
            except psutil.Error:
                pass
        return total

    def memory(self) -> str:
        """The master's and each worker's memory in MB: RSS (what `ps` shows, pages shared
        with the master counted in every worker), PSS (shared pages split between the
        processes sharing them: their sum is what the server really holds) and USS (only
        this process's pages: what one more worker costs)."""
        parts = []
        try:
            master = psutil.Process(self.process.pid)
            for i, proc in enumerate([master, *master.children(recursive=True)]):
                info = proc.memory_full_info()
                role = f"worker{i}" if i else "master"
                parts.append(f"{role} rss {info.rss / 1e6:.0f} pss {info.pss / 1e6:.0f} "
                             f"uss {info.uss / 1e6:.0f}")
        except psutil.Error as exc:
            return f"(unavailable: {exc})"
        return "; ".join(parts)

    def _backends(self) -> list[int]:
        if not (self.line and self.database_url.startswith("postgresql")):
            return []
        import psycopg

        url = self.database_url.replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(url, autocommit=True) as conn:
            rows = conn.execute("SELECT pid FROM pg_stat_activity WHERE application_name = %s",
                                (APP_NAME,)).fetchall()
        return [int(row[0]) for row in rows]


@contextmanager
def serve(name: str, command: list[str], env: dict[str, str], log: Path, port: int,
          line: bool, database_url: str = "", slow: float = 1.0) -> Iterator[Server]:
    """Start a gunicorn server, wait for /healthz, stop it after (``slow``: how many times
    longer than usual starting and stopping may take, as under valgrind)."""
    with log.open("ab") as out:
        proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=out,  # noqa: S603
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 60 * slow
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}; see {log}")
            try:
                if requests.get(f"http://127.0.0.1:{port}/healthz", timeout=2).ok:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not answer /healthz; see {log}")
            time.sleep(0.2)
        yield Server(name, "127.0.0.1", port, proc, line, database_url)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30 * slow)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@dataclass
class Run:
    """What one load phase measured."""

    ms: list[float] = field(default_factory=list)
    errors: int = 0
    why: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    cpu: float = 0.0

    def fail(self, why: str) -> None:
        """Count one failed webhook."""
        self.errors += 1
        self.why[why] = self.why.get(why, 0) + 1

    @property
    def count(self) -> int:
        """Webhooks answered or failed."""
        return len(self.ms) + self.errors

    @property
    def mean(self) -> float:
        """Mean latency (ms) of the answered webhooks."""
        return statistics.fmean(self.ms) if self.ms else math.nan

    @property
    def p99(self) -> float:
        """p99 latency (ms)."""
        return percentile(self.ms, 99)

    @property
    def rate(self) -> float:
        """Webhooks per second."""
        return self.count / self.seconds if self.seconds else math.nan

    @property
    def cpu_ms(self) -> float:
        """Server CPU per webhook (ms)."""
        return self.cpu * 1000 / self.count if self.count else math.nan


def _request(server: Server, path: str, form: dict[str, str],
             validator: RequestValidator) -> bytes:
    """The webhook as Twilio sends it, signed (made before the clock starts: Twilio's
    signing is not the line's latency)."""
    url = f"http://{server.host}:{server.port}{path}"
    body = urlencode(form).encode()
    head = (f"POST {path} HTTP/1.1\r\nHost: {server.host}:{server.port}\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\n"
            f"X-Twilio-Signature: {validator.compute_signature(url, form)}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
    return head + body


async def _post(server: Server, request: bytes) -> tuple[int, str]:
    reader, writer = await asyncio.open_connection(server.host, server.port)
    try:
        writer.write(request)
        raw = await reader.read()
    finally:
        writer.close()
    status_line, _, rest = raw.partition(b"\r\n")
    status = int(status_line.split()[1]) if status_line else 0
    return status, rest.partition(b"\r\n\r\n")[2].decode(errors="replace")


async def _caller(server: Server, run: Run, stop: float, pause: tuple[float, float],
                  rng: random.Random, accounts: int, validator: RequestValidator) -> None:
    if pause[1]:
        await asyncio.sleep(rng.uniform(0, pause[1]))  # callers do not all ring at once
    while time.monotonic() < stop:
        i = rng.randrange(accounts)
        base = {"AccountSid": "AC" + "0" * 32, "CallSid": "CA" + uuid.uuid4().hex,
                "CallStatus": "in-progress", "From": phone(i), "To": "+13125550100",
                "Direction": "inbound"}
        for path, digits, expect in STEPS:
            if time.monotonic() >= stop:
                return
            form = dict(base)
            if digits is not None:
                form["Digits"] = service_zip(i) if digits == "zip" else digits
            if path == "/voice/status":
                form.update(CallStatus="completed", CallDuration="42")
            request = _request(server, path, form, validator)
            started = time.monotonic()
            try:
                status, text = await asyncio.wait_for(_post(server, request), 15)
            except (TimeoutError, OSError) as exc:
                run.fail(type(exc).__name__)
                break
            ms = (time.monotonic() - started) * 1000
            if status != 200:
                run.fail(f"http {status}")
                break
            if server.line and expect and f'action="{expect}"' not in text \
                    and f"{expect}<" not in text:
                run.fail("apology" if "<Hangup" in text else "unexpected answer")
                break
            run.ms.append(ms)
            if pause[1]:
                await asyncio.sleep(rng.uniform(*pause))


def load(server: Server, callers: int, seconds: float, pause: tuple[float, float] = (0, 0),
         accounts: int = 1000, seed: int = 1) -> Run:
    """``callers`` callers against ``server`` for ``seconds``; the server's CPU meanwhile."""
    run = Run()
    validator = RequestValidator(TOKEN)

    async def main() -> None:
        stop = time.monotonic() + seconds
        await asyncio.gather(*(
            _caller(server, run, stop, pause, random.Random(seed * 100_003 + k), accounts,
                    validator) for k in range(callers)))

    cpu0 = server.cpu_seconds()
    started = time.monotonic()
    asyncio.run(main())
    run.seconds = time.monotonic() - started
    run.cpu = server.cpu_seconds() - cpu0
    return run


def capacity(server: Server, seconds: float, accounts: int, start: int) -> tuple[int, Run]:
    """The most callers with 4-8 s pauses served at p99 < 250 ms and no error (a search)."""
    def ok(n: int) -> tuple[bool, Run]:
        run = load(server, n, seconds, (4.0, 8.0), accounts, seed=n)
        good = run.errors == 0 and run.p99 < P99_TARGET_MS and run.count > 0
        if not good:  # say why the search stopped short of it
            print(f"{'':>10} {server.name:>4} {n:,} callers: p99 {run.p99:.0f} ms, "
                  f"{run.count:,} webhooks, errors {dict(run.why) or 0}")
        return good, run

    lo, hi, best = 0, 0, Run()
    n = max(10, start)
    while True:  # up until it fails
        good, run = ok(n)
        if not good:
            hi = n
            break
        lo, best, n = n, run, n * 2
        if n > 8000:
            return lo, best
    while hi - lo > max(10, lo // 10):  # then halve the gap to 10 %
        mid = (lo + hi) // 2
        good, run = ok(mid)
        if good:
            lo, best = mid, run
        else:
            hi = mid
    return lo, best


def prepare(database_url: str, work: Path, accounts: int, settled: bool = True) -> None:
    """A fresh database holding ``accounts`` accounts (imported the way operators do);
    ``settled``: vacuumed and analyzed after, else as the import itself leaves it."""
    if database_url.startswith("postgresql"):
        from bench.imports import _fresh_postgres

        _fresh_postgres(database_url)
    file = work / f"accounts-{accounts}.csv"
    make_account_file(file, accounts)
    env = {**ivr_env(database_url), "IVR_LOG_LEVEL": "WARNING"}
    ivr = [sys.executable, "-c", "from ivr.cli import main; main(prog_name='ivr')"]
    subprocess.run([*ivr, "db", "upgrade"], cwd=REPO, env=env, check=True,  # noqa: S603
                   capture_output=True)
    subprocess.run([*ivr, "accounts", "import", str(file)], cwd=REPO,  # noqa: S603
                   env=env, check=True, capture_output=True)
    if settled:
        settle(database_url)
    file.unlink()


def floor_settings() -> list[str]:
    """gunicorn's options that serve the floor as `ivr serve` serves the line (its worker
    class, ivr.web.worker, and its heartbeat file's place): the same settings for both."""
    from ivr.web.server import WORKER_CLASS, heartbeat_dir

    where = heartbeat_dir()
    return ["--worker-class", WORKER_CLASS, *(["--worker-tmp-dir", where] if where else [])]


def _fmt(values: list[float], unit: str, digits: int = 1) -> str:
    return f"min {min(values):.{digits}f} med {statistics.median(values):.{digits}f} {unit}"


def _ratio(ivr: list[float], bare: list[float], higher_is_worse: bool = True) -> str:
    a, b = statistics.median(ivr), statistics.median(bare)
    r = a / b if higher_is_worse else b / a
    return f"{r:.2f}x"


def bench_database(label: str, database_url: str, args: argparse.Namespace, work: Path) -> None:
    """Both servers on one database, every figure interleaved and repeated."""
    prepare(database_url, work, args.accounts)
    gunicorn = [sys.executable, "-m", "gunicorn", "--workers", str(args.workers),
                "--threads", str(args.threads), "--timeout", "30",
                *floor_settings()]
    bare_port, ivr_port = free_port(), free_port()
    env = {**ivr_env(database_url), "PGAPPNAME": APP_NAME, "IVR_LOG_LEVEL": "INFO"}
    ivr_cmd = [sys.executable, "-c", "from ivr.cli import main; main(prog_name='ivr')",
               "serve", "--port", str(ivr_port), "--workers", str(args.workers),
               "--threads", str(args.threads)]
    with serve("bare", [*gunicorn, "--bind", f"127.0.0.1:{bare_port}", "bench.bare_app:app"],
               ivr_env(database_url), work / "bare.log", bare_port, False) as bare, \
            serve("ivr", ivr_cmd, env, work / f"ivr-{label}.log", ivr_port, True,
                  database_url) as line:
        pair = {"ivr": line, "bare": bare}
        for server in pair.values():
            load(server, 4, 2.0, accounts=args.accounts)  # warm: imports, pools, caches
        # The warm-up's calls give the calls' tables a history, analyzed, as a line at peak
        # has: on tables still empty at their last ANALYZE, PostgreSQL's cached plan for a
        # call's load is a sequential scan, which grows with every call until autovacuum's
        # first look a minute later (a new line's first minute; not what this measures).
        settle(database_url)
        seq: dict[str, list[Run]] = {"ivr": [], "bare": []}
        loops: dict[tuple[str, int], list[Run]] = {}
        for r in range(args.rounds):
            order = ("ivr", "bare") if r % 2 == 0 else ("bare", "ivr")
            for name in order:
                seq[name].append(load(pair[name], 1, args.seconds, accounts=args.accounts,
                                      seed=r))
            for c in args.concurrency:
                for name in order:
                    loops.setdefault((name, c), []).append(
                        load(pair[name], c, args.seconds, accounts=args.accounts, seed=r))
        print(f"\n== {label}: {args.accounts:,} accounts, {args.workers} workers x "
              f"{args.threads} threads, {args.rounds} rounds of {args.seconds:.0f} s ==")
        for name in ("ivr", "bare"):
            runs = seq[name]
            print(f"{label:>10} {name:>4} sequential: mean {_fmt([x.mean for x in runs], 'ms', 2)}"
                  f" | p99 {_fmt([x.p99 for x in runs], 'ms')} | CPU/webhook "
                  f"{_fmt([x.cpu_ms for x in runs], 'ms', 2)} | errors "
                  f"{sum(x.errors for x in runs)}")
        for name in ("ivr", "bare"):
            print(f"{label:>10} {name:>4} memory MB after the load: {pair[name].memory()}")
        print(f"{label:>10} ratio ivr/bare: mean latency "
              f"{_ratio([x.mean for x in seq['ivr']], [x.mean for x in seq['bare']])}, p99 "
              f"{_ratio([x.p99 for x in seq['ivr']], [x.p99 for x in seq['bare']])}, CPU/webhook "
              f"{_ratio([x.cpu_ms for x in seq['ivr']], [x.cpu_ms for x in seq['bare']])}")
        for c in args.concurrency:
            parts = []
            for name in ("ivr", "bare"):
                runs = loops[(name, c)]
                parts.append(f"{name} {_fmt([x.rate for x in runs], '/s', 0)} p99 "
                             f"{statistics.median([x.p99 for x in runs]):.0f} ms errors "
                             f"{sum(x.errors for x in runs)}")
            ratio = _ratio([x.rate for x in loops[("ivr", c)]],
                           [x.rate for x in loops[("bare", c)]], higher_is_worse=False)
            print(f"{label:>10} closed loop {c:>3} callers: {' | '.join(parts)} | "
                  f"throughput bare/ivr {ratio}")
        if args.capacity_seconds > 0:
            found: dict[str, int] = {}
            for name in args.capacity_of.split(","):
                rate = statistics.median(
                    x.rate for x in loops[(name, max(args.concurrency))])
                n, run = capacity(pair[name], args.capacity_seconds, args.accounts,
                                  start=int(rate * 6 / 4))
                found[name] = n
                print(f"{label:>10} {name:>4} callers at p99 < {P99_TARGET_MS:.0f} ms with 4-8 s "
                      f"pauses: {n:,} (p99 {run.p99:.0f} ms, {run.count:,} webhooks, "
                      f"{run.rate:.0f}/s, CPU {run.cpu_ms:.2f} ms/webhook)")
            if found.get("bare") and found.get("ivr"):
                print(f"{label:>10} callers ivr/bare: {found['ivr'] / found['bare']:.2f}")
        failures = {k: v for runs in (*seq.values(), *loops.values()) for x in runs
                    for k, v in x.why.items()}
        if failures:
            print(f"{label:>10} failures: {failures}")


def main() -> None:
    """Parse arguments and run each database."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--databases", default="sqlite,postgresql")
    parser.add_argument("--postgres-url", default=DEFAULT_PG)
    parser.add_argument("--accounts", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0, help="each phase's length")
    parser.add_argument("--concurrency", default="10,40",
                        type=lambda s: [int(x) for x in s.split(",")])
    parser.add_argument("--capacity-seconds", type=float, default=20.0,
                        help="each step of the callers search (0: skip it)")
    parser.add_argument("--capacity-of", default="ivr,bare",
                        help="whose callers figure to search (the bare one is often bound by "
                        "this load generator itself)")
    parser.add_argument("--work", type=Path, default=None, help="keep logs and files here")
    parser.add_argument("--accounts-vs", type=int, default=0, metavar="N",
                        help="instead: the line on N accounts vs --accounts, each straight "
                        "after its import (bench/scale.py)")
    args = parser.parse_args()
    if args.accounts_vs:
        from bench.scale import main as scale_main

        scale_main(args)
        return
    with tempfile.TemporaryDirectory(prefix="ivr-load-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        for label in args.databases.split(","):
            url = (args.postgres_url if label == "postgresql"
                   else f"sqlite:///{work / 'load.db'}")
            if label == "sqlite":
                (work / "load.db").unlink(missing_ok=True)
            bench_database(label, url, args, work)


if __name__ == "__main__":
    main()
