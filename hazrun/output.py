"""Observers of a run: live and buffered task output, status lines, summary.

The scheduler reports events to a :class:`RunObserver`; these
implementations format them and hand whole lines to one :class:`Console`,
the single owner of stdout and stderr (EXEC-016/017, CLI-001).  Pool
threads never print.
"""
from __future__ import annotations

import json
import os
import signal
import zlib
from typing import IO, Any, Dict, Iterable, Iterator, List, Optional, Sequence, Set, Tuple

from .console import Console
from .exit_code import exit_code_for, signal_name
from .outcome import Cause, RunOutcome, StopReason, TaskResult, TaskState
from .process import Stream

MAX_LINE = 64 * 1024          # EXEC-016: longer lines go out in pieces
SPOOL_MEMORY = 1024 * 1024    # EXEC-017: buffered output spills to disk past this


class RunObserver:
    """The port through which a run reports what happens (no-op defaults)."""

    def run_started(self, order: Sequence[str]) -> None:
        """The run's tasks in canonical order, before anything is admitted."""

    def task_started(self, label: str) -> None:
        """A task's process was spawned (a cache miss)."""

    def task_output(self, label: str, stream: Stream, data: bytes) -> None:
        """Complete lines (each ends in ``\\n``) a task wrote, or replayed
        from the cache for a hit.  A line longer than 64 KiB comes in
        pieces, each ended with a newline; with ``RunOptions.cut_lines``
        False, without: then ``data`` may end mid-line."""

    def task_missed(self, label: str, reasons: Sequence[str]) -> None:
        """A task's cache lookup missed, and it runs; ``reasons``: what
        changed since its last run (CLI-002, only with ``RunOptions.explain``)."""

    def task_finished(self, result: TaskResult) -> None:
        """A task that was admitted reached its final state."""

    def task_skipped(self, result: TaskResult) -> None:
        """A task that never started was skipped or cancelled (reported at
        cascade time, EXEC-011)."""

    def warning(self, message: str) -> None:
        """Something the user should know that does not fail the run."""

    def error(self, message: str) -> None:
        """Something that fails the run without being a task's failure: a
        runtime invariant broken (EXEC-019/020, exit status 3).  By default
        passed to :meth:`warning`, which observers written before this
        event existed define."""
        self.warning(message)

    def run_stopping(self, running: Sequence[str], grace_s: float,
                     because: Optional[StopReason], signum: Optional[int]) -> None:
        """The run is stopping its ``running`` tasks (EXEC-012/014/019):
        ``because`` a StopReason, or None for a cancellation (by the signal
        ``signum``; None: ``cancel()``).  They were sent SIGTERM, and get SIGKILL within
        ``grace_s`` seconds, or at once on the next cancellation."""

    def run_finished(self, outcome: RunOutcome) -> None:
        """Every task is final and every process is gone."""


class Observers(RunObserver):
    """Fans each event out to several observers, in order.  Its methods are
    made below from RunObserver's, so no event can be left out of it."""

    def __init__(self, observers: Iterable[RunObserver]):
        self.observers = list(observers)


def _fan_out(event: str):
    def method(self: Observers, *args: Any, **kwargs: Any) -> None:
        for o in self.observers:
            getattr(o, event)(*args, **kwargs)
    method.__name__ = event
    method.__qualname__ = f"Observers.{event}"
    return method


for _event in [name for name in vars(RunObserver) if not name.startswith("_")]:
    setattr(Observers, _event, _fan_out(_event))


class LineSplitter:
    """Cuts a byte stream into complete lines (EXEC-016).

    ``feed`` returns the complete lines so far; a line longer than 64 KiB is
    cut into 64 KiB pieces, each then ended with a newline so every piece
    gets its own prefix.  With ``cut=False`` (no prefix to give them) the
    pieces go out as they are, without that newline, so the bytes pass
    through unchanged: a 100 KB line of JSON stays one line.  Bytes are
    never decoded.
    """

    __slots__ = ("partial", "cut")

    def __init__(self, cut: bool = True) -> None:
        self.partial = b""
        self.cut = cut

    def feed(self, data: bytes) -> bytes:
        buf = self.partial + data if self.partial else data
        end = buf.rfind(b"\n") + 1
        complete, self.partial = buf[:end], buf[end:]
        pieces = []
        # Cut only past 64 KiB, as _cap_lines does: a line of exactly 64 KiB
        # whose newline comes in a later read is still one line, so a run
        # and its replay from the cache (read in other sizes) print the same.
        # What stays is never empty, so flush() still ends the line.
        newline = b"\n" if self.cut else b""
        while len(self.partial) > MAX_LINE:
            pieces.append(self.partial[:MAX_LINE] + newline)
            self.partial = self.partial[MAX_LINE:]
        if self.cut and len(complete) > MAX_LINE:
            complete = _cap_lines(complete)
        return complete + b"".join(pieces) if pieces else complete

    def flush(self) -> bytes:
        """The unterminated last line, given its newline (EXEC-016)."""
        rest, self.partial = self.partial, b""
        return rest + b"\n" if rest else b""


def _cap_lines(data: bytes) -> bytes:
    lines = data.split(b"\n")
    if max(map(len, lines)) <= MAX_LINE:
        return data
    out = []
    for line in lines[:-1]:
        while len(line) > MAX_LINE:
            out.append(line[:MAX_LINE])
            line = line[MAX_LINE:]
        out.append(line)
    return b"\n".join(out) + b"\n"


_COLOURS = ("\x1b[36m", "\x1b[33m", "\x1b[32m", "\x1b[35m", "\x1b[34m",
            "\x1b[96m", "\x1b[93m", "\x1b[92m", "\x1b[95m", "\x1b[94m")
_RESET = "\x1b[0m"


def _colour_for(project: str) -> str:
    # crc32 is stable across runs (hash() is salted), so a project keeps
    # its colour from one run to the next.
    return _COLOURS[zlib.crc32(project.encode()) % len(_COLOURS)]


class Prefixer:
    """Builds ``[project:task] `` prefixes, coloured by project if enabled."""

    def __init__(self, console: Console, enabled: bool = True):
        self.console = console
        self.enabled = enabled
        self._cache: Dict[Tuple[str, bool], bytes] = {}

    def prefix(self, label: str, colour: bool) -> bytes:
        if not self.enabled:
            return b""
        key = (label, colour)
        found = self._cache.get(key)
        if found is None:
            text = f"[{label}]"
            if colour:
                text = _colour_for(label.split(":", 1)[0]) + text + _RESET
            found = self._cache[key] = (text + " ").encode()
        return found

    def format(self, label: str, stream: Stream, data: bytes) -> bytes:
        """Prefix every line of ``data``; a piece of a line it ends with
        (a splitter that does not cut, RunObserver.task_output) is ended,
        since what follows it gets a prefix of its own."""
        colour = self.console.color_out if stream is Stream.STDOUT else self.console.color_err
        prefix = self.prefix(label, colour)
        if not prefix:
            return data
        lines = data.split(b"\n")
        if not lines[-1]:
            lines.pop()  # data ends with a newline
        return prefix + (b"\n" + prefix).join(lines) + b"\n"

    def target(self, stream: Stream) -> IO[bytes]:
        return self.console.out if stream is Stream.STDOUT else self.console.err


def replaying(label: str) -> str:
    """The line said before a cache hit's replayed output (EXEC-017): it
    reads as the original run's, and a user must tell it from a new one."""
    return f"hazrun: {label} cached: replaying its output"


class LiveOutput(RunObserver):
    """EXEC-016: each line as it comes, prefixed, in one locked write."""

    def __init__(self, prefixer: Prefixer):
        self.prefixer = prefixer
        self.console = prefixer.console
        self._spoken: Set[str] = set()  # tasks started, or said to be replayed

    def task_started(self, label):
        self._spoken.add(label)

    def task_output(self, label, stream, data):
        if label not in self._spoken:  # output with no process: a hit's replay
            self._spoken.add(label)
            self.console.message(replaying(label))
        # Without a prefix, a long line's pieces may end mid-line; the
        # console keeps other writers out of it (EXEC-016).
        owner = None if self.prefixer.enabled else f"{label} {stream.value}"
        self.console.write(self.prefixer.target(stream),
                           self.prefixer.format(label, stream, data), owner)


class BufferedOutput(RunObserver):
    """EXEC-017: a task's stdout block, then its stderr block, on completion.

    Each task's bytes are spooled in memory up to 1 MiB, then to a temporary
    file.  With ``errors_only`` a block is printed only for a failed task.
    """

    def __init__(self, prefixer: Prefixer, errors_only: bool = False):
        self.prefixer = prefixer
        self.console = prefixer.console
        self.errors_only = errors_only
        self.spools: Dict[Tuple[str, Stream], Any] = {}

    def task_output(self, label, stream, data):
        spool = self.spools.get((label, stream))
        if spool is None:
            from .spool import Spool  # buffered modes only
            spool = self.spools[(label, stream)] = Spool(SPOOL_MEMORY)
        spool.write(data)
        if spool.problem is not None:
            from .spool import spool_warning
            message = spool_warning(spool.problem)  # None once told
            if message:
                self.console.warning(message)

    def task_finished(self, result):
        show = not self.errors_only or result.state is TaskState.FAILED
        if show and result.state is TaskState.CACHED and any(
                (result.label, stream) in self.spools for stream in Stream):
            self.console.message(replaying(result.label))
        for stream in (Stream.STDOUT, Stream.STDERR):
            spool = self.spools.pop((result.label, stream), None)
            if spool is None:
                continue
            with spool:
                if show:
                    spool.seek(0)
                    self.console.write_block(self.prefixer.target(stream),
                                             self._blocks(result.label, stream, spool))

    def _blocks(self, label: str, stream: Stream, spool: IO[bytes]) -> Iterator[bytes]:
        splitter = LineSplitter(cut=self.prefixer.enabled)
        while True:
            chunk = spool.read(SPOOL_MEMORY)
            if not chunk:
                break
            lines = splitter.feed(chunk)
            if lines:
                yield self.prefixer.format(label, stream, lines)
        rest = splitter.flush()
        if rest:
            yield self.prefixer.format(label, stream, rest)


def _describe_end(result: TaskResult) -> str:
    """``exit code 2``, ``killed by SIGKILL``, ``timed out`` ..."""
    cause = result.cause
    if cause is Cause.EXIT_CODE:
        return f"exit code {result.exit_code}"
    if cause is Cause.SIGNAL:
        return f"killed by {result.signal}"
    if cause is Cause.TIMEOUT:
        # The limit the user set, not the time its stop took (its grace).
        return f"timed out after {result.detail or f'{result.duration_s:.1f}s'}"
    if cause is Cause.SPAWN_ERROR:
        return f"could not start: {result.detail}"
    if cause in (Cause.UPSTREAM_FAILED, Cause.UPSTREAM_CANCELLED):
        verb = "failed" if cause is Cause.UPSTREAM_FAILED else "was cancelled"
        return f"{result.upstream} {verb}"
    if cause is Cause.SIGNALLED:
        return "stopped" + (f" by {result.signal}" if result.signal else "")
    if cause is Cause.NOT_STARTED:
        return "not started"
    if cause is Cause.RUNTIME_CYCLE:
        return "run stopped by a runtime cycle"
    if cause is Cause.OUTPUT_OVERLAP:
        return "run stopped by an output overlap"
    return result.state.value


class StatusLines(RunObserver):
    """hazrun's own lines on stderr: failures, skips at cascade time,
    cancellations and warnings, as they happen."""

    def __init__(self, console: Console, ctrl_c: bool = True):
        self.console = console
        # Whether a Ctrl-C reaches the run: the command line keeps a SIGINT
        # it was started with ignored (a background job), and says so here.
        self.ctrl_c = ctrl_c

    def task_finished(self, result):
        if result.state is TaskState.FAILED:
            self.console.message(f"hazrun: {result.label} failed: {_describe_end(result)}")
        elif result.state is TaskState.CANCELLED:
            self.console.message(f"hazrun: {result.label} cancelled: {_describe_end(result)}")

    def task_missed(self, label, reasons):
        self.console.message(f"hazrun: {label} runs: " + "; ".join(reasons))

    def task_skipped(self, result):
        if result.cause is Cause.NOT_STARTED:
            return  # covered by the summary's count
        self.console.message(f"hazrun: {result.label} {result.state.value}: "
                             f"{_describe_end(result)}")

    def warning(self, message):
        self.console.warning(message)

    def error(self, message):
        self.console.error(message)

    def run_stopping(self, running, grace_s, because, signum):
        # Said at once: a task that ignores SIGTERM keeps the run for its
        # whole grace, which without a word looks like a hang.
        names = ", ".join(running[:5]) + (f" and {len(running) - 5} more"
                                          if len(running) > 5 else "")
        if because is not None:
            sooner = (", or at once on Ctrl-C or SIGTERM" if self.ctrl_c
                      else ", or at once on SIGTERM")
        elif signum == signal.SIGINT:
            sooner = ", or at once on a second Ctrl-C"
        elif signum is not None:
            sooner = ", or at once on a second signal"
        else:
            sooner = ""  # cancel() from a library caller
        why = {StopReason.FAIL_FAST: "--fail-fast: ",
               StopReason.RUNTIME_CYCLE: "runtime cycle: "}.get(because, "")
        self.console.message(f"hazrun: {why}stopping {names} (SIGTERM now, "
                             f"SIGKILL within {grace_s:g} s{sooner})")


def format_summary(outcome: RunOutcome, colour: bool = False) -> List[str]:
    """CLI-001: counts per state, wall time, time saved, each failure."""
    counts = {state: outcome.count(state) for state in TaskState}
    total = len(outcome.order)
    parts = [f"{counts[s]} {s.value}" for s in TaskState if counts[s]]
    saved = sum(r.saved_s for r in outcome.results.values())
    line = (f"hazrun: {total} task{'s' if total != 1 else ''}: "
            f"{', '.join(parts) or 'nothing to do'} in {outcome.duration_s:.2f}s")
    if saved:
        line += f" (saved {saved:.2f}s by the cache)"
    if colour:
        good = not counts[TaskState.FAILED] and not counts[TaskState.CANCELLED] \
            and not outcome.violations
        line = ("\x1b[32m" if good else "\x1b[31m") + line + _RESET
    lines = [line]
    for r in outcome.in_order():
        if r.state is TaskState.FAILED:
            lines.append(f"hazrun:   failed: {r.label} ({_describe_end(r)})")
    for v in outcome.violations:
        lines.append(f"hazrun:   {v.kind.value.replace('_', ' ')}: {v.describe()}")
    if outcome.remote is not None:
        lines.append(format_remote(outcome.remote))
    return lines


def format_remote(stats: dict) -> str:
    """REMOTE-006: the remote cache's line of the summary."""
    def n(count: int, word: str) -> str:
        return f"{count} {word}{'' if count == 1 else 's'}"
    line = (f"hazrun: remote cache: {n(stats['hits'], 'hit')}, "
            f"{n(stats['uploads'], 'upload')}, {n(stats['errors'], 'error')}")
    if stats.get("disabled"):
        line += " (stopped asking it after repeated failures)"
    return line


class Summary(RunObserver):
    """Prints the end-of-run summary to stderr (CLI-001)."""

    def __init__(self, console: Console):
        self.console = console

    def run_finished(self, outcome):
        self.console.message("\n".join(format_summary(outcome, self.console.color_err)))


def summary_json(outcome: RunOutcome, signal: Optional[int]) -> dict:
    """CLI-003: the summary document."""
    doc = {
        "version": 1,
        "exit_code": exit_code_for(outcome, signal),
        "signal": signal_name(signal),
        "duration_s": round(outcome.duration_s, 3),
        "tasks": [{
            "label": r.label,
            "state": r.state.value,
            "cause": r.cause.value if r.cause else None,
            "exit_code": r.exit_code,
            "signal": r.signal,
            "duration_s": round(r.duration_s, 3),
            "key": r.key,
            "upstream": r.upstream,
        } for r in outcome.in_order()],
        "violations": [{"kind": v.kind.value, "tasks": list(v.tasks), "path": v.path}
                       for v in outcome.violations],
    }
    if outcome.remote is not None:  # REMOTE-006: only when a remote is configured
        doc["remote"] = {k: outcome.remote[k]
                         for k in ("hits", "misses", "uploads", "errors", "disabled")}
    return doc


def _descriptor_named(path: str) -> Optional[int]:
    """N for a path naming this process's descriptor N: /dev/stdout,
    /dev/stderr, /dev/fd/N, /proc/self/fd/N."""
    import re
    m = re.fullmatch(r"/dev/(std(out|err)|fd/(\d+))|/proc/(self|thread-self|\d+)/fd/(\d+)",
                     os.path.normpath(path))
    if m is None or (m.group(4) and m.group(4).isdigit() and int(m.group(4)) != os.getpid()):
        return None
    if m.group(2):
        return 1 if m.group(2) == "out" else 2
    fd = int(m.group(3) or m.group(5))
    try:
        os.fstat(fd)
    except OSError:
        return None  # not open here: as any other path (an error)
    return fd


def summary_json_problem(path: str) -> Optional[str]:
    """CLI-003: why :func:`write_summary_json` could not write to ``path``,
    asked before a run so that a typo costs no build; None if it can."""
    if _descriptor_named(path) is not None:
        return None
    if os.path.isdir(path):
        return "is a directory"
    if os.path.exists(path) and not os.path.isfile(path):
        return None  # a FIFO or a device: written straight into
    target = os.path.realpath(path) if os.path.islink(path) else os.path.abspath(path)
    parent = os.path.dirname(target)
    while not os.path.lexists(parent):  # atomic_write makes what is missing
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        return f"{parent} is not a directory"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"no permission to write in {parent}"
    return None


def write_summary_json(path: str, outcome: RunOutcome, signal: Optional[int],
                       extra: Optional[dict] = None) -> None:
    """Write the CLI-003 document: atomically (temp file and rename) to a
    regular file or a new one, through a symlink to its target; straight
    into anything else (a FIFO), which a rename would replace with a file
    nobody reads.  ``/dev/stdout``, ``/dev/fd/N`` (``>(jq .)``) and the like
    are written through that descriptor: after what went there before, and
    appended where it was opened so (``3>>ci.log``)."""
    doc = summary_json(outcome, signal)
    if extra:
        doc.update(extra)
    import stat
    from pathlib import Path
    from .fsutil import atomic_write, write_all
    data = (json.dumps(doc, indent=1) + "\n").encode()
    fd = _descriptor_named(path)
    if fd is not None:
        write_all(fd, data)
        return
    try:
        st: Optional[os.stat_result] = os.stat(path)
    except FileNotFoundError:
        st = None
    if st is not None and not stat.S_ISREG(st.st_mode):
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)  # a FIFO: waits for its reader
        try:
            write_all(fd, data)
        finally:
            os.close(fd)
        return
    target = os.path.realpath(path) if os.path.islink(path) else os.path.abspath(path)
    atomic_write(Path(target), data, fsync=False)
