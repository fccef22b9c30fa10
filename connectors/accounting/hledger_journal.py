"""Making hledger-web 1.25 see every write at once, when its journal is on this machine.

hledger-web reloads its journal only when the file's mtime is newer than its last read, and
the kernel stamps an append's mtime from a coarse clock (one tick, 1-10 ms). A write that
lands within a tick of a reload therefore looks older than that reload and stays unseen by
every read (balances, a retry's duplicate check) until a later write. Without access to the
file the connector prevents that with a read, then a pause of more than a tick, before each
write (``IVR_HLEDGER_RELOAD_GAP_MS``). With access (``IVR_HLEDGER_JOURNAL``) it can stamp the
file itself: after each write, its mtime is set to the current time from the fine clock,
later than any reload hledger-web made while answering that write, and set again once any
reload running meanwhile has finished; before a duplicate check, the same stamp makes the
read reload whatever an earlier attempt may have appended. No read and no pause per write.
The processes of one machine stamp one at a time (``flock``), so a stamp never sets the
mtime back.

The stamp is trusted only once it has been seen to work: the first write of each process
still takes the read and the pause, and every write must grow the file named (else it is not
the journal hledger-web serves). A stamp the filesystem cannot keep to the nanosecond (one
that stamps whole seconds, say), or a file this process may not stamp, turns stamping off
for the process, with an error in the log: the read and the pause then guard every write.

With the variable unset the connector finds the journal itself (``find_journal``): hledger-web
names the file each transaction came from (``tsourcepos``), so after its first write the
connector reads that transaction back and, when the file it names is one this process can
stamp (``stampable``: a regular file it owns, on a filesystem of this machine) and ends with
that very transaction, stamps it from then on. ``off`` never stamps.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from connectors.accounting.state import StateStore

log = logging.getLogger(__name__)

VARIABLE = "IVR_HLEDGER_JOURNAL"
# The value that turns finding the journal off.
OFF = "off"
# Filesystems whose files' times come from this machine's clock. A network filesystem's
# file read by another machine's hledger-web would be stamped from the wrong clock.
LOCAL_FILESYSTEMS = frozenset({
    "ext2", "ext3", "ext4", "xfs", "btrfs", "tmpfs", "zfs", "f2fs", "bcachefs", "jfs",
    "overlay", "reiserfs"})
_MOUNTINFO = Path("/proc/self/mountinfo")
# How far back from the end a write of ours is looked for (a transaction is < 1 KB).
_TAIL = 8192
# The connector state key under which the journal found through hledger-web is kept, so a
# process that retries before it has written (its own finding) can stamp it first.
STATE_KEY = "journal_path"
# Stamps tried before a journal is judged unable to keep one (see JournalStamp.stamp).
_STAMP_TRIES = 3
# hledger-web 1.25 notes a reload's time when it has parsed the journal, not when it read
# the file. A reload (a reader's, or a write's that found the file changed) that read the
# file before one of our writes landed and finishes after that write's stamp would keep the
# write unseen by every read until some later write. Each write's stamp is therefore done
# again once such a reload has finished: after twice the slowest of hledger-web's recent
# answers to this process (any request that finds the journal changed waits for a reload),
# at least 50 ms, at most 10 s; one stamp again after the last write of a burst.
# (A stamp set ahead of the clock instead would make every request reload until then, and
# leave unseen a write of a process that cannot stamp, as hledger-web would reload just
# before appending it.)
_AGAIN_MIN_NS = 50_000_000
_AGAIN_MAX_NS = 10_000_000_000
_RECENT_ANSWERS = 16


def journal_setting(raw: str) -> tuple[Path | None, bool]:
    """``IVR_HLEDGER_JOURNAL`` read: (the path named, whether to find the journal).

    Unset: find it; ``off``: neither; a path: that path, checked (``journal_path``)."""
    if raw.strip().lower() == OFF:
        return None, False
    path = journal_path(raw)
    return path, path is None


def filesystem_type(path: Path, mountinfo: str | None = None) -> str | None:
    """The type of the filesystem ``path`` is on, from ``/proc/self/mountinfo`` (None
    where that cannot be read: not Linux)."""
    if mountinfo is None:
        try:
            mountinfo = _MOUNTINFO.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return None
    target = str(path)
    best, kind = -1, None
    for line in mountinfo.splitlines():
        # id parent major:minor root mount-point options [optional...] - type source super
        fields = line.split(" ")
        if "-" not in fields or len(fields) < 5:
            continue
        point = fields[4].replace("\\040", " ").replace("\\011", "\t").replace("\\134", "\\")
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= best:
            # Later lines mount over earlier ones at the same point.
            best, kind = len(point), fields[fields.index("-") + 1]
    return kind


def _not_a_stampable_file(path: Path) -> str | None:
    """Why ``path`` is not a file this process may stamp (None: it is)."""
    if not path.is_absolute():
        return "not an absolute path"
    try:
        info = path.stat()
    except FileNotFoundError as exc:
        return f"cannot read it: not found here ({exc.strerror})"
    except OSError as exc:
        return f"cannot read it ({exc.strerror})"
    if not path.is_file():
        return "not a file"
    if info.st_uid != os.geteuid() and os.geteuid() != 0:
        # Setting a file's times to a given value is for its owner only.
        return "not owned by the user this runs as (to set its modification time)"
    return None


def stampable(path: Path) -> str | None:
    """Why this process cannot stamp ``path``, a journal file hledger-web named (None:
    it can)."""
    why = _not_a_stampable_file(path)
    if why is not None:
        return why
    kind = filesystem_type(path.resolve())
    if kind not in LOCAL_FILESYSTEMS:
        return f"on a filesystem of type {kind or 'unknown'}, not one of this machine's own"
    return None


def journal_path(raw: str) -> Path | None:
    """``IVR_HLEDGER_JOURNAL`` checked: None when unset; ValueError when it cannot be
    stamped by this process (missing, not a file, owned by another user)."""
    raw = raw.strip()
    if not raw:
        return None
    path = Path(raw)
    why = _not_a_stampable_file(path)
    if why is not None:
        raise ValueError(f"{VARIABLE}: {raw!r} is {why}" if why.startswith("not")
                         else f"{VARIABLE}: {raw!r}: {why}")
    return path


class JournalStamp:
    """Stamps one journal file's mtime; knows whether stamping can be relied on yet.

    Whether it is trusted changes only in a post, and the connector holds its own lock for a
    whole post; stamps and the answers' times are locked here too, since a thread of its
    own stamps again after a burst. Stamping the file is locked across processes (``flock``
    on the journal), so the stamps of a line's processes on this machine only ever move
    the mtime forward.
    """

    def __init__(self, path: Path, clock: Callable[[], int] = time.time_ns) -> None:
        self.path = path
        self._clock = clock  # nanoseconds since the epoch, as mtimes are kept
        # How long hledger-web took to answer each recent request, in nanoseconds.
        self._answers: deque[int] = deque(maxlen=_RECENT_ANSWERS)
        self._proven = False  # a write grew the file and its stamp held
        self._off = False
        # Stamps come from the post and from the thread that stamps again (_again_later).
        self._lock = threading.Condition()
        self._again_at: float | None = None  # time.monotonic() of the stamp again
        self._stamper: threading.Thread | None = None
        self._closed = False

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

    def answered(self, took_ns: int) -> None:
        """Note how long hledger-web took to answer a request of this process."""
        with self._lock:
            self._answers.append(took_ns)

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
        if not self.stamp():
            return
        self._again_later()
        if not self._proven:
            self._proven = True
            log.info("hledger: journal %s grew with a write and keeps its stamps; writes go "
                     "without the read and the reload gap from now on", self.path)

    def adopt(self, code: str) -> bool:
        """Trust a journal found through hledger-web: its last lines must hold the
        transaction with ``code`` that was just written, and a stamp must hold."""
        try:
            with self.path.open("rb") as journal:
                journal.seek(max(0, journal.seek(0, os.SEEK_END) - _TAIL))
                tail = journal.read()
        except OSError as exc:
            self._turn_off(f"cannot read it ({exc.strerror})")
            return False
        if f"({code})".encode() not in tail:
            self._turn_off("it does not end with the transaction just written: it is not "
                           "the journal hledger-web writes to")
            return False
        if not self.stamp():
            return False
        self._again_later()
        self._proven = True
        log.info("hledger: journal %s (named by hledger-web) ends with our write and keeps "
                 "its stamps; writes go without the read and the reload gap from now on",
                 self.path)
        return True

    def again_after_ns(self) -> int:
        """How long after a write its stamp is done again (see _AGAIN_MIN_NS)."""
        with self._lock:
            slowest = max(self._answers, default=0)
        return min(max(2 * slowest, _AGAIN_MIN_NS), _AGAIN_MAX_NS)

    def stamp(self) -> bool:
        """Set the mtime to now (fine clock), later than any earlier stamp; False (and
        stamping off) if the file or its filesystem does not keep it exactly."""
        with self._lock:
            return self._stamp()

    def _stamp(self) -> bool:
        if self._off:
            return False
        for _ in range(_STAMP_TRIES):
            try:
                mtime, kept = self._stamp_once()
            except OSError as exc:
                self._turn_off(f"cannot set its modification time ({exc.strerror})")
                return False
            if kept == mtime:
                return True
            # Another process's write may have landed between the stamp and its check
            # (hledger-web's append sets the mtime from the coarse clock): stamp again. A
            # filesystem that cannot keep nanoseconds fails every try.
        self._turn_off("its filesystem does not keep modification times to the "
                       "nanosecond")
        return False

    def _again_later(self) -> None:
        """Have the journal stamped again once a reload running now has finished; writes
        in a burst push it back, so the burst's last write is the one it follows."""
        with self._lock:
            self._again_at = time.monotonic() + self.again_after_ns() / 1e9
            if self._stamper is None:
                self._stamper = threading.Thread(target=self._stamp_again, daemon=True,
                                                 name="hledger-journal-stamp")
                self._stamper.start()
            self._lock.notify()

    def _stamp_again(self) -> None:
        with self._lock:
            while not self._closed:
                if self._again_at is None:
                    self._lock.wait()
                    continue
                left = self._again_at - time.monotonic()
                if left > 0:
                    self._lock.wait(left)
                    continue
                self._again_at = None
                self._stamp()

    def close(self) -> None:
        """Stop stamping again, after doing the stamp still due, if any, when it is due.

        A process that stops right after a write (a worker told to stop, a web worker
        recycled) would otherwise leave that write unseen, should a reload have run past
        its first stamp, until some later write; the wait is at most _AGAIN_MAX_NS."""
        with self._lock:
            self._closed = True
            due, self._again_at = self._again_at, None
            self._lock.notify()
        if due is None:
            return
        left = due - time.monotonic()
        if left > 0:
            time.sleep(left)
        self.stamp()

    def _stamp_once(self) -> tuple[int, int]:
        """One stamp: (the mtime set, the mtime then read back)."""
        with self.path.open("rb") as journal:
            # Every process of this machine stamps under this lock (released on close). A
            # stamp read from the clock before another process's stamp and written after it
            # would set the mtime back, below a reload that missed that process's write,
            # which would then stay unseen until some later write.
            fcntl.flock(journal.fileno(), fcntl.LOCK_EX)
            info = os.fstat(journal.fileno())
            # Strictly later than the last mtime, whatever clock stamped it.
            mtime = max(self._clock(), info.st_mtime_ns + 1)
            os.utime(journal.fileno(), ns=(info.st_atime_ns, mtime))
            return mtime, os.fstat(journal.fileno()).st_mtime_ns

    def _turn_off(self, why: str) -> None:
        if not self._off:
            self._off = True
            log.error("hledger: journal %s: %s; stamping it is off, every write waits for "
                      "the reload gap", self.path, why)


def source_file(txn: dict[str, Any] | None) -> Path | None:
    """The file hledger-web read ``txn`` from (None: no transaction, or no file named)."""
    sources = txn.get("tsourcepos") if txn is not None else None
    # 1.25: [start, end] source positions; later versions: a single one.
    first = sources[0] if isinstance(sources, list) and sources else sources
    name = first.get("sourceName") if isinstance(first, dict) else None
    return Path(name) if isinstance(name, str) and name else None


def keep_journal(state: StateStore | None, path: Path) -> bool:
    """Record the journal for every process (a retry stamps it before looking); False if
    that cannot be done, so this process keeps waiting instead."""
    if state is None:
        return True
    try:
        current = state.get(STATE_KEY)
        if current == str(path) or state.put(STATE_KEY, str(path), expected=current):
            return True
        # Another process recorded a path between our read and our write: most often the
        # same file, found by a process that started with this one (two workers' first
        # writes). Not stamping then would leave every write of this process to the read
        # and the pause, where the other's write or stamp landing in the pause makes
        # hledger-web reload just before appending ours, which can then stay unseen.
        return state.get(STATE_KEY) == str(path)
    except Exception:  # the store is the line's database: any of its failures
        log.exception("hledger: could not record the journal's path")
        return False


def journal_found_elsewhere(state: StateStore | None) -> JournalStamp | None:
    """The journal another process of this line found, if this one can stamp it."""
    if state is None:
        return None
    try:
        raw = state.get(STATE_KEY)
    except Exception:  # as above
        log.exception("hledger: could not read the journal's path")
        return None
    if not raw or stampable(Path(raw)) is not None:
        return None
    return JournalStamp(Path(raw))
