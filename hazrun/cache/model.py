"""The values the cache hands out, and the errors it raises.

Everything here is data: frozen dataclasses with no I/O, so the scheduler can
pass them between threads freely.  Paths in :class:`OutputEntry` are
project-relative POSIX paths; :meth:`Materialised.root_paths` turns them into
the root-relative paths the runtime checks (EXEC-019/020) compare.
"""
from __future__ import annotations

from dataclasses import field
from json.encoder import encode_basestring_ascii as _json_str
from typing import IO, Any, Dict, Iterable, List, Optional, Tuple

import blake3

from ..values import record, value

# Bumped whenever the key encoding, the manifest or a record changes shape;
# every key, manifest, stat cache and explain record carries it, so a new
# hazrun never trusts what an older one wrote (STYLE 9).
FORMAT_VERSION = 1

# Manifest.order holds at most this many byte counts: a task that switches
# between stdout and stderr more often than that replays the rest of its
# stdout, then the rest of its stderr.  (An optional field: entries without
# it read as before, and an older hazrun ignores it, so the version stays.)
MAX_RUNS = 4096


class CacheError(Exception):
    """Base of the cache's errors.

    ``str()`` is one line: the reason, naming the entry or file concerned
    but not the task, which is ``label`` (the scheduler prefixes it:
    ``a:build: not stored in the cache (<reason>)``).
    """

    def __init__(self, message: str, label: str = ""):
        super().__init__(message)
        self.label = label


class CacheMissError(CacheError):
    """CACHE-004: an entry that failed a check on restore; nothing was written.

    The caller warns with the message and runs the task as on a miss.
    """


class StoreError(CacheError):
    """CACHE-003: an entry could not be stored (read-only dir, disk full).

    The caller warns with the message; the task still succeeded.
    """


class WouldBlock(Exception):
    """A ``quick=True`` call found that answering needs real work: reading a
    file's contents, running git, asking the remote cache or writing
    outputs.  Nothing was changed; the caller does it in the pool instead
    (EXEC-003)."""


class InputError(CacheError):
    """CACHE-001/006: an input file could not be hashed (unreadable, or it kept
    changing while it was read), so no key describes the workspace.

    The caller warns and runs the task without looking it up or storing it.
    ``path`` is the file concerned and ``reason`` the message without it.
    """

    def __init__(self, reason: str, path: str = "", message: str = "", label: str = ""):
        super().__init__(message or (f"{path}: {reason}" if path else reason), label)
        self.reason = reason
        self.path = path


@value
class OutputEntry:
    """One materialised output (CACHE-002/003)."""

    path: str                      # project-relative POSIX path, normalised
    mode: int                      # st_mode & 0o7777; 0 for symlinks
    digest: Optional[str]          # blake3 hex of the content; None for symlinks
    size: int                      # bytes of content (of the target for symlinks)
    symlink: Optional[str] = None  # link target for symlinks

    @property
    def is_symlink(self) -> bool:
        return self.symlink is not None


def stream_hash(outputs: Iterable[OutputEntry]) -> str:
    """CACHE-002: blake3 over the sorted (path, mode, digest | symlink target),
    as the compact ASCII JSON ``[FORMAT_VERSION, [[path, "f", mode, digest] |
    [path, "l", 0, target], ...]]``.

    Written out by hand (a restore hashes its outputs on every hit, and
    json.dumps builds an encoder per call): strings go through the json
    module's own escaping, integers print as JSON prints them.
    """
    return _stream_hash_sorted(sorted(outputs, key=_path))


def _path(e: OutputEntry) -> str:
    return e.path


def _stream_hash_sorted(outputs: Iterable[OutputEntry]) -> str:
    """:func:`stream_hash` of outputs sorted by path already."""
    rows = []
    for e in outputs:
        if e.symlink is not None:
            rows.append(f'[{_json_str(e.path)},"l",0,{_json_str(e.symlink)}]')
        else:
            rows.append(f'[{_json_str(e.path)},"f",{int(e.mode)},{_json_str(e.digest)}]')
    text = f"[{int(FORMAT_VERSION)},[{','.join(rows)}]]"
    return blake3.blake3(b"hazrun-stream\0" + text.encode("ascii")).hexdigest()


def passed_on(own: str, declares_outputs: bool, preds: Dict[str, Optional[str]]) -> str:
    """The stream hash a task hands its successors' keys (CACHE-001/002).

    A task that declares outputs hands on what it made (``own``): a change
    above it that leaves those the same stops there.  One that declares
    none (a group of deps, a test) makes nothing its successors could read,
    so it hands on its hard predecessors' streams, or a change two steps
    up (a:build -> b:all -> b:use) never reached b:use's key."""
    if declares_outputs or not preds:
        return own
    text = "\n".join(f"{label}={preds[label]}" for label in sorted(preds))
    return blake3.blake3(b"hazrun-passed-on\0" + text.encode("utf-8", "surrogateescape")).hexdigest()


@value
class Materialised:
    """What a task produced: its outputs, sorted by path, and their hash."""

    outputs: Tuple[OutputEntry, ...]
    stream_hash: str

    @classmethod
    def of(cls, outputs: Iterable[OutputEntry]) -> "Materialised":
        entries = tuple(sorted(outputs, key=_path))
        return cls(entries, _stream_hash_sorted(entries))

    def root_paths(self, project_rel_dir: str) -> List[str]:
        """The outputs as root-relative paths (EXEC-019/020 claim checks)."""
        prefix = project_rel_dir + "/" if project_rel_dir else ""
        return [prefix + e.path for e in self.outputs]


@value
class KeyInfo:
    """A task's cache key (CACHE-001) and the pieces it was computed from.

    ``components`` is JSON-able and holds no raw environment values: only
    their digests.  :meth:`Cache.explain` compares it with the last run's.
    """

    label: str
    key: str
    components: Dict[str, Any] = field(compare=False, hash=False, repr=False)
    # Each input's path and stat signature when the key was taken
    # (CACHE-005): an input edited and then undone while the task ran hashes
    # as before, but its signature does not.
    stamp: Tuple[Any, ...] = field(default=(), compare=False, hash=False, repr=False)


@value
class LogRef:
    """A stored stdout or stderr: its blob digest and size."""

    digest: str
    size: int


@value
class Manifest:
    """CACHE-003: one cache entry, as read back from the store."""

    label: str
    key: str
    duration_s: float
    stdout: LogRef
    stderr: LogRef
    outputs: Tuple[OutputEntry, ...]
    created: float = 0.0           # seconds since the epoch
    # How the two logs interleaved as the run read them: alternating byte
    # counts, stdout first (scheduler._Interleaving); () for "stdout, then
    # stderr", as entries stored before it was recorded replay.
    order: Tuple[int, ...] = ()

    def blobs(self) -> Dict[str, int]:
        """Every blob the entry names, its outputs' and its two logs':
        digest -> size."""
        need = {e.digest: e.size for e in self.outputs if e.digest is not None}
        need[self.stdout.digest] = self.stdout.size
        need[self.stderr.digest] = self.stderr.size
        return need


@record
class Restored:
    """What :meth:`Cache.restore` returns on success.

    ``stdout`` and ``stderr`` are the verified logs of the original run as
    binary files positioned at their start (spooled to disk beyond 1 MiB);
    the caller reads and closes them (or calls :meth:`close`).
    """

    materialised: Materialised
    stdout: IO[bytes]
    stderr: IO[bytes]
    duration_s: float
    order: Tuple[int, ...] = ()    # Manifest.order

    def close(self) -> None:
        self.stdout.close()
        self.stderr.close()

    def __enter__(self) -> "Restored":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
