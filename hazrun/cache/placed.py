"""Which output files hazrun itself put in the work tree, per task (CACHE-004).

A hit restores its entry's files; a file the task's outputs match that the
entry lacks (``gen/b``, left by a run from other inputs) would stay, and a
successor reading ``gen/*`` would see it: it would store what ``gen/b``
made it print under a key that says gen made only ``gen/a``.  So a hit also
removes such files, but only those hazrun knows to be its own:

- files the task's command wrote during a run whose outputs hazrun
  collected (their ctime is past the moment the task was spawned), and
  files a restore wrote;
- and only while each is exactly as hazrun left it (size, mtime, inode and
  ctime: any write, chmod, rename or re-creation changes one of them);
- reached through real directories only, never through a symlink.

A hand-written file the outputs' globs match (an in-place build's shim.js)
is never recorded, as it was there before the task ran; a cache directory
under an outputs glob is never an output.  A record lost or out of date
only leaves files in place, as hazrun did before it kept one.

The records live in ``.haz/placed`` of the workspace, rewritten at the end
of a run under a lock, merged label by label with what other runs of the
workspace wrote meanwhile.
"""
from __future__ import annotations

import fcntl
import json
import os
import stat
import threading
import time
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Tuple

from ..fsutil import atomic_write, wait_flock

PLACED = "placed"
PLACED_LOCK = "placed.lock"

# What a file looked like when hazrun left it: size, mtime, inode, ctime.
Signature = Tuple[int, int, int, int]
_DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0)
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def signature(st: os.stat_result) -> Signature:
    return (st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)


def spawn_stamp_ns() -> int:
    """The moment a task starts, on the clock file times are taken from (the
    kernel's coarse clock): a file the task writes has a ctime no earlier,
    a file written before it an earlier one or, within the same tick, the
    same (counted as the task's: a hand edit in the 4 ms before a spawn)."""
    clock = getattr(time, "CLOCK_REALTIME_COARSE", None)
    if clock is not None:
        try:
            return time.clock_gettime_ns(clock)
        except OSError:
            pass
    return time.time_ns() - 10_000_000  # a tick of margin


def lstat_signature(root: str, rel: str) -> Optional[Signature]:
    try:
        return signature(os.lstat(os.path.join(root, rel)))
    except OSError:
        return None


class PlacedRecords:
    """label -> (the cache key it was last stored or restored under, and
    {root-relative path: Signature}); thread-safe.

    One line per label, its file list parsed only when asked for: a hit
    under the key recorded last (every hit of a run where nothing changed)
    has nothing to remove, as its record is a part of that very entry, and
    never needs it."""

    def __init__(self, haz_dir: Path):
        self.haz_dir = haz_dir
        self._lock = threading.Lock()
        self._loaded: Optional[Dict[str, List]] = None   # label -> [key, raw or dict]
        self._changed: Dict[str, Tuple[Optional[str], Dict[str, Signature]]] = {}

    def _all(self) -> Dict[str, List]:
        if self._loaded is None:
            self._loaded = _read(self.haz_dir / PLACED)
        return self._loaded

    def key_of(self, label: str) -> Optional[str]:
        with self._lock:
            if label in self._changed:
                return self._changed[label][0]
            row = self._all().get(label)
            return row[0] if row is not None else None

    def files(self, label: str) -> Dict[str, Signature]:
        with self._lock:
            if label in self._changed:
                return dict(self._changed[label][1])
            row = self._all().get(label)
            if row is None:
                return {}
            if not isinstance(row[1], dict):
                row[1] = _parse_files(row[1])
            return dict(row[1])

    def set(self, label: str, key: Optional[str], files: Dict[str, Signature]) -> None:
        with self._lock:
            self._changed[label] = (key, dict(files))

    def save(self, stopping: Optional[Callable[[], bool]] = None) -> None:
        """Write this run's changes over the file as it is now (another run
        may have saved meanwhile).  Raises OSError."""
        with self._lock:
            changed = dict(self._changed)
        if not changed:
            return
        self.haz_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.haz_dir / PLACED_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        try:
            wait_flock(fd, fcntl.LOCK_EX, stopping)
            records = _read(self.haz_dir / PLACED)
            for label, (key, files) in changed.items():
                if files:
                    records[label] = [key, files]
                else:
                    records.pop(label, None)
            lines = [HEADER]
            for label, (key, files) in sorted(records.items()):
                raw = files if isinstance(files, str) else json.dumps(
                    {rel: list(sig) for rel, sig in sorted(files.items())},
                    separators=(",", ":"))
                lines.append(f"{json.dumps(label)}\t{json.dumps(key)}\t{raw}")
            atomic_write(self.haz_dir / PLACED, ("\n".join(lines) + "\n").encode(),
                         fsync=False)
        finally:
            os.close(fd)
        with self._lock:
            for label in changed:
                if self._changed.get(label) == changed[label]:
                    del self._changed[label]
            self._loaded = records


HEADER = "hazrun-placed 1"


def _read(path: Path) -> Dict[str, List]:
    """label -> [key, the file list's JSON, unparsed]; nothing for a missing,
    unreadable or foreign file (which only leaves files in place)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, ValueError):
        return {}
    lines = text.split("\n")
    if lines[0] != HEADER:
        return {}
    records: Dict[str, List] = {}
    for line in lines[1:]:
        parts = line.split("\t")
        if len(parts) != 3:
            continue
        try:
            label, key = _string(parts[0]), _string(parts[1])
        except ValueError:
            continue
        if isinstance(label, str) and (key is None or isinstance(key, str)):
            records[label] = [key, parts[2]]
    return records


def _string(field: str) -> object:
    """A JSON string (or null) as written by save; most need no decoding
    (json.loads of every label and key was most of a no-change run's cost
    of this file)."""
    if len(field) >= 2 and field[0] == field[-1] == '"' and "\\" not in field:
        return field[1:-1]
    return json.loads(field)


def _parse_files(raw: str) -> Dict[str, Signature]:
    try:
        files = json.loads(raw)
    except ValueError:
        return {}
    if not isinstance(files, dict):
        return {}
    return {rel: tuple(sig) for rel, sig in files.items()  # type: ignore[misc]
            if isinstance(rel, str) and isinstance(sig, list) and len(sig) == 4
            and all(isinstance(x, int) for x in sig)}


def remove_unchanged(root: str, files: Iterable[Tuple[str, Signature]]) -> List[str]:
    """Remove each root-relative file that is still exactly as recorded,
    walking to it through real directories only; returns those removed.
    Anything unexpected (a symlink on the way, a changed file, an error)
    leaves the file where it is."""
    removed = []
    for rel, sig in files:
        parts = rel.split("/")
        if any(p in ("", ".", "..") for p in parts):
            continue
        try:
            fd = os.open(root, _DIR_FLAGS)
        except OSError:
            return removed
        try:
            for part in parts[:-1]:
                nfd = os.open(part, _DIR_FLAGS | _NOFOLLOW, dir_fd=fd)
                os.close(fd)
                fd = nfd
            st = os.stat(parts[-1], dir_fd=fd, follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode) or signature(st) != tuple(sig):
                continue
            os.unlink(parts[-1], dir_fd=fd)
            removed.append(rel)
        except OSError:
            pass  # gone, moved, behind a symlink, not ours to remove: left
        finally:
            os.close(fd)
    return removed
