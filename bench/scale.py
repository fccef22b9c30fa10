"""The line on many accounts against few, each straight after its import (issue 14).

    python -m bench.load --accounts-vs 1000000 [--accounts 1000] [--databases ...]

For each database two copies are filled by `ivr accounts import` (the way operators load
them) and used as the import leaves them: no VACUUM, no ANALYZE but the importer's own. An
`ivr serve` runs on each, and one caller without pauses walks the path every caller takes
(bench/load.py) on one, then the other, interleaved, ``--rounds`` times. Printed: mean and
p99 per webhook on each size (min and median) and the ratio of the medians, big / small.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

from sqlalchemy.engine import make_url

from bench.load import APP_NAME, Run, _fmt, load, prepare, serve
from bench.webhook_load import free_port, ivr_env


def _urls(label: str, args: argparse.Namespace, work: Path) -> dict[int, str]:
    sizes = (args.accounts, args.accounts_vs)
    if label == "sqlite":
        for n in sizes:
            (work / f"scale-{n}.db").unlink(missing_ok=True)
        return {n: f"sqlite:///{work / f'scale-{n}.db'}" for n in sizes}
    base = make_url(args.postgres_url)
    return {n: base.set(database=f"{base.database}_{n}").render_as_string(hide_password=False)
            for n in sizes}


def bench_scale(label: str, args: argparse.Namespace, work: Path) -> None:
    """Both sizes on one database engine, interleaved and repeated."""
    urls = _urls(label, args, work)
    for n, url in urls.items():
        prepare(url, work, n, settled=False)
    runs: dict[int, list[Run]] = {n: [] for n in urls}
    with ExitStack() as stack:
        servers = {}
        for n, url in urls.items():
            port = free_port()
            cmd = [sys.executable, "-c", "from ivr.cli import main; main(prog_name='ivr')",
                   "serve", "--port", str(port), "--workers", str(args.workers),
                   "--threads", str(args.threads)]
            env = {**ivr_env(url), "PGAPPNAME": APP_NAME, "IVR_LOG_LEVEL": "INFO"}
            servers[n] = stack.enter_context(
                serve(f"ivr-{n}", cmd, env, work / f"ivr-{label}-{n}.log", port, True, url))
        for n, server in servers.items():
            load(server, 4, 2.0, accounts=n)  # warm: imports, pools, caches
        for r in range(args.rounds):
            order = list(servers) if r % 2 == 0 else list(reversed(servers))
            for n in order:
                runs[n].append(load(servers[n], 1, args.seconds, accounts=n, seed=r))
    print(f"\n== {label}: {args.accounts_vs:,} vs {args.accounts:,} accounts, straight after "
          f"the import, {args.rounds} rounds of {args.seconds:.0f} s, one caller ==")
    for n, mine in runs.items():
        print(f"{label:>10} {n:>9,} accounts: mean {_fmt([x.mean for x in mine], 'ms', 2)} | "
              f"p99 {_fmt([x.p99 for x in mine], 'ms')} | errors {sum(x.errors for x in mine)}"
              f" | {sum(x.count for x in mine):,} webhooks")
    big, small = runs[args.accounts_vs], runs[args.accounts]

    def ratio(what: str) -> float:
        return float(statistics.median(getattr(x, what) for x in big)
                / statistics.median(getattr(x, what) for x in small))

    print(f"{label:>10} ratio {args.accounts_vs:,}/{args.accounts:,}: mean "
          f"{ratio('mean'):.2f}x, p99 {ratio('p99'):.2f}x")


def main(args: argparse.Namespace) -> None:
    """Each database in turn (called by bench/load.py for ``--accounts-vs``)."""
    with tempfile.TemporaryDirectory(prefix="ivr-scale-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        for label in args.databases.split(","):
            bench_scale(label, args, work)
