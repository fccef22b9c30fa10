"""Making hledger-web 1.25 see every write at once, when its journal is on this machine.

hledger-web reloads its journal only when the file's mtime is newer than its last read, and
the kernel stamps an append's mtime from a coarse clock (one tick, 1-10 ms). A write that
lands within a tick of a reload therefore looks older than that reload and stays unseen by
every read (balances, a retry's duplicate check) until a later write. Without access to the
file the connector prevents that with a read, then a pause of more than a tick, before each
write (``IVR_HLEDGER_RELOAD_GAP_MS``). With access (``IVR_HLEDGER_JOURNAL``) it can stamp the
file itself: after each write, its mtime is set to the current time from the fine clock,
later than any reload hledger-web made while answering that write; before a duplicate check,
the same stamp makes the read reload whatever an earlier attempt may have appended. No read
and no pause per write.

The stamp is trusted only once it has been seen to work: the first write of each process
still takes the read and the pause, and every write must grow the file named (else it is not
the journal hledger-web serves). A stamp the filesystem cannot keep to the nanosecond (one
that stamps whole seconds, say), or a file this process may not stamp, turns stamping off
for the process, with an error in the log: the read and the pause then guard every write.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

log = logging.getLogger(__name__)

VARIABLE = "IVR_HLEDGER_JOURNAL"


def journal_path(raw: str) -> Path | None:
    """``IVR_HLEDGER_JOURNAL`` checked: None when unset; ValueError when it cannot be
    stamped by this process (missing, not a file, owned by another user)."""
    raw = raw.strip()
    if not raw:
        return None
    path = Path(raw)
    if not path.is_absolute():
        raise ValueError(f"{VARIABLE} must be an absolute path, not {raw!r}")
    try:
        info = path.stat()
    except OSError as exc:
        raise ValueError(f"{VARIABLE}: cannot read {raw!r} ({exc.strerror})") from None
    if not path.is_file():
        raise ValueError(f"{VARIABLE}: {raw!r} is not a file")
    if info.st_uid != os.geteuid() and os.geteuid() != 0:
        # Setting a file's times to a given value is for its owner only.
        raise ValueError(f"{VARIABLE}: {raw!r} must be owned by the user this runs as "
                         "(to set its modification time)")
    return path


class JournalStamp:
    """Stamps one journal file's mtime; knows whether stamping can be relied on yet.

    Not locked: the connector calls it only while holding its lock for a whole post.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._proven = False  # a write grew the file and its stamp held
        self._off = False

    @property
    def trusted(self) -> bool:
        """Whether writes may go without the read and the pause."""
        return self._proven and not self._off

    def size(self) -> int | None:
        """The journal's size now (None when stamping is off, or then turned off because
        it cannot be read)."""
        if self._off:
            return None
        try:
            return self.path.stat().st_size
        except OSError as exc:
            self._turn_off(f"cannot read it ({exc.strerror})")
            return None

    def after_write(self, size_before: int | None) -> None:
        """Stamp after a write hledger-web accepted; the write must have grown the file."""
        if size_before is None:
            return
        size = self.size()
        if size is None:
            return
        if size <= size_before:
            self._turn_off("a write hledger-web accepted did not grow it: it is not the "
                           "journal hledger-web serves")
            return
        if self.stamp() and not self._proven:
            self._proven = True
            log.info("hledger: journal %s grew with a write and keeps its stamps; writes go "
                     "without the read and the reload gap from now on", self.path)

    def stamp(self) -> bool:
        """Set the mtime to now (fine clock), later than any earlier stamp; False (and
        stamping off) if the file or its filesystem does not keep it exactly."""
        if self._off:
            return False
        try:
            info = self.path.stat()
            # Strictly later than the last mtime, whatever clock stamped it.
            mtime = max(time.time_ns(), info.st_mtime_ns + 1)
            os.utime(self.path, ns=(info.st_atime_ns, mtime))
            kept = self.path.stat().st_mtime_ns
        except OSError as exc:
            self._turn_off(f"cannot set its modification time ({exc.strerror})")
            return False
        if kept != mtime:
            self._turn_off("its filesystem does not keep modification times to the "
                           "nanosecond")
            return False
        return True

    def _turn_off(self, why: str) -> None:
        if not self._off:
            self._off = True
            log.error("hledger: journal %s: %s; stamping it is off, every write waits for "
                      "the reload gap", self.path, why)
