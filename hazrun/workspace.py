"""The loaded workspace: settings, projects and the validated task graph."""
from __future__ import annotations

import os
import pickle
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Tuple, Union

from . import config as _config
from . import errors as _errors
from . import globs as _globs
from . import graph as _graph
from .config import LoadedConfig, Located, Project, TaskDef, WorkspaceSettings, locate, read_located
from .graph import TaskGraph, build_graph

# A validated load is kept in <root>/.haz/workspace.pickle with the stat
# signature (size, mtime, inode, ctime) of every haz.toml it read, so a run
# whose haz.toml files did not change skips parsing and validating them.
# The root and member directories are still found afresh every time (a new
# or removed project changes the list), and a load that had any problem is
# never kept.  Like the stat cache (CACHE-006), a snapshot is not written
# while any haz.toml is younger than RACY_MARGIN_NS: a change within one
# timestamp tick could leave its signature as it was.
SNAPSHOT = ".haz/workspace.pickle"
SNAPSHOT_FORMAT = 1
RACY_MARGIN_NS = 2_000_000_000


@dataclass(frozen=True)
class Workspace:
    """What :func:`load_workspace` returns; it never prints."""

    root: Path
    settings: WorkspaceSettings
    projects: Mapping[str, Project]
    graph: TaskGraph

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
    located = locate(start)
    key, settled = _snapshot_key(located)
    if key is not None:
        ws = _read_snapshot(located.root, key)
        if ws is not None:
            return ws
    config: LoadedConfig = read_located(located)
    graph = build_graph(config)
    ws = Workspace(config.root, config.settings, config.projects, graph)
    if key is not None and settled:
        _write_snapshot(located.root, key, ws)
    return ws


def _snapshot_key(located: Located) -> Tuple[Optional[Tuple[Any, ...]], bool]:
    """What a snapshot must have been made from, and whether every haz.toml
    is old enough to trust its signature; (None, False) when the load is
    not to be kept (it has problems, or a file cannot be stat'ed)."""
    if located.problems or located.broken:
        return None, False
    files = []
    newest = 0
    try:
        for path in located.config_files():
            st = os.stat(path)
            files.append((str(path), st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns))
            newest = max(newest, st.st_mtime_ns)
        code = tuple((m.__name__, os.stat(m.__file__).st_mtime_ns)
                     for m in (_config, _errors, _globs, _graph, sys.modules[__name__]))
    except (OSError, TypeError):
        return None, False
    key = (SNAPSHOT_FORMAT, sys.version, code, str(located.root), tuple(files))
    return key, newest + RACY_MARGIN_NS < time.time_ns()


def _read_snapshot(root: Path, key: Tuple[Any, ...]) -> Optional[Workspace]:
    try:
        with open(root / SNAPSHOT, "rb") as f:
            if pickle.load(f) != key:
                return None
            ws = pickle.load(f)
    except Exception:  # absent, truncated, or from another hazrun: load afresh
        return None
    return ws if isinstance(ws, Workspace) else None


def _write_snapshot(root: Path, key: Tuple[Any, ...], ws: Workspace) -> None:
    """Atomically (temp file and rename); failures are silent, the next
    run loads afresh."""
    haz = root / ".haz"
    tmp = haz / f".workspace.{os.getpid()}.tmp"
    try:
        if not haz.is_dir():
            haz.mkdir()
            (haz / ".gitignore").write_text("*\n")
        with open(tmp, "wb") as f:
            pickle.dump(key, f, protocol=pickle.HIGHEST_PROTOCOL)
            pickle.dump(ws, f, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, root / SNAPSHOT)
    except (OSError, pickle.PicklingError):
        try:
            os.unlink(tmp)
        except OSError:
            pass
