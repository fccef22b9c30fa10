"""Instructions per webhook, the line against the floor: a ratio the machine's noise cannot move.

`bench/load.py`'s latency ratio moves by 10-20 % between runs and machines on shared 2-core
hosts, more than most changes to the line. This serves each app exactly as `bench/load.py`
does (gunicorn, gthread, here one worker), under valgrind's callgrind, and counts the
instructions its worker runs per webhook of the same calls: twice per app, a short and a
longer load, so start-up and warm-up cancel in the difference. The same code gives the same
count (within about 1 %), whatever else the machine does; the sequential latency ratio of
`bench/load.py` has followed this ratio (docs/performance-log.md).

Only the gunicorn worker is counted: on PostgreSQL the database server's own work is not.
valgrind runs Python about 50 times slower, so a run takes a few minutes.

Usage: python -m bench.instructions [--databases sqlite,postgresql] [--seconds 20]
Needs valgrind (Debian: `apt-get install valgrind`).
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
from pathlib import Path

from bench.load import DEFAULT_PG, floor_settings, load, prepare, serve
from bench.webhook_load import free_port, ivr_env

_COLLECTED = re.compile(rb"==(\d+)== Collected : (\d+)")


def _worker_instructions(log: Path, master: int) -> int:
    """The instructions callgrind counted in the worker (every process but the master)."""
    counts = {int(pid): int(n) for pid, n in _COLLECTED.findall(log.read_bytes())}
    workers = [n for pid, n in counts.items() if pid != master]
    if len(workers) != 1:
        raise RuntimeError(f"expected one worker's count in {log}, found {counts}")
    return workers[0]


def count(name: str, command: list[str], database_url: str, seconds: float,
          work: Path) -> tuple[int, int]:
    """(instructions, webhooks) of one run of ``seconds`` under load, start-up included."""
    log = work / f"{name}-{seconds:.0f}.log"
    log.unlink(missing_ok=True)
    port = free_port()
    valgrind = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={work}/cg.%p"]
    cmd = [*valgrind, *command, "--bind" if name == "bare" else "--port",
           f"127.0.0.1:{port}" if name == "bare" else str(port)]
    # valgrind runs Python about 50 times slower: start-up and the stop take that much longer.
    with serve(name, cmd, ivr_env(database_url), log, port, name == "ivr", slow=10) as server:
        run = load(server, 1, seconds)
        master = server.process.pid
    if run.errors:
        raise RuntimeError(f"{name}: {run.errors} webhooks failed: {run.why}")
    return _worker_instructions(log, master), run.count


def per_webhook(name: str, command: list[str], database_url: str, seconds: float,
                work: Path) -> float:
    """Instructions per webhook: the difference between a short and a longer run."""
    short_ir, short_n = count(name, command, database_url, seconds, work)
    long_ir, long_n = count(name, command, database_url, 3 * seconds, work)
    return (long_ir - short_ir) / (long_n - short_n)


def main() -> None:
    """Count both apps on each database and print the ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--databases", default="sqlite,postgresql")
    parser.add_argument("--postgres-url", default=DEFAULT_PG)
    parser.add_argument("--seconds", type=float, default=20.0,
                        help="the short run's load (the longer one is three times as long)")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is not installed (Debian: apt-get install valgrind)")
    gunicorn = [sys.executable, "-m", "gunicorn", "--workers", "1", "--threads", "8",
                "--timeout", "120", *floor_settings(),
                "bench.bare_app:app"]
    line = [sys.executable, "-c", "from ivr.cli import main; main(prog_name='ivr')",
            "serve", "--workers", "1", "--threads", "8"]
    with tempfile.TemporaryDirectory(prefix="ivr-instructions-") as tmp:
        work = Path(tmp)
        for label in args.databases.split(","):
            url = (args.postgres_url if label == "postgresql"
                   else f"sqlite:///{work / 'load.db'}")
            prepare(url, work, 1000)
            ivr = per_webhook("ivr", line, url, args.seconds, work)
            bare = per_webhook("bare", gunicorn, url, args.seconds, work)
            print(f"{label:>10} instructions per webhook (the worker's): line {ivr / 1e6:.2f} M"
                  f" | floor {bare / 1e6:.2f} M | line / floor {ivr / bare:.2f}x", flush=True)


if __name__ == "__main__":
    main()
