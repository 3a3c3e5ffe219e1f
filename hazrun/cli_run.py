"""``hazrun run``: options, signal handlers, and the exit status."""
from __future__ import annotations

import argparse
import gc
import math
import os
import signal
from typing import Callable, Optional

from .console import Console
from .errors import UsageError

OUTPUT_MODES = ("live", "buffered", "errors-only", "none")


def _tag_cap(text: str):
    tag, sep, cap = text.partition("=")
    if not sep or not tag or not _whole(cap) or int(cap) < 1:
        raise argparse.ArgumentTypeError(
            f"'{text}' is not TAG=N with N a whole number of at least 1")
    return tag, int(cap)


def _whole(text: str) -> bool:
    """ASCII digits only: str.isdigit() also takes '²', which int() refuses."""
    return text.isascii() and text.isdigit()


def _positive_int(text: str) -> int:
    if not _whole(text) or int(text) < 1:
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number of at least 1")
    return int(text)


def _seconds(text: str) -> float:
    """A finite, non-negative number of seconds, as haz.toml's (CFG-003)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number of seconds") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {text}")
    if not value < math.inf:  # also refuses nan
        raise argparse.ArgumentTypeError(f"'{text}' is not a finite number of seconds")
    return value


def add_parser(command: Callable[..., argparse.ArgumentParser]) -> None:
    p = command("run", "run tasks and what they depend on",
                "Run the targets and every task they depend on (deps), in "
                "dependency order and in parallel. Tasks whose inputs did not "
                "change are restored from the cache instead of run.\n\n"
                "exit status: 0 every task succeeded or was cached; 1 a task "
                "failed; 2 usage or configuration error; 3 a runtime invariant "
                "(output overlap, runtime cycle) was violated; 130/143/129 "
                "interrupted by SIGINT/SIGTERM/SIGHUP.")
    # "*", not "+": with none, argparse's "the following arguments are
    # required: TARGET" would not say what a target is.
    p.add_argument("targets", nargs="*", metavar="TARGET",
                   help="'task' (that task in every project) or 'project:task'")
    p.add_argument("-j", "--jobs", type=_positive_int, metavar="N",
                   help="run at most N tasks at once (default: [workspace] "
                        "concurrency, else the CPUs available)")
    p.add_argument("--output", choices=OUTPUT_MODES, default="live",
                   help="live: lines as they come, prefixed [project:task]; "
                        "buffered: each task's output in one block when it ends; "
                        "errors-only: only the blocks of failed tasks; none")
    p.add_argument("--no-prefix", action="store_true",
                   help="do not prefix task output lines with [project:task]; "
                        "a line longer than 64 KiB then passes through whole "
                        "instead of in prefixed 64 KiB pieces")
    p.add_argument("--fail-fast", action="store_true",
                   help="at the first failure, stop the run: running tasks are "
                        "stopped, the rest cancelled")
    p.add_argument("--force", action="store_true",
                   help="run every task even if the cache has it (results are stored)")
    p.add_argument("--no-cache", action="store_true",
                   help="neither look up nor store results")
    p.add_argument("--dry-run", action="store_true",
                   help="run nothing: print each task with its cache key and "
                        "hit/miss (with -v, why it misses)")
    p.add_argument("--summary-json", metavar="FILE",
                   help="write the run's summary as JSON to FILE (also when it fails)")
    p.add_argument("--tag-cap", type=_tag_cap, action="append", default=[],
                   metavar="TAG=N", help="at most N tasks tagged TAG at once "
                                         "(overrides [workspace.tags]; repeatable)")
    js = p.add_mutually_exclusive_group()
    js.add_argument("--jobserver", dest="jobserver", action="store_true", default=None,
                    help="serve a make jobserver of -j slots to the tasks, so a "
                         "'make' inside a task shares hazrun's slots (under make, "
                         "hazrun uses make's jobserver without this)")
    js.add_argument("--no-jobserver", dest="jobserver", action="store_false",
                    help="ignore make's jobserver in MAKEFLAGS and serve none")
    p.add_argument("--grace", type=_seconds, metavar="S",
                   help="seconds between SIGTERM and SIGKILL when stopping a task "
                        "(default: the task's grace, [workspace] grace, 10)")
    rc = p.add_mutually_exclusive_group()
    rc.add_argument("--remote-cache", metavar="URL",
                    help="share results through the cache server at URL (overrides "
                         "$HAZ_REMOTE_CACHE_URL and [workspace.remote_cache] url; "
                         "the token comes from $HAZ_REMOTE_CACHE_TOKEN)")
    rc.add_argument("--no-remote-cache", action="store_true",
                    help="use no remote cache in this run")
    p.add_argument("--remote-cache-read-only", action="store_true",
                   help="download from the remote cache but upload nothing (for "
                        "builds of untrusted changes)")


def _observers(args: argparse.Namespace, console: Console, ctrl_c: bool):
    from .output import (BufferedOutput, LiveOutput, Observers, Prefixer,
                         StatusLines, Summary)
    prefixer = Prefixer(console, enabled=not args.no_prefix)
    observers = []
    if args.output == "live":
        observers.append(LiveOutput(prefixer))
    elif args.output in ("buffered", "errors-only"):
        observers.append(BufferedOutput(prefixer, errors_only=args.output == "errors-only"))
    observers += [StatusLines(console, ctrl_c), Summary(console)]
    return Observers(observers)


def cmd_run(args: argparse.Namespace, console: Console) -> int:
    if not args.targets:
        raise UsageError("name at least one target: 'build' (the build task of every "
                         "project that has one) or 'project:task'; 'hazrun list' shows "
                         "the tasks")
    if args.force and args.no_cache:
        raise UsageError("--force and --no-cache contradict each other: --force "
                         "stores results, --no-cache does not; choose one")
    if args.dry_run and args.summary_json:
        # CLI-003's states are what happened; a dry run makes nothing happen.
        raise UsageError("--summary-json reports what a run did, and --dry-run runs "
                         "nothing; drop one of them")
    if args.summary_json:
        from .output import summary_json_problem
        problem = summary_json_problem(args.summary_json)
        if problem:
            raise UsageError(f"--summary-json {args.summary_json}: {problem}")
    listing = None
    if not (args.no_cache or args.dry_run):
        # The keys need the workspace's files: git lists them while the
        # workspace loads (used if the directory turns out to be the root).
        from .files import Listing
        listing = Listing(args.directory or ".")
    try:
        return _run(args, console, listing)
    finally:
        if listing is not None:
            listing.close()


def write_empty_summary(path: str, console: Console, signum: Optional[int] = None,
                        exit_code: Optional[int] = None) -> None:
    """CLI-003 for a run that ended before it started a task: interrupted
    (``signum``), or refused (``exit_code`` 2: a configuration error, an
    unknown target), so that no summary of an earlier run is left to be
    read as this one's."""
    from .outcome import RunOutcome
    from .output import summary_json_problem, write_summary_json
    if summary_json_problem(path):
        return  # said already: it is why the run was refused
    if exit_code is not None and not os.path.isdir(os.path.dirname(os.path.abspath(path))):
        # A refused run makes no directory: it may be a mistyped -C's.
        return
    extra = None if exit_code is None else {"exit_code": exit_code}
    try:
        write_summary_json(path, RunOutcome([], {}, cancelled=signum is not None), signum,
                           extra)
    except OSError as e:
        console.error(f"cannot write the summary to {path}: {e.strerror}")


def _run(args: argparse.Namespace, console: Console, listing) -> int:
    from .exit_code import exit_code_for
    from .output import write_summary_json
    from .scheduler import CancelToken, RunOptions, run_graph
    from .workspace import load_workspace

    ws = load_workspace(args.directory)
    for warning in ws.warnings:
        console.warning(warning)
    # main() held the cyclic GC off through the imports and the load; what
    # they made lives as long as the run, so no collection need walk it.
    gc.freeze()
    gc.enable()
    options = RunOptions(jobs=args.jobs, tag_caps=dict(args.tag_cap),
                         fail_fast=args.fail_fast, force=args.force,
                         no_cache=args.no_cache, grace=args.grace,
                         cache_dir=args.cache_dir, remote=_remote(args, ws),
                         listing=listing, cut_lines=not args.no_prefix,
                         explain=bool(args.verbose))
    if args.dry_run:
        from .cli_dryrun import dry_run
        return dry_run(ws, args, options, console)
    ws.graph.select(args.targets, ws.projects)  # unknown targets: exit 2 before anything
    token = CancelToken()
    client, server = _jobserver(args, ws, options, console)

    def on_signal(signum, frame):
        token.cancel(signum)
        if console.stalled():
            # The loop is stuck writing to a stdout nobody reads: end that
            # write, or the run never gets to stop (EXEC-012).
            from .console import WriteInterrupted
            raise WriteInterrupted()
    # A SIGINT hazrun was started with ignored stays so: a shell without job
    # control starts background jobs (``hazrun run build &``) that way, for
    # Ctrl-C to reach only the foreground, as make obeys.  SIGTERM is always
    # caught: ignored, it would be ignored by the tasks too (exec keeps an
    # ignored signal), and they could not be stopped with it (EXEC-014).
    # SIGHUP (a closed terminal) stops the run as SIGTERM does (EXEC-012,
    # exit 129 by EXEC-021's 128 + N), unless ignored (nohup), as make does.
    previous = {s: signal.signal(s, on_signal)
                for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
                if s == signal.SIGTERM or signal.getsignal(s) is not signal.SIG_IGN}
    if _holds_secrets(os.environ):
        from .process import hide_environment
        hide_environment()  # REMOTE-001: from tasks reading /proc/PPID/environ
    try:
        options.subreaper = True  # EXEC-014, from the first spawn on
        options.parent_death_signal = True
        options.short_slice = True
        outcome = run_graph(ws, args.targets, _observers(args, console, signal.SIGINT in previous),
                            options, token)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if client is not None:
            client.close()
        if server is not None:
            server.close()
    if args.summary_json:
        try:
            write_summary_json(args.summary_json, outcome, token.signal)
        except OSError as e:
            console.error(f"cannot write the summary to {args.summary_json}: {e.strerror}")
    return exit_code_for(outcome, token.signal)


def _holds_secrets(environ) -> bool:
    """Whether the environment holds what tasks must not see (REMOTE-001):
    the token, the signing key, a URL with a password."""
    from .scheduler import REMOTE_URL_VARIABLE, SECRET_VARIABLES
    url = environ.get(REMOTE_URL_VARIABLE, "")
    return any(environ.get(name) for name in SECRET_VARIABLES) or "@" in url


def _remote(args: argparse.Namespace, ws):
    """REMOTE-001: command line, then environment, then haz.toml."""
    import os
    from .cache.remote import resolve_remote
    return resolve_remote(ws.settings.remote_cache, os.environ, url=args.remote_cache,
                          read_only=args.remote_cache_read_only,
                          disabled=args.no_remote_cache)


def _jobserver(args, ws, options, console: Console):
    """JOBS-001/002: use make's jobserver, serve one (--jobserver), or none.

    Returns (client, server); either may be None.
    """
    import os
    makeflags = os.environ.get("MAKEFLAGS", "")

    def without_makes():
        # Tasks get no fds of make's jobserver: nor its name in MAKEFLAGS.
        if "--jobserver-" in makeflags:
            from .jobserver import without_jobserver
            options.environ = dict(os.environ, MAKEFLAGS=without_jobserver(makeflags))
        return None, None

    if args.jobserver is False:
        return without_makes()
    if not args.jobserver and "--jobserver-" not in makeflags:
        if args.jobs is None and " -j1" in f" {makeflags}":
            from .jobserver import serial_make
            if serial_make(makeflags):
                # make -j1 asked for one job at a time, and made no
                # jobserver to say so: as make -j1's own recipes, one task.
                options.jobs = 1
        return None, None  # no make above and none asked for: nothing to import
    from .jobserver import JobserverClient, JobserverError, JobserverServer, parse_makeflags
    from .scheduler import available_cpus

    try:
        auth = parse_makeflags(os.environ.get("MAKEFLAGS", ""))
    except JobserverError as e:
        console.warning(f"{e}; running without it")
        auth = None
    if auth is not None:
        try:
            client = JobserverClient(auth)
        except JobserverError as e:
            console.warning(str(e))
            if not args.jobserver:
                return without_makes()
            # --jobserver: nested make gets hazrun's slots instead of none.
        else:
            options.jobserver = client
            options.pass_fds = auth.pass_fds
            return client, None
    if not args.jobserver:
        return without_makes()
    jobs = options.jobs or ws.settings.concurrency or available_cpus()
    server = JobserverServer(jobs)
    options.environ = dict(os.environ, MAKEFLAGS=server.makeflags(os.environ.get("MAKEFLAGS", "")))
    options.pass_fds = server.auth().pass_fds
    client = JobserverClient(server.auth())
    options.jobserver = client
    return client, server
