"""How long a caller listens on the standard calls: words, seconds of speech and keypress
turns per state, and the answer-to-confirmation estimate (ivr/simulator/timing.py says how).

Usage: python -m bench.call_time [--markdown] [--prompts DIR] [--cache FILE]

Speech is espeak-ng at a stated rate, cached by text (default instance/spoken-lengths.json),
so a second run synthesises only what changed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from ivr.prompts.spoken import RATE_WPM, SpokenLengths  # noqa: E402
from ivr.simulator.timing import (  # noqa: E402
    ENTRY_SECONDS,
    KEY_SECONDS,
    TURN_SECONDS,
    CallTime,
    time_calls,
)


def minutes(seconds: float) -> str:
    """125.4 -> "2:05"."""
    whole = round(seconds)
    return f"{whole // 60}:{whole % 60:02d}"


def basis() -> str:
    """What the figures assume, in one line."""
    return (f"espeak-ng at {RATE_WPM} words a minute; {TURN_SECONDS:g} s for each question "
            f"answered (+{KEY_SECONDS:g} s a further key); card entry "
            f"{ENTRY_SECONDS['credit-card']:g} s, bank entry {ENTRY_SECONDS['ach-debit']:g} s")


def print_call(timed: CallTime) -> None:
    """One call, state by state."""
    print(f"\n{timed.call.name}: {timed.call.title}")
    print(f"  {'state':<20} {'words':>6} {'speech s':>9} {'turns':>6}")
    for row in timed.states:
        print(f"  {row.state:<20} {row.words:>6} {row.seconds:>9.1f} {row.turns:>6}")
    print(f"  to confirmation: {timed.words} words, {timed.speech_seconds:.1f} s of speech, "
          f"{timed.turns} turns, {timed.entry_seconds:g} s entry: "
          f"{timed.total_seconds:.0f} s ({minutes(timed.total_seconds)}) answer to "
          f"confirmation; then {timed.after_seconds:.1f} s of closing menu")


def markdown(results: list[CallTime]) -> str:
    """The summary table, as in docs/call-flow.md."""
    lines = ["| call | words | speech | turns | answer to confirmation |",
             "|---|---:|---:|---:|---:|"]
    for t in results:
        lines.append(f"| {t.call.title} | {t.words} | {t.speech_seconds:.0f} s | {t.turns} | "
                     f"{t.total_seconds:.0f} s ({minutes(t.total_seconds)}) |")
    return "\n".join(lines)


def main() -> int:
    """Time the standard calls and print them; exit 1 when one misses its confirmation."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--markdown", action="store_true", help="also print the summary table")
    parser.add_argument("--prompts", type=Path, help="a prompts folder (default: the repo's)")
    parser.add_argument("--cache", type=Path, default=REPO / "instance" / "spoken-lengths.json",
                        help="seconds of speech already measured, by text")
    args = parser.parse_args()
    results = time_calls(prompts_dir=args.prompts, lengths=SpokenLengths(args.cache))
    print(f"Call time: {basis()}.")
    for timed in results:
        print_call(timed)
    if args.markdown:
        print()
        print(markdown(results))
    missed = [t.call.name for t in results if not t.reached_confirmation]
    if missed:
        print(f"\nno confirmation number reached: {', '.join(missed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
