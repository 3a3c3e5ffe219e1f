"""The loaded workspace: settings, projects and the validated task graph."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional, Union

from .config import LoadedConfig, Project, TaskDef, WorkspaceSettings, read_config
from .graph import TaskGraph, build_graph


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
    config: LoadedConfig = read_config(start)
    graph = build_graph(config)
    return Workspace(config.root, config.settings, config.projects, graph)
