"""``hazrun run``: options, signal handlers, and the exit status."""
from __future__ import annotations

import argparse
from typing import Callable

from .console import Console
from .errors import UsageError


def add_parser(command: Callable[..., argparse.ArgumentParser]) -> None:
    p = command("run", "run tasks and what they depend on",
                "Run the targets and every task they depend on (deps), in "
                "dependency order and in parallel. Tasks whose inputs did not "
                "change are restored from the cache instead of run.")
    p.add_argument("targets", nargs="+", metavar="TARGET",
                   help="'task' (that task in every project) or 'project:task'")


def cmd_run(args: argparse.Namespace, console: Console) -> int:
    raise UsageError("'run' is not implemented yet")
