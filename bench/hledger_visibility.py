"""Whether hledger-web's own reads see every write of several posting processes while
readers poll it, and what the journal's stamps cost the readers. Real hledger-web 1.25 on
127.0.0.1.

Each round: --writers processes (as `ivr serve`'s workers posting while callers wait, and
`ivr worker`, with a thread of other work each) post --writes first attempts through the
hledger connector with its defaults (the journal found and stamped), while --readers
threads poll `GET /accounts` (what the line's live balance look-up reads; an office's
browser reads the same way; --path /version, the smallest answer, makes the most reloads).
Then one read asks hledger-web for every transaction: a write missing from it stays unseen
by every read, balances included, until some later write. hledger-web reloads a changed
journal on each request, so the readers' reloads race the writes.

Rounds alternate two modes on one journal (the seeded one plus --history earlier bills):
- ``again``: the connector as shipped, which stamps the journal after each write and again
  once a burst's reloads are over;
- ``once``: each write stamped once, as before 2026-12-04.

Prints, per mode: rounds that ended with a write unseen, the writers' median time per post,
and the readers' reads served, median and maximum latency.

Usage: python -m bench.hledger_visibility [--rounds 20] [--history 5000] [--writers 2]
                                          [--writes 3] [--readers 3] [--path /version]
"""

from __future__ import annotations

import argparse
import multiprocessing
import multiprocessing.queues
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import requests

from bench.posting import bills
from bench.posting import post as payment
from connectors.accounting.base import RetryableError
from connectors.accounting.hledger import HledgerConnector
from connectors.accounting.hledger_journal import JournalStamp
from tests.servers.hledger import HledgerServer, start_hledger

MODES = ("again", "once")


def write(settings: dict[str, str], count: int, again: bool,
          out: multiprocessing.queues.Queue[tuple[list[str], list[float]]]) -> None:
    """One posting process: ``count`` first attempts, each retried as the worker would
    (a busy hledger-web answers 403) until it lands."""
    if not again:
        JournalStamp._again_later = lambda self: None  # type: ignore[method-assign]
    connector = HledgerConnector.from_settings(settings)
    codes, took = [], []
    done = threading.Event()

    def other_work() -> None:
        # The process's other threads (a worker's pool and recorder, a server's other
        # requests) take turns at the GIL, so a stamp can wait a few ms after its answer.
        while not done.is_set():
            sum(range(2000))

    threading.Thread(target=other_work, daemon=True).start()
    for n in range(count):
        post = replace(payment(n), may_exist=False)  # a first attempt
        started = time.perf_counter()
        for _ in range(20):
            try:
                codes.append(connector.post_payment(post, timeout=60).receipt_id)
                break
            except RetryableError:
                post = replace(post, may_exist=True)
                time.sleep(0.05)
        took.append(time.perf_counter() - started)
    done.set()
    connector.close()
    out.put((codes, took))


@dataclass
class Tally:
    """One mode's results over its rounds."""
    unseen_rounds: int = 0
    rounds: int = 0
    post_seconds: list[float] = field(default_factory=list)
    read_seconds: list[float] = field(default_factory=list)


def read_until(url: str, stop: threading.Event, took: list[float]) -> None:
    session = requests.Session()
    while not stop.is_set():
        started = time.perf_counter()
        try:
            session.get(url, timeout=60).raise_for_status()
        except requests.RequestException:
            continue
        took.append(time.perf_counter() - started)


def one_round(server: HledgerServer, args: argparse.Namespace, again: bool,
              tally: Tally) -> None:
    context = multiprocessing.get_context("spawn")
    out: multiprocessing.queues.Queue[tuple[list[str], list[float]]] = context.Queue()
    stop = threading.Event()
    readers = [threading.Thread(target=read_until,
                                args=(server.url + args.path, stop, tally.read_seconds))
               for _ in range(args.readers)]
    for reader in readers:
        reader.start()
    writers = [context.Process(target=write, args=(server.settings(), args.writes, again, out))
               for _ in range(args.writers)]
    for writer in writers:
        writer.start()
    codes: list[str] = []
    for _ in writers:
        written, took = out.get(timeout=600)
        codes += written
        tally.post_seconds += took
    for writer in writers:
        writer.join()
    stop.set()
    for reader in readers:
        reader.join()
    if len(codes) != args.writers * args.writes:
        raise SystemExit(f"only {len(codes)} of {args.writers * args.writes} posts landed")
    seen = {t["tcode"] for t in requests.get(f"{server.url}/transactions", timeout=120).json()}
    tally.rounds += 1
    tally.unseen_rounds += any(code not in seen for code in codes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=20, help="rounds per mode")
    parser.add_argument("--history", type=int, default=5000, help="earlier bills")
    parser.add_argument("--writers", type=int, default=2)
    parser.add_argument("--writes", type=int, default=3, help="posts per writer a round")
    parser.add_argument("--readers", type=int, default=3)
    parser.add_argument("--path", default="/accounts",
                        help="what the readers ask (/version: the smallest answer, so the "
                             "most reloads)")
    args = parser.parse_args()
    server = start_hledger(Path(tempfile.mkdtemp(prefix="bench-visibility-")) / "hledger")
    tallies = {mode: Tally() for mode in MODES}
    try:
        server.append_journal(bills(args.history))
        for n in range(args.rounds):
            for mode in MODES if n % 2 == 0 else MODES[::-1]:
                one_round(server, args, mode == "again", tallies[mode])
        print(f"{args.writers} writers x {args.writes} posts a round, {args.readers} readers "
              f"of {args.path}, "
              f"journal of {args.history:,} earlier bills, {args.rounds} rounds per mode")
        print("| stamps | rounds ending with a write unseen | post, median s | reads served "
              "| read, median / max s |")
        print("|---|---|---|---|---|")
        for mode, tally in tallies.items():
            reads = tally.read_seconds
            print(f"| {mode} | {tally.unseen_rounds} of {tally.rounds} | "
                  f"{statistics.median(tally.post_seconds):.3f} | {len(reads)} | "
                  f"{statistics.median(reads):.3f} / {max(reads):.3f} |")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
