"""A small persistent store a connector may keep its own state in.

Some systems hand out credentials that change as they are used: an OAuth refresh token that
is replaced on every refresh, say. Every node of the line must see the newest one, and two
nodes refreshing at once must not lose it, so ``put`` is a compare-and-set: it writes only
when the stored value is still the one the connector read. The line hands each connector a
store of its own (keys of one system never meet another's); values are text, and are kept
in the line's database, so a connector stores only what it needs to.
"""

from __future__ import annotations

import threading
from typing import Protocol, runtime_checkable

# Keys are names a connector chooses ("refresh_token"), not data.
MAX_KEY_LENGTH = 100


def check_key(key: str) -> None:
    """ValueError unless ``key`` is a usable name (1 to MAX_KEY_LENGTH characters)."""
    if not key or len(key) > MAX_KEY_LENGTH:
        raise ValueError(f"a state key has 1 to {MAX_KEY_LENGTH} characters, not {len(key)}")


@runtime_checkable
class StateStore(Protocol):
    """One accounting system's state: text values by key, written by compare-and-set."""

    def get(self, key: str) -> str | None:
        """The stored value (None: never written)."""
        ...

    def put(self, key: str, value: str, *, expected: str | None) -> bool:
        """Store ``value`` if the current value is ``expected`` (None: not yet written).

        True when written; False when another writer changed it first (read it again).
        """
        ...


class MemoryStateStore:
    """A StateStore in this process only: for tests and for connectors tried out by hand."""

    def __init__(self) -> None:
        self._values: dict[str, str] = {}
        self._lock = threading.Lock()

    def get(self, key: str) -> str | None:
        """The stored value (None: never written)."""
        check_key(key)
        with self._lock:
            return self._values.get(key)

    def put(self, key: str, value: str, *, expected: str | None) -> bool:
        """Store ``value`` if the current value is ``expected``; True when written."""
        check_key(key)
        with self._lock:
            if self._values.get(key) != expected:
                return False
            self._values[key] = value
            return True
