"""CACHE-007: ``hazrun cache info|prune|clean`` as library functions.

Pruning removes whole entries, least recently used first (an entry's use
time is its manifest's mtime, refreshed by every hit), then every blob no
remaining entry names.  It holds the cache's lock exclusively, so no hazrun
process is storing or restoring meanwhile, and it also removes temp files
left by crashed writers.  Only directories that carry hazrun's
``CACHEDIR.TAG`` are ever deleted from.
"""
from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path
from typing import Dict, List, Optional, Set, Tuple

from ..errors import UsageError
from ..values import record, value
from .store import (CorruptManifest, Store, decode_manifest, is_hazrun_cache,
                    sweep_dead_writers)

_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_SIZE_RE = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([KMGT]?)(?:I?B)?\s*\Z", re.I)
_AGES = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_AGE_RE = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([smhd]?)\s*\Z", re.I)


def parse_size(text: str) -> int:
    """``5G`` -> bytes; K/M/G/T are powers of 1024, a bare number is bytes."""
    m = _SIZE_RE.match(text)
    if not m:
        raise UsageError(f"invalid size '{text}': give a number with an optional "
                         "K, M, G or T suffix (powers of 1024), e.g. 5G")
    return int(float(m.group(1)) * _UNITS[m.group(2).upper()])


def parse_age(text: str) -> float:
    """``30d`` -> seconds; s/m/h/d suffixes, a bare number is seconds."""
    m = _AGE_RE.match(text)
    if not m:
        raise UsageError(f"invalid age '{text}': give a number with an optional "
                         "s, m, h or d suffix, e.g. 30d")
    return float(m.group(1)) * _AGES[m.group(2).lower()]


def format_size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    raise AssertionError("unreachable")


@value
class CacheInfo:
    path: Path
    entries: int
    bytes: int        # every file of the cache directory
    blobs: int


@value
class PruneResult:
    removed_entries: int
    removed_bytes: int
    entries: int      # left
    bytes: int        # left


def _check(path: Path) -> bool:
    """False if there is no cache; UsageError if it is not one of ours."""
    if not path.exists():
        return False
    if not path.is_dir() or not is_hazrun_cache(path):
        raise UsageError(f"{path} is not a hazrun cache directory (it has no "
                         "CACHEDIR.TAG written by hazrun); leaving it alone")
    return True


def _tree_bytes(path: Path) -> int:
    total = 0
    for dirpath, _dirs, names in os.walk(path):
        for name in names:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                pass
    return total


def info(cache_dir: Path) -> CacheInfo:
    """Entries, bytes and blobs of the cache at ``cache_dir``."""
    if not cache_dir.is_dir():
        return CacheInfo(cache_dir, 0, 0, 0)
    store = Store(cache_dir)
    entries = sum(1 for _ in store.iter_entries())
    blobs = sum(1 for _ in store.iter_blobs())
    return CacheInfo(cache_dir, entries, _tree_bytes(cache_dir), blobs)


@record
class _Entry:
    key: str
    path: Path
    used: float
    size: int
    blobs: Set[str]


def _read_entries(store: Store) -> Tuple[List[_Entry], List[Path]]:
    entries: List[_Entry] = []
    corrupt: List[Path] = []
    for key, path, st in store.iter_entries():
        try:
            m = decode_manifest(path.read_bytes())
        except (OSError, CorruptManifest):
            corrupt.append(path)
            continue
        entries.append(_Entry(key, path, st.st_mtime, st.st_size, set(m.blobs())))
    return entries, corrupt


def prune(cache_dir: Path, max_size: Optional[int] = None, max_age: Optional[float] = None,
          now: Optional[float] = None) -> PruneResult:
    """Remove entries older than ``max_age`` seconds, then the least recently
    used until entries and their blobs fit in ``max_size`` bytes (``0``
    removes everything), then blobs no entry names and stale temp files."""
    if not _check(cache_dir):
        return PruneResult(0, 0, 0, 0)
    now = time.time() if now is None else now
    store = Store(cache_dir)
    with store.lock(exclusive=True):
        entries, corrupt = _read_entries(store)
        blob_sizes: Dict[str, int] = {d: n for d, _p, n in store.iter_blobs()}
        refs: Dict[str, int] = {}
        for e in entries:
            for d in e.blobs:
                if d in blob_sizes:
                    refs[d] = refs.get(d, 0) + 1
        removed: List[_Entry] = []
        keep: List[_Entry] = []
        for e in sorted(entries, key=lambda e: (e.used, e.key)):
            (removed if max_age is not None and now - e.used >= max_age else keep).append(e)
        for e in removed:
            _release(e, refs)
        total = sum(e.size for e in keep) + sum(blob_sizes[d] for d in refs)
        if max_size is not None:
            while keep and total > max_size:
                e = keep.pop(0)
                removed.append(e)
                total -= e.size + sum(blob_sizes[d] for d in _release(e, refs))
        freed = 0
        for path in corrupt:
            freed += _remove(path)
        for e in removed:
            freed += _remove(e.path)
        for d, _p, _n in list(store.iter_blobs()):
            if d not in refs:
                freed += _remove(store.blob_path(d))
        freed += _remove_stale_tmp(store, now)
    return PruneResult(len(removed) + len(corrupt), freed, len(keep), total)


# A temp file whose writer holds no owner lock (an older hazrun's, or one
# that could not make it) is a crashed writer's an hour after its process is
# gone (a cache shared between containers), or after a day
# (process.writer_gone).
TMP_DEAD_AGE_S = 3600.0
TMP_MAX_AGE_S = 86400.0


def _remove_stale_tmp(store: Store, now: float) -> int:
    """Remove the temp files of writers that are gone: at once where their
    owner lock says so (Store._owner), else by their pid and age.  A
    running hazrun's staged blobs (CACHE-003) are left to its commit."""
    from ..process import writer_gone
    freed, unknown = sweep_dead_writers(store.tmp)
    for name, pid in unknown:
        tmp = store.tmp / name
        try:
            age = now - os.lstat(tmp).st_mtime
        except OSError:
            continue
        if writer_gone(pid, age, TMP_DEAD_AGE_S, TMP_MAX_AGE_S):
            freed += _remove(tmp)
    return freed


def _release(e: _Entry, refs: Dict[str, int]) -> List[str]:
    """Drop ``e``'s references; return the blobs nothing names any more."""
    freed = []
    for d in e.blobs:
        if d in refs:
            refs[d] -= 1
            if refs[d] == 0:
                del refs[d]
                freed.append(d)
    return freed


def clean(cache_dir: Path, now: Optional[float] = None) -> PruneResult:
    """Remove every entry and blob, and the temp files of writers that are
    gone (a running hazrun's staged blobs stay: its stores still work)."""
    if not _check(cache_dir):
        return PruneResult(0, 0, 0, 0)
    store = Store(cache_dir)
    with store.lock(exclusive=True):
        entries = sum(1 for _ in store.iter_entries())
        freed = 0
        for d in (store.entries, store.blobs):
            freed += _tree_bytes(d)
            shutil.rmtree(d, ignore_errors=True)
        freed += _remove_stale_tmp(store, time.time() if now is None else now)
    return PruneResult(entries, freed, 0, 0)


def _listdir(path: Path) -> List[Path]:
    try:
        return [path / n for n in os.listdir(path)]
    except OSError:
        return []


def _remove(path: Path) -> int:
    try:
        size = os.lstat(path).st_size
        os.unlink(path)
        return size
    except OSError:
        return 0
