"""Writing files so that readers never see a partial one, and telling
whether one changed without reading it."""
from __future__ import annotations

import fcntl
import os
import select
import threading
import time
from pathlib import Path
from typing import Any, Callable, Optional, Tuple

Sig = Tuple[int, int, int, int]


def signature(st: os.stat_result) -> Sig:
    """What the stat cache (CACHE-006) and the workspace snapshot trust a
    file by: size, mtime, inode and ctime (a rewrite with the same size and
    mtime still changes the ctime)."""
    return (st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)


def write_all(fd: int, data: Any, progress: Optional[Callable[[], None]] = None) -> None:
    """All of ``data`` to ``fd``, in as many writes as it takes; on a
    non-blocking descriptor (a pipe its creator left so), waiting while it
    is full rather than losing what it refuses.  ``progress``: called after
    each write that took something."""
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except BlockingIOError:
            select.select([], [fd], [])
            continue
        view = view[n:]
        if progress is not None:
            progress()


class LockWaitStopped(OSError):
    """A wait for a lock another process holds was given up (Ctrl-C)."""

    def __init__(self) -> None:
        super().__init__("the run is stopping")
        self.strerror = "the run is stopping"


def wait_flock(fd: int, op: int, stopping: Optional[Callable[[], bool]] = None) -> None:
    """``flock(fd, op)``, waiting as long as another process holds the lock
    (a prune, a clean, another run saving), but in short sleeps that ask
    ``stopping`` rather than one blocking call: a thread blocked in flock
    cannot be interrupted, and Ctrl-C must end the run (EXEC-012) however
    long the other holds it.  Raises LockWaitStopped once it has said so
    for STOP_PATIENCE_S: a lock held only for a moment (another run saving
    its records) still lets a task that succeeded before the Ctrl-C keep
    its cache entry (EXEC-015).  Without ``stopping`` (prune and clean on
    the main thread, where Ctrl-C interrupts the call), a blocking flock."""
    if stopping is None:
        fcntl.flock(fd, op)
        return
    delay = 0.001
    stopped_at = None
    while True:
        try:
            fcntl.flock(fd, op | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            pass
        if stopping():
            now = time.monotonic()
            if stopped_at is None:
                stopped_at = now
            elif now - stopped_at >= STOP_PATIENCE_S:
                raise LockWaitStopped()
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


STOP_PATIENCE_S = 1.0


def cut_name(name: str, limit: int) -> str:
    """``name`` cut to at most ``limit`` bytes as the file system stores it
    (a file name takes 255 bytes, not characters: four for an emoji)."""
    raw = os.fsencode(name)
    return name if len(raw) <= limit else os.fsdecode(raw[:limit])


def atomic_write(path: Path, data: bytes, fsync: bool = True) -> None:
    """Write ``data`` to a temp file beside ``path`` and rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{cut_name(path.name, 180)}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0),
                 0o666)
    try:
        try:
            write_all(fd, data)
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
