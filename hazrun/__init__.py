"""hazrun: run a workspace's tasks in dependency order, in parallel, cached.

The library surface (CLI-004); the command line is :mod:`hazrun.cli`.
"""
__version__ = "0.1.0"

from .errors import ConfigError, HazError, NoWorkspaceError, UsageError
from .workspace import Workspace, load_workspace

__all__ = [
    "__version__", "ConfigError", "HazError", "NoWorkspaceError", "UsageError",
    "Workspace", "load_workspace",
]
