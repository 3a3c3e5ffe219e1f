"""hazrun: run a workspace's tasks in dependency order, in parallel, cached.

The library surface (CLI-004); the command line is :mod:`hazrun.cli`.

    ws = hazrun.load_workspace(".")
    outcome = hazrun.run_graph(ws, ["build"], observer, hazrun.RunOptions())
    status = hazrun.exit_code_for(outcome, signal)
"""
__version__ = "0.1.0"

# Running pulls in the event loop, processes and the cache; `hazrun list`
# should not pay for them, so these names load on first use (PEP 562).
# The workspace and the errors too: the command line takes over SIGINT and
# SIGTERM (EXEC-021) before it loads anything.
_LAZY = {
    "ConfigError": "errors", "HazError": "errors", "NoWorkspaceError": "errors",
    "UsageError": "errors",
    "Workspace": "workspace", "load_workspace": "workspace",
    "run_graph": "scheduler", "RunOptions": "scheduler", "CancelToken": "scheduler",
    "RunObserver": "output", "exit_code_for": "exit_code",
    "RunOutcome": "outcome", "TaskResult": "outcome", "TaskState": "outcome",
    "Cause": "outcome", "Violation": "outcome",
}


def __getattr__(name):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'hazrun' has no attribute '{name}'")
    import importlib
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


__all__ = [
    "__version__", *_LAZY,
]
