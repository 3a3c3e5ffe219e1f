"""Mutexes: named resources that tasks hold while their processes run.

MUTEX-001..007.  A task declares the names it needs, each ``exclusive`` or
``shared``.  It asks for all of them at once, after a cache miss and right
before it spawns, and gets all or none (MUTEX-003), so it never holds one
while waiting for another: no cycle of waiters can form, and so no
deadlock is possible.  Across hazrun processes on the same workspace each
name is also an ``flock`` on ``.haz/locks/<name>.lock`` (MUTEX-006),
taken without blocking; the kernel releases it if the holder dies.  Waiting
on another process is done by retrying on a timer of the event loop, never
by a blocking call.
"""
from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from .config import MutexMode, MutexSpec
from .values import record


class _FileLock:
    """One name's lock file, held by one run in one mode at a time: the
    lock is taken when the run's first holder arrives and dropped when the
    last one leaves.

    ``flock`` locks belong to the open file, not to the process as POSIX
    record locks (lockf) do: two runs in one process (the library, two
    threads) exclude each other too, and one closing its file never drops
    the other's lock.
    """

    def __init__(self, path: Path):
        self.path = path
        self.fd: Optional[int] = None
        self.mode: Optional[MutexMode] = None

    def try_lock(self, mode: MutexMode) -> bool:
        if self.fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        op = fcntl.LOCK_SH if mode is MutexMode.SHARED else fcntl.LOCK_EX
        try:
            fcntl.flock(self.fd, op | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno in (errno.EACCES, errno.EAGAIN):
                return False
            raise
        self.mode = mode
        return True

    def unlock(self) -> None:
        if self.fd is not None:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_UN)
            finally:
                os.close(self.fd)
        self.fd = None
        self.mode = None


@record
class _Hold:
    mode: MutexMode
    count: int = 0


class MutexTable:
    """The live hold set of one run, and its cross-process locks."""

    def __init__(self, lock_dir: Optional[Path]):
        self.lock_dir = lock_dir
        self.holds: Dict[str, _Hold] = {}
        self.files: Dict[str, _FileLock] = {}

    def compatible(self, wants: Sequence[MutexSpec]) -> bool:
        """MUTEX-002 against the hold set of this process."""
        for spec in wants:
            hold = self.holds.get(spec.name)
            if hold is None or hold.count == 0:
                continue
            if spec.mode is MutexMode.EXCLUSIVE or hold.mode is MutexMode.EXCLUSIVE:
                return False
        return True

    def try_acquire(self, wants: Sequence[MutexSpec]) -> bool:
        """MUTEX-003: take every name or none, without blocking."""
        if not self.compatible(wants):
            return False
        taken: List[str] = []
        for spec in sorted(wants, key=lambda s: s.name):
            hold = self.holds.get(spec.name)
            if hold is not None and hold.count > 0:
                continue  # shared, already locked by this process
            if self.lock_dir is not None:
                lock = self.files.get(spec.name)
                if lock is None:
                    lock = self.files[spec.name] = _FileLock(self._path(spec.name))
                if not lock.try_lock(spec.mode):
                    for name in taken:
                        self.files[name].unlock()
                    return False
            taken.append(spec.name)
        for spec in wants:
            hold = self.holds.setdefault(spec.name, _Hold(spec.mode))
            hold.mode = spec.mode
            hold.count += 1
        return True

    def release(self, held: Sequence[MutexSpec]) -> None:
        """MUTEX-004: called once the holder's whole process tree is gone."""
        for spec in held:
            hold = self.holds[spec.name]
            hold.count -= 1
            if hold.count == 0:
                del self.holds[spec.name]
                lock = self.files.get(spec.name)
                if lock is not None:
                    lock.unlock()

    def close(self) -> None:
        for lock in self.files.values():
            lock.unlock()
        self.files.clear()
        self.holds.clear()

    def _path(self, name: str) -> Path:
        return self.lock_dir / lock_file_name(name)


# Room for the name in a lock file's name: file systems take 255 bytes.
_MAX_QUOTED = 200


def lock_file_name(name: str) -> str:
    """MUTEX-006: ``<name>.lock``, percent-quoted.  A name whose quoted form
    is too long for a file name is cut and told apart by a digest; '%%'
    marks it, which no quoted name holds (a quoted '%' is '%25'), so no two
    names ever share a lock file."""
    import urllib.parse  # only for tasks with mutexes
    quoted = urllib.parse.quote(name, safe="")
    if len(quoted) > _MAX_QUOTED:
        import hashlib
        digest = hashlib.sha256(name.encode("utf-8", "surrogateescape")).hexdigest()[:32]
        quoted = f"{quoted[:_MAX_QUOTED - 34]}%%{digest}"
    return quoted + ".lock"


def blocks(earlier: Sequence[MutexSpec], later: Sequence[MutexSpec]) -> bool:
    """MUTEX-005: a later request must not take what an earlier waiter
    needs in a mode that conflicts with it."""
    want = {s.name: s.mode for s in earlier}
    for spec in later:
        mode = want.get(spec.name)
        if mode is not None and (mode is MutexMode.EXCLUSIVE or spec.mode is MutexMode.EXCLUSIVE):
            return True
    return False


def must_not_overtake(waiting: Sequence[MutexSpec], later: Sequence[MutexSpec]) -> bool:
    """MUTEX-005: a waiting exclusive request is not overtaken by a shared
    request that came later, whatever their canonical order."""
    exclusive = {s.name for s in waiting if s.mode is MutexMode.EXCLUSIVE}
    return any(s.name in exclusive and s.mode is MutexMode.SHARED for s in later)
