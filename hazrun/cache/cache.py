"""The cache of one run: keys, lookups, restores and stores (CACHE-001..006).

A :class:`Cache` is made once per run and shared by the scheduler's pool
threads; every method is thread-safe.  It never prints: problems come back
as exceptions whose message is one line (CacheMissError, StoreError,
InputError) or as warnings the caller drains with :meth:`take_warnings`.

The pipeline of one task (EXEC-002) calls, in order::

    key = cache.compute_key(label, pred_streams)
    manifest = cache.lookup(key)                  # None: a miss
    restored = cache.restore(label, manifest)     # a hit; CacheMissError: a miss
    ... or run the task, then
    materialised = cache.collect_outputs(label)   # stream hash for successors
    cache.store(label, key, materialised, stdout, stderr, duration_s)
    cache.record(label, key)
"""
from __future__ import annotations

import bisect
import os
import stat as stat_module
import threading
import time
from itertools import repeat
from pathlib import Path
from typing import (IO, TYPE_CHECKING, Any, Callable, Dict, List, Mapping, Optional, Sequence,
                    Set, Tuple, Union)

from .. import files as _files
from ..fsutil import Sig
from ..globs import NEVER, GlobSet, any_match, is_leftover
from ..values import value
from ..workspace import Workspace
from . import explain as _explain
from . import key as _key
from . import restore as _restore
from .hashing import FileState, StatCache, hash_bytes, signature
from .model import (CacheMissError, InputError, KeyInfo, Manifest, Materialised,
                    OutputEntry, Restored, StoreError, WouldBlock)
from .outputs import find_outputs
from .store import (EMPTY_DIGEST, CorruptBlob, CorruptManifest, StagedBlob, Store, discard,
                    is_digest)

if TYPE_CHECKING:
    from .remote import RemoteCache

HAZ_DIR = ".haz"
STAT_CACHE = "statcache.bin"
EXPLAIN_DIR = "explain"
ENV_CACHE_DIR = "HAZ_CACHE_DIR"
# Directory mtimes closer than this to the moment the directory was read
# cannot tell whether a file was added in the same timestamp tick (Linux
# file systems stamp with a clock that ticks every 1 to 10 ms).
DIR_RACY_NS = 50_000_000
# A directory made during the run that git ignores (node_modules): known, so
# never walked nor stat'ed.
IGNORED_DIR = (-2, -2)

Log = Union[bytes, bytearray, memoryview, IO[bytes]]


@value
class StagedEntry:
    """A store half done (:meth:`Cache.stage`): the manifest to write and
    the blobs waiting in tmp/ for :meth:`Cache.commit`."""

    manifest: Manifest
    blobs: Tuple[StagedBlob, ...]


def resolve_cache_dir(root: Path, cache_dir: Union[str, "os.PathLike[str]", None] = None,
                      environ: Mapping[str, str] = os.environ) -> Path:
    """CACHE-003: ``cache_dir`` (relative: to the current directory), else
    ``$HAZ_CACHE_DIR`` (relative: to the workspace root), else
    ``<root>/.haz/cache``."""
    if cache_dir is not None and str(cache_dir) != "":
        return Path(os.path.abspath(cache_dir))
    env = environ.get(ENV_CACHE_DIR)
    if env:
        return Path(os.path.abspath(os.path.join(root, env)))
    return Path(root) / HAZ_DIR / "cache"


def _level(d: str) -> int:
    """How deep the root-relative directory ``d`` is ('' 0, 'a' 1, 'a/b' 2):
    the count of '/' in the paths of the files in it."""
    return d.count("/") + 1 if d else 0


def _covers(outputs: GlobSet, d: str) -> bool:
    """Whether every file under directory ``d`` is among ``outputs`` (its
    'dist/**'): a task's own outputs are never its inputs."""
    return any(g.whole and (d + "/").startswith(g.prefix) for g in outputs.includes) \
        and not any((g.prefix.startswith(d + "/") or (d + "/").startswith(g.prefix))
                    for g in outputs.excludes)


def _may_hold(d: str, globs: Optional[GlobSet], rel_dir: str,
              outputs: Optional[GlobSet]) -> bool:
    """Whether files under the root-relative directory ``d`` ('' the root)
    could be inputs selected by ``globs`` (None: the project at
    ``rel_dir``'s every file), given the task's ``outputs``."""
    inside = d + "/" if d else ""
    probe = inside + "\0"  # a file anywhere below d, named like no other
    if outputs and outputs.match(probe):
        return False  # all of it is the task's own output
    if globs is None:
        top = rel_dir + "/" if rel_dir else ""
        return inside.startswith(top) or top.startswith(inside)
    if any(g.match(probe) for g in globs.excludes):
        return False  # 'src/private/**' left out as a whole
    for g in globs.includes:
        if g.prefix.startswith(inside):
            return True  # the pattern starts inside d (or d holds its start)
        if inside.startswith(g.prefix):
            rest = g.rooted[len(g.prefix):]
            # A pattern with no '**' reaches a fixed depth below its prefix;
            # a file under d lies deeper than d.
            if "**" in rest or inside[len(g.prefix):].count("/") <= rest.count("/"):
                return True
    return False


class Cache:
    """See the module docstring.  ``read=False`` never looks up (--force,
    --no-cache); ``write=False`` never stores (--no-cache).  ``remote`` (a
    RemoteSettings): the remote cache asked on a local miss and given fresh
    successes (REMOTE-001..007)."""

    def __init__(self, workspace: Workspace, cache_dir: Optional[Path] = None,
                 environ: Mapping[str, str] = os.environ, read: bool = True,
                 write: bool = True, remote: Any = None, listing: Any = None):
        self.workspace = workspace
        self.root = Path(workspace.root)
        self.root_real = os.path.realpath(self.root)
        self._root_slash = str(self.root).rstrip("/") + "/"
        self.environ = dict(environ)  # one snapshot for every key of the run
        self.path = resolve_cache_dir(self.root, cache_dir, environ)
        # A cache directory inside the workspace (HAZ_CACHE_DIR=cache) is
        # never an input nor an output: each store would change every key.
        real = os.path.realpath(self.path)
        self._own_prefix: Optional[str] = (
            real[len(self.root_real) + 1:] + "/"
            if real.startswith(self.root_real.rstrip("/") + "/") else None)
        self._store = Store(self.path)
        if real != os.path.join(self.root_real, HAZ_DIR, "cache"):
            # A directory the user named may hold anything; .haz/ is ours,
            # unless .haz/cache is a link to somewhere else.
            self._store.check_adoptable()
        self.read = read
        self.write = write
        self.haz_dir = self.root / HAZ_DIR
        self.stat_cache = StatCache(self.haz_dir / STAT_CACHE)
        self._lock = threading.Lock()        # guards everything below
        self._listing: Optional[List[str]] = None
        self._listing_set: frozenset = frozenset()
        self._listing_lock = threading.Lock()  # held while listing (slow)
        self._ahead = listing  # a files.Listing started early, or None
        # Files produced during this run (collected or restored outputs) that
        # the listing taken at the start lacks: path -> None (not yet asked
        # whether git ignores it), True (an input candidate), False (ignored);
        # and the same paths sorted, for selection (grown in place under
        # _lock: copying the listing per restored task cost more than the rest
        # of the restore).
        self._produced: Dict[str, Optional[bool]] = {}
        self._produced_sorted: List[str] = []
        # The directories of the listing's files (and those found since),
        # sorted, and when each was last read: a file created during the run
        # (by the user, by a task that does not declare it) changes its
        # directory's mtime, and a key taken later must see it (_refresh).
        self._dirs: Optional[List[str]] = None
        # dir -> (its mtime when last looked at, -1: not yet; when last read)
        self._dir_seen: Dict[str, Tuple[int, int]] = {}
        self._dirs_version = 0  # counts the directories found since
        self._refresh_lock = threading.Lock()
        self._task_dirs_of: Dict[str, Tuple[int, List[str]]] = {}
        self._listed_at = 0
        self._warnings: List[str] = []
        self._once: List[str] = []  # see _warn
        self._told_empty: Set[str] = set()  # labels whose empty inputs were told
        self._told_pending: List[str] = []   # ... in warnings not yet taken
        # Directories the listing could not read, with why (CFG-006).
        self._unreadable: List[Tuple[str, str]] = []
        self._fetched: Set[str] = set()  # keys downloaded from the remote cache
        # Warn of input patterns that select nothing (off for --dry-run:
        # the outputs of dependencies it would restore are not there).
        self.tell_empty = True
        # label -> (key, its explain record encoded, or None: unchanged)
        self._records: Dict[str, Tuple[str, Optional[bytes]]] = {}
        self._per_task: Dict[str, Tuple[_key.Static, Optional[GlobSet], GlobSet]] = {}
        self._explain_store = _explain.RecordStore(self.haz_dir / EXPLAIN_DIR)
        self._predicted: Dict[str, _key.Row] = {}  # see predict_restore
        self._predicted_links: Dict[str, str] = {}  # path -> target, of those
        self._link_targets: Set[str] = set()  # stat-cache keys read via links
        self._closed = False
        # The remote cache's client is made when first needed: a run whose
        # every lookup hits locally never imports http.client and ssl.
        self.remote_settings = remote
        self._remote: Optional[RemoteCache] = None
        self._remote_cancelled = False
        self._remote_lock = threading.Lock()

    # -- warnings ---------------------------------------------------------

    def _warn(self, message: str, once: bool = False) -> None:
        """``once``: of something done once a run (the listing), which an
        attempt made again does not find again: kept by discard_warnings."""
        with self._lock:
            (self._once if once else self._warnings).append(message)

    def take_warnings(self) -> List[str]:
        """Drain the warnings gathered so far (one line each)."""
        with self._lock:
            out, self._warnings = self._once + self._warnings, []
            self._once = []
            self._told_pending = []
        return out

    def discard_warnings(self) -> None:
        """Drop the warnings gathered so far, unsaid (an attempt given up
        and made again): what is told once a run is told by the next."""
        with self._lock:
            self._warnings = []
            self._told_empty.difference_update(self._told_pending)
            self._told_pending = []

    def stats(self) -> Dict[str, int]:
        """Counters of the stat cache (CACHE-006): files and bytes read, hits."""
        sc = self.stat_cache
        return {"files_hashed": sc.files_hashed, "bytes_hashed": sc.bytes_hashed,
                "stat_hits": sc.hits}

    # -- the workspace's files ------------------------------------------------

    def _files(self) -> List[str]:
        """The sorted listing, taken once per Cache (never changed after)."""
        if self._listing is None:
            with self._listing_lock:
                if self._listing is None:
                    unreadable: List[Tuple[str, str]] = []
                    # Before the listing starts: a file created while it
                    # runs may be missing from it, and its directory then
                    # has a later mtime than this.
                    self._listed_at = time.time_ns()
                    if self._ahead is not None and self._ahead.covers(self.root):
                        self._listed_at = self._ahead.started_ns  # git ran from then
                    listing = _files.list_workspace_files(self.root, self._ahead, unreadable)
                    # The cache's own directory is never an input (CFG-006).
                    own = self._own_prefix
                    self._unreadable = sorted(u for u in unreadable
                                              if not (own and (u[0] + "/").startswith(own)))
                    if self._own_prefix is not None:
                        listing = self._not_the_cache(listing)
                    listing_set = frozenset(listing)
                    root_unread = any(not d for d, _ in self._unreadable)
                    if ("haz.toml" not in listing_set and not root_unread
                            and (self.root / "haz.toml").is_file()):
                        # CFG-006 to the letter, and a trap: a repository
                        # around the workspace (a home directory's dotfiles,
                        # '*' in its .gitignore) ignores its files, so none
                        # is an input and every edit still hits.
                        self._warn(once=True, message="git ignores this workspace's "
                                   "haz.toml, so no file "
                                   "it ignores is an input and edits to them do not "
                                   "make tasks run again; check the .gitignore of the "
                                   "repository around the workspace (git check-ignore "
                                   "-v haz.toml)")
                    with self._lock:
                        self._listing_set = listing_set
                        self._listing = listing
        return self._listing

    def predict_restore(self, label: str, manifest: Manifest) -> None:
        """--dry-run (CLI-002): a run would restore ``label``'s outputs from
        ``manifest`` before its successors' keys are taken; make those keys
        see the files as restored, whatever is on disk now (nothing, after
        a fresh checkout)."""
        rel_dir = self.workspace.project_of(label).rel_dir
        prefix = rel_dir + "/" if rel_dir else ""
        rows: Dict[str, _key.Row] = {}
        links: Dict[str, str] = {}
        for e in manifest.outputs:
            rel = prefix + e.path
            if e.symlink is not None:  # its row also depends on where it leads
                links[rel] = e.symlink
                rows[rel] = [rel, "l", hash_bytes(os.fsencode(e.symlink))]
            elif e.digest is not None:
                rows[rel] = [rel, "x" if e.mode & stat_module.S_IXUSR else "-", e.digest]
        with self._lock:
            self._predicted.update(rows)
            self._predicted_links.update(links)
        self._note_produced(list(rows))

    def _not_the_cache(self, paths: List[str]) -> List[str]:
        prefix = self._own_prefix
        return [p for p in paths if not p.startswith(prefix)] if prefix else paths

    def _select(self, select: Callable[[Sequence[str]], List[str]]) -> List[str]:
        """``select`` (a filter of a sorted list) applied to the listing and
        the files produced since: the files a listing taken now would give."""
        listing = self._files()
        chosen = select(listing)
        with self._lock:  # _produced_sorted grows in place
            extra = select(self._produced_sorted) if self._produced_sorted else []
        if not extra:
            return chosen
        # A file produced while the listing was taken may be in both.
        listed = self._listing_set
        return sorted(chosen + [p for p in extra if p not in listed])

    def _refresh(self, label: str, globs: Sequence[Optional[GlobSet]], rel_dir: str,
                 own_outputs: GlobSet, quick: bool = False) -> None:
        """CACHE-001: add to the listing the files created since it was
        taken in the directories ``globs`` (None: the whole project) select
        from, for the key of a task about to run or just run (compute_key's
        ``refresh``).  The listing is taken once per run; without this, a
        file saved while an upstream task ran was no input of the key, and
        the output the command made of it was stored under a key that says
        it is not there.  (A hit needs none: it is what the workspace held
        when the run started.)

        One stat per directory; a directory is read again only if its mtime
        changed since it was last read (or was too close to that read to
        tell, DIR_RACY_NS).  A directory made since is walked unless git
        ignores it or it holds the task's own outputs.  Not seen: files in a
        directory that held no listed file when the run started."""
        root_slash = self._root_slash
        stale = []
        for d in self._task_dirs(label, globs, rel_dir):
            try:
                mtime = os.stat(root_slash + d if d else root_slash).st_mtime_ns
            except OSError:
                continue
            with self._lock:
                seen, read_at = self._dir_seen[d]
                if seen == mtime and seen < read_at - DIR_RACY_NS:
                    continue  # unchanged since it was read
                if seen == -1 and mtime < read_at - DIR_RACY_NS:
                    self._dir_seen[d] = (mtime, read_at)  # as the listing saw it
                    continue
            stale.append(d)
        if not stale:
            return
        if quick:
            raise WouldBlock(stale[0])
        # One refresh at a time: a directory is marked read only once what it
        # holds is noted, so a key taken meanwhile waits rather than missing it.
        with self._refresh_lock:
            new_files: List[str] = []
            read: Dict[str, Tuple[int, int]] = {}
            new_dirs: List[str] = []
            for d in stale:
                self._read_dir(d, None, new_files, new_dirs, read)
            while new_dirs:
                found = [d for d in new_dirs if not _covers(own_outputs, d)]
                new_dirs = []
                ignored = _files.git_ignored(self.root, [f"{d}/" for d in found]) \
                    if found else frozenset()
                for d in found:
                    if f"{d}/" in ignored:
                        read[d] = IGNORED_DIR  # never walked, never stat'ed
                    else:
                        self._read_dir(d, None, new_files, new_dirs, read)
            if new_files:
                self._note_produced(self._not_the_cache(sorted(new_files)))
            with self._lock:
                for d, state in read.items():
                    if d not in self._dir_seen and state is not IGNORED_DIR:
                        bisect.insort(self._dirs, d)
                        self._dirs_version += 1
                    self._dir_seen[d] = state

    def _read_dir(self, d: str, mtime: Optional[int], new_files: List[str],
                  new_dirs: List[str], read: Dict[str, Tuple[int, int]]) -> None:
        """Read ``d``: what it holds that the listing, the files produced
        since and the known directories lack, and (in ``read``) its mtime
        before the read and when that was."""
        started = time.time_ns()
        try:
            mtime = os.stat(self._root_slash + d if d else self._root_slash).st_mtime_ns
            with os.scandir(self._root_slash + d if d else self._root_slash) as it:
                entries = [(e.name, e.is_dir(follow_symlinks=False)) for e in it]
        except OSError:
            return
        read[d] = (mtime, started)
        prefix = d + "/" if d else ""
        own = self._own_prefix  # a cache directory inside the workspace
        with self._lock:
            known, produced, dirs = self._listing_set, self._produced, self._dir_seen
            for name, is_dir in entries:
                if name in NEVER or is_leftover(name):
                    continue
                rel = prefix + name
                if is_dir:
                    if rel not in dirs and rel not in read \
                            and not (own and (rel + "/").startswith(own)):
                        new_dirs.append(rel)
                elif rel not in known and rel not in produced:
                    new_files.append(rel)

    def _task_dirs(self, label: str, globs: Sequence[Optional[GlobSet]],
                   rel_dir: str) -> List[str]:
        """The known directories the globs (None: all of ``rel_dir``) may
        select files from; the same until a directory is found (a key is
        taken twice per task that runs)."""
        found = self._task_dirs_of.get(label)
        if found is not None and found[0] == self._dirs_version:
            return found[1]
        if self._dirs is None:
            with self._lock:
                if self._dirs is None:
                    at = self._listed_at
                    seen: Dict[str, Tuple[int, int]] = {"": (-1, at)}
                    for f in self._listing or ():
                        d = f.rpartition("/")[0]
                        while d not in seen:
                            seen[d] = (-1, at)
                            d = d.rpartition("/")[0]
                    self._dir_seen = seen
                    self._dirs = sorted(seen)
        # (top, the level of the directories its files are in; None: any)
        tops: Set[Tuple[str, Optional[int]]] = set()
        for g in globs:
            if g is None:
                tops.add((rel_dir, None))
            else:
                # A literal path matches all below it too ('data' is data/**).
                tops.update((inc.prefix.rstrip("/"),
                             None if "**" in inc.rooted or inc.prefix == inc.rooted
                             else inc.rooted.count("/"))
                            for inc in g.includes)
        out: Set[str] = set()
        with self._lock:
            dirs, seen, version = self._dirs, self._dir_seen, self._dirs_version
            for top, level in tops:
                if top not in seen:
                    # A literal path to a file ('package.json'): the
                    # directory it is created in.
                    parent = top.rpartition("/")[0]
                    if parent in seen:
                        out.add(parent)
                    continue
                if level is None or _level(top) <= level:
                    out.add(top)
                below = top + "/" if top else ""
                i = bisect.bisect_left(dirs, below) if below else 1
                while i < len(dirs) and dirs[i].startswith(below):
                    # '*.json' at the root is one directory, not all 20,000;
                    # those above the level are read for new directories.
                    if level is None or _level(dirs[i]) <= level:
                        out.add(dirs[i])
                    i += 1
        result = sorted(out)
        self._task_dirs_of[label] = (version, result)
        return result

    def _note_produced(self, root_paths: Sequence[str]) -> None:
        # Recorded even before the listing exists: one being taken right now
        # may have read the directory before these files were written.
        with self._lock:
            for p in root_paths:
                if p not in self._listing_set and p not in self._produced:
                    self._produced[p] = None
                    bisect.insort(self._produced_sorted, p)

    def _candidates(self, paths: List[str], quick: bool = False) -> List[str]:
        """Drop produced files that git ignores, as the listing would have.
        ``quick``: raise WouldBlock rather than ask git."""
        with self._lock:
            if self._produced.keys().isdisjoint(paths):
                return paths  # the common case: listed files only
            unknown = [p for p in paths if self._produced.get(p, True) is None]
        if unknown:
            if quick:
                raise WouldBlock(unknown[0])
            ignored = _files.git_ignored(self.root, unknown)
            with self._lock:
                for p in unknown:
                    self._produced[p] = p not in ignored
        with self._lock:
            return [p for p in paths if self._produced.get(p, True)]

    def _probe(self, label: str, kind: str, rel: str, quick: bool = False,
               path: Optional[str] = None) -> Optional[FileState]:
        try:
            return self.stat_cache.probe(rel, path or self._root_slash + rel, read=not quick)
        except InputError as e:
            what = kind if path else f"{kind} {rel}"
            raise InputError(e.reason, rel, f"cannot hash {what}: {e.reason}",
                             label) from None

    def _rows(self, label: str, kind: str, paths: List[str], quick: bool = False,
              seen: Optional[List[Any]] = None) -> List[_key.Row]:
        """The key rows of ``paths``; ``seen`` gets each file's path and stat
        signature (KeyInfo.stamp)."""
        if not paths:
            return []
        rows = []
        predicted = self._predicted
        sigs: Optional[List[Optional[Sig]]] = [] if seen is not None else None
        known = self.stat_cache.known_rows(paths, self._root_slash, sigs)
        for rel, row, sig in zip(paths, known, sigs if sigs is not None else repeat(None)):
            if predicted and rel in predicted:
                row = predicted[rel]
                link = self._predicted_links.get(rel)
                if link is not None:
                    row = self._link_row(label, kind, rel, row, quick, link)
            elif row is None:  # not known from its stat: probe (hash) it
                state = self._probe(label, kind, rel, quick)
                if state is None:  # gone since the listing: not an input
                    continue
                row = _key.file_row(rel, state)
                sig = state.sig
                if state.symlink is not None:
                    row = self._link_row(label, kind, rel, row, quick, seen=seen)
            if seen is not None:
                # Size and mtime: what a write changes.  Not the inode nor
                # the ctime, which a chmod, a hard link or a rename also
                # change: a task doing that to an input would never be stored.
                seen.append((rel, sig[:2] if sig is not None else None))
            rows.append(row)
        return rows

    def _link_row(self, label: str, kind: str, rel: str, row: _key.Row, quick: bool,
                  target: Optional[str] = None, seen: Optional[List[Any]] = None
                  ) -> _key.Row:
        """A symlinked input whose target is a regular file: its row's
        digest covers the content read through it as well as the target
        string (CACHE-001), since the task reads that content; a file
        edited behind the link is a miss.  A link to a directory, a
        dangling one, or one to the task's own output (whose content would
        make each run's key depend on the last run) is keyed by its target
        alone.  ``target``: the link as --dry-run predicts it restored."""
        link = self._root_slash + rel
        real = os.path.realpath(link if target is None
                                else os.path.join(os.path.dirname(link), target))
        root = self.root_real.rstrip("/") + "/"
        trel = real[len(root):] if real.startswith(root) else None
        if trel is not None and trel in self._predicted:  # restored by then
            return [rel, row[1], _key.link_digest(row[2], self._predicted[trel][2])]
        try:
            st = os.stat(real)
        except OSError:
            return row
        if not stat_module.S_ISREG(st.st_mode):
            return row
        if trel is not None and self._task_parts(label)[2].match(trel):
            return row
        # Known to the stat cache by its root-relative path, or by its
        # absolute one (never a root-relative path) when outside the root.
        key = trel if trel is not None else real
        found = self._probe(label, f"{kind} {rel} (a link to {real})", key, quick, real)
        with self._lock:
            self._link_targets.add(key)
        if found is None or found.symlink is not None:
            return row
        if seen is not None:
            seen.append((key, found.sig[:2]))
        return [rel, row[1], _key.link_digest(row[2], found.digest)]

    # -- CACHE-001 ------------------------------------------------------------

    def compute_key(self, label: str, pred_streams: Mapping[str, str],
                    quick: bool = False, refresh: bool = False) -> KeyInfo:
        """The key of ``label``; ``pred_streams`` maps each hard predecessor's
        label to its stream hash.  Raises InputError if an input cannot be
        hashed.  ``quick``: raise WouldBlock if an input's digest is not known
        from the stat cache (or git must say whether a file is ignored).
        ``refresh``: first look for files created since the listing (see
        _refresh), for a task that runs; with ``quick``, WouldBlock if a
        directory must be read for that."""
        ws = self.workspace
        project = ws.project_of(label)
        expected = ws.graph.hard_preds[label]
        if (len(pred_streams) != len(expected)
                or any(p not in pred_streams for p in expected)):
            raise AssertionError(f"internal error: key of {label} needs the stream "
                                 f"hashes of {sorted(expected)}, got {sorted(pred_streams)}")
        static, input_globs, output_globs = self._task_parts(label)
        self._files()
        ws_globs = GlobSet.compile(ws.settings.inputs) if ws.settings.inputs else None
        if refresh:
            self._refresh(label, [input_globs] + ([ws_globs] if ws_globs is not None else []),
                          project.rel_dir, output_globs, quick)
        inputs = self._candidates(self._select(
            lambda files: _files.select_with(files, input_globs, output_globs,
                                             project.rel_dir)), quick)
        ws_inputs: List[str] = []
        if ws_globs is not None:
            ws_inputs = self._candidates(self._select(ws_globs.select), quick)
        # The inputs' stamps, for a task that runs (compared once it ended);
        # a hit needs none, and 10,000 inputs make it 4 ms.
        seen: Optional[List[Any]] = [] if refresh else None
        key, parts = static.key(self._rows(label, "workspace input", ws_inputs, quick, seen),
                                self._rows(label, "input", inputs, quick, seen), pred_streams)
        # Once the key is made: a quick attempt given up half way (an input
        # to read) has its warnings thrown away, and must not count as told.
        if self.tell_empty:
            if ws_globs is not None:
                self._tell_empty("[workspace] inputs", ws_globs, ws_inputs, None, quick)
            if input_globs is not None:
                self._tell_empty(label, input_globs, inputs, output_globs, quick)
        if self._unreadable:
            self._tell_unreadable(label, input_globs, project.rel_dir, output_globs)
            if ws_globs is not None:
                self._tell_unreadable(label, ws_globs, "", None)
        return KeyInfo(label, key, parts, tuple(seen or ()))

    def _tell_unreadable(self, label: str, globs: Optional[GlobSet], rel_dir: str,
                         outputs: Optional[GlobSet]) -> None:
        """Warn, once a run for each, of a directory that could not be
        listed where ``label``'s inputs may be (CFG-006): its files are no
        task's inputs, so no edit there makes one run again."""
        for d, why in self._unreadable:
            whose = "unreadable " + d
            if whose in self._told_empty or not _may_hold(d, globs, rel_dir, outputs):
                continue
            self._tell_once(whose, [
                f"cannot read directory '{d or '.'}' ({why}): its files are inputs of no "
                f"task ({label} would read them), so edits there make no task run again"])

    def _tell_empty(self, whose: str, globs: GlobSet, chosen: List[str],
                    outputs: Optional[GlobSet], quick: bool = False) -> None:
        """Warn, once a run, of an input pattern that selects no file and
        names a path that is not there ('scr/**' for 'src/**') or one that
        is never an input (a file git ignores, the task's own output):
        either way no edit changes the key, and every run replays the first
        result (CFG-006).  A wildcard over files git ignores that are there
        (a dependency's 'dist/**') is left alone: what they hold reaches the
        key through that dependency."""
        if whose in self._told_empty:
            return
        told = []
        for g in globs.includes:
            if any_match(chosen, g):
                continue
            literal = g.prefix == g.rooted
            path = self.root / (g.rooted if literal else g.prefix)
            if not os.path.lexists(path):
                told.append(f"'{g.text}' selects no file: there is no "
                            f"{g.rooted if literal else g.prefix}, so no edit makes the "
                            "task run again (a typo?)")
            elif literal:
                why = self._never_input(g.rooted, path, outputs, quick)
                if why:
                    told.append(f"'{g.text}' selects no file: {why}")
        self._tell_once(whose, [f"{whose}: inputs pattern {m}" for m in told])

    def _tell_once(self, whose: str, messages: List[str]) -> None:
        """Warn with ``messages`` unless ``whose`` was told this run; the
        mark goes with them if they are thrown away (discard_warnings)."""
        with self._lock:
            if not messages or whose in self._told_empty:
                return
            self._told_empty.add(whose)
            self._told_pending.append(whose)
            self._warnings += messages

    def _never_input(self, rel: str, path: Path, outputs: Optional[GlobSet],
                     quick: bool = False) -> Optional[str]:
        """Why the existing ``rel`` is no input (CFG-006), or None.
        ``quick``: raise WouldBlock rather than ask git (the loop thread)."""
        if outputs is not None and outputs.match(rel):
            return "it is among the task's own outputs, which are never inputs"
        if any(part in NEVER for part in rel.split("/")):
            return "nothing under .git or .haz is an input"
        if path.is_dir():
            return None  # an empty directory: nothing in it to change yet
        if quick:
            raise WouldBlock(rel)
        if rel in _files.git_ignored(self.root, [rel]):
            return ("git ignores it, and what git ignores is never an input (to make it "
                    f"one, stop ignoring it: 'git check-ignore -v {rel}' names the line "
                    "that does)")
        return None

    def _task_parts(self, label: str) -> Tuple[_key.Static, Optional[GlobSet], GlobSet]:
        """Per task and run: the key's file-independent components, the
        input globs (None: the whole project) and the output globs."""
        found = self._per_task.get(label)
        if found is None:
            ws = self.workspace
            task = ws.task(label)
            rel_dir = ws.project_of(label).rel_dir
            inputs = None if task.inputs is None else _files.task_input_globs(task, rel_dir)
            static = _key.static_parts(task, self.environ, ws.settings.env)
            found = (_key.Static(static), inputs, _files.task_output_globs(task, rel_dir))
            self._per_task[label] = found  # a race computes the same twice
        return found

    # -- lookup and restore (CACHE-004) -----------------------------------------

    def lookup(self, key: Union[KeyInfo, str], quick: bool = False) -> Optional[Manifest]:
        """The manifest stored under ``key``, or None (a miss).  An entry that
        is corrupt or incomplete is a miss with a warning.  On a local miss,
        the remote cache (REMOTE-003): a verified download goes into the
        local store and is looked up there, so the next run hits locally.
        ``quick``: raise WouldBlock rather than ask the remote cache."""
        manifest = self._lookup_local(key)
        if manifest is None and self.read and self.remote_settings is not None:
            if quick:
                raise WouldBlock("remote")
            if self._fetch_remote(key):
                manifest = self._lookup_local(key)
        return manifest

    def _lookup_local(self, key: Union[KeyInfo, str]) -> Optional[Manifest]:
        if not self.read:
            return None
        k = key.key if isinstance(key, KeyInfo) else key
        label = key.label if isinstance(key, KeyInfo) else None
        if not is_digest(k):
            raise AssertionError(f"internal error: not a cache key: {k!r}")
        who = f"{label}: " if label else ""
        try:
            manifest = self._store.read_manifest(k)
        except CorruptManifest as e:
            self._warn(f"{who}ignoring corrupt cache entry {k[:12]} ({e}); "
                       "the next successful run replaces it")
            return None
        except OSError as e:
            self._warn(f"{who}cannot read cache entry {k[:12]}: {e.strerror}")
            return None
        if manifest is None:
            return None
        if label is not None and manifest.label != label:
            self._warn(f"{who}ignoring cache entry {k[:12]}: it belongs to "
                       f"{manifest.label}")
            return None
        for digest, size in self._blobs_to_read(manifest, label):
            if self._store.blob_size(digest) != size:
                self._warn(f"{who}ignoring incomplete cache entry {k[:12]}: blob "
                           f"{digest[:12]} is missing or not of its recorded size")
                return None
        return manifest

    def _blobs_to_read(self, manifest: Manifest, label: Optional[str]
                       ) -> List[Tuple[str, int]]:
        """The blobs (digest, size) a restore of ``manifest`` is expected to
        read: not the empty one (restored without reading), nor that of an
        output the stat cache knows to be in place (so a run where nothing
        changed stats no blob).  What a restore does read, it verifies as it
        reads (CACHE-004): a blob missing then is a miss with a warning too."""
        prefix = None
        if label is not None:
            rel_dir = self.workspace.project_of(label).rel_dir
            prefix = rel_dir + "/" if rel_dir else ""
        recorded = self.stat_cache.recorded
        wanted = [(manifest.stdout.digest, manifest.stdout.size),
                  (manifest.stderr.digest, manifest.stderr.size)]
        for e in manifest.outputs:
            if e.digest is not None and (prefix is None
                                         or recorded(prefix + e.path) != e.digest):
                wanted.append((e.digest, e.size))
        return [(d, n) for d, n in wanted if n or d != EMPTY_DIGEST]

    def restore(self, label: str, manifest: Manifest, quick: bool = False) -> Restored:
        """Write the manifest's outputs and return its logs, or raise
        CacheMissError having written nothing.  ``quick``: raise WouldBlock,
        having written nothing, unless every output is in place already and
        the stat cache knows it."""
        project = self.workspace.project_of(label)

        def miss(reason: str) -> CacheMissError:
            return CacheMissError(f"cache entry {manifest.key[:12]}: {reason}", label)

        if manifest.label != label:
            raise miss(f"it belongs to {manifest.label}")
        globs = self._task_parts(label)[2]
        prefix = project.rel_dir + "/" if project.rel_dir else ""

        def digest_of(path: str, st: os.stat_result) -> Optional[str]:
            # An output in place is not written again (CACHE-004); the stat
            # cache usually knows its content from the stat restore took.
            rel = prefix + path
            digest = self.stat_cache.known(rel, st)
            if digest is not None:
                return digest
            if quick:
                raise WouldBlock(rel)
            try:  # not known: read it (and remember it)
                state = self.stat_cache.probe(rel, self._root_slash + rel)
            except InputError:
                return None
            if state is None or state.symlink is not None or state.sig != signature(st):
                return None
            return state.digest

        try:
            try:
                with self._store.reading() as blobs:
                    stdout, stderr = _restore.restore(
                        blobs, manifest, globs, project.rel_dir, project.dir_name,
                        self.root_real, digest_of, in_place_only=quick)
            except CacheMissError as e:
                raise miss(str(e)) from None
            except OSError as e:  # releasing the lock
                raise miss(f"{e.strerror} ({self.path})") from None
        except CacheMissError:
            # REMOTE-006: a download the run could not use was no hit.
            if self._remote is not None and manifest.key in self._fetched:
                self._remote.unhit()
            raise
        self._store.touch(manifest.key)
        materialised = Materialised.of(manifest.outputs)
        self._note_produced(materialised.root_paths(project.rel_dir))
        return Restored(materialised, stdout, stderr, manifest.duration_s, manifest.order)

    def holds_entry(self, key: KeyInfo) -> bool:
        """Whether the local cache has an entry under ``key`` (pool)."""
        return os.path.lexists(self._store.entry_path(key.key))

    # -- after a fresh success (CACHE-002/003/005) -------------------------------

    def collect_outputs(self, label: str) -> Materialised:
        """The task's outputs as they are on disk now, hashed.  Raises
        InputError if an output cannot be read."""
        ws = self.workspace
        task = ws.task(label)
        project = ws.project_of(label)
        if not task.outputs:
            return Materialised.of(())
        globs = _files.task_output_globs(task, project.rel_dir)
        prefix = project.rel_dir + "/" if project.rel_dir else ""
        entries = []
        for rel in self._not_the_cache(find_outputs(str(self.root), globs, project.rel_dir)):
            state = self._probe(label, "output", rel)
            if state is None:
                continue
            path = rel[len(prefix):]
            if state.symlink is not None:
                entries.append(OutputEntry(path, 0, None, state.size, state.symlink))
            else:
                entries.append(OutputEntry(path, state.mode, state.digest, state.size))
        materialised = Materialised.of(entries)
        self._note_produced(materialised.root_paths(project.rel_dir))
        return materialised

    def store(self, label: str, key: KeyInfo, materialised: Materialised,
              stdout: Log, stderr: Log, duration_s: float,
              order: Sequence[int] = ()) -> bool:
        """Store a fresh success under ``key``; raises StoreError.  A no-op
        (False) with write=False or for a task with ``cache = false``.  Logs
        are read from their start.  :meth:`stage` then :meth:`commit`."""
        staged = self.stage(label, key, materialised, stdout, stderr, duration_s, order)
        return staged is not None and self.commit(staged)

    def stage(self, label: str, key: KeyInfo, materialised: Materialised,
              stdout: Log, stderr: Log, duration_s: float,
              order: Sequence[int] = ()) -> Optional["StagedEntry"]:
        """The first half of a store: copy the outputs and logs into the
        store's tmp/, verified against the digests the key was built from.
        Once staged, the task's files may change (a successor may run) and
        the entry is still the one of this run.  ``order``: how the logs
        interleaved (Manifest.order).  None: nothing to store (see
        :meth:`store`); raises StoreError."""
        if not self.write or not self.workspace.task(label).cache:
            return None
        if key.label != label:
            raise AssertionError(f"internal error: key of {key.label} used for {label}")
        project = self.workspace.project_of(label)
        blobs: Dict[str, StagedBlob] = {}

        def keep(blob: Optional[StagedBlob]) -> None:
            if blob is not None and blob.digest in blobs:
                discard([blob])  # the same bytes as a blob staged already
            elif blob is not None:
                blobs[blob.digest] = blob

        try:
            self._store.ensure()
            with self._store.lock(exclusive=False):
                for e in materialised.outputs:
                    if e.digest is not None:
                        keep(self._store.stage_file(os.path.join(project.dir_name, e.path),
                                                    e.digest, e.size))
                refs = []
                for log in (stdout, stderr):
                    ref, blob = self._store.stage_stream(log)
                    refs.append(ref)
                    keep(blob)
        except BaseException as e:
            discard(list(blobs.values()))
            if isinstance(e, (CorruptBlob, OSError)):
                raise self._store_error(e, label) from None
            raise
        manifest = Manifest(label=label, key=key.key, duration_s=float(duration_s),
                            stdout=refs[0], stderr=refs[1], outputs=materialised.outputs,
                            created=time.time(), order=tuple(order))
        return StagedEntry(manifest, tuple(blobs.values()))

    def commit(self, staged: "StagedEntry") -> bool:
        """The second half of a store (CACHE-003): fsync and rename the
        staged blobs, then the manifest.  Raises StoreError (a prune that
        emptied tmp/ meanwhile, a full disk ...)."""
        try:
            with self._store.lock(exclusive=False):
                self._store.commit(staged.blobs, staged.manifest)
        except OSError as e:  # Store.commit removed what it had not renamed
            raise self._store_error(e, staged.manifest.label) from None
        return True

    def _store_error(self, e: Exception, label: str) -> StoreError:
        if isinstance(e, OSError):
            return StoreError(f"{e.strerror or e}: {e.filename or self.path}", label)
        return StoreError(str(e), label)  # CorruptBlob: an output changed

    # -- the remote cache (REMOTE-003..007) ---------------------------------------

    @property
    def remote(self) -> Optional["RemoteCache"]:
        """The remote cache's client, made on first use; None without one."""
        if self.remote_settings is None:
            return None
        with self._remote_lock:
            if self._remote is None:
                from .remote import RemoteCache  # http.client, ssl
                self._remote = RemoteCache(self.remote_settings, self._store, self._warn)
                if self._remote_cancelled:
                    self._remote.cancel()
            return self._remote

    @property
    def uploading(self) -> bool:
        """Whether fresh successes go to the remote cache (REMOTE-006/007)."""
        settings = self.remote_settings
        if not self.write or settings is None or settings.read_only \
                or self._remote_cancelled:
            return False
        remote = self._remote  # None: not made yet, so neither dropped
        return remote is None or remote.uploading

    def _fetch_remote(self, key: Union[KeyInfo, str]) -> bool:
        remote = self.remote
        assert remote is not None
        if isinstance(key, KeyInfo):
            got = remote.fetch(key.key, key.label, self._remote_check(key.label))
        else:
            got = remote.fetch(key, None)
        if got:
            with self._lock:
                self._fetched.add(key.key if isinstance(key, KeyInfo) else key)
        return got

    def _remote_check(self, label: str):
        """What a downloaded manifest must pass before it enters the local
        store: it is ``label``'s, and restoring it writes only its outputs."""
        project = self.workspace.project_of(label)
        globs = _files.task_output_globs(self.workspace.task(label), project.rel_dir)

        def check(manifest: Manifest) -> Optional[str]:
            if manifest.label != label:
                return f"it belongs to {manifest.label}"
            try:
                _restore.check_manifest_paths(manifest.outputs, globs, project.rel_dir)
            except _restore.Rejected as e:
                return str(e)
            return None
        return check

    def upload(self, manifest: Manifest) -> bool:
        """REMOTE-006: upload the entry this run just stored (from the pool,
        off the critical path).  Failures are warnings; False: not
        uploaded."""
        if not self.uploading:
            return False
        remote = self.remote
        assert remote is not None
        return remote.upload(manifest)

    def remote_stats(self) -> Optional[Dict[str, Any]]:
        """REMOTE-006: hits, misses, uploads, errors, disabled; None without
        a remote cache."""
        if self.remote_settings is None:
            return None
        remote = self._remote
        if remote is None:  # never needed: nothing asked, nothing sent
            from .remote.settings import remote_stats
            return remote_stats()
        return remote.stats()

    def stop_when(self, stopping: Callable[[], bool]) -> None:
        """EXEC-012: give up waiting for the cache's locks where another
        process holds them (a prune, a clean, a run saving its records) once
        ``stopping()`` is true: a run's cancel token, also once the run is
        over and this cache closes."""
        self._store.stopping = stopping

    def cancel(self) -> None:
        """Ctrl-C: abandon remote requests in flight and queued uploads
        (REMOTE-006)."""
        with self._remote_lock:
            self._remote_cancelled = True
            remote = self._remote
        if remote is not None:
            remote.cancel()

    # -- explain (CLI-002) ----------------------------------------------------

    def record(self, label: str, key: KeyInfo) -> None:
        """Remember ``key`` as the last run of ``label``; written by
        :meth:`close`.  Its record is made now, and only if the key is not
        the recorded one: holding every key's components to the end of the
        run made a sixth of the memory of a 10,000-task run."""
        data = None
        if self._explain_store.recorded_key(label) != key.key:
            data = _explain.encode(_explain.compact(label, key.key, key.components))
        with self._lock:
            self._records[label] = (key.key, data)

    def explain(self, label: str, key: KeyInfo) -> List[str]:
        """What changed since the last recorded run of ``label``, as lines."""
        new = _explain.compact(label, key.key, key.components)
        return _explain.diff(self._explain_store.load(label), new)

    # -- the end of a run ---------------------------------------------------

    def close(self) -> None:
        """Persist the stat cache and the explain records; failures become
        warnings.  Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            records = dict(self._records)
        remote = self._remote
        if remote is not None:
            remote.close()
        self._store.close()  # the use times of this run's hits (CACHE-007)
        with self._lock:
            present = None
            if self._listing is not None:
                present = set(self._listing_set).union(self._produced, self._link_targets)
        try:
            _ensure_haz_dir(self.haz_dir)
            if present is not None:
                self.stat_cache.forget_missing(present)
            self.stat_cache.save()
        except OSError as e:
            self._warn(f"cannot save the stat cache {self.haz_dir / STAT_CACHE}: "
                       f"{e.strerror}")
        self._write_records(records)

    def _write_records(self, records: Mapping[str, Tuple[str, Optional[bytes]]]) -> None:
        """Write the explain records of this run whose key is not the one
        recorded last (CLI-002), as one pack."""
        try:
            self._explain_store.directory.mkdir(parents=True, exist_ok=True)
            self._explain_store.save(records, self._store.stopping)
        except OSError as e:
            self._warn(f"cannot record this run's keys in {self._explain_store.directory}: "
                       f"{e.strerror}")

    def __enter__(self) -> "Cache":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _ensure_haz_dir(haz_dir: Path) -> None:
    """Create .haz/ with a .gitignore, so git never sees its contents."""
    haz_dir.mkdir(parents=True, exist_ok=True)
    ignore = haz_dir / ".gitignore"
    if not ignore.exists():
        try:
            ignore.write_text("*\n")
        except OSError:
            pass
