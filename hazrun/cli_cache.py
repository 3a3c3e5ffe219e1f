"""``hazrun cache info|prune|clean`` (CACHE-007)."""
from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Callable

from .config import find_root
from .console import Console
from .errors import HazError, UsageError


class CacheCommandError(HazError):
    """The cache directory could not be read or changed."""

    exit_code = 1


def add_parser(command: Callable[..., argparse.ArgumentParser]) -> None:
    p = command("cache", "inspect, prune or clean the local cache",
                "Inspect or trim the local cache (.haz/cache under the workspace "
                "root, $HAZ_CACHE_DIR, or --cache-dir).")
    sub = p.add_subparsers(dest="cache_command", metavar="ACTION")
    sub.required = True
    p.commands = sub.choices  # type: ignore[attr-defined]  # see cli.run_cli

    def action(name: str, help: str, description: str) -> argparse.ArgumentParser:
        a = sub.add_parser(name, help=help, description=description)
        from .cli import _global_options  # accepted after the action too
        _global_options(a, suppress=True)
        return a

    action("info", "show the cache's path, entries and size",
           "Print the cache directory, its number of entries and its size.")
    pr = action("prune", "remove least recently used entries",
                "Remove entries older than --max-age, then the least recently "
                "used ones until the cache fits in --max-size (a hit refreshes an "
                "entry's use time). Sizes take K/M/G/T suffixes (powers of 1024), "
                "ages s/m/h/d; 0 removes everything.")
    pr.add_argument("--max-size", metavar="SIZE", help="e.g. 5G, 500M, 0")
    pr.add_argument("--max-age", metavar="AGE", help="e.g. 30d, 12h, 0")
    action("clean", "remove every entry", "Remove every entry and blob of the cache.")


def cmd_cache(args: argparse.Namespace, console: Console) -> int:
    # Imported here: building the parser for 'hazrun run' must not load them.
    from .cache import clean, format_size, info, parse_age, parse_size, prune
    path = _cache_dir(args)
    try:
        if args.cache_command == "info":
            i = info(path)
            console.print(f"path: {i.path}")
            console.print(f"entries: {i.entries}")
            console.print(f"size: {format_size(i.bytes)} ({i.bytes} bytes)")
            return 0
        if args.cache_command == "prune":
            if args.max_size is None and args.max_age is None:
                raise UsageError("cache prune needs --max-size SIZE and/or --max-age "
                                 "AGE (e.g. --max-size 5G --max-age 30d)")
            max_size = None if args.max_size is None else parse_size(args.max_size)
            max_age = None if args.max_age is None else parse_age(args.max_age)
            r = prune(path, max_size=max_size, max_age=max_age)
            console.print(f"pruned {_entries(r.removed_entries)} "
                          f"({format_size(r.removed_bytes)}); {r.entries} left "
                          f"({format_size(r.bytes)}) in {path}")
            return 0
        if args.cache_command == "clean":
            r = clean(path)
            console.print(f"removed {_entries(r.removed_entries)} "
                          f"({format_size(r.removed_bytes)}) from {path}")
            return 0
    except OSError as e:
        raise CacheCommandError(f"cache {args.cache_command}: {e.strerror or e}: "
                                f"{e.filename or path}") from None
    raise AssertionError(f"internal error: cache action {args.cache_command}")


def _cache_dir(args: argparse.Namespace) -> Path:
    """--cache-dir (relative to -C DIR, as every path on the command line),
    else $HAZ_CACHE_DIR or .haz/cache under the workspace root."""
    if args.cache_dir:  # already taken from -C DIR by the command line
        return Path(os.path.abspath(args.cache_dir))
    if os.environ.get("HAZ_CACHE_DIR") and os.path.isabs(os.environ["HAZ_CACHE_DIR"]):
        return Path(os.environ["HAZ_CACHE_DIR"])
    from .cache import resolve_cache_dir
    root, _data = find_root(Path(args.directory) if args.directory else Path.cwd())
    return resolve_cache_dir(root)


def _entries(n: int) -> str:
    return f"{n} entry" if n == 1 else f"{n} entries"
