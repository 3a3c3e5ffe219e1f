"""CACHE-003: the on-disk store of manifests and content-addressed blobs.

Layout under the cache directory::

    CACHEDIR.TAG         tells backup tools this is a cache
    lock                 flock: shared while storing/restoring, exclusive
                         while pruning or cleaning
    entries/ab/<key>.json  one manifest per key; its mtime is its use time
    blobs/ab/<rest>      file contents, stdout and stderr, by blake3 digest
    tmp/                 files being written

Every file is written under ``tmp/``, fsynced, and renamed into place, so a
reader (another thread, another hazrun process, or the next run after a
crash) sees a manifest or blob whole or not at all.  Blobs are renamed
before the manifest that names them.  A store never trusts what it finds:
an existing blob is verified before it is reused, and a manifest is simply
replaced.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import math
import os
import re
import stat
import threading
import weakref
from pathlib import Path
from typing import (IO, Any, Callable, ContextManager, Dict, Iterator, List, Optional, Sequence, Set, Tuple,
                    Union)

from ..errors import UsageError
from ..fsutil import wait_flock, write_all
from ..values import value
from .hashing import CHUNK, _buffer, hash_bytes, hash_file, new_hasher
from .key import canonical
from .model import FORMAT_VERSION, LogRef, Manifest, OutputEntry

HEX64 = re.compile(r"[0-9a-f]{64}\Z")
EMPTY_DIGEST = "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"  # blake3(b"")
CACHEDIR_TAG = (b"Signature: 8a477f597d28d172789f06886806bc55\n"
                b"# This file is a cache directory tag created by hazrun.\n"
                b"# For information about cache directory tags see https://bford.info/cachedir/\n")
MANIFEST_READ = 1 << 16   # bytes per read of a manifest
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


class CorruptManifest(ValueError):
    """A manifest that is not what this hazrun writes; the message says why."""


class CorruptBlob(ValueError):
    """A blob whose content does not match its digest or size."""


def is_digest(value: Any) -> bool:
    return isinstance(value, str) and HEX64.match(value) is not None


@value
class StagedBlob:
    """A blob copied into tmp/ and verified, not yet fsynced nor visible."""

    tmp: Path
    digest: str


def discard(staged: Sequence[StagedBlob]) -> None:
    """Remove staged blobs that will not be committed."""
    for blob in staged:
        _unlink(blob.tmp)


class Store:
    """The files of one cache directory.  Methods raise OSError; the
    :class:`~hazrun.cache.Cache` turns that into StoreError or a miss."""

    def __init__(self, path: Path):
        self.path = path
        self.entries = path / "entries"
        self.blobs = path / "blobs"
        self.tmp = path / "tmp"
        # String forms for the per-task paths (a pathlib join per lookup
        # costs more than the system call it feeds).
        self._entries_s = os.path.join(str(self.entries), "")
        self._blobs_s = os.path.join(str(self.blobs), "")
        self._ready = False
        self._ready_lock = threading.Lock()
        self._shared_lock = threading.Lock()   # guards the three below
        self._shared_users = 0
        self._lock_fd: Optional[int] = None    # kept open until close()
        self._lock_fd_closer: Any = None       # weakref.finalize closing it
        self._touched: Set[str] = set()        # keys hit, not yet touched
        # A run's (Cache.stop_when): true on Ctrl-C, and then no more waiting
        # for a lock another process holds.  None: waits block (prune, clean).
        self.stopping: Optional[Callable[[], bool]] = None
        self._owner_id: Optional[str] = None   # see _owner()
        self._owner_lock = threading.Lock()
        self._owner_closer: Any = None         # weakref.finalize letting it go

    # -- layout ---------------------------------------------------------

    def entry_path(self, key: str) -> Path:
        assert is_digest(key), f"internal error: bad key {key!r}"
        return self.entries / key[:2] / (key + ".json")

    def blob_path(self, digest: str) -> Path:
        assert is_digest(digest), f"internal error: bad digest {digest!r}"
        return self.blobs / digest[:2] / digest[2:]

    def _entry_str(self, key: str) -> str:
        assert is_digest(key), f"internal error: bad key {key!r}"
        return f"{self._entries_s}{key[:2]}/{key}.json"

    def blob_file(self, digest: str) -> str:
        """:meth:`blob_path` as a string, for paths taken per blob."""
        assert is_digest(digest), f"internal error: bad digest {digest!r}"
        return f"{self._blobs_s}{digest[:2]}/{digest[2:]}"

    def check_adoptable(self) -> None:
        """Raise UsageError unless the directory is hazrun's cache or may
        become one: absent, empty, or holding only the empty layout a start
        interrupted before its tag left.  ``hazrun cache clean`` deletes
        what a directory carrying hazrun's tag holds (CACHE-007), so a run
        must never tag one that holds anything else (``--cache-dir ~/build``)."""
        if is_hazrun_cache(self.path):
            return
        try:
            names = os.listdir(self.path)
        except OSError:
            # Absent, or unusable (a file, no permission): a store there
            # fails, and that is a warning, not a reason not to run.
            return
        for name in names:
            p = self.path / name
            if (name == "lock" or name.startswith(_TAG_PART)) and p.is_file() \
                    and not p.is_symlink():
                continue
            if name in ("entries", "blobs", "tmp") and p.is_dir() and not p.is_symlink() \
                    and not os.listdir(p):
                continue
            if is_hazrun_cache(self.path):
                return  # another hazrun tagged it meanwhile (its part file is gone)
            raise UsageError(
                f"cache directory {self.path} holds files and is not a hazrun cache "
                "(it has no CACHEDIR.TAG written by hazrun); give --cache-dir or "
                "HAZ_CACHE_DIR a new or empty directory: 'hazrun cache clean' "
                "deletes what a cache directory holds")

    def ensure(self) -> None:
        """Create the directory layout (once per Store): the tag first, so
        a directory with hazrun's layout and no tag was never hazrun's."""
        if self._ready:
            return
        with self._ready_lock:
            if self._ready:
                return
            tag = self.path / "CACHEDIR.TAG"
            if not tag.exists():
                self.path.mkdir(parents=True, exist_ok=True)
                part = self.path / f"{_TAG_PART}{os.getpid()}.{threading.get_ident()}"
                try:
                    with open(part, "wb") as f:
                        f.write(CACHEDIR_TAG)
                except BaseException:
                    _unlink(part)  # a full disk, a quota: no part left behind
                    raise
                self._publish(part, tag)
            for d in (self.entries, self.blobs, self.tmp):
                d.mkdir(parents=True, exist_ok=True)
            self._ready = True

    def lock(self, exclusive: bool) -> ContextManager[None]:
        """Shared for stores and restores, exclusive for prune and clean.

        A cache directory where the lock file cannot be created (read-only)
        is used without it for shared access.  The shared lock is one flock
        held while any thread of this process uses it: taken by the first
        user, released by the last, on a lock file opened once (a restore
        per task would otherwise pay an open, a flock and a close).  It is
        not held between uses, so prune and clean wait for a use to end,
        not for the run to end.
        """
        if exclusive:
            return self._exclusive()
        return _SharedUse(self)

    def reading(self) -> "LockedReads":
        """Blob reads under the shared lock, taken at the first read and held
        to the end of the ``with`` block: a restore that finds every output
        in place and has no log to replay reads no blob and locks nothing."""
        return LockedReads(self)

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        fd = os.open(self.path / "lock", os.O_RDWR | os.O_CREAT | _O_CLOEXEC, 0o666)
        try:
            wait_flock(fd, fcntl.LOCK_EX, self.stopping)
            yield
        finally:
            os.close(fd)  # releases the lock

    def _share(self) -> None:
        with self._shared_lock:
            if self._shared_users == 0:
                fd = self._shared_fd()
                if fd is not None:
                    wait_flock(fd, fcntl.LOCK_SH, self.stopping)
            self._shared_users += 1

    def _unshare(self) -> None:
        with self._shared_lock:
            self._shared_users -= 1
            if self._shared_users == 0 and self._lock_fd is not None:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def _shared_fd(self) -> Optional[int]:
        """The lock file, opened on first use; None if it cannot be (a
        read-only cache directory, or one not created yet: tried again on
        the next use).  Called under _shared_lock."""
        if self._lock_fd is None:
            try:
                fd = os.open(os.path.join(str(self.path), "lock"),
                             os.O_RDWR | os.O_CREAT | _O_CLOEXEC, 0o666)
            except OSError:
                return None
            self._lock_fd = fd
            # A Store dropped without close() must not leak the descriptor.
            self._lock_fd_closer = weakref.finalize(self, os.close, fd)
        return self._lock_fd

    def close(self) -> None:
        """Refresh the use time of the entries hit (CACHE-007) and close the
        lock file.  The Store stays usable: it reopens what it needs."""
        self.flush_touches()
        with self._shared_lock:
            if self._lock_fd is not None and self._shared_users == 0:
                self._lock_fd_closer()  # os.close, once
                self._lock_fd = None
        with self._owner_lock:
            if self._owner_closer is not None:
                self._owner_closer()  # unlink the .owner file, then let go
                self._owner_closer = None
            self._owner_id = None

    # -- writing --------------------------------------------------------

    def _tmp_name(self) -> Path:
        return self.tmp / f"{self._owner()}-{os.urandom(10).hex()}.tmp"

    def _owner(self) -> str:
        """The name this Store's temp files start with, ``PID-HEX``, held as
        an flock on ``tmp/PID-HEX.owner`` while the Store lives.  A sweep
        (CACHE-007) that can take that lock knows the writer is gone, killed
        in the middle of a store, in this container or another one sharing
        the directory, and removes its files at once; where the lock file
        cannot be made, the writer's pid and the files' age tell.  The
        first use of each run also sweeps what dead writers left."""
        with self._owner_lock:
            if self._owner_id is not None:
                return self._owner_id
            owner = f"{os.getpid()}-{os.urandom(6).hex()}"
            path = os.path.join(str(self.tmp), owner + OWNER_SUFFIX)
            fresh = os.path.join(str(self.tmp), f".{owner}{OWNER_SUFFIX}.new")
            try:
                fd = os.open(fresh, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_CLOEXEC, 0o666)
            except OSError:
                fd = None  # a read-only tmp/ (no store will succeed anyway)
            if fd is not None:
                try:
                    # Locked before it bears the name a sweep looks at.
                    fcntl.flock(fd, fcntl.LOCK_EX)
                    os.replace(fresh, path)
                except OSError:
                    os.close(fd)
                    _unlink(fresh)
                else:
                    self._owner_closer = weakref.finalize(self, _let_go, fd, path)
                    sweep_dead_writers(self.tmp)
            self._owner_id = owner
            return owner

    def _open_tmp(self) -> Tuple[int, Path]:
        path = self._tmp_name()
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_CLOEXEC | _O_NOFOLLOW
        try:
            fd = os.open(path, flags, 0o666)
        except FileNotFoundError:
            # tmp/ removed under a running build (by hand, or by an older
            # hazrun's clean): made again, so later stores still happen.
            self.tmp.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, flags, 0o666)
        return fd, path

    def _write_tmp(self, data: bytes) -> Path:
        chunks = iter((data,))
        return self._copy_to_tmp(lambda: next(chunks, b""), len(data))[0]

    def _publish(self, tmp: Path, dest: Path) -> None:
        try:
            os.replace(tmp, dest)
        except FileNotFoundError:
            dest.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.replace(tmp, dest)
            except BaseException:
                _unlink(tmp)
                raise
        except BaseException:
            _unlink(tmp)
            raise

    def _copy_to_tmp(self, read: "ReadFn", size_hint: int,
                     sync: bool = True) -> Tuple[Path, str, int]:
        """Copy from ``read`` into a temp file, hashing on the way; fsync it
        unless ``sync`` is false (a staged blob: see :meth:`commit`)."""
        fd, path = self._open_tmp()
        try:
            h = new_hasher(size_hint)
            total = 0
            while True:
                chunk = read()
                if not chunk:
                    break
                h.update(chunk)
                write_all(fd, chunk)
                total += len(chunk)
            if sync:
                os.fsync(fd)
        except BaseException:
            os.close(fd)
            _unlink(path)
            raise
        os.close(fd)
        return path, h.hexdigest(), total

    def has_valid_blob(self, digest: str, size: int) -> bool:
        """True if the blob exists and really holds that content."""
        try:
            found, n = hash_file(str(self.blob_path(digest)))
        except FileNotFoundError:
            return False
        except OSError as e:
            if e.errno in (errno.ELOOP, errno.EISDIR, errno.ENOTDIR):
                return False
            raise
        return found == digest and n == size

    def stage_file(self, src: str, digest: str, size: int) -> Optional["StagedBlob"]:
        """Copy the regular file ``src`` into tmp/ as the future blob
        ``digest`` (see :meth:`commit`): None if that blob is stored
        already.  Raises CorruptBlob if the file no longer has that content
        (it changed after it was hashed), having kept nothing."""
        if self.has_valid_blob(digest, size):
            return None
        fd = os.open(src, os.O_RDONLY | _O_NOFOLLOW | _O_CLOEXEC)
        try:
            buf = _buffer(size)

            def read() -> memoryview:
                return buf[:os.readv(fd, [buf])]

            tmp, found, n = self._copy_to_tmp(read, size, sync=False)
        finally:
            os.close(fd)
        if found != digest or n != size:
            _unlink(tmp)
            raise CorruptBlob(f"{src} changed after its outputs were hashed")
        return StagedBlob(tmp, digest)

    def put_blob(self, read: "ReadFn", digest: str, size: int) -> None:
        """Store blob ``digest`` from ``read`` (a downloaded artifact,
        REMOTE-003), verified while it is copied.  Raises CorruptBlob, having
        stored nothing, if the content does not match; replaces whatever
        was stored under that digest if it does."""
        tmp, found, n = self._copy_to_tmp(read, size)
        if found != digest or n != size:
            _unlink(tmp)
            raise CorruptBlob(f"blob {digest[:12]} does not match its digest")
        self._publish(tmp, self.blob_path(digest))

    def stage_stream(self, stream: Union[bytes, bytearray, memoryview, IO[bytes]]
                     ) -> Tuple[LogRef, Optional["StagedBlob"]]:
        """Copy a log (bytes, or a binary file read from its start) into
        tmp/ (see :meth:`commit`).  A log whose blob is there already (most
        often the empty one) is not written again: the StagedBlob is None."""
        if isinstance(stream, (bytes, bytearray, memoryview)):
            data = bytes(stream)
            known = LogRef(hash_bytes(data), len(data))
            if self.has_valid_blob(known.digest, known.size):
                return known, None
            chunks = iter([data])

            def read() -> bytes:
                return next(chunks, b"")
        else:
            # Not stream.seekable(): SpooledTemporaryFile has it only from
            # Python 3.11, and without it nothing was ever stored on 3.9/3.10.
            if _seekable(stream):
                stream.seek(0)
                known = _hash_stream(stream)
                if self.has_valid_blob(known.digest, known.size):
                    return known, None
                stream.seek(0)

            def read() -> bytes:
                return stream.read(CHUNK)
        tmp, digest, n = self._copy_to_tmp(read, 0, sync=False)
        return LogRef(digest, n), StagedBlob(tmp, digest)

    def commit(self, staged: Sequence["StagedBlob"], manifest: Manifest) -> None:
        """Make staged blobs durable and visible, then the manifest that
        names them (CACHE-003): each is fsynced before its rename, and the
        manifest is renamed last, so no entry is ever seen whose blobs a
        crash could lose.  Call under the shared lock, so that no prune
        takes a blob between its rename and the manifest's."""
        try:
            for blob in staged:
                fd = os.open(blob.tmp, os.O_RDONLY | _O_NOFOLLOW | _O_CLOEXEC)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
                self._publish(blob.tmp, self.blob_path(blob.digest))
        except BaseException:
            discard(staged)
            raise
        # The blobs that staging found stored already were seen under an
        # earlier hold of the lock: a prune or clean may have removed them
        # since.  An entry is published whole or not at all.
        for digest in manifest.blobs():
            if digest != EMPTY_DIGEST and not os.path.exists(self.blob_file(digest)):
                raise FileNotFoundError(errno.ENOENT, "a blob of this entry was removed "
                                        "meanwhile (a concurrent prune or clean?)",
                                        self.blob_file(digest))
        self.put_manifest(manifest)

    def put_manifest(self, manifest: Manifest) -> None:
        tmp = self._write_tmp(encode_manifest(manifest))
        self._publish(tmp, self.entry_path(manifest.key))

    # -- reading --------------------------------------------------------

    def read_manifest(self, key: str) -> Optional[Manifest]:
        """The manifest of ``key``; None if there is none.

        Raises CorruptManifest for one that does not parse or check.
        """
        try:
            fd = os.open(self._entry_str(key), os.O_RDONLY | _O_CLOEXEC)
        except FileNotFoundError:
            return None
        try:
            data = os.read(fd, MANIFEST_READ)
            # What encode_manifest writes ends with its only newline (JSON
            # escapes those in strings): a read that ends with one is the
            # whole file, and a hit saves the read that would return b"".
            if not data.endswith(b"\n"):
                chunks = [data]
                while data:
                    data = os.read(fd, MANIFEST_READ)
                    chunks.append(data)
                data = b"".join(chunks)
        finally:
            os.close(fd)
        manifest = decode_manifest(data)
        if manifest.key != key:
            raise CorruptManifest(f"it is stored under key {key[:12]} but names "
                                  f"key {manifest.key[:12]}")
        return manifest

    def blob_size(self, digest: str) -> Optional[int]:
        try:
            st = os.lstat(self.blob_file(digest))
        except OSError:
            return None
        return st.st_size if stat.S_ISREG(st.st_mode) else None

    def copy_blob(self, digest: str, size: int, write: "WriteFn") -> None:
        """Stream blob ``digest`` to ``write``, verifying it as it is read.

        Raises CorruptBlob (and deletes the blob, so that the next store
        writes it again) if its content does not match; FileNotFoundError
        if it is missing.  Nothing is known to be good until this returns.
        """
        fd = os.open(self.blob_file(digest), os.O_RDONLY | _O_NOFOLLOW | _O_CLOEXEC)
        try:
            h = new_hasher(size)
            buf = _buffer(size)
            total = 0
            while True:
                n = os.readv(fd, [buf])
                if n == 0:
                    break
                total += n
                if total > size:
                    break
                h.update(buf[:n])
                write(buf[:n])
        finally:
            os.close(fd)
        if total != size or h.hexdigest() != digest:
            _unlink(self.blob_path(digest))
            raise CorruptBlob(f"blob {digest[:12]} is corrupt (removed it)")

    def touch(self, key: str) -> None:
        """CACHE-007: a hit refreshes the entry's use time (its mtime), by
        :meth:`flush_touches` or :meth:`close`: prune needs no more precise
        a time than the run's, and a hit saves a system call."""
        with self._shared_lock:
            self._touched.add(key)

    def flush_touches(self) -> None:
        """Refresh the use time of the entries hit since the last flush."""
        with self._shared_lock:
            keys, self._touched = self._touched, set()
        for key in keys:
            try:
                os.utime(self._entry_str(key))
            except OSError:
                pass  # a read-only cache still serves hits; a pruned entry is gone

    # -- housekeeping helpers ---------------------------------------------

    def iter_entries(self) -> Iterator[Tuple[str, Path, os.stat_result]]:
        """(key, path, stat) of every manifest file."""
        for sub in _scandir(self.entries):
            if not sub.is_dir(follow_symlinks=False):
                continue
            for e in _scandir(Path(sub.path)):
                name = e.name
                if name.endswith(".json") and is_digest(name[:-5]):
                    try:
                        yield name[:-5], Path(e.path), e.stat(follow_symlinks=False)
                    except OSError:
                        continue

    def iter_blobs(self) -> Iterator[Tuple[str, Path, int]]:
        """(digest, path, size) of every blob."""
        for sub in _scandir(self.blobs):
            if not sub.is_dir(follow_symlinks=False) or len(sub.name) != 2:
                continue
            for e in _scandir(Path(sub.path)):
                digest = sub.name + e.name
                if is_digest(digest):
                    try:
                        yield digest, Path(e.path), e.stat(follow_symlinks=False).st_size
                    except OSError:
                        continue


class _SharedUse:
    """One use of the store's shared lock (see :meth:`Store.lock`)."""

    __slots__ = ("store",)

    def __init__(self, store: Store):
        self.store = store

    def __enter__(self) -> None:
        self.store._share()

    def __exit__(self, *exc: object) -> None:
        self.store._unshare()


class LockedReads:
    """See :meth:`Store.reading`."""

    __slots__ = ("store", "held")

    def __init__(self, store: Store):
        self.store = store
        self.held = False

    def __enter__(self) -> "LockedReads":
        return self

    def __exit__(self, *exc: object) -> None:
        if self.held:
            self.held = False
            self.store._unshare()

    def copy_blob(self, digest: str, size: int, write: "WriteFn") -> None:
        """:meth:`Store.copy_blob`, under the shared lock."""
        if not self.held:
            self.store._share()
            self.held = True
        self.store.copy_blob(digest, size, write)


ReadFn = Any   # () -> bytes-like, empty at the end
WriteFn = Any  # (bytes-like) -> None


def _scandir(path: Path) -> List["os.DirEntry[str]"]:
    try:
        with os.scandir(path) as it:
            return list(it)
    except (FileNotFoundError, NotADirectoryError):
        return []


def _hash_stream(stream: IO[bytes]) -> LogRef:
    """Digest and size of what ``stream`` holds from its position on."""
    h = new_hasher()
    n = 0
    while True:
        chunk = stream.read(CHUNK)
        if not chunk:
            return LogRef(h.hexdigest(), n)
        h.update(chunk)
        n += len(chunk)


def _seekable(stream: IO[bytes]) -> bool:
    try:
        stream.seek(0, os.SEEK_CUR)
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation included
        return False
    return True


OWNER_SUFFIX = ".owner"
# A temp file: PID-OWNER-RANDOM.tmp (see Store._owner), or PID-RANDOM.tmp from
# hazrun before owner locks; and .PID-OWNER.owner.new, an owner lock not yet
# named (its writer killed between the two steps).
_TMP_NAME = re.compile(r"\.?(\d+)-(?:([0-9a-f]{12})-)?[0-9a-f]+(\.tmp|\.owner\.new)\Z")


def _let_go(fd: int, path: str) -> None:
    _unlink(path)  # first: a sweep must never lock a file still in use
    os.close(fd)


# The tag as it is written, before its rename; a crash may leave one.
_TAG_PART = "CACHEDIR.TAG.part-"


def is_hazrun_cache(path: Path) -> bool:
    """Whether ``path`` carries the tag hazrun writes: the standard
    signature, which every tool's cache directory carries (cargo's target/
    ...), and hazrun's own line."""
    try:
        with open(path / "CACHEDIR.TAG", "rb") as f:
            head = f.read(len(CACHEDIR_TAG))
    except OSError:
        return False
    return head == CACHEDIR_TAG[:len(head)] and len(head) == len(CACHEDIR_TAG)


def sweep_dead_writers(tmp: Union[str, Path]) -> Tuple[int, List[Tuple[str, Optional[int]]]]:
    """Remove the temp files of the writers whose ``.owner`` lock can be
    taken (they are gone: the kernel let their locks go), and their lock
    files.  Returns bytes freed, and (name, writer's pid or None) of the
    temp files whose owners are unknown, for the caller's pid-and-age rule
    (CACHE-007); a live owner's files are not among them."""
    try:
        names = os.listdir(tmp)
    except OSError:
        return 0, []
    gone: Dict[str, int] = {}
    alive: Set[str] = set()
    for name in names:
        if not name.endswith(OWNER_SUFFIX) or name.startswith("."):
            continue
        owner = name[:-len(OWNER_SUFFIX)]
        try:
            fd = os.open(os.path.join(tmp, name), os.O_RDONLY | _O_CLOEXEC)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            alive.add(owner)
            continue
        gone[owner] = fd  # held while its files go
    freed = 0
    unknown: List[Tuple[str, Optional[int]]] = []
    for name in names:
        m = _TMP_NAME.match(name)
        if m is None:
            if name.endswith(".tmp"):
                unknown.append((name, None))
            continue
        owner = f"{m.group(1)}-{m.group(2)}" if m.group(2) and m.group(3) == ".tmp" else None
        if owner in alive:
            continue
        if owner not in gone:
            unknown.append((name, int(m.group(1))))
            continue
        path = os.path.join(tmp, name)
        try:
            freed += os.lstat(path).st_size
            os.unlink(path)
        except OSError:
            pass
    for owner, fd in gone.items():
        _unlink(os.path.join(tmp, owner + OWNER_SUFFIX))
        os.close(fd)
    return freed, unknown


def _unlink(path: Union[str, Path]) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


# -- the manifest format ----------------------------------------------------

def encode_manifest(m: Manifest) -> bytes:
    outputs: List[Dict[str, Any]] = []
    for e in m.outputs:
        if e.symlink is not None:
            outputs.append({"path": e.path, "mode": 0, "symlink": e.symlink, "size": e.size})
        else:
            outputs.append({"path": e.path, "mode": e.mode, "digest": e.digest,
                            "size": e.size})
    return canonical({
        "format": FORMAT_VERSION,
        "label": m.label,
        "key": m.key,
        "duration_s": m.duration_s,
        "created": m.created,
        "stdout": {"digest": m.stdout.digest, "size": m.stdout.size},
        "stderr": {"digest": m.stderr.digest, "size": m.stderr.size},
        "outputs": outputs,
        **({"order": list(m.order)} if m.order else {}),
    }) + b"\n"


_DECODER = json.JSONDecoder()
_JSON_SPACE = " \t\n\r"


def _need(cond: bool, what: str) -> None:
    if not cond:
        raise CorruptManifest(what)


# The checks below run for every hit, so they test exact types (what
# json.loads returns: an int is never a bool, a number never a subclass)
# instead of calling isinstance twice.

def _count(v: Any) -> bool:
    """A non-negative JSON integer."""
    return type(v) is int and v >= 0


def _number(v: Any) -> bool:
    """A finite JSON number (Python's json reads Infinity and NaN too)."""
    return type(v) is int or (type(v) is float and math.isfinite(v))


def _log(v: Any, name: str) -> LogRef:
    if type(v) is dict:
        digest, size = v.get("digest"), v.get("size")
        if is_digest(digest) and _count(size):
            return LogRef(digest, size)
    raise CorruptManifest(f"bad '{name}'")


def _output(v: Any) -> OutputEntry:
    if type(v) is not dict:
        raise CorruptManifest("bad output entry")
    path, mode, size = v.get("path"), v.get("mode"), v.get("size")
    _need(type(path) is str and _count(size) and _count(mode) and mode <= 0o7777,
          "bad output entry")
    if "symlink" in v:
        target = v["symlink"]
        _need(type(target) is str and target != "" and "digest" not in v,
              f"bad symlink entry for '{path}'")
        return OutputEntry(path, 0, None, size, target)
    digest = v.get("digest")
    _need(is_digest(digest), f"bad digest for '{path}'")
    return OutputEntry(path, mode, digest, size)


def decode_manifest(data: bytes) -> Manifest:
    """Parse and type-check a manifest; raises CorruptManifest."""
    try:
        # json.loads, less what a manifest does not need: guessing the
        # encoding of bytes, and two regex matches for the white space.
        text = data.decode("utf-8").strip(_JSON_SPACE)
        obj, end = _DECODER.raw_decode(text)
        if end != len(text):
            raise ValueError("extra data")
    except (ValueError, RecursionError):  # UnicodeDecodeError included
        raise CorruptManifest("it is not valid JSON (truncated?)") from None
    _need(type(obj) is dict, "it is not a JSON object")
    get = obj.get
    _need(get("format") == FORMAT_VERSION,
          f"format {get('format')!r} is not {FORMAT_VERSION}")
    label, key = get("label"), get("key")
    _need(type(label) is str and is_digest(key), "bad label or key")
    duration = get("duration_s")
    _need(_number(duration) and duration >= 0, "bad duration_s")
    created = get("created", 0.0)
    _need(_number(created), "bad created")
    outputs = get("outputs")
    _need(type(outputs) is list, "bad outputs")
    stdout, stderr = _log(get("stdout"), "stdout"), _log(get("stderr"), "stderr")
    return Manifest(label, key, float(duration), stdout, stderr,
                    tuple([_output(v) for v in outputs]), float(created),
                    _order(get("order", []), stdout.size, stderr.size))


def _order(v: Any, stdout_size: int, stderr_size: int) -> Tuple[int, ...]:
    """CACHE-003's Manifest.order: byte counts that the logs' sizes can account for
    (a replay reads exactly that many bytes of each log, in turn).  Not
    held to MAX_RUNS: a hazrun that records more writes entries this one
    replays, not ones it calls corrupt and both keep replacing."""
    _need(type(v) is list and all(_count(n) for n in v)
          and sum(v[0::2]) <= stdout_size and sum(v[1::2]) <= stderr_size,
          "bad order")
    return tuple(v)
