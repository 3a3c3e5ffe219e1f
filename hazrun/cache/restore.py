"""CACHE-004: restoring a manifest's outputs, all of them or none.

A restore runs in two phases.  The first checks every path of the manifest
(relative, normalised, inside the project, matched by the task's output
globs, no file where another needs a directory), then copies every blob,
verifying its digest as it is read, into a temp file beside its
destination.  Only when every output is staged does the second phase rename
them into place.  A failure in the first phase removes the temp files and
the directories it created, so the work tree is as it was.

An output already in place (a regular file with the same permission bits
and content, or a symlink with the same target) is left alone: a run where
nothing changed writes nothing.  Its content is known from its stat
signature through the stat cache (``digest_of``), so usually without
reading it.

Directories are walked one component at a time through directory file
descriptors opened with O_NOFOLLOW, and files are created relative to them,
so no write goes through a symlink the walk did not check.  A symlink on
the way is followed only when it resolves inside the workspace.  Renames
replace whatever is at the destination (a symlink included) without
following it.
"""
from __future__ import annotations

import collections
import errno
import io
import os
import stat
import time
from typing import IO, Callable, List, Optional, Set, Tuple

from ..globs import NEVER, GlobSet
from .model import CacheMissError, Manifest, OutputEntry, WouldBlock
from ..globs import LEFTOVER, LEFTOVER_MARK, is_leftover
from ..fsutil import cut_name, write_all
from .store import EMPTY_DIGEST, CorruptBlob, LockedReads

_DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0)
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
SPOOL = 1 << 20        # logs are kept in memory up to this size
MAX_OPEN_DIRS = 64     # directory fds held at once during one restore

# (project-relative path, its lstat) -> the digest of that regular file's
# content if it can be told for that very stat, else None.
DigestOf = Callable[[str, os.stat_result], Optional[str]]


class Rejected(Exception):
    """Why a manifest cannot be restored; becomes CacheMissError."""


_BAD_PARTS = frozenset(("", ".", "..") + NEVER)


def path_problem(path: str) -> Optional[str]:
    """Why ``path`` is not a relative, normalised path inside the project."""
    if not path:
        return "an empty path"
    if "\0" in path:
        return f"path {path!r} holds a NUL character"
    if path.startswith("/"):
        return f"absolute path '{path}'"
    parts = path.split("/")
    if _BAD_PARTS.isdisjoint(parts):
        return None  # the common case, in one test
    if any(p in ("", ".", "..") for p in parts):
        return f"path '{path}' is not normalised or leaves the project"
    return f"path '{path}' is inside .git or .haz"


def check_manifest_paths(outputs: Tuple[OutputEntry, ...], globs: GlobSet,
                         project_rel_dir: str) -> None:
    """Raise Rejected unless every output may be written where it says."""
    prefix = project_rel_dir + "/" if project_rel_dir else ""
    paths = set()
    for e in outputs:
        why = path_problem(e.path)
        if why:
            raise Rejected(why)
        if not globs.match(prefix + e.path):
            raise Rejected(f"'{e.path}' is not matched by the task's outputs")
        if e.path in paths:
            raise Rejected(f"'{e.path}' is listed twice")
        paths.add(e.path)
    if len(paths) < 2:
        return  # a file can be no other's directory
    for p in paths:
        parts = p.split("/")
        for i in range(1, len(parts)):
            if "/".join(parts[:i]) in paths:
                raise Rejected(f"'{'/'.join(parts[:i])}' is both a file and the "
                               f"directory of '{p}'")


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


class _Dirs:
    """Directory fds under the project directory, opened without following
    symlinks that leave the workspace; creates what is missing on request
    and remembers what it created."""

    def __init__(self, base: str, root_real: str):
        self.base = base
        self.root_real = root_real
        self.fds: "collections.OrderedDict[str, int]" = collections.OrderedDict()
        self.created: List[str] = []
        self.swept: Set[str] = set()  # directories rid of leftovers

    def get(self, rel_dir: str, create: bool) -> int:
        fd = self.fds.get(rel_dir)
        if fd is not None:
            self.fds.move_to_end(rel_dir)
            return fd
        fd = self._walk(rel_dir, create)
        self.fds[rel_dir] = fd
        if len(self.fds) > MAX_OPEN_DIRS:
            _, old = self.fds.popitem(last=False)
            os.close(old)
        return fd

    def _walk(self, rel_dir: str, create: bool) -> int:
        cur = self.base
        fd = os.open(cur, _DIR_FLAGS)
        try:
            for part in rel_dir.split("/") if rel_dir else ():
                nfd, cur = self._step(fd, cur, part, rel_dir, create)
                os.close(fd)
                fd = nfd
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _step(self, fd: int, cur: str, part: str, rel_dir: str, create: bool
              ) -> Tuple[int, str]:
        path = os.path.join(cur, part)
        try:
            return os.open(part, _DIR_FLAGS | _NOFOLLOW, dir_fd=fd), path
        except FileNotFoundError:
            if not create:
                raise
            os.mkdir(part, 0o777, dir_fd=fd)
            self.created.append(path)
            return os.open(part, _DIR_FLAGS | _NOFOLLOW, dir_fd=fd), path
        except OSError as e:
            if e.errno not in (errno.ELOOP, errno.ENOTDIR):
                raise
        st = os.stat(part, dir_fd=fd, follow_symlinks=False)
        if not stat.S_ISLNK(st.st_mode):
            raise Rejected(f"'{rel_dir}' cannot be created: '{path}' is not a directory")
        real = os.path.realpath(path)
        if not _inside(real, self.root_real):
            raise Rejected(f"'{path}' is a symlink leading out of the workspace "
                           f"(to {real}); refusing to write through it")
        try:
            return os.open(real, _DIR_FLAGS | _NOFOLLOW), real
        except OSError:
            raise Rejected(f"'{path}' is a symlink to something that is not a "
                           "directory") from None

    def close(self) -> None:
        for fd in self.fds.values():
            os.close(fd)
        self.fds.clear()

    def remove_created(self) -> None:
        for path in reversed(self.created):
            try:
                os.rmdir(path)
            except OSError:
                pass


def _split(path: str) -> Tuple[str, str]:
    d, _, name = path.rpartition("/")
    return d, name


def _in_place(entry: OutputEntry, st: os.stat_result, pfd: Optional[int], name: str,
              digest_of: Optional[DigestOf]) -> bool:
    """Whether the file found (``st``, not followed) is what the entry says;
    ``name`` is relative to ``pfd`` (None: a path)."""
    if entry.symlink is not None:
        if not stat.S_ISLNK(st.st_mode):
            return False
        try:
            return os.readlink(name, dir_fd=pfd) == entry.symlink
        except OSError:
            return False
    if (not stat.S_ISREG(st.st_mode) or st.st_size != entry.size
            or st.st_mode & 0o7777 != entry.mode & 0o777):
        return False
    return digest_of is not None and digest_of(entry.path, st) == entry.digest


def _stage(store: LockedReads, dirs: _Dirs, entry: OutputEntry,
           digest_of: Optional[DigestOf] = None) -> Optional[Tuple[str, str, str]]:
    """Write one output to a temp name beside its destination; None if it
    is in place already."""
    rel_dir, name = _split(entry.path)
    pfd = dirs.get(rel_dir, create=True)
    try:
        st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
    except FileNotFoundError:
        st = None
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise Rejected(f"'{entry.path}' is a directory in the work tree")
    if st is not None and _in_place(entry, st, pfd, name, digest_of):
        return None
    if rel_dir not in dirs.swept:
        dirs.swept.add(rel_dir)
        remove_leftovers(pfd)
    tmp = f".{cut_name(name, 64)}{LEFTOVER_MARK}{os.getpid()}-{os.urandom(6).hex()}.tmp"
    if entry.symlink is not None:
        os.symlink(entry.symlink, tmp, dir_fd=pfd)
        return rel_dir, tmp, name
    assert entry.digest is not None
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW
                 | getattr(os, "O_CLOEXEC", 0), 0o600, dir_fd=pfd)
    try:
        try:
            if entry.size or entry.digest != EMPTY_DIGEST:  # empty: nothing to copy
                store.copy_blob(entry.digest, entry.size, lambda b: write_all(fd, b))
            # Permission bits only: set-id and sticky bits are not restored.
            os.fchmod(fd, entry.mode & 0o777)
        finally:
            os.close(fd)
    except BaseException:
        _unlink_at(tmp, pfd)
        raise
    return rel_dir, tmp, name


# A leftover is removed a minute after its writer is gone, or after an hour
# (process.writer_gone).
LEFTOVER_GONE_S = 60.0
LEFTOVER_MAX_S = 3600.0


def remove_leftovers(dir_fd: int) -> None:
    """Remove the restore temp files in a directory left by writers that
    are gone (a name without a pid, from an older hazrun, counts as gone)."""
    from ..process import writer_gone  # once, when a restore writes
    try:
        found = [(e.name, e.stat(follow_symlinks=False).st_mtime)
                 for e in os.scandir(dir_fd) if is_leftover(e.name)]
    except OSError:
        return
    now = time.time()
    for name, mtime in found:
        m = LEFTOVER.match(name)
        pid = int(m.group(1)[:-1]) if m and m.group(1) else None
        if writer_gone(pid, now - mtime, LEFTOVER_GONE_S, LEFTOVER_MAX_S):
            _unlink_at(name, dir_fd)


def _unlink_at(name: str, dir_fd: int) -> None:
    try:
        os.unlink(name, dir_fd=dir_fd)
    except OSError:
        pass


def all_in_place(project_dir: str, outputs: Tuple[OutputEntry, ...],
                 digest_of: Optional[DigestOf] = None) -> bool:
    """Whether every output is in place already, told by paths: one lstat
    per output and per directory on the way, where opening the directories
    one by one costs several system calls.  Only real directories count: a
    symlink on the way (or anything unexpected) says no, and the careful
    path then checks where it leads, as it would for a write."""
    dirs_seen = {""}
    for entry in outputs:
        rel_dir, _ = _split(entry.path)
        if rel_dir not in dirs_seen:
            parts = rel_dir.split("/")
            for i in range(1, len(parts) + 1):
                d = "/".join(parts[:i])
                if d in dirs_seen:
                    continue
                try:
                    st = os.lstat(f"{project_dir}/{d}")
                except OSError:
                    return False
                if not stat.S_ISDIR(st.st_mode):
                    return False
                dirs_seen.add(d)
        path = f"{project_dir}/{entry.path}"
        try:
            st = os.lstat(path)
        except OSError:
            return False
        if not _in_place(entry, st, None, path, digest_of):
            return False
    return True


def restore_outputs(store: LockedReads, project_dir: str, root_real: str,
                    outputs: Tuple[OutputEntry, ...],
                    digest_of: Optional[DigestOf] = None, in_place_only: bool = False
                    ) -> None:
    """Both phases; raises Rejected, CorruptBlob or OSError having written
    nothing, or (only if a rename fails after every check passed) OSError.
    ``in_place_only``: raise WouldBlock rather than write anything."""
    if all_in_place(project_dir, outputs, digest_of):
        return  # a run where nothing changed: nothing to open or write
    if in_place_only:
        raise WouldBlock(project_dir)
    dirs = _Dirs(project_dir, root_real)
    staged: List[Tuple[str, str, str]] = []
    try:
        try:
            for entry in outputs:
                one = _stage(store, dirs, entry, digest_of)
                if one is not None:
                    staged.append(one)
        except BaseException:
            for rel_dir, tmp, _ in staged:
                try:
                    _unlink_at(tmp, dirs.get(rel_dir, create=False))
                except (OSError, Rejected):
                    pass
            dirs.close()
            dirs.remove_created()
            raise
        for rel_dir, tmp, name in staged:
            pfd = dirs.get(rel_dir, create=False)
            os.rename(tmp, name, src_dir_fd=pfd, dst_dir_fd=pfd)
    finally:
        dirs.close()


def restore_log(store: LockedReads, digest: str, size: int) -> IO[bytes]:
    """A verified copy of a stored log, positioned at its start."""
    if size == 0 and digest == EMPTY_DIGEST:
        return io.BytesIO()  # nothing to read (most tasks print nothing)
    from ..spool import Spool  # only for logs with content
    spool = Spool(max_size=SPOOL)
    try:
        store.copy_blob(digest, size, spool.write)
        spool.seek(0)
    except BaseException:
        spool.close()
        raise
    return spool  # type: ignore[return-value]


def restore(store: LockedReads, manifest: Manifest, globs: GlobSet, project_rel_dir: str,
            project_dir: str, root_real: str, digest_of: Optional[DigestOf] = None,
            in_place_only: bool = False) -> Tuple[IO[bytes], IO[bytes]]:
    """CACHE-004 for one manifest; returns the verified stdout and stderr.

    Raises CacheMissError with the reason; nothing is written then.
    """
    logs: List[IO[bytes]] = []
    try:
        check_manifest_paths(manifest.outputs, globs, project_rel_dir)
        for ref in (manifest.stdout, manifest.stderr):
            logs.append(restore_log(store, ref.digest, ref.size))
        restore_outputs(store, project_dir, root_real, manifest.outputs, digest_of,
                        in_place_only)
    except (Rejected, CorruptBlob) as e:
        _close_all(logs)
        raise CacheMissError(str(e)) from None
    except FileNotFoundError as e:
        _close_all(logs)
        raise CacheMissError(f"a blob is missing ({os.path.basename(e.filename or '')})"
                             ) from None
    except OSError as e:
        _close_all(logs)
        where = f" ({e.filename})" if e.filename else ""
        raise CacheMissError(f"{e.strerror or e}{where}") from None
    except ValueError as e:  # a name no file system takes (NUL, lone surrogate)
        _close_all(logs)
        raise CacheMissError(f"unusable name in the manifest ({e})") from None
    except BaseException:
        _close_all(logs)
        raise
    return logs[0], logs[1]


def _close_all(files: List[IO[bytes]]) -> None:
    for f in files:
        f.close()
