"""The command line: argparse, signal handlers, stdio and exit status.

This is the boundary (CLI-004): the only module that installs signal
handlers, writes to the process's stdio of its own accord, or exits.
"""
from __future__ import annotations

import argparse
import gc
import os
import signal
import sys
from typing import Optional, Sequence

from . import __version__

PROG = "hazrun"

EPILOG = """\
examples:
  hazrun run build              build every project that has a 'build' task
  hazrun run app:test -j4       one task and everything it depends on
  hazrun list                   the projects and tasks of this workspace
  hazrun graph build --dot | dot -Tsvg > graph.svg

exit status: 0 success, 1 a task failed, 2 usage or configuration error,
3 runtime invariant violated, 130/143/129 interrupted by SIGINT/SIGTERM/SIGHUP.
"""


def _global_options(parser: argparse.ArgumentParser, suppress: bool) -> None:
    """Options accepted before and after the subcommand (CLI section 8)."""
    default = argparse.SUPPRESS if suppress else None
    parser.add_argument("-C", dest="directory", metavar="DIR", default=default,
                        help="run as if started in DIR (the workspace is found "
                             "from there upward)")
    parser.add_argument("--cache-dir", metavar="DIR", default=default,
                        help="local cache directory (default: .haz/cache under "
                             "the root, or $HAZ_CACHE_DIR)")
    parser.add_argument("--color", choices=("auto", "always", "never"),
                        default=argparse.SUPPRESS if suppress else "auto",
                        help="colour output: auto (a terminal, honouring NO_COLOR "
                             "and FORCE_COLOR), always, never")
    parser.add_argument("-v", "--verbose", action="count",
                        default=argparse.SUPPRESS if suppress else 0,
                        help="say more: with run, why each task runs instead of "
                             "hitting the cache (what changed since its last run)")


class _Parser(argparse.ArgumentParser):
    """argparse with CLI-000's prefix: a usage error reads ``hazrun: error:
    run: ...`` like every other error, after the command's usage line."""

    def error(self, message: str):  # type: ignore[override]
        self.print_usage(sys.stderr)
        command = self.prog[len(PROG):].strip()  # 'run', 'cache prune' ...
        self.exit(2, f"{PROG}: error: {command + ': ' if command else ''}{message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run the tasks of a multi-project workspace (haz.toml files) "
                    "in dependency order and in parallel.",
        epilog=EPILOG)
    parser.add_argument("--version", action="version",
                        version=f"{PROG} {__version__}")
    _global_options(parser, suppress=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(name: str, help: str, description: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=description,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        _global_options(p, suppress=True)
        return p

    from . import cli_run  # registers 'run'
    cli_run.add_parser(command)
    from . import cli_cache  # registers 'cache'
    cli_cache.add_parser(command)

    command("list", "list projects and tasks",
            "List the workspace's projects and its tasks in canonical order, "
            "with their descriptions.")

    p = command("graph", "print the task graph",
                "Print the task graph in canonical order: each task with the "
                "tasks it waits for. Hard edges (deps) must succeed first; soft "
                "edges (after) only order. With targets, only their closure.")
    p.add_argument("targets", nargs="*", metavar="TARGET",
                   help="'task' (in every project) or 'project:task'")
    p.add_argument("--dot", action="store_true",
                   help="Graphviz dot output (soft edges dashed)")
    parser.commands = sub.choices  # type: ignore[attr-defined]
    return parser


def _relative_to_directory(args: argparse.Namespace) -> None:
    """-C DIR means "as if started in DIR" (as make -C and git -C do), so
    relative paths given on the command line are taken from DIR too."""
    if not args.directory:
        return
    for name in ("cache_dir", "summary_json"):
        value = getattr(args, name, None)
        if value and not os.path.isabs(value):
            setattr(args, name, os.path.join(args.directory, value))


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Entry point of the ``hazrun`` console script; exits the process."""
    # Start-up allocates many objects and frees few: the cyclic GC would walk
    # them all several times over (4 ms of a no-change run of 300 tasks).
    # A command turns it back on once it has loaded what it needs.
    gc.disable()
    # EXEC-021: SIGTERM exits 143 from the first instant, not only once a
    # run has installed its handlers (Python's start and hazrun's loading
    # take 100 ms, in which make's Ctrl-C saw "Terminated" instead).
    signal.signal(signal.SIGTERM, _terminated)
    # A closed terminal (SIGHUP) stops hazrun as SIGTERM does (EXEC-012/021:
    # 128 + 1); started under nohup, it is ignored and stays so.
    if signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN:
        signal.signal(signal.SIGHUP, _terminated)
    try:
        status = run_cli(argv)
    except (KeyboardInterrupt, Terminated) as e:  # before run_cli's own handling
        status = 130 if isinstance(e, KeyboardInterrupt) else 128 + e.signum
        sys.stderr.write(f"{PROG}: error: interrupted\n")
    _exit(status)


class Terminated(BaseException):
    """SIGTERM or SIGHUP arrived before a run took it over (a BaseException,
    as KeyboardInterrupt is, so that no ``except Exception`` swallows it)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _terminated(signum, frame) -> None:
    raise Terminated(signum)


def _exit(status: Optional[int]) -> None:
    """Exit with ``status`` without tearing the interpreter down.

    Freeing every object of a run one by one, then every module, took 10 to
    15 ms of a 130 ms run where nothing changed.  Nothing depends on that
    teardown: by now the run has closed its cache, its thread pool and its
    children, and spooled temporary files are unlinked on creation.  What
    an exit must still do is done here: the atexit hooks (colorama's), the
    other threads' ends, and the flush of stdio.
    """
    import atexit
    import threading
    for thread in threading.enumerate():
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:  # None: started with it closed (>&-)
                stream.flush()
        except (OSError, ValueError):
            pass  # a closed pipe: what was not read is lost either way
    os._exit(status or 0)  # None is success, as for sys.exit


def run_cli(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    from .errors import HazError
    args, extras = parser.parse_known_args(argv)
    if extras and args.command in ("run", "graph"):
        # argparse takes a command's targets in one stretch: those after an
        # option ("run build --force test") come back as extras.  They are
        # targets all the same, as make and turbo take them.
        args.targets += [a for a in extras if not a.startswith("-")]
        extras = [a for a in extras if a.startswith("-")]
    if extras:
        # Said by the command's parser: "hazrun: error: run: unrecognized
        # arguments" (or "cache prune: ...") with that command's usage line,
        # as its other errors are (CLI-000).
        command: argparse.ArgumentParser = parser
        for name in (args.command, getattr(args, "cache_command", None)):
            command = getattr(command, "commands", {}).get(name, command)
        command.error(f"unrecognized arguments: {' '.join(extras)}")
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    _relative_to_directory(args)
    console = None
    try:
        from .console import Console
        console = Console.for_streams(sys.stdout, sys.stderr, args.color)
        if args.command != "run":
            gc.enable()  # only `run` turns it on itself, after loading
        if args.command == "list":
            from .cli_info import cmd_list
            return cmd_list(args, console)
        if args.command == "graph":
            from .cli_info import cmd_graph
            return cmd_graph(args, console)
        if args.command == "run":
            from .cli_run import cmd_run
            return cmd_run(args, console)
        if args.command == "cache":
            from .cli_cache import cmd_cache
            return cmd_cache(args, console)
    except HazError as e:
        for warning in getattr(e, "warnings", ()):
            console.warning(warning)
        console.error(str(e))
        if args.command == "run" and args.summary_json and not args.dry_run:
            from .cli_run import write_empty_summary
            write_empty_summary(args.summary_json, console, exit_code=e.exit_code)
        return e.exit_code
    except (KeyboardInterrupt, Terminated) as e:
        # Before the run took the signals over (loading): no task ran, but
        # --summary-json is promised on interruption too (CLI-003).
        if console is None:
            from .console import Console
            console = Console.for_streams(sys.stdout, sys.stderr, "never")
        signum = signal.SIGINT if isinstance(e, KeyboardInterrupt) else e.signum
        if args.command == "run" and args.summary_json:
            from .cli_run import write_empty_summary
            write_empty_summary(args.summary_json, console, signum)
        console.error("interrupted")
        return 128 + signum
    raise AssertionError(f"internal error: unhandled command {args.command}")
