"""The loaded workspace: settings, projects and the validated task graph."""
from __future__ import annotations

import dataclasses
import io
import os
import pickle
import sys
import time
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple, Union

from . import config as _config
from . import errors as _errors
from . import globs as _globs
from . import graph as _graph
from .config import LoadedConfig, Located, Project, TaskDef, WorkspaceSettings, locate, read_located
from .fsutil import signature
from .graph import TaskGraph, build_graph
from .values import value

# A validated load is kept in <root>/.haz/workspace.pickle with the stat
# signature (size, mtime, inode, ctime) of every haz.toml it read, so a run
# whose haz.toml files did not change skips parsing and validating them.
# The root and member directories are still found afresh every time (a new
# or removed project changes the list), and a load that had any problem is
# never kept.  Like the stat cache (CACHE-006), a snapshot is not written
# while any haz.toml is younger than RACY_MARGIN_NS: a change within one
# timestamp tick could leave its signature as it was.  The snapshot starts
# with the root haz.toml's signature and what it parsed to, so that finding
# the root (which needs its [workspace] table) parses no TOML either.
SNAPSHOT = ".haz/workspace.pickle"
SNAPSHOT_FORMAT = 2
RACY_MARGIN_NS = 2_000_000_000


@value
class Workspace:
    """What :func:`load_workspace` returns; it never prints."""

    root: Path
    settings: WorkspaceSettings
    projects: Mapping[str, Project]
    graph: TaskGraph
    # Found while loading, not errors (a member glob that selects nothing);
    # the command line prints them, a library caller may.
    warnings: Tuple[str, ...] = ()

    def project_of(self, label: str) -> Project:
        return self.projects[self.graph.tasks[label].project]

    def task(self, label: str) -> TaskDef:
        return self.graph.tasks[label]


def load_workspace(path: Union[str, "os.PathLike[str]", None] = None) -> Workspace:
    """Find the workspace root at or above ``path`` (default: the current
    directory), read and validate every haz.toml, and build the task graph.

    Raises :class:`hazrun.errors.ConfigError` (every problem of the load) or
    :class:`hazrun.errors.NoWorkspaceError`.
    """
    start = Path(path) if path is not None else Path.cwd()
    if "\0" in str(start):  # no file system has such a path (ValueError below)
        raise _errors.NoWorkspaceError(repr(str(start)), " (a path cannot hold a NUL character)")
    snapshot = _Snapshot()
    located = locate(start, snapshot.root_data)
    key, settled = _snapshot_key(located)
    if key is not None:
        ws = snapshot.workspace(located.root, key)
        if ws is not None:
            return _with_warnings(ws, located.warnings)
    try:
        config: LoadedConfig = read_located(located)
        graph = build_graph(config)
    except _errors.ConfigError as e:
        e.warnings = located.warnings
        raise
    ws = Workspace(config.root, config.settings, config.projects, graph)
    if key is not None and settled:
        _write_snapshot(located.root, _header(located, key), key, ws)
    return _with_warnings(ws, located.warnings)


def _with_warnings(ws: Workspace, warnings: Tuple[str, ...]) -> Workspace:
    # Made by every load (member globs are matched every time), never kept
    # in the snapshot.
    return dataclasses.replace(ws, warnings=warnings) if warnings else ws


class _Snapshot:
    """A root's snapshot file, read once per load: first for what its root
    haz.toml parsed to (config.Known), then for the workspace."""

    def __init__(self) -> None:
        self._root: Optional[Path] = None
        self._rest: Optional[io.BytesIO] = None  # just after the header

    def root_data(self, candidate: Path) -> Optional[Dict[str, Any]]:
        """config.Known: ``candidate`` (a haz.toml) as parsed when the
        snapshot beside it was made, if the file has not changed since."""
        rest = _open_snapshot(candidate.parent)
        if rest is None:
            return None
        try:
            fmt, version, file, sig, data = _load(rest)
            st = os.stat(candidate)
        except Exception:
            return None
        if (fmt, version, file) != (SNAPSHOT_FORMAT, sys.version, str(candidate)) \
                or sig != signature(st) or not isinstance(data, dict):
            return None
        self._root, self._rest = candidate.parent, rest
        return data

    def workspace(self, root: Path, key: Tuple[Any, ...]) -> Optional[Workspace]:
        """The snapshot's workspace if it was made from ``key``."""
        rest = self._rest if self._root == root else None
        self._rest = None
        try:
            if rest is None:
                rest = _open_snapshot(root)
                if rest is None:
                    return None
                _load(rest)  # the header
            if _load(rest) != key:
                return None
            ws = _load(rest)
        except Exception:  # truncated, or from another hazrun: load afresh
            return None
        return ws if isinstance(ws, Workspace) else None


class _Unpickler(pickle.Unpickler):
    """An unpickler that makes only the snapshot's own kinds of object.

    The snapshot sits in the workspace, where a checkout or an archive can
    put any file: a plain ``pickle.load`` of a crafted one runs its code
    (``hazrun list`` on an untrusted pull request).  Only hazrun's value
    classes and paths can be named here, and making those runs nothing."""

    _MODULES = ("hazrun.config", "hazrun.graph", "hazrun.workspace")

    def find_class(self, module: str, name: str) -> Any:
        if module in self._MODULES and not name.startswith("_"):
            found = getattr(sys.modules.get(module), name, None)
            if isinstance(found, type):
                return found
        if module == "pathlib" and name in ("PosixPath", "PurePosixPath"):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"not in a workspace snapshot: {module}.{name}")


def _load(stream: io.BytesIO) -> Any:
    return _Unpickler(stream).load()


def _open_snapshot(root: Path) -> Optional[io.BytesIO]:
    try:
        with open(root / SNAPSHOT, "rb") as f:
            return io.BytesIO(f.read())
    except OSError:
        return None


def _header(located: Located, key: Tuple[Any, ...]) -> Tuple[Any, ...]:
    root_file, *sig = key[-1][0]  # config_files() lists the root's first
    return (SNAPSHOT_FORMAT, sys.version, root_file, tuple(sig), located.root_data)


def _snapshot_key(located: Located) -> Tuple[Optional[Tuple[Any, ...]], bool]:
    """What a snapshot must have been made from, and whether every haz.toml
    is old enough to trust its signature; (None, False) when the load is
    not to be kept (it has problems, or a file cannot be stat'ed)."""
    if located.problems or located.broken:
        return None, False
    files = []
    newest = 0
    try:
        known = located.stats
        for path in located.config_files():
            st = known.get(path) or os.stat(path)
            files.append((str(path), *signature(st)))
            newest = max(newest, st.st_mtime_ns)
        code = tuple((m.__name__, os.stat(m.__file__).st_mtime_ns)
                     for m in (_config, _errors, _globs, _graph, sys.modules[__name__]))
    except (OSError, TypeError):
        return None, False
    key = (SNAPSHOT_FORMAT, sys.version, code, str(located.root), tuple(files))
    return key, newest + RACY_MARGIN_NS < time.time_ns()


def _write_snapshot(root: Path, header: Tuple[Any, ...], key: Tuple[Any, ...],
                    ws: Workspace) -> None:
    """Atomically (temp file and rename); failures are silent, the next
    run loads afresh."""
    haz = root / ".haz"
    tmp = haz / f".workspace.{os.getpid()}.tmp"
    try:
        if not haz.is_dir():
            haz.mkdir()
            (haz / ".gitignore").write_text("*\n")
        with open(tmp, "wb") as f:
            pickle.dump(header, f, protocol=pickle.HIGHEST_PROTOCOL)
            pickle.dump(key, f, protocol=pickle.HIGHEST_PROTOCOL)
            pickle.dump(ws, f, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, root / SNAPSHOT)
    except (OSError, pickle.PicklingError):
        try:
            os.unlink(tmp)
        except OSError:
            pass
